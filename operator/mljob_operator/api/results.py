"""The data API's shapes (results, snapshots, stats, answers, errors), camelCase on the wire.

These models are the single definition of what the HTTP API sends: the handlers answer
with them and the OpenAPI document's components are generated from them, so the two
cannot drift. `dataCounts` and `modelSizeStats` are the very models of `MLJob.status`.
Field meanings follow the seed service.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from mljob_operator.api.v1alpha1 import DataCounts, JobState, ModelSizeStats

Score = Annotated[float, Field(ge=0.0, le=100.0)]


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Bucket(_Wire):
    """The anomaly score of one bucket of time."""

    timestamp: int = Field(description="Bucket start (epoch ms).")
    bucket_span: int = Field(ge=1, description="Bucket length in seconds.")
    anomaly_score: Score = Field(description="0 to 100, renormalised.")
    initial_anomaly_score: Score = Field(description="0 to 100, when the bucket was first final.")
    is_interim: bool = Field(description="Not final yet.")
    event_count: int = Field(ge=0, description="Records in the bucket.")


class Influence(_Wire):
    influencer_field_name: str = Field(description="Influencer field.")
    influencer_field_values: list[str] = Field(description="Its values in the record's bucket.")


class AnomalyRecord(_Wire):
    """One anomalous series of one detector in one bucket."""

    timestamp: int = Field(description="Bucket start (epoch ms).")
    bucket_span: int = Field(ge=1, description="Bucket length in seconds.")
    detector_index: int = Field(ge=0, description="Index of the detector.")
    record_score: Score = Field(description="0 to 100, renormalised.")
    initial_record_score: Score = Field(description="0 to 100, when first final.")
    probability: float = Field(ge=0.0, le=1.0, description="Probability of the actual value.")
    function: str = Field(description="Detector function.")
    field_name: str | None = Field(description="Analysed field.")
    by_field_name: str | None = Field(description="By field.")
    by_field_value: str | None = Field(description="By-field value.")
    partition_field_name: str | None = Field(description="Partition field.")
    partition_field_value: str | None = Field(description="Partition-field value.")
    actual: list[float] = Field(description="The bucket's value.")
    typical: list[float] = Field(description="What the model expected.")
    is_interim: bool = Field(description="Not final yet.")
    influencers: list[Influence] = Field(description="Influencer values in the bucket.")


class ModelPlotPoint(_Wire):
    """What the model expected of one series in one bucket, and what came."""

    timestamp: int = Field(description="Bucket start (epoch ms).")
    bucket_span: int = Field(ge=1, description="Bucket length in seconds.")
    detector_index: int = Field(ge=0, description="Index of the detector.")
    partition_field_name: str | None = Field(description="Partition field, if the detector splits.")
    partition_field_value: str | None = Field(description="Partition-field value of the series.")
    by_field_name: str | None = Field(description="By field, if the detector splits.")
    by_field_value: str | None = Field(description="By-field value of the series.")
    actual: float = Field(description="The bucket's value.")
    model_median: float = Field(description="What the model expected (the records' typical).")
    model_lower: float = Field(description="Lower bound of the model's 95% band.")
    model_upper: float = Field(description="Upper bound of the model's 95% band.")
    is_interim: bool = Field(description="Not final yet.")


class InfluencerResult(_Wire):
    """One influencer value of one bucket, scored by the most anomalous record it was in."""

    timestamp: int = Field(description="Bucket start (epoch ms).")
    bucket_span: int = Field(ge=1, description="Bucket length in seconds.")
    influencer_field_name: str = Field(description="Influencer field.")
    influencer_field_value: str = Field(description="Its value.")
    influencer_score: Score = Field(description="0 to 100, renormalised.")
    initial_influencer_score: Score = Field(description="0 to 100, when first final.")
    probability: float = Field(
        ge=0.0, le=1.0, description="The lowest probability of the records it influenced."
    )
    is_interim: bool = Field(description="Not final yet.")


class ModelSnapshot(_Wire):
    snapshot_id: str = Field(description="Snapshot id.")
    timestamp: int = Field(description="When it was taken (epoch ms).")
    description: str = Field(description="Why it was taken.")
    latest_record_time_stamp: int | None = Field(description="Latest record it covers (epoch ms).")
    latest_result_time_stamp: int | None = Field(description="Latest result it covers (epoch ms).")
    snapshot_doc_count: int = Field(ge=0, description="Stored documents.")
    size_bytes: int = Field(ge=0, description="Stored size.")
    retain: bool = Field(description="Kept through retention pruning.")
    model_size_stats: ModelSizeStats


class BucketPage(_Wire):
    count: int = Field(ge=0, description="Matching buckets.")
    buckets: list[Bucket]


class RecordPage(_Wire):
    count: int = Field(ge=0, description="Matching records.")
    records: list[AnomalyRecord]


class ModelPlotPage(_Wire):
    count: int = Field(ge=0, description="Matching model plot points.")
    model_plot: list[ModelPlotPoint]


class InfluencerPage(_Wire):
    count: int = Field(ge=0, description="Matching influencer results.")
    influencers: list[InfluencerResult]


class ModelSnapshotPage(_Wire):
    count: int = Field(ge=0, description="Matching snapshots.")
    model_snapshots: list[ModelSnapshot]


class SnapshotAnswer(_Wire):
    model: ModelSnapshot


class SnapshotUpdated(_Wire):
    acknowledged: Literal[True]
    model: ModelSnapshot


class Acknowledged(_Wire):
    acknowledged: Literal[True]


class SnapshotUpdate(_Wire):
    """The body of `.../_update`."""

    model_config = ConfigDict(extra="forbid")

    retain: bool = Field(description="Keep this snapshot through retention pruning.")


class Flushed(_Wire):
    flushed: Literal[True]
    last_finalized_bucket_end: int | None = Field(
        description="End of the last final bucket (epoch ms)."
    )


class JobStats(_Wire):
    job_id: str = Field(description="namespace/name.")
    state: JobState | None = Field(description="The state the controller last wrote.")
    open: bool = Field(description="Takes data now.")
    model_snapshot_id: str | None = Field(description="The active model snapshot.")
    data_counts: DataCounts
    model_size_stats: ModelSizeStats


class Closed(_Wire):
    closed: Literal[True]


class Opened(_Wire):
    opened: Literal[True]


class Health(_Wire):
    status: Literal["ok"]


class ErrorDetail(_Wire):
    status: int = Field(description="The HTTP status.")
    reason: str = Field(description="Its reason phrase.")
    message: str = Field(description="What went wrong and, where it helps, what to do.")


class Error(_Wire):
    """Every error answer."""

    error: ErrorDetail
