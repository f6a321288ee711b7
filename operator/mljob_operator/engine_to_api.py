"""The engine's own types → the API's models, in this one place.

The engine knows nothing of the API (an import-linter contract); the operator converts its
results, counts and snapshots here, field by field, so a renamed engine field is a type
error here rather than a silently missing key on the wire.
"""

from __future__ import annotations

from mljob_operator.api import DataCounts, MemoryStatus, ModelSizeStats
from mljob_operator.api.results import (
    AnomalyRecord,
    Bucket,
    Flushed,
    Influence,
    ModelSnapshot,
)
from mljob_operator.engine import results as engine


def data_counts(c: engine.DataCounts) -> DataCounts:
    return DataCounts(
        input_record_count=c.input_record_count,
        processed_record_count=c.processed_record_count,
        input_bytes=c.input_bytes,
        invalid_date_count=c.invalid_date_count,
        missing_field_count=c.missing_field_count,
        out_of_order_timestamp_count=c.out_of_order_timestamp_count,
        bucket_count=c.bucket_count,
        empty_bucket_count=c.empty_bucket_count,
        earliest_record_timestamp=c.earliest_record_timestamp,
        latest_record_timestamp=c.latest_record_timestamp,
        last_data_time=c.last_data_time,
    )


def model_size_stats(s: engine.ModelSizeStats) -> ModelSizeStats:
    return ModelSizeStats(
        model_bytes=s.model_bytes,
        peak_model_bytes=s.peak_model_bytes,
        model_bytes_memory_limit=s.model_bytes_memory_limit,
        total_by_field_count=s.total_by_field_count,
        total_partition_field_count=s.total_partition_field_count,
        bucket_allocation_failures_count=s.bucket_allocation_failures_count,
        memory_status=MemoryStatus(s.memory_status),
    )


def bucket(b: engine.BucketResult) -> Bucket:
    return Bucket(
        timestamp=b.timestamp,
        bucket_span=b.bucket_span,
        anomaly_score=b.anomaly_score,
        initial_anomaly_score=b.initial_anomaly_score,
        is_interim=b.is_interim,
        event_count=b.event_count,
    )


def record(r: engine.RecordResult) -> AnomalyRecord:
    return AnomalyRecord(
        timestamp=r.timestamp,
        bucket_span=r.bucket_span,
        detector_index=r.detector_index,
        record_score=r.record_score,
        initial_record_score=r.initial_record_score,
        probability=r.probability,
        function=r.function,
        field_name=r.field_name,
        by_field_name=r.by_field_name,
        by_field_value=r.by_field_value,
        partition_field_name=r.partition_field_name,
        partition_field_value=r.partition_field_value,
        actual=list(r.actual),
        typical=list(r.typical),
        is_interim=r.is_interim,
        influencers=[
            Influence(
                influencer_field_name=i.field_name, influencer_field_values=list(i.field_values)
            )
            for i in r.influencers
        ],
    )


def model_snapshot(s: engine.ModelSnapshot) -> ModelSnapshot:
    return ModelSnapshot(
        snapshot_id=s.snapshot_id,
        timestamp=s.timestamp,
        description=s.description,
        latest_record_time_stamp=s.latest_record_time_stamp,
        latest_result_time_stamp=s.latest_result_time_stamp,
        snapshot_doc_count=s.snapshot_doc_count,
        size_bytes=s.size_bytes,
        retain=s.retain,
        model_size_stats=model_size_stats(s.model_size_stats),
    )


def flushed(f: engine.FlushResult) -> Flushed:
    return Flushed(flushed=True, last_finalized_bucket_end=f.last_finalized_bucket_end)
