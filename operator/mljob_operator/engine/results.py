"""Result, count and snapshot shapes shared by the engine, the store and the HTTP API.

Field meanings follow the seed service; `to_api()` gives its camelCase JSON shape so that
the HTTP layer never re-derives names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


@dataclass(slots=True)
class DataCounts:
    input_record_count: int = 0
    processed_record_count: int = 0
    input_bytes: int = 0
    invalid_date_count: int = 0
    missing_field_count: int = 0
    out_of_order_timestamp_count: int = 0
    bucket_count: int = 0
    empty_bucket_count: int = 0
    earliest_record_timestamp: int | None = None
    latest_record_timestamp: int | None = None
    last_data_time: int | None = None

    def to_api(self) -> dict[str, Any]:
        return {_camel(k): v for k, v in asdict(self).items()}

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> DataCounts:
        return cls(**{k: data[_camel(k)] for k in cls.__slots__ if _camel(k) in data})

    def copy(self) -> DataCounts:
        return DataCounts(**asdict(self))


@dataclass(frozen=True, slots=True)
class ModelSizeStats:
    model_bytes: int = 0
    peak_model_bytes: int = 0
    total_by_field_count: int = 0
    total_partition_field_count: int = 0
    total_over_field_count: int = 0
    bucket_allocation_failures_count: int = 0
    memory_status: str = "ok"
    model_bytes_memory_limit: int | None = None

    def to_api(self) -> dict[str, Any]:
        return {_camel(k): v for k, v in asdict(self).items()}

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> ModelSizeStats:
        return cls(**{k: data[_camel(k)] for k in cls.__slots__ if _camel(k) in data})


@dataclass(frozen=True, slots=True)
class Influence:
    field_name: str
    field_values: tuple[str, ...]

    def to_api(self) -> dict[str, Any]:
        return {
            "influencerFieldName": self.field_name,
            "influencerFieldValues": list(self.field_values),
        }


@dataclass(frozen=True, slots=True)
class BucketResult:
    timestamp: int
    bucket_span: int
    anomaly_score: float
    initial_anomaly_score: float
    raw_score: float
    is_interim: bool
    event_count: int

    def to_api(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp,
            "bucketSpan": self.bucket_span,
            "anomalyScore": self.anomaly_score,
            "initialAnomalyScore": self.initial_anomaly_score,
            "isInterim": self.is_interim,
            "eventCount": self.event_count,
        }


@dataclass(frozen=True, slots=True)
class RecordResult:
    timestamp: int
    bucket_span: int
    detector_index: int
    function: str
    field_name: str | None
    by_field_name: str | None
    by_field_value: str | None
    partition_field_name: str | None
    partition_field_value: str | None
    probability: float
    raw_score: float
    record_score: float
    initial_record_score: float
    actual: tuple[float, ...]
    typical: tuple[float, ...]
    is_interim: bool
    influencers: tuple[Influence, ...] = ()

    def to_api(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp,
            "bucketSpan": self.bucket_span,
            "detectorIndex": self.detector_index,
            "recordScore": self.record_score,
            "initialRecordScore": self.initial_record_score,
            "probability": self.probability,
            "function": self.function,
            "fieldName": self.field_name,
            "byFieldName": self.by_field_name,
            "byFieldValue": self.by_field_value,
            "partitionFieldName": self.partition_field_name,
            "partitionFieldValue": self.partition_field_value,
            "actual": list(self.actual),
            "typical": list(self.typical),
            "isInterim": self.is_interim,
            "influencers": [i.to_api() for i in self.influencers],
        }


@dataclass(frozen=True, slots=True)
class ModelSnapshot:
    snapshot_id: str
    timestamp: int
    description: str
    latest_record_time_stamp: int | None
    latest_result_time_stamp: int | None
    snapshot_doc_count: int
    size_bytes: int
    retain: bool
    wal_seq: int
    model_size_stats: ModelSizeStats = field(default_factory=ModelSizeStats)
    data_counts: DataCounts = field(default_factory=DataCounts)

    def to_api(self) -> dict[str, Any]:
        return {
            "snapshotId": self.snapshot_id,
            "timestamp": self.timestamp,
            "description": self.description,
            "latestRecordTimeStamp": self.latest_record_time_stamp,
            "latestResultTimeStamp": self.latest_result_time_stamp,
            "snapshotDocCount": self.snapshot_doc_count,
            "sizeBytes": self.size_bytes,
            "retain": self.retain,
            "modelSizeStats": self.model_size_stats.to_api(),
        }


@dataclass(frozen=True, slots=True)
class FlushResult:
    flushed: bool
    last_finalized_bucket_end: int | None

    def to_api(self) -> dict[str, Any]:
        return {"flushed": self.flushed, "lastFinalizedBucketEnd": self.last_finalized_bucket_end}


@dataclass(frozen=True, slots=True)
class PruneResult:
    snapshots_deleted: int
    results_deleted: int

    def to_api(self) -> dict[str, Any]:
        return {"snapshotsDeleted": self.snapshots_deleted, "resultsDeleted": self.results_deleted}
