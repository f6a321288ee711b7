"""The engine's result, count and snapshot types (field meanings follow the seed service).

These are the engine's own: the store persists them in its own format (`to_dict`), and
the operator converts them to the API's models in one place (`mljob_operator.engine_to_api`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def _fields_from(cls: Any, data: dict[str, Any]) -> dict[str, Any]:
    """The fields of `cls` found in `data`, under their own name or (as written before
    the store kept its own format) camelCase; unknown keys are ignored."""
    out = {}
    for name in cls.__slots__:
        if name in data:
            out[name] = data[name]
        elif _camel(name) in data:
            out[name] = data[_camel(name)]
    return out


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataCounts:
        return cls(**_fields_from(cls, data))

    def copy(self) -> DataCounts:
        return DataCounts(**asdict(self))


@dataclass(frozen=True, slots=True)
class ModelSizeStats:
    model_bytes: int = 0
    peak_model_bytes: int = 0
    total_by_field_count: int = 0
    total_partition_field_count: int = 0
    bucket_allocation_failures_count: int = 0
    memory_status: str = "ok"
    model_bytes_memory_limit: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSizeStats:
        return cls(**_fields_from(cls, data))


@dataclass(frozen=True, slots=True)
class Influence:
    field_name: str
    field_values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BucketResult:
    timestamp: int
    bucket_span: int
    anomaly_score: float
    initial_anomaly_score: float
    raw_score: float
    is_interim: bool
    event_count: int


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


@dataclass(frozen=True, slots=True)
class FlushResult:
    flushed: bool
    last_finalized_bucket_end: int | None


@dataclass(frozen=True, slots=True)
class PruneResult:
    snapshots_deleted: int
    results_deleted: int


@dataclass(frozen=True, slots=True)
class ModelPlotResult:
    """What the model expected of one series in one bucket, and what came."""

    timestamp: int
    bucket_span: int
    detector_index: int
    partition_field_name: str | None
    partition_field_value: str | None
    by_field_name: str | None
    by_field_value: str | None
    actual: float
    model_median: float
    model_lower: float
    model_upper: float
    is_interim: bool


@dataclass(frozen=True, slots=True)
class InfluencerResult:
    """One influencer value of one bucket: scored by the most anomalous record it was in."""

    timestamp: int
    bucket_span: int
    influencer_field_name: str
    influencer_field_value: str
    probability: float
    raw_score: float
    influencer_score: float
    initial_influencer_score: float
    is_interim: bool
