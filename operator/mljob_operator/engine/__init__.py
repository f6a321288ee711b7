"""The anomaly-detection engine: a library with no Kubernetes, HTTP or API-model imports.

`Job` (engine.job) is the façade the operator drives; it is exported lazily because the
store imports the result types from this package and the job imports the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mljob_operator.engine.config import DetectorConfig, JobConfig
from mljob_operator.engine.errors import (
    ConfigError,
    DataFormatError,
    EngineError,
    JobClosedError,
    JobFailedError,
)
from mljob_operator.engine.results import (
    BucketResult,
    DataCounts,
    FlushResult,
    ModelSizeStats,
    ModelSnapshot,
    PruneResult,
    RecordResult,
)

if TYPE_CHECKING:
    from mljob_operator.engine.job import Job, JobNotClosedError, revert_to_snapshot

__all__ = [
    "BucketResult",
    "ConfigError",
    "DataCounts",
    "DataFormatError",
    "DetectorConfig",
    "EngineError",
    "FlushResult",
    "Job",
    "JobClosedError",
    "JobConfig",
    "JobFailedError",
    "JobNotClosedError",
    "ModelSizeStats",
    "ModelSnapshot",
    "PruneResult",
    "RecordResult",
    "revert_to_snapshot",
]


def __getattr__(name: str) -> Any:
    if name in ("Job", "JobNotClosedError", "revert_to_snapshot"):
        from mljob_operator.engine import job  # noqa: PLC0415 (import cycle with store)

        return getattr(job, name)
    raise AttributeError(name)
