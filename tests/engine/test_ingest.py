"""Ingest: body formats, time formats and the bad-record counters of the seed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest

from mljob_operator.engine import DataFormatError, DetectorConfig, Job, JobConfig
from mljob_operator.store import Store
from tests.engine.conftest import T0, FakeClock, ndjson


def _job(store: Store, clock: FakeClock, **kw: object) -> Job:
    cfg = JobConfig(
        detectors=(DetectorConfig("mean", "v"),),
        bucket_span_s=60,
        background_persist_interval_s=None,
        **kw,  # type: ignore[arg-type]
    )
    return Job.open(store, "ingest", cfg, clock=clock)


@pytest.mark.parametrize(
    ("time_format", "stamp"),
    [
        ("epoch", lambda t: t),
        ("epoch", lambda t: float(t) + 0.25),
        ("epoch", str),
        ("epoch_ms", lambda t: t * 1000),
        ("iso8601", lambda t: datetime.fromtimestamp(t, UTC).isoformat()),
        ("iso8601", lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")),
    ],
)
def test_time_formats_give_the_same_timestamps(
    store: Store, clock: FakeClock, time_format: str, stamp: Callable[[int], object]
) -> None:
    job = _job(store, clock, time_format=time_format, time_field="ts")
    records = [{"ts": stamp(T0 + 5), "v": 1.0}, {"ts": stamp(T0 + 65), "v": 2.0}]
    counts = job.post_data(ndjson(records))
    assert counts.processed_record_count == 2
    assert counts.invalid_date_count == 0
    assert counts.earliest_record_timestamp is not None
    assert counts.earliest_record_timestamp // 1000 == T0 + 5
    assert counts.latest_record_timestamp is not None
    assert counts.latest_record_timestamp // 1000 == T0 + 65
    assert counts.bucket_count == 1


def test_ndjson_and_json_array_are_equivalent(store: Store, clock: FakeClock) -> None:
    records = [{"time": T0 + i, "v": i} for i in range(10)]
    a = _job(store, clock).post_data(ndjson(records) + b"\n\n")
    store.delete_job("ingest")
    b = _job(store, clock).post_data(orjson.dumps(records))
    assert a.processed_record_count == b.processed_record_count == 10


def test_bad_records_are_counted_not_fatal(store: Store, clock: FakeClock) -> None:
    job = _job(store, clock, latency_s=30)
    body = ndjson(
        [
            {"time": T0 + 100, "v": 1},
            {"time": "not a time", "v": 1},
            {"v": 1},
            {"time": T0 + 110},
            {"time": T0 + 101, "v": "x"},
            {"time": T0 + 85, "v": 1},
            {"time": T0 + 60, "v": 1},
        ]
    )
    counts = job.post_data(body)
    assert counts.input_record_count == 7
    assert counts.input_bytes == len(body)
    assert counts.invalid_date_count == 2
    assert counts.out_of_order_timestamp_count == 1  # T0+60 < T0+110-30
    assert counts.missing_field_count == 2  # no v, and a non-numeric v
    assert counts.processed_record_count == 4
    assert counts.last_data_time == int(clock.now * 1000)
    assert counts.latest_record_timestamp == (T0 + 110) * 1000
    assert counts.earliest_record_timestamp == (T0 + 85) * 1000


def test_a_first_body_without_any_timed_record_is_counted(store: Store, clock: FakeClock) -> None:
    job = _job(store, clock)
    counts = job.post_data(b'{"no_time": 1}\n{"time": "later", "v": 2}\n')
    assert (counts.input_record_count, counts.processed_record_count) == (2, 0)
    assert counts.invalid_date_count == 2
    counts = job.post_data(ndjson([{"time": T0, "v": 1}]))
    assert counts.processed_record_count == 1


def test_empty_buckets_are_counted(store: Store, clock: FakeClock) -> None:
    job = _job(store, clock)
    counts = job.post_data(ndjson([{"time": T0, "v": 1}, {"time": T0 + 300, "v": 1}]))
    assert counts.bucket_count == 5
    assert counts.empty_bucket_count == 4


def test_invalid_json_is_refused_and_not_logged(store: Store, clock: FakeClock) -> None:
    job = _job(store, clock)
    with pytest.raises(DataFormatError):
        job.post_data(b'{"time": 1, "v": 1}\n{nope')
    assert list(store.wal_entries("ingest", 0)) == []
    assert job.data_counts.input_record_count == 0
