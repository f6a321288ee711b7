"""Close housekeeping: idempotent steps, one snapshot per close, close/reopen equivalence."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mljob_operator.engine import DetectorConfig, Job, JobConfig, JobNotClosedError
from mljob_operator.engine.job import revert_to_snapshot
from mljob_operator.store import ActiveSnapshotError, ResultsQuery, Store
from tests.engine.conftest import T0, FakeClock, StoreBackend, daily_two_hosts, ndjson

SPAN = 300
STEPS = ("stop_intake", "flush_buffers", "finalize_results", "persist_snapshot", "prune_history")

CONFIG = JobConfig(
    detectors=(
        DetectorConfig("mean", "v", partition_field_name="host"),
        DetectorConfig("high_count", by_field_name="host"),
        DetectorConfig("median", "v"),
    ),
    influencers=("host",),
    bucket_span_s=SPAN,
    background_persist_interval_s=None,
)


def _data(start: int, stop: int) -> bytes:
    return ndjson(
        [
            {"time": T0 + b * SPAN + i * 60, "v": v + (30 if b % 397 == 0 else 0), "host": host}
            for b, i, host, v in daily_two_hosts(start, stop)
        ]
    )


def _close(job: Job, close_id: str) -> dict[str, Any]:
    return {step: getattr(job, step)(close_id) for step in STEPS}


def _results(store: Store, job_id: str) -> tuple[list[tuple[object, ...]], ...]:
    q = ResultsQuery(size=100_000)
    _, buckets = store.query_buckets(job_id, q)
    _, records = store.query_records(job_id, q)
    return (
        [
            (
                b.timestamp,
                b.event_count,
                round(b.raw_score, 6),
                round(b.anomaly_score, 3),
                round(b.initial_anomaly_score, 3),
            )
            for b in buckets
        ],
        [
            (
                r.timestamp,
                r.detector_index,
                r.partition_field_value,
                r.by_field_value,
                round(r.raw_score, 6),
                round(r.record_score, 3),
                round(r.initial_record_score, 3),
                r.actual,
                r.typical,
            )
            for r in records
        ],
    )


def test_close_steps_are_idempotent_and_make_one_snapshot(store: Store, clock: FakeClock) -> None:
    job = Job.open(store, "c", CONFIG, clock=clock)
    job.post_data(_data(0, 100))
    first = _close(job, "close-1")
    assert first["flush_buffers"] == 8  # the last bucket's records
    assert first["finalize_results"] == 1
    clock.now += 10
    assert _close(job, "close-1") == first
    assert len(store.all_snapshots("c")) == 1
    row = store.get_job("c")
    assert row is not None
    assert row.active_snapshot_id == first["persist_snapshot"].snapshot_id
    assert job.data_counts.bucket_count == 100


@pytest.mark.parametrize("crash_after", range(len(STEPS)))
def test_close_resumes_after_a_crash_with_one_snapshot(
    store_backend: StoreBackend, tmp_path: Path, clock: FakeClock, crash_after: int
) -> None:
    store = store_backend.open(tmp_path)
    job = Job.open(store, "c", CONFIG, clock=clock)
    job.post_data(_data(0, 100))
    for step in STEPS[: crash_after + 1]:
        getattr(job, step)("close-1")
    store.close()  # the process dies; nothing in memory survives
    clock.now += 60
    store = store_backend.open(tmp_path)
    job = Job.open(store, "c", CONFIG, clock=clock)
    outcome = _close(job, "close-1")
    assert outcome["flush_buffers"] == 8
    assert outcome["finalize_results"] == 1
    assert len(store.all_snapshots("c")) == 1
    assert job.data_counts.bucket_count == 100
    count, _ = store.query_buckets("c")
    assert count == 100
    store.close()


def test_close_and_reopen_gives_the_same_model_and_results(store: Store, clock: FakeClock) -> None:
    whole = Job.open(store, "whole", CONFIG, clock=clock)
    for start in range(0, 1200, 200):
        whole.post_data(_data(start, start + 200))
    _close(whole, "end")

    half = Job.open(store, "half", CONFIG, clock=clock)
    half.post_data(_data(0, 600))
    _close(half, "mid")
    half.release()
    half = Job.open(store, "half", CONFIG, clock=clock)
    for start in range(600, 1200, 200):
        half.post_data(_data(start, start + 200))
    _close(half, "end")

    assert _results(store, "whole") == _results(store, "half")
    # the bodies differ only in how many newlines join them
    assert replace(whole.data_counts, input_bytes=0) == replace(half.data_counts, input_bytes=0)
    assert whole.analyzer is not None
    assert half.analyzer is not None
    for a, b in zip(whole.analyzer.detectors, half.analyzer.detectors, strict=True):
        np.testing.assert_allclose(a.model.rows(), b.model.rows(), rtol=1e-9, atol=1e-12)


def test_snapshots_revert_and_delete(store: Store, clock: FakeClock) -> None:
    job = Job.open(store, "r", CONFIG, clock=clock)
    job.post_data(_data(0, 300))
    first = job.persist_snapshot("c1")
    clock.now += 3600
    job.post_data(_data(300, 600))
    with pytest.raises(JobNotClosedError):
        revert_to_snapshot(store, "r", first.snapshot_id)
    _close(job, "c2")
    active = job.active_snapshot_id
    assert active is not None
    assert active != first.snapshot_id
    with pytest.raises(ActiveSnapshotError):
        store.delete_snapshot("r", active)
    job.release()

    reverted = revert_to_snapshot(store, "r", first.snapshot_id, delete_intervening_results=True)
    assert reverted.snapshot_id == first.snapshot_id
    count, _ = store.query_buckets("r")
    assert count == 299  # bucket 299 was still open when the first snapshot was taken
    job = Job.open(store, "r", CONFIG, clock=clock)
    assert job.data_counts.latest_record_timestamp == first.latest_record_time_stamp
    assert job.active_snapshot_id == first.snapshot_id
    store.delete_snapshot("r", active)
    assert [s.snapshot_id for s in store.all_snapshots("r")] == [first.snapshot_id]
    retained = store.set_snapshot_retain("r", first.snapshot_id, True)
    assert retained.retain


def test_prune_history_applies_snapshot_and_results_retention(
    store: Store, clock: FakeClock
) -> None:
    cfg = JobConfig(
        detectors=(DetectorConfig("count"),),
        bucket_span_s=3600,
        results_retention_days=2,
        model_snapshot_retention_days=2,
        daily_model_snapshot_retention_after_days=1,
        background_persist_interval_s=None,
    )
    job = Job.open(store, "p", cfg, clock=clock)
    ids = []
    for day in range(5):
        for hour in (0, 12):
            job.post_data(ndjson([{"time": T0 + (day * 24 + hour) * 3600 + i} for i in range(3)]))
            ids.append(job.persist_background_snapshot().snapshot_id)
            clock.now += 12 * 3600
    result = job.prune_history("c")
    kept = [s.snapshot_id for s in store.all_snapshots("p")]
    # newest at day 4.5: < day 2.5 goes; days 2.5..3.5 keep the first per 24 h from day 2.5
    assert kept == [ids[5], ids[7], ids[8], ids[9]]
    assert result.snapshots_deleted == 6
    assert result.results_deleted > 0
    _, buckets = store.query_buckets("p", ResultsQuery(size=1000))
    latest = max(b.timestamp for b in buckets)
    assert min(b.timestamp for b in buckets) == latest - 2 * 86_400_000
