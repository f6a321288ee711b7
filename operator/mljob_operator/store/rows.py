"""How both stores write and read rows: the sortable columns, and results and snapshots
to and from row tuples (a record's descriptive fields as one JSON body)."""

from __future__ import annotations

from typing import Any

import orjson

from mljob_operator.engine.persistence import (
    BUCKET_SORTS,
    RECORD_SORTS,
    SNAPSHOT_SORTS,
    StoreError,
)
from mljob_operator.engine.results import (
    BucketResult,
    DataCounts,
    Influence,
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
SNAPSHOT_SORT = {
    "timestamp": "timestamp_ms",
    "snapshot_id": "snapshot_id",
    "latest_record_time_stamp": "latest_record_ms",
}
BUCKET_COLS = (
    "timestamp_ms, bucket_span, anomaly_score, initial_anomaly_score, raw_score, is_interim,"
    " event_count"
)
SNAPSHOT_COLS = (
    "snapshot_id, timestamp_ms, description, latest_record_ms, latest_result_ms, doc_count,"
    " size_bytes, retain, wal_seq, model_size_stats, data_counts"
)


assert set(BUCKET_SORT) == set(BUCKET_SORTS)
assert set(RECORD_SORT) == set(RECORD_SORTS)
assert set(SNAPSHOT_SORT) == set(SNAPSHOT_SORTS)


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
