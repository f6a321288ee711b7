"""A job's status as its controller last wrote it, and the one way to write it.

The operator is the only writer of `status`, so what it last wrote is the truth the
controller acts on: it never acts twice on a status the watch has not delivered yet, and
reads the live body only for spec, annotations and deletion. Status is replaced whole
(JSON patch `add /status`), so no stale key of an earlier close survives a merge. The
engine's counters are folded in when a status is written; an idle job's are refreshed
at most once per `interval_s`.

Progress that nothing depends on for recovery (a close's steps, which the store records
itself; `opening`) is *staged*: it becomes the truth the controller acts on at once, but
reaches the apiserver only if it is still the latest after `progress_s`. A fast close so
costs two writes (`closing`, then `closed` with every step) and a slow one shows its
progress at most once per `progress_s`. What announces a staged status (the `Opening`
Event) goes with its write, and what announces a written one that is soon superseded (the
`Closing` Event) only once it has stood for `progress_s`: a fast open posts `Opened` only,
a fast close `Closed` only, and a storm of fast closes costs the apiserver no requests
that nobody would read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from mljob_operator.api import DataCounts, MLJobStatus, ModelSizeStats

EngineStats = tuple[DataCounts, ModelSizeStats]
PROGRESS_S = 1.0
log = logging.getLogger(__name__)


class StatusClient(Protocol):
    async def replace_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...


class JobStatusWriter:
    def __init__(
        self,
        namespace: str,
        name: str,
        kube: StatusClient,
        interval_s: float,
        monotonic: Callable[[], float] = time.monotonic,
        progress_s: float = PROGRESS_S,
    ) -> None:
        self.namespace, self.name, self.kube = namespace, name, kube
        self.interval_s, self.monotonic, self.progress_s = interval_s, monotonic, progress_s
        self._current: MLJobStatus | None = None
        self._written_at: float | None = None
        self._flush: asyncio.Task[None] | None = None
        self._flush_waiting = False
        self._written: MLJobStatus | None = None
        self._announce: tuple[MLJobStatus, Callable[[], None]] | None = None
        self._announce_if_slow: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()

    @property
    def current(self) -> MLJobStatus | None:
        return self._current

    @current.setter
    def current(self, status: MLJobStatus | None) -> None:
        self._current = status
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout_s: float) -> None:
        """Wait until the status changes (or `timeout_s` passes)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=timeout_s)

    def adopt(self, body: Mapping[str, Any]) -> MLJobStatus:
        """The status to act on: what this process wrote, else what the object carries
        (after a restart, or for a job this process has not written yet)."""
        if self._current is None:
            self.current = MLJobStatus.model_validate(body.get("status") or {})
        assert self._current is not None
        return self._current

    @property
    def refresh_due(self) -> bool:
        return self._written_at is None or self.monotonic() - self._written_at >= self.interval_s

    async def write(
        self, status: MLJobStatus, announce_if_slow: Callable[[], None] | None = None
    ) -> None:
        """Write `status` now (a staged one waiting is superseded); call `announce_if_slow`
        if no other status is written (staged ones aside) within `progress_s`."""
        self._cancel_flush()
        self._announce = None
        async with self._lock:
            self._drop_slow_announcement()  # one armed by a write that held the lock
            await self.kube.replace_status(self.namespace, self.name, status.to_json_dict())
            self.current = status
            self._written_at = self.monotonic()
            self._written = status
            if announce_if_slow is not None:
                self._announce_if_slow = asyncio.get_running_loop().call_later(
                    self.progress_s, announce_if_slow
                )

    def stage(self, status: MLJobStatus, announce: Callable[[], None] | None = None) -> None:
        """Make `status` the truth now; write it only if still the latest in `progress_s`,
        and then call `announce`."""
        self.current = status
        self._announce = (status, announce) if announce is not None else None
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        self._flush_waiting = True
        await asyncio.sleep(self.progress_s)
        self._flush_waiting = False
        async with self._lock:
            status = self.current
            if status is None or status is self._written:
                return
            try:
                await self.kube.replace_status(self.namespace, self.name, status.to_json_dict())
            except Exception as err:  # the next write carries it
                log.warning("%s/%s: progress not written: %s", self.namespace, self.name, err)
                return
            self._written_at = self.monotonic()
            self._written = status
            announce, self._announce = self._announce, None
            if announce is not None and announce[0] is status:
                announce[1]()

    def _cancel_flush(self) -> None:
        """Drop an announcement not yet due and a staged write still waiting; one already
        sent is left to finish (a cancelled await would not stop its request, which could
        then land after a newer status), and the next write waits for it on the lock."""
        self._drop_slow_announcement()
        if self._flush is not None and not self._flush.done() and self._flush_waiting:
            self._flush.cancel()
        self._flush = None

    def _drop_slow_announcement(self) -> None:
        if self._announce_if_slow is not None:
            self._announce_if_slow.cancel()
            self._announce_if_slow = None

    def close(self) -> None:
        self._cancel_flush()


def with_stats(status: MLJobStatus, stats: EngineStats | None) -> MLJobStatus:
    """`status` with the engine's dataCounts and modelSizeStats (unchanged without)."""
    if stats is None:
        return status
    counts, sizes = stats
    return status.model_copy(update={"data_counts": counts, "model_size_stats": sizes})
