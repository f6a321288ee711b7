"""How both SQL stores keep results, snapshots and jobs as rows: the columns, the
sortable ones, and each type to and from a row tuple (a record's descriptive fields as
one JSON body; buckets, model plot and influencer results one field a column, as they
are filtered and sorted by them)."""

from __future__ import annotations

from dataclasses import fields
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import orjson

from mljob_operator.engine import results
from mljob_operator.engine.persistence import (
    BUCKET_SORTS,
    INFLUENCER_SORTS,
    MODEL_PLOT_SORTS,
    RECORD_SORTS,
    SNAPSHOT_SORTS,
    JobRow,
    StoreError,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

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
RECORD_COLS = (
    "timestamp_ms, detector_index, probability, raw_score, record_score,"
    " initial_record_score, is_interim, body"
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
JOB_TABLES = ("wal", "snapshots", *RESULT_TABLES, "close_steps", "jobs")
"""Every table with a job's rows, in the order a job's deletion empties them."""
SNAPSHOT_COLS = (
    "snapshot_id, timestamp_ms, description, latest_record_ms, latest_result_ms, doc_count,"
    " size_bytes, retain, wal_seq, model_size_stats, data_counts"
)
JOB_COLS = (
    "active_snapshot_id, intake_open, close_id, close_complete, data_counts, model_size_stats,"
    " owner_uid"
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


def json_text(value: Any) -> str:
    """A JSON column's text (counts, stats, a close step's result)."""
    return orjson.dumps(value).decode()


class Flat(Generic[T]):
    """A result type kept one field a column, in its fields' order, is_interim among them;
    `texts` names its free-text fields, which a store may keep other than as text."""

    def __init__(self, cls: type[T], texts: tuple[str, ...] = ()) -> None:
        names = [f.name for f in fields(cls)]
        self._cls = cls
        self._get = attrgetter(*names)
        self._interim = names.index("is_interim")
        self._texts = tuple(names.index(n) for n in texts)
        self.texts = tuple(i + 1 for i in self._texts)
        """The free-text positions in a `row`."""

    def row(self, job_id: str, result: T) -> tuple[Any, ...]:
        """job_id and the result's columns (is_interim as a bool) to write."""
        return (job_id, *self._get(result))

    def read(self, row: tuple[Any, ...]) -> T:
        """The result from its columns (free text read back from bytes if kept so)."""
        values = list(row)
        values[self._interim] = bool(values[self._interim])
        for i in self._texts:
            value = values[i]
            if value is not None and not isinstance(value, str):
                values[i] = bytes(value).decode()
        return self._cls(*values)


BUCKET = Flat(results.BucketResult)
MODEL_PLOT = Flat(
    results.ModelPlotResult,
    ("partition_field_name", "partition_field_value", "by_field_name", "by_field_value"),
)
INFLUENCER = Flat(results.InfluencerResult, ("influencer_field_name", "influencer_field_value"))


def record_row(job_id: str, r: results.RecordResult) -> tuple[Any, ...]:
    """job_id and the RECORD_COLS of one record."""
    body = orjson.dumps(
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
    return (
        job_id,
        r.timestamp,
        r.detector_index,
        r.probability,
        r.raw_score,
        r.record_score,
        r.initial_record_score,
        r.is_interim,
        body,
    )


def record(row: tuple[Any, ...]) -> results.RecordResult:
    ts, det, prob, raw, score, initial, interim, body = row
    span, fn, fname, byn, byv, pn, pv, actual, typical, infl = orjson.loads(body)
    return results.RecordResult(
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
        influencers=tuple(results.Influence(n, tuple(v)) for n, v in infl),
    )


def snapshot_row(job_id: str, s: results.ModelSnapshot, state: bytes) -> tuple[Any, ...]:
    """job_id, the SNAPSHOT_COLS of one snapshot and its state."""
    return (
        job_id,
        s.snapshot_id,
        s.timestamp,
        s.description,
        s.latest_record_time_stamp,
        s.latest_result_time_stamp,
        s.snapshot_doc_count,
        s.size_bytes,
        s.retain,
        s.wal_seq,
        json_text(s.model_size_stats.to_dict()),
        json_text(s.data_counts.to_dict()),
        state,
    )


def snapshot(row: tuple[Any, ...]) -> results.ModelSnapshot:
    return results.ModelSnapshot(
        snapshot_id=row[0],
        timestamp=row[1],
        description=row[2],
        latest_record_time_stamp=row[3],
        latest_result_time_stamp=row[4],
        snapshot_doc_count=row[5],
        size_bytes=row[6],
        retain=bool(row[7]),
        wal_seq=row[8],
        model_size_stats=results.ModelSizeStats.from_dict(orjson.loads(row[9])),
        data_counts=results.DataCounts.from_dict(orjson.loads(row[10])),
    )


def job(job_id: str, row: tuple[Any, ...]) -> JobRow:
    """A job from its JOB_COLS."""
    return JobRow(
        job_id=job_id,
        active_snapshot_id=row[0],
        intake_open=bool(row[1]),
        close_id=row[2],
        close_complete=bool(row[3]),
        data_counts=results.DataCounts.from_dict(orjson.loads(row[4])),
        model_size_stats=results.ModelSizeStats.from_dict(orjson.loads(row[5])),
        owner_uid=row[6],
    )
