"""flush: interim results, advance_time and skip_time as in the seed service."""

from __future__ import annotations

import pytest

from mljob_operator.engine import DataFormatError, DetectorConfig, Job, JobClosedError, JobConfig
from mljob_operator.engine.analyzer import MAX_AHEAD_BUCKETS
from mljob_operator.store import ResultsQuery, Store
from tests.engine.conftest import T0, FakeClock, ndjson

SPAN = 60


def _job(store: Store, clock: FakeClock) -> Job:
    cfg = JobConfig(
        detectors=(DetectorConfig("count"),),
        bucket_span_s=SPAN,
        background_persist_interval_s=None,
    )
    return Job.open(store, "flush", cfg, clock=clock)


def _steady(start: int, stop: int, per_bucket: int = 10) -> bytes:
    return ndjson(
        [{"time": T0 + b * SPAN + i} for b in range(start, stop) for i in range(per_bucket)]
    )


def test_interim_results_are_replaced_by_final_ones(store: Store, clock: FakeClock) -> None:
    job = _job(store, clock)
    job.post_data(_steady(0, 100))
    job.post_data(ndjson([{"time": T0 + 100 * SPAN + i} for i in range(60)]))
    last = (T0 + 100 * SPAN) * 1000
    result = job.flush(calc_interim=True)
    assert result.last_finalized_bucket_end == last
    _, interim = store.query_buckets("flush", ResultsQuery(start_ms=last))
    assert [(b.timestamp, b.is_interim, b.event_count) for b in interim] == [(last, True, 60)]
    assert interim[0].anomaly_score > 0
    _, irecs = store.query_records("flush", ResultsQuery(start_ms=last))
    assert irecs
    assert all(r.is_interim for r in irecs)
    count, _ = store.query_buckets("flush", ResultsQuery(start_ms=last, exclude_interim=True))
    assert count == 0

    job.post_data(ndjson([{"time": T0 + 101 * SPAN}]))
    _, final = store.query_buckets("flush", ResultsQuery(start_ms=last))
    assert [(b.timestamp, b.is_interim) for b in final[:1]] == [(last, False)]
    assert all(not b.is_interim for b in final[:1])
    _, frecs = store.query_records("flush", ResultsQuery(start_ms=last))
    assert frecs
    assert not any(r.is_interim for r in frecs)
    assert job.data_counts.bucket_count == 101


def test_advance_time_finalises_and_skip_time_discards(store: Store, clock: FakeClock) -> None:
    job = _job(store, clock)
    job.post_data(_steady(0, 20))
    result = job.flush(advance_time_ms=(T0 + 25 * SPAN) * 1000)
    assert result.last_finalized_bucket_end == (T0 + 25 * SPAN) * 1000
    assert job.data_counts.bucket_count == 25
    assert job.data_counts.empty_bucket_count == 5
    counts = job.post_data(ndjson([{"time": T0 + 24 * SPAN}]))
    assert counts.out_of_order_timestamp_count == 1

    job.post_data(_steady(25, 27))
    result = job.flush(skip_time_ms=(T0 + 40 * SPAN) * 1000)
    assert result.last_finalized_bucket_end == (T0 + 40 * SPAN) * 1000
    assert job.data_counts.bucket_count == 26  # bucket 26 was skipped, never modelled
    count, _ = store.query_buckets("flush", ResultsQuery(start_ms=(T0 + 26 * SPAN) * 1000))
    assert count == 0


def test_flush_and_post_refused_after_stop_intake(store: Store, clock: FakeClock) -> None:
    job = _job(store, clock)
    job.stop_intake("c1")
    with pytest.raises(JobClosedError):
        job.post_data(_steady(0, 1))
    with pytest.raises(JobClosedError):
        job.flush()


def test_advance_too_far_is_refused_unless_the_gap_is_skipped(
    store: Store, clock: FakeClock
) -> None:
    job = _job(store, clock)
    job.post_data(_steady(0, 10))
    far = (T0 + (MAX_AHEAD_BUCKETS + 20) * SPAN) * 1000
    with pytest.raises(DataFormatError, match="use skipTime"):
        job.flush(advance_time_ms=far)
    assert job.data_counts.bucket_count == 9, "a refused advance changes nothing"
    with pytest.raises(DataFormatError, match="skipTime is"):
        job.flush(advance_time_ms=far, skip_time_ms=far - 5 * SPAN * 1000)
    near = (T0 + (MAX_AHEAD_BUCKETS - 20) * SPAN) * 1000
    job.flush(advance_time_ms=near, skip_time_ms=near - 5 * SPAN * 1000)
    assert job.flush().last_finalized_bucket_end == near
