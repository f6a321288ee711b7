"""Close and open over HTTP: set `spec.state` through the apiserver, then wait for status.

The HTTP API never closes a job itself. It writes the desired state (plus a fresh value of
the force-close annotation for `force=true`) exactly as `kubectl patch` would, so GitOps,
the controller and the CLI all see one source of truth, and then polls the job's status
until the controller reports the state, refuses it (a failed job closed without force), or
the caller's timeout passes. The patch is made as the operator, after the caller's own
rights were checked with SubjectAccessReview.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from mljob_operator.api import FORCE_CLOSE_ANNOTATION, ConditionType, JobState, Reason
from mljob_operator.http.errors import Conflict, NotFound, RequestTimeout, Unavailable
from mljob_operator.kube import JobGone, KubeError

POLL_S = 0.25


class JobsClient(Protocol):
    async def get_job(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def list_jobs(self, namespace: str) -> list[dict[str, Any]]: ...

    async def patch_job(
        self, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]: ...


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found = [c for c in status.get("conditions") or [] if c.get("type") == type_]
    return found[0] if found else {}


def refusal(status: dict[str, Any], target: JobState, generation: int) -> str | None:
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


def force_value(now: datetime | None = None) -> str:
    """A new annotation value each time: the operator acts once per value."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class StateRequests:
    def __init__(
        self,
        kube: JobsClient,
        poll_s: float = POLL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube, self.poll_s, self.clock = kube, poll_s, clock

    async def names(self, namespace: str) -> list[str]:
        try:
            jobs = await self.kube.list_jobs(namespace)
        except KubeError as err:
            raise Unavailable(f"cannot list MLJobs in {namespace}: {err.message}") from err
        return [str(j["metadata"]["name"]) for j in jobs]

    async def apply(
        self,
        namespace: str,
        names: list[str],
        target: JobState,
        timeout: timedelta,
        force: bool = False,
    ) -> None:
        """Patch every job, then wait for all of them; raises on refusal or timeout."""
        state = "closed" if target == JobState.CLOSED else "opened"
        forced = {FORCE_CLOSE_ANNOTATION: force_value()}
        generations = {}
        for name in names:
            patch: dict[str, Any] = {"spec": {"state": state}}
            if force and not await self._closed(namespace, name):
                patch["metadata"] = {"annotations": forced}
            try:
                obj = await self.kube.patch_job(namespace, name, patch)
            except JobGone as err:
                raise NotFound(f"MLJob {namespace}/{name} not found") from err
            except KubeError as err:
                raise Unavailable(
                    f"the apiserver refused to set {namespace}/{name} to {state}: {err.message}"
                ) from err
            generations[name] = int(obj.get("metadata", {}).get("generation") or 0)
        deadline = self.clock() + timeout.total_seconds()
        await asyncio.gather(
            *(self._wait(namespace, n, target, generations[n], deadline) for n in names)
        )

    async def _closed(self, namespace: str, name: str) -> bool:
        """Whether the job is closed already: forcing it then would leave a fresh
        annotation value behind that would force its next, ordinary close."""
        try:
            obj = await self.kube.get_job(namespace, name)
        except JobGone as err:
            raise NotFound(f"MLJob {namespace}/{name} not found") from err
        except KubeError as err:
            raise Unavailable(f"cannot read {namespace}/{name}: {err.message}") from err
        return bool((obj.get("status") or {}).get("state") == JobState.CLOSED)

    async def _wait(
        self, namespace: str, name: str, target: JobState, generation: int, deadline: float
    ) -> None:
        while True:
            try:
                obj = await self.kube.get_job(namespace, name)
            except JobGone as err:
                raise NotFound(f"MLJob {namespace}/{name} was deleted while waiting") from err
            except KubeError as err:
                raise Unavailable(f"cannot read {namespace}/{name}: {err.message}") from err
            status = obj.get("status") or {}
            if status.get("state") == target:
                return
            refused = refusal(status, target, generation)
            if refused is not None:
                raise Conflict(f"MLJob {namespace}/{name} cannot be {target.value}: {refused}")
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise RequestTimeout(
                    f"MLJob {namespace}/{name} is still {status.get('state') or 'pending'} "
                    f"(wanted {target.value}); the request timed out but the operator goes on. "
                    "Watch status.conditions, or close again with force=true."
                )
            await asyncio.sleep(min(self.poll_s, remaining))
