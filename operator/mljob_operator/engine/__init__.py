"""The anomaly-detection engine: a library with no Kubernetes, HTTP or API-model imports.

`Job` (engine.job) is the façade the operator drives. The engine owns its persistence
port (`engine.persistence`); store packages implement it and import the engine, never the
reverse.
"""

from __future__ import annotations

from mljob_operator.engine.config import DetectorConfig, JobConfig
from mljob_operator.engine.errors import (
    ConfigError,
    DataFormatError,
    EngineError,
    JobClosedError,
    JobFailedError,
    StoreWriteError,
)
from mljob_operator.engine.job import Job, JobNotClosedError, revert_to_snapshot
from mljob_operator.engine.results import (
    BucketResult,
    DataCounts,
    FlushResult,
    ModelSizeStats,
    ModelSnapshot,
    PruneResult,
    RecordResult,
)

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
    "StoreWriteError",
    "revert_to_snapshot",
]
