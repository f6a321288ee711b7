"""The close/open protocol the CLI and the HTTP API share, as pure decisions.

Neither closes a job itself: both write `spec.state` (and, to force, a fresh value of the
force-close annotation) exactly as `kubectl patch` would, remember the generation the
patch produced, and follow `status` until the controller reaches the state or refuses it
for that generation. The transports differ (the CLI is synchronous and runs as the user,
the server is asynchronous and runs as the operator after a SubjectAccessReview), so this
module holds what they must agree on: which jobs an expression names, the patch, and how
to read an answer.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from mljob_operator.api import FORCE_CLOSE_ANNOTATION, ConditionType, JobState, Reason

ALL = "_all"
NAME_EXPRESSION = re.compile(r"^[a-z0-9*]([-a-z0-9.*]{0,251}[a-z0-9*])?$")


class InvalidSelection(ValueError):
    """A job name expression that is malformed (answered 400)."""


class NoMatch(LookupError):
    """A job name expression matched no MLJob (answered 404)."""


def select_names(expression: str, existing: Iterable[str], allow_no_match: bool) -> list[str]:
    """The seed's job selection: a comma list of names and `*` patterns, or `_all`.

    A plain name that does not exist is always an error; a pattern (or `_all`) that
    matches nothing is one only when `allow_no_match` is false.
    """
    names = sorted(set(existing))
    parts = [p.strip() for p in expression.split(",")]
    if not expression.strip() or any(not p for p in parts):
        raise InvalidSelection(f"empty job name in {expression!r}")
    chosen: dict[str, None] = {}
    for part in parts:
        pattern = "*" if part == ALL else part
        if pattern != "*" and not NAME_EXPRESSION.match(pattern):
            raise InvalidSelection(
                f"{part!r} is not a job name or pattern (lowercase letters, digits, '-', "
                "'.', '*'), nor _all"
            )
        if "*" not in pattern:
            if pattern not in names:
                raise NoMatch(f"no MLJob named {pattern!r}")
            chosen[pattern] = None
            continue
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matched and not allow_no_match:
            raise NoMatch(f"no MLJob matches {part!r} (allowNoMatch=false)")
        chosen.update(dict.fromkeys(matched))
    return list(chosen)


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
        the controller's message) or still pending (with its current state). A forced
        close is never refused; an earlier refusal of the same generation (the annotation
        does not move it) is no answer to it."""
        if status.get("state") == self.target:
            return Progress.REACHED, self.target.value
        if self.force:
            return Progress.PENDING, str(status.get("state") or "pending")
        refused = refusal(status, self.target, generation)
        if refused is not None:
            return Progress.REFUSED, refused
        return Progress.PENDING, str(status.get("state") or "pending")


def generation_of(obj: Mapping[str, Any]) -> int:
    return int((obj.get("metadata") or {}).get("generation") or 0)
