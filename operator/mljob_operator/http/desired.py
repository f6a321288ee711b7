"""Close and open over HTTP: set `spec.state` through the apiserver, then wait for status.

The HTTP API never closes a job itself. It writes the desired state (plus a fresh value of
the force-close annotation for `force=true`) exactly as `kubectl patch` would, so GitOps,
the controller and the CLI all see one source of truth, and then follows the job's status
until the controller reports the state, refuses it (a failed job closed without force), or
the caller's timeout passes; `state_change` holds the patch and how to read the answer,
shared with the CLI. The wait is on the controller's own status when this process holds
it (no request per job and tick), else on reads from the apiserver. The patch is made as
the operator, after the caller's own rights were checked with SubjectAccessReview.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from mljob_operator.api import JobState
from mljob_operator.http.errors import Conflict, Gone, NotFound, RequestTimeout, Unavailable
from mljob_operator.http.params import BadRequest
from mljob_operator.kube import JobGone, KubeError
from mljob_operator.state_change import Progress, StateChange, generation_of

POLL_S = 1.0
"""How often a job this process holds no status of is read from the apiserver."""


class StatusView(Protocol):
    """The operator's own view of job statuses (the controllers'), to wait on without
    asking the apiserver."""

    def status_of(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The status the job's controller holds, as JSON; None if it has none here."""

    async def status_changed(self, namespace: str, name: str, timeout_s: float) -> None:
        """Return when that status changes, or after `timeout_s`."""


class JobsClient(Protocol):
    async def get_job(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def list_jobs(self, namespace: str) -> list[dict[str, Any]]: ...

    async def list_jobs_page(
        self, namespace: str, limit: int, continue_: str | None
    ) -> dict[str, Any]: ...

    async def patch_job(
        self, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class JobsPage:
    """A page of MLJob objects and where the next one starts (None: this was the last)."""

    items: list[dict[str, Any]]
    continue_: str | None
    remaining: int | None
    """How many more the apiserver counts (an estimate it gives with `continue`)."""


class StateRequests:
    def __init__(
        self,
        kube: JobsClient,
        poll_s: float = POLL_S,
        clock: Callable[[], float] = time.monotonic,
        statuses: StatusView | None = None,
    ) -> None:
        self.kube, self.poll_s, self.clock, self.statuses = kube, poll_s, clock, statuses

    async def listed(self, namespace: str) -> list[dict[str, Any]]:
        """The MLJob objects of the namespace, as the apiserver has them (status included)."""
        try:
            return await self.kube.list_jobs(namespace)
        except KubeError as err:
            raise Unavailable(f"cannot list MLJobs in {namespace}: {err.message}") from err

    async def page(self, namespace: str, limit: int, continue_: str | None) -> JobsPage:
        """At most `limit` MLJob objects of the namespace from where `continue_` left off,
        as `kubectl get --chunk-size` reads them: a token the apiserver finds malformed is
        a 400, one it no longer honours (compacted) a 410 saying to list again."""
        try:
            listing = await self.kube.list_jobs_page(namespace, limit, continue_)
        except KubeError as err:
            if continue_ is not None and err.status in {400, 422}:
                raise BadRequest(f"continue: {err.message}") from err
            if err.status == 410:
                raise Gone(
                    f"the continue token has expired ({err.message}); list again without it"
                ) from err
            raise Unavailable(f"cannot list MLJobs in {namespace}: {err.message}") from err
        meta = listing.get("metadata") or {}
        remaining = meta.get("remainingItemCount")
        return JobsPage(
            items=list(listing.get("items") or []),
            continue_=meta.get("continue") or None,
            remaining=int(remaining) if remaining is not None else None,
        )

    async def names(self, namespace: str) -> list[str]:
        return [str(j["metadata"]["name"]) for j in await self.listed(namespace)]

    async def apply(
        self,
        namespace: str,
        names: list[str],
        target: JobState,
        timeout: timedelta,
        force: bool = False,
    ) -> None:
        """Patch every job, then wait for all of them; raises on refusal or timeout."""
        change = StateChange(target, force)
        generations = {}
        for name in names:
            current = await self._get(namespace, name) if change.needs_current_status else {}
            try:
                obj = await self.kube.patch_job(
                    namespace, name, change.patch(current.get("status"))
                )
            except JobGone as err:
                raise NotFound(f"MLJob {namespace}/{name} not found") from err
            except KubeError as err:
                raise Unavailable(
                    f"the apiserver refused to set {namespace}/{name} to "
                    f"{change.spec_state}: {err.message}"
                ) from err
            generations[name] = generation_of(obj)
        deadline = self.clock() + timeout.total_seconds()
        await asyncio.gather(
            *(self._wait(namespace, n, change, generations[n], deadline) for n in names)
        )

    async def _get(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return await self.kube.get_job(namespace, name)
        except JobGone as err:
            raise NotFound(f"MLJob {namespace}/{name} not found") from err
        except KubeError as err:
            raise Unavailable(f"cannot read {namespace}/{name}: {err.message}") from err

    async def _wait(
        self, namespace: str, name: str, change: StateChange, generation: int, deadline: float
    ) -> None:
        """Until the job reaches the state or refuses it: on the controller's own status
        when this process holds it (woken by each change, no request), else read from the
        apiserver every `poll_s`."""
        target = change.target.value
        while True:
            status, held = await self._status(namespace, name)
            progress, detail = change.progress(status, generation)
            if progress == Progress.REACHED:
                return
            if progress == Progress.REFUSED:
                raise Conflict(f"MLJob {namespace}/{name} cannot be {target}: {detail}")
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise RequestTimeout(
                    f"MLJob {namespace}/{name} is still {detail} (wanted {target}); the "
                    "request timed out but the operator goes on. Watch status.conditions, "
                    "or close again with force=true."
                )
            if held and self.statuses is not None:
                await self.statuses.status_changed(namespace, name, min(self.poll_s, remaining))
            else:
                await asyncio.sleep(min(self.poll_s, remaining))

    async def _status(self, namespace: str, name: str) -> tuple[dict[str, Any], bool]:
        """The job's status, and whether it is the one a controller here holds."""
        held = self.statuses.status_of(namespace, name) if self.statuses else None
        if held is not None:
            return held, True
        try:
            obj = await self._get(namespace, name)
        except NotFound as err:
            raise NotFound(f"MLJob {namespace}/{name} was deleted while waiting") from err
        return dict(obj.get("status") or {}), False
