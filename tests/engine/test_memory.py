"""modelMemoryLimit: soft and hard limit, and allocation failures at the hard limit."""

from __future__ import annotations

from mljob_operator.engine import DetectorConfig, Job, JobConfig
from mljob_operator.engine.memory import memory_status
from mljob_operator.store import Store
from tests.engine.conftest import T0, FakeClock, ndjson


def test_memory_status_thresholds() -> None:
    assert memory_status(10, None) == "ok"
    assert memory_status(59, 100) == "ok"
    assert memory_status(60, 100) == "soft_limit"
    assert memory_status(100, 100) == "hard_limit"


def _job(store: Store, limit: int | None) -> Job:
    cfg = JobConfig(
        detectors=(DetectorConfig("count", partition_field_name="p"),),
        bucket_span_s=60,
        model_memory_limit_bytes=limit,
        background_persist_interval_s=None,
    )
    return Job.open(store, f"mem{limit}", cfg, clock=FakeClock())


def _post(job: Job, partitions: int, bucket: int) -> None:
    job.post_data(ndjson([{"time": T0 + bucket * 60, "p": f"p{i:04d}"} for i in range(partitions)]))


def test_hard_limit_stops_new_series_and_counts_failed_buckets(store: Store) -> None:
    free = _job(store, None)
    _post(free, 10, 0)
    per_series = free.model_size_stats.model_bytes / 10
    limit = int(per_series * 20)
    job = _job(store, limit)
    for bucket in range(3):
        _post(job, 50, bucket)
    job.post_data(ndjson([{"time": T0 + 3 * 60, "p": "p0000"}]))
    stats = job.model_size_stats
    assert stats.memory_status == "hard_limit"
    assert stats.model_bytes_memory_limit == limit
    assert 15 <= stats.total_partition_field_count <= 50
    assert job.analyzer is not None
    modelled = job.analyzer.detectors[0].model.size
    assert modelled < 25
    assert stats.bucket_allocation_failures_count == 3
    assert stats.peak_model_bytes >= stats.model_bytes
    assert job.data_counts.processed_record_count == 151


def test_soft_limit_still_models_new_series(store: Store) -> None:
    free = _job(store, None)
    _post(free, 10, 0)
    limit = int(free.model_size_stats.model_bytes / 10 * 15)
    job = _job(store, limit)
    _post(job, 10, 0)
    job.post_data(ndjson([{"time": T0 + 60, "p": "x"}]))
    stats = job.model_size_stats
    assert stats.memory_status == "soft_limit"
    assert stats.bucket_allocation_failures_count == 0


def test_at_the_hard_limit_new_series_are_not_even_stored(store: Store) -> None:
    free = _job(store, None)
    _post(free, 10, 0)
    limit = int(free.model_size_stats.model_bytes / 10 * 20)
    job = _job(store, limit)
    for bucket in range(3):
        _post(job, 50, bucket)
    assert job.model_size_stats.memory_status == "hard_limit"
    assert job.analyzer is not None
    table = job.analyzer.table("p")
    labels, cached = len(table.labels), len(table.ids)
    hostile = [{"time": T0 + 4 * 60, "p": f"new-{i}"} for i in range(5000)]
    counts = job.post_data(ndjson(hostile))
    assert counts.processed_record_count == 150 + 5000, "the records are counted"
    assert (len(table.labels), len(table.ids)) == (labels, cached), "nothing of them is kept"
    assert job.analyzer.detectors[0].model.size < 25
    job.flush(advance_time_ms=(T0 + 5 * 60) * 1000)
    assert job.model_size_stats.bucket_allocation_failures_count == 4, "and counted"
