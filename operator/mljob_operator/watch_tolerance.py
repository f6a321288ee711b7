"""kopf's watch of MLJobs survives a 403 that lasts only while an apiserver starts.

A restarted kube-apiserver answers before its RBAC caches are synced, and for that moment
it refuses the operator's watch with 403 Forbidden. kopf treats a 403 on a watch as
permanent and stops the whole operator (nolar/kopf#1034, #1145), so a routine apiserver
restart would take every job down with it. This wraps kopf's stream so that a refusal is
retried with backoff for `GRACE_S`; a refusal that outlasts it is raised as before, so a
really missing permission still stops the operator with kopf's own message. Anything the
stream yields (the first item follows a successful list) proves access and restarts the
grace period.

Each event also passes through `transform` (the operator drops managedFields there, see
`watch_slim`), so one wrapper is all that touches kopf's stream.

It patches one private kopf function (`kopf._cogs.clients.watching.continuous_watch`,
looked up by name on every reconnect); if a kopf release renames it, `install` logs that
and leaves kopf as it is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from mljob_operator.watch_slim import without_managed_fields

log = logging.getLogger(__name__)

GRACE_S = 120.0
BACKOFF_S = (1.0, 2.0, 5.0)


class ForbiddenGrace:
    """When refusals began (None while access works) and how long to wait next."""

    def __init__(self, grace_s: float = GRACE_S, clock: Callable[[], float] = time.monotonic):
        self.grace_s, self.clock = grace_s, clock
        self.since: float | None = None
        self.refusals = 0

    def granted(self) -> None:
        self.since, self.refusals = None, 0

    def refused(self) -> float | None:
        """Count a refusal: seconds to wait before watching again, or None once refusals
        have lasted longer than the grace period."""
        now = self.clock()
        if self.since is None:
            self.since = now
        if now - self.since > self.grace_s:
            return None
        self.refusals += 1
        return BACKOFF_S[min(self.refusals, len(BACKOFF_S)) - 1]


def tolerant(
    original: Callable[..., AsyncIterator[Any]],
    forbidden: type[BaseException],
    grace_s: float = GRACE_S,
    clock: Callable[[], float] = time.monotonic,
    transform: Callable[[Any], Any] = lambda item: item,
) -> Callable[..., AsyncIterator[Any]]:
    """`original` with refusals retried, each watched resource and namespace on its own
    grace period (one namespace that really is forbidden cannot hide behind another)."""
    graces: dict[tuple[str, str], ForbiddenGrace] = {}

    async def continuous_watch(**kwargs: Any) -> AsyncIterator[Any]:
        key = (str(kwargs.get("resource")), str(kwargs.get("namespace")))
        grace = graces.setdefault(key, ForbiddenGrace(grace_s, clock))
        try:
            async for item in original(**kwargs):
                grace.granted()
                yield transform(item)
        except forbidden as err:
            wait_s = grace.refused()
            if wait_s is None:
                raise
            log.warning("watch refused (403), retrying in %.0fs: %s", wait_s, err)
            await asyncio.sleep(wait_s)

    return continuous_watch


def install(
    grace_s: float = GRACE_S, transform: Callable[[Any], Any] = without_managed_fields
) -> bool:
    """Wrap kopf's watch stream once (its events slimmed by `transform`); False if this kopf
    has no such function."""
    try:
        from kopf._cogs.clients import errors, watching  # noqa: PLC0415 (private, guarded)
    except ImportError:
        log.warning("kopf's watch internals moved: a 403 during an apiserver restart is fatal")
        return False
    current = getattr(watching, "continuous_watch", None)
    if current is None:
        log.warning("kopf's watch internals moved: a 403 during an apiserver restart is fatal")
        return False
    if getattr(current, "_mljob_tolerant", False):
        return True
    wrapped = tolerant(current, errors.APIForbiddenError, grace_s, transform=transform)
    wrapped._mljob_tolerant = True  # type: ignore[attr-defined]
    watching.continuous_watch = wrapped
    return True
