"""How both stores write and read rows: the sortable columns, and results and snapshots
to and from row tuples (a record's descriptive fields as one JSON body; model plot and
influencer results column by column, as they are filtered by their values)."""

from __future__ import annotations

from typing import Any

import orjson

from mljob_operator.engine.persistence import (
    BUCKET_SORTS,
    INFLUENCER_SORTS,
    MODEL_PLOT_SORTS,
    RECORD_SORTS,
    SNAPSHOT_SORTS,
    StoreError,
)
from mljob_operator.engine.results import (
    BucketResult,
    DataCounts,
    Influence,
    InfluencerResult,
    ModelPlotResult,
    ModelSizeStats,
    ModelSnapshot,
    RecordResult,
)

BUCKET_SORT = {
    "timestamp": "timestamp_ms",
    "anomaly_score": "anomaly_score",
    "initial_anomaly_score": "initial_anomaly_score",
    "event_count": "event_count",
    "bucket_span": "bucket_span",
}
RECORD_SORT = {
    "timestamp": "timestamp_ms",
    "record_score": "record_score",
    "initial_record_score": "initial_record_score",
    "probability": "probability",
    "detector_index": "detector_index",
}
MODEL_PLOT_SORT = {
    "timestamp": "timestamp_ms",
    "detector_index": "detector_index",
    "actual": "actual",
}
INFLUENCER_SORT = {
    "timestamp": "timestamp_ms",
    "influencer_score": "influencer_score",
    "initial_influencer_score": "initial_influencer_score",
    "probability": "probability",
    "influencer_field_name": "field_name",
    "influencer_field_value": "field_value",
}
SNAPSHOT_SORT = {
    "timestamp": "timestamp_ms",
    "snapshot_id": "snapshot_id",
    "latest_record_time_stamp": "latest_record_ms",
}
BUCKET_COLS = (
    "timestamp_ms, bucket_span, anomaly_score, initial_anomaly_score, raw_score, is_interim,"
    " event_count"
)
MODEL_PLOT_COLS = (
    "timestamp_ms, bucket_span, detector_index, partition_field_name, partition_field_value,"
    " by_field_name, by_field_value, actual, model_median, model_lower, model_upper, is_interim"
)
INFLUENCER_COLS = (
    "timestamp_ms, bucket_span, field_name, field_value, probability, raw_score,"
    " influencer_score, initial_influencer_score, is_interim"
)
RESULT_TABLES = ("buckets", "records", "model_plot", "influencers")
"""Every table of results: pruned, reverted and deleted together."""
SNAPSHOT_COLS = (
    "snapshot_id, timestamp_ms, description, latest_record_ms, latest_result_ms, doc_count,"
    " size_bytes, retain, wal_seq, model_size_stats, data_counts"
)


assert set(BUCKET_SORT) == set(BUCKET_SORTS)
assert set(RECORD_SORT) == set(RECORD_SORTS)
assert set(SNAPSHOT_SORT) == set(SNAPSHOT_SORTS)
assert set(MODEL_PLOT_SORT) == set(MODEL_PLOT_SORTS)
assert set(INFLUENCER_SORT) == set(INFLUENCER_SORTS)


def sort_column(sort: str | None, allowed: dict[str, str]) -> str:
    key = sort or "timestamp"
    if key not in allowed:
        raise StoreError(f"cannot sort by {sort!r}; use one of {', '.join(sorted(allowed))}")
    return allowed[key]


def bucket(row: tuple[Any, ...]) -> BucketResult:
    return BucketResult(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6])


def record_body(r: RecordResult) -> bytes:
    return orjson.dumps(
        [
            r.bucket_span,
            r.function,
            r.field_name,
            r.by_field_name,
            r.by_field_value,
            r.partition_field_name,
            r.partition_field_value,
            list(r.actual),
            list(r.typical),
            [[i.field_name, list(i.field_values)] for i in r.influencers],
        ]
    )


def record(row: tuple[Any, ...]) -> RecordResult:
    ts, det, prob, raw, score, initial, interim, body = row
    span, fn, fname, byn, byv, pn, pv, actual, typical, infl = orjson.loads(body)
    return RecordResult(
        timestamp=ts,
        bucket_span=span,
        detector_index=det,
        function=fn,
        field_name=fname,
        by_field_name=byn,
        by_field_value=byv,
        partition_field_name=pn,
        partition_field_value=pv,
        probability=prob,
        raw_score=raw,
        record_score=score,
        initial_record_score=initial,
        actual=tuple(actual),
        typical=tuple(typical),
        is_interim=bool(interim),
        influencers=tuple(Influence(n, tuple(v)) for n, v in infl),
    )


def model_plot_row(job_id: str, m: ModelPlotResult) -> tuple[Any, ...]:
    """job_id and the MODEL_PLOT_COLS of one result (is_interim as a bool)."""
    return (
        job_id,
        m.timestamp,
        m.bucket_span,
        m.detector_index,
        m.partition_field_name,
        m.partition_field_value,
        m.by_field_name,
        m.by_field_value,
        m.actual,
        m.model_median,
        m.model_lower,
        m.model_upper,
        m.is_interim,
    )


def model_plot(row: tuple[Any, ...]) -> ModelPlotResult:
    ts, span, det, pn, pv, bn, bv, actual, median, lower, upper, interim = row
    return ModelPlotResult(
        timestamp=ts,
        bucket_span=span,
        detector_index=det,
        partition_field_name=pn,
        partition_field_value=pv,
        by_field_name=bn,
        by_field_value=bv,
        actual=actual,
        model_median=median,
        model_lower=lower,
        model_upper=upper,
        is_interim=bool(interim),
    )


def influencer_row(job_id: str, i: InfluencerResult) -> tuple[Any, ...]:
    """job_id and the INFLUENCER_COLS of one result (is_interim as a bool)."""
    return (
        job_id,
        i.timestamp,
        i.bucket_span,
        i.influencer_field_name,
        i.influencer_field_value,
        i.probability,
        i.raw_score,
        i.influencer_score,
        i.initial_influencer_score,
        i.is_interim,
    )


def influencer(row: tuple[Any, ...]) -> InfluencerResult:
    ts, span, name, value, prob, raw, score, initial, interim = row
    return InfluencerResult(
        timestamp=ts,
        bucket_span=span,
        influencer_field_name=name,
        influencer_field_value=value,
        probability=prob,
        raw_score=raw,
        influencer_score=score,
        initial_influencer_score=initial,
        is_interim=bool(interim),
    )


def snapshot(row: tuple[Any, ...]) -> ModelSnapshot:
    return ModelSnapshot(
        snapshot_id=row[0],
        timestamp=row[1],
        description=row[2],
        latest_record_time_stamp=row[3],
        latest_result_time_stamp=row[4],
        snapshot_doc_count=row[5],
        size_bytes=row[6],
        retain=bool(row[7]),
        wal_seq=row[8],
        model_size_stats=ModelSizeStats.from_dict(orjson.loads(row[9])),
        data_counts=DataCounts.from_dict(orjson.loads(row[10])),
    )
