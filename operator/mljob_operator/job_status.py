"""A job's status as its controller last wrote it, and the one way to write it.

The operator is the only writer of `status`, so what it last wrote is the truth the
controller acts on: it never acts twice on a status the watch has not delivered yet, and
reads the live body only for spec, annotations and deletion. Status is replaced whole
(JSON patch `add /status`), so no stale key of an earlier close survives a merge. The
engine's counters are folded in when a status is written; an idle job's are refreshed
at most once per `interval_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from mljob_operator.api import DataCounts, MLJobStatus, ModelSizeStats

EngineStats = tuple[DataCounts, ModelSizeStats]


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
    ) -> None:
        self.namespace, self.name, self.kube = namespace, name, kube
        self.interval_s, self.monotonic = interval_s, monotonic
        self.current: MLJobStatus | None = None
        self._written_at: float | None = None

    def adopt(self, body: Mapping[str, Any]) -> MLJobStatus:
        """The status to act on: what this process wrote, else what the object carries
        (after a restart, or for a job this process has not written yet)."""
        if self.current is None:
            self.current = MLJobStatus.model_validate(body.get("status") or {})
        return self.current

    @property
    def refresh_due(self) -> bool:
        return self._written_at is None or self.monotonic() - self._written_at >= self.interval_s

    async def write(self, status: MLJobStatus) -> None:
        await self.kube.replace_status(self.namespace, self.name, status.to_json_dict())
        self.current = status
        self._written_at = self.monotonic()


def with_stats(status: MLJobStatus, stats: EngineStats | None) -> MLJobStatus:
    """`status` with the engine's dataCounts and modelSizeStats (unchanged without)."""
    if stats is None:
        return status
    counts, sizes = stats
    return status.model_copy(update={"data_counts": counts, "model_size_stats": sizes})
