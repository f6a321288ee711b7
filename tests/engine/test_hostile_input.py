"""Hostile input is normal input: far-future dates, huge values and far flushes are
counted or refused, never modelled, and the job goes on taking normal data."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mljob_operator.engine import DataFormatError, DetectorConfig, Job, JobConfig, snapshots
from mljob_operator.engine.analyzer import (
    MAX_AHEAD_BUCKETS,
    QUIET_BUCKETS_MODELLED,
    Analyzer,
)
from mljob_operator.store import ResultsQuery, Store
from tests.engine.conftest import T0, FakeClock, ndjson

SPAN = 60


def _job(store: Store, clock: FakeClock, function: str = "mean") -> Job:
    field = None if function == "count" else "v"
    cfg = JobConfig(
        detectors=(DetectorConfig(function, field_name=field),),
        bucket_span_s=SPAN,
        background_persist_interval_s=None,
    )
    return Job.open(store, "hostile", cfg, clock=clock)


def _series(start: int, stop: int) -> bytes:
    return ndjson([{"time": T0 + b * SPAN, "v": 10.0 + b % 3} for b in range(start, stop)])


def _all_finite(store: Store) -> None:
    _, buckets = store.query_buckets("hostile", ResultsQuery(size=10_000))
    _, records = store.query_records("hostile", ResultsQuery(size=10_000))
    for b in buckets:
        assert math.isfinite(b.anomaly_score), b
    for r in records:
        values = (r.probability, r.record_score, *r.actual, *r.typical)
        assert all(math.isfinite(v) for v in values), r


@pytest.mark.timeout(20)
def test_a_record_dated_9999_is_counted_and_dropped(store: Store, clock: FakeClock) -> None:
    job = _job(store, clock, "count")
    job.post_data(_series(0, 100))
    counts = job.post_data(ndjson([{"time": 253402300799}]))
    assert counts.invalid_date_count == 1
    assert counts.latest_record_timestamp == (T0 + 99 * SPAN) * 1000
    counts = job.post_data(_series(100, 200))
    assert counts.processed_record_count == 200
    assert counts.out_of_order_timestamp_count == 0
    assert job.flush().last_finalized_bucket_end == (T0 + 199 * SPAN) * 1000


def test_the_first_body_is_bounded_too(store: Store, clock: FakeClock) -> None:
    job = _job(store, clock, "count")
    counts = job.post_data(ndjson([{"time": T0}, {"time": 253402300799}, {"time": -5}]))
    assert counts.invalid_date_count == 2
    assert counts.processed_record_count == 1


def test_a_gap_inside_the_bound_is_analysed(store: Store, clock: FakeClock) -> None:
    job = _job(store, clock, "count")
    job.post_data(_series(0, 10))
    gap = MAX_AHEAD_BUCKETS - 100
    counts = job.post_data(_series(9 + gap, 10 + gap))
    assert counts.invalid_date_count == 0
    assert counts.bucket_count >= gap


@pytest.mark.parametrize("value", [1e200, -1e200, 1e51, "1e300", "nan", "inf"])
def test_values_beyond_the_bound_are_dropped_early_and_late(
    store: Store, clock: FakeClock, value: object
) -> None:
    job = _job(store, clock)
    job.post_data(ndjson([{"time": T0 + b * SPAN, "v": 1.0} for b in range(3)]))
    counts = job.post_data(ndjson([{"time": T0 + 3 * SPAN, "v": value}]))
    assert counts.missing_field_count == 1
    job.post_data(_series(4, 300))
    counts = job.post_data(ndjson([{"time": T0 + 300 * SPAN, "v": value}]))
    assert counts.missing_field_count == 2
    job.post_data(_series(301, 400))
    job.flush(advance_time_ms=(T0 + 400 * SPAN) * 1000)
    _all_finite(store)
    reopened = Job.open(store, "other", job.config, clock=clock)
    assert reopened.data_counts.processed_record_count == 0


def test_a_huge_but_bounded_value_keeps_every_score_finite(store: Store, clock: FakeClock) -> None:
    job = _job(store, clock, "sum")
    job.post_data(ndjson([{"time": T0 + b * SPAN, "v": 1e50} for b in range(5)]))
    job.post_data(ndjson([{"time": T0 + b * SPAN, "v": -1e50} for b in range(5, 300)]))
    job.flush(advance_time_ms=(T0 + 300 * SPAN) * 1000)
    _all_finite(store)


@pytest.mark.parametrize("name", ["advanceTime", "skipTime"])
def test_far_flushes_are_refused_before_any_bucket_is_final(
    store: Store, clock: FakeClock, name: str
) -> None:
    job = _job(store, clock, "count")
    job.post_data(_series(0, 1))
    far = 253402300799000
    kwargs = {"advance_time_ms": far} if name == "advanceTime" else {"skip_time_ms": far}
    with pytest.raises(DataFormatError, match=name):
        job.flush(**kwargs)  # type: ignore[arg-type]
    counts = job.post_data(_series(1, 50))
    assert counts.processed_record_count == 50
    assert counts.out_of_order_timestamp_count == 0


MONTH = 30 * 24 * 60  # 1-minute buckets


@pytest.mark.parametrize(
    ("function", "most_steps"), [("count", QUIET_BUCKETS_MODELLED), ("mean", 0)]
)
def test_a_month_long_gap_analyses_a_bounded_number_of_buckets_one_by_one(
    store: Store,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    function: str,
    most_steps: int,
) -> None:
    job = _job(store, clock, function)
    job.post_data(_series(0, 200))
    steps: list[int] = []
    one_by_one = Analyzer._finalise_bucket

    def counted(an: Analyzer, *args: Any) -> Any:
        steps.append(1)
        return one_by_one(an, *args)

    monkeypatch.setattr(Analyzer, "_finalise_bucket", counted)
    counts = job.post_data(_series(200 + MONTH, 201 + MONTH))
    assert counts.invalid_date_count == 0
    assert counts.bucket_count == 200 + MONTH
    assert counts.empty_bucket_count == MONTH
    assert len(steps) <= most_steps + 1
    total, _ = store.query_buckets("hostile", ResultsQuery(size=1))
    assert total == 200 + MONTH, "every bucket of the gap has a result"
    monkeypatch.undo()
    job.post_data(_series(201 + MONTH, 300 + MONTH))
    _all_finite(store)


def test_a_gap_replays_to_the_same_model(store: Store, clock: FakeClock) -> None:
    job = _job(store, clock, "count")
    job.post_data(_series(0, 100))
    job.post_data(_series(100 + 3 * QUIET_BUCKETS_MODELLED, 101 + 3 * QUIET_BUCKETS_MODELLED))
    job.flush(advance_time_ms=(T0 + (200 + 6 * QUIET_BUCKETS_MODELLED) * SPAN) * 1000)
    assert job.analyzer is not None
    live = snapshots.encode(job.analyzer)
    job.release()
    again = Job.open(store, "hostile", job.config, clock=clock)
    assert again.analyzer is not None
    assert snapshots.encode(again.analyzer) == live


def test_a_skip_before_any_data_bounds_the_advance_that_comes_with_it(
    store: Store, clock: FakeClock
) -> None:
    job = _job(store, clock, "max")
    with pytest.raises(DataFormatError, match="advanceTime is"):
        job.flush(advance_time_ms=(T0 + 7) * 1000, skip_time_ms=0)
    assert job.data_counts.bucket_count == 0


def test_a_skip_behind_the_first_records_does_not_open_a_gap_back_to_it(
    store: Store, clock: FakeClock
) -> None:
    job = _job(store, clock, "sum")
    job.post_data(_series(0, 1))
    job.flush(skip_time_ms=0, advance_time_ms=0)
    counts = job.post_data(_series(5, 6))
    assert counts.bucket_count == 5, "buckets from the first record on, none from 1970"
