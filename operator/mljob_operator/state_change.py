"""The close/open protocol the CLI and the HTTP API share, as pure decisions.

Neither closes a job itself: both write `spec.state` (and, to force, a fresh value of the
force-close annotation) exactly as `kubectl patch` would, remember the generation the
patch produced, and follow `status` until the controller reaches the state or refuses it
for that generation. The transports differ (the CLI is synchronous and runs as the user,
the server is asynchronous and runs as the operator after a SubjectAccessReview), so this
module holds what they must agree on: the patch, and how to read an answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from mljob_operator.api import FORCE_CLOSE_ANNOTATION, ConditionType, JobState, Reason


def force_value(now: datetime | None = None) -> str:
    """A new annotation value each time: the operator acts once per value."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Progress(StrEnum):
    PENDING = "pending"
    REACHED = "reached"
    REFUSED = "refused"


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    found = [c for c in status.get("conditions") or [] if c.get("type") == type_]
    return found[0] if found else {}


def refusal(status: Mapping[str, Any], target: JobState, generation: int) -> str | None:
    """The controller's answer that it will not reach `target` for this generation."""
    if status.get("state") != JobState.FAILED:
        return None
    wanted = ConditionType.CLOSED if target == JobState.CLOSED else ConditionType.FAILED
    cond = _condition(status, wanted)
    if int(cond.get("observedGeneration") or 0) < generation:
        return None
    if target == JobState.CLOSED and cond.get("reason") != Reason.CLOSE_REFUSED:
        return None
    return str(cond.get("message") or "the job has failed")


@dataclass(frozen=True)
class StateChange:
    """One request to bring jobs to `target` (opened or closed), forced or not."""

    target: JobState
    force: bool = False
    force_value: str = field(default_factory=force_value)

    @property
    def spec_state(self) -> str:
        return "closed" if self.target == JobState.CLOSED else "opened"

    @property
    def needs_current_status(self) -> bool:
        """Whether `patch` must see the job's status first (only a forced close does)."""
        return self.force and self.target == JobState.CLOSED

    def patch(self, status: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The merge patch for a job whose status is `status`. A job already closed is
        not forced: a fresh annotation value left behind would force its next close."""
        patch: dict[str, Any] = {"spec": {"state": self.spec_state}}
        if self.needs_current_status and (status or {}).get("state") != JobState.CLOSED:
            patch["metadata"] = {"annotations": {FORCE_CLOSE_ANNOTATION: self.force_value}}
        return patch

    def progress(self, status: Mapping[str, Any], generation: int) -> tuple[Progress, str]:
        """Where a job whose patch produced `generation` stands: reached, refused (with
        the controller's message) or still pending (with its current state)."""
        if status.get("state") == self.target:
            return Progress.REACHED, self.target.value
        refused = refusal(status, self.target, generation)
        if refused is not None:
            return Progress.REFUSED, refused
        return Progress.PENDING, str(status.get("state") or "pending")


def generation_of(obj: Mapping[str, Any]) -> int:
    return int((obj.get("metadata") or {}).get("generation") or 0)
