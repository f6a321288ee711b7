"""What kopf keeps of each job: no `metadata.managedFields`, and no body at all while no
daemon runs for it.

kopf holds the latest body of every object of a resource that has a daemon handler, for
as long as the operator runs — also for a settled closed job whose daemon its `when=`
filter stopped (it may start again), and for one listed at start that never had a daemon.
That made a closed job cost its whole parsed body, against the promise that a closed job
keeps metadata only (the registry's `SettledJob` is that record, as compact JSON).

- Server-side apply bookkeeping is the largest part of a body (one nested mapping per
  field each manager set, status included) and neither kopf nor this operator reads it:
  the watch drops it before kopf sees the event, which also saves its parsing.
- kopf's `live_fresh_body` exists so a running daemon sees each new version of its object.
  When the last daemon of an object exits, or an event leaves an object with none, the
  body is released, exactly as kopf itself does for a daemon that will never run again.
  The next event brings a fresh one, and kopf sets it again before it spawns a daemon.

Both hooks wrap private kopf functions, looked up by name where kopf calls them; if a
kopf release moves them, `install_body_release` logs that and leaves kopf as it is (jobs
then cost more memory, nothing else changes).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


def without_managed_fields(item: Any) -> Any:
    """A watch event with `object.metadata.managedFields` removed (other items as they are)."""
    if isinstance(item, dict):
        obj = item.get("object")
        if isinstance(obj, dict):
            metadata = obj.get("metadata")
            if isinstance(metadata, dict):
                metadata.pop("managedFields", None)
    return item


def release_if_idle(daemons_memory: Any) -> None:
    """Forget the kept body of an object no daemon runs for."""
    if not daemons_memory.running_daemons:
        daemons_memory.live_fresh_body = None


def releasing(
    original: Callable[..., Awaitable[Any]], memory_of: Callable[[dict[str, Any]], Any]
) -> Callable[..., Awaitable[Any]]:
    """`original`, then the body of the object it handled released if no daemon runs for
    it; `memory_of` finds that object's daemons memory among the call's keyword arguments."""

    @functools.wraps(original)
    async def wrapper(**kwargs: Any) -> Any:
        try:
            return await original(**kwargs)
        finally:
            release_if_idle(memory_of(kwargs))

    wrapper._mljob_releasing = True  # type: ignore[attr-defined]
    return wrapper


def install_body_release() -> bool:
    """Wrap kopf's daemon runner and spawning step once; False if kopf has moved them."""
    try:
        from kopf._core.engines import daemons  # noqa: PLC0415 (private, guarded)
        from kopf._core.reactor import processing  # noqa: PLC0415 (private, guarded)
    except ImportError:
        log.warning("kopf's daemon internals moved: closed jobs keep their bodies in memory")
        return False
    runner = getattr(daemons, "_runner", None)
    spawning = getattr(processing, "process_spawning_cause", None)
    if runner is None or spawning is None:
        log.warning("kopf's daemon internals moved: closed jobs keep their bodies in memory")
        return False
    if not getattr(runner, "_mljob_releasing", False):
        daemons._runner = releasing(runner, lambda kwargs: kwargs["memory"])  # type: ignore[assignment]
    if not getattr(spawning, "_mljob_releasing", False):
        processing.process_spawning_cause = releasing(  # type: ignore[assignment]
            spawning, lambda kwargs: kwargs["memory"].daemons_memory
        )
    return True
