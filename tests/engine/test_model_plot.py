"""Model plot and influencer results: the band, the cap, switching on an open job, and the
same rows after close/reopen, a crash replay, interim flushes and retention (both stores)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mljob_operator.engine import DetectorConfig, Job, JobConfig
from mljob_operator.engine.model_plot import MODEL_PLOT_SERIES_PER_BUCKET
from mljob_operator.store import ModelPlotQuery, ResultsQuery, Store
from tests.engine.conftest import T0, FakeClock, StoreBackend, daily_two_hosts, ndjson

SPAN = 300
SPIKE = 500
ALL = ModelPlotQuery(size=100_000)

CONFIG = JobConfig(
    detectors=(
        DetectorConfig("mean", "v", partition_field_name="host"),
        DetectorConfig("count"),
    ),
    influencers=("host", "user"),
    bucket_span_s=SPAN,
    background_persist_interval_s=None,
    model_plot_enabled=True,
)


def _data(start: int, stop: int) -> bytes:
    records = []
    for b, i, host, base in daily_two_hosts(start, stop):
        spike = b == SPIKE and host == "b"
        user = "mallory" if spike else "alice" if i % 2 else "bob"
        value = base + 60 if spike else base
        records.append({"time": T0 + b * SPAN + i * 60, "v": value, "host": host, "user": user})
    return ndjson(records)


def _plot(store: Store, job_id: str) -> list[tuple[object, ...]]:
    _, rows = store.query_model_plot(job_id, ALL)
    return [
        (
            m.timestamp,
            m.detector_index,
            m.partition_field_value,
            m.actual,
            round(m.model_median, 9),
            round(m.model_lower, 9),
            round(m.model_upper, 9),
            m.is_interim,
        )
        for m in rows
    ]


def _influencers(store: Store, job_id: str) -> list[tuple[object, ...]]:
    _, rows = store.query_influencers(job_id, ResultsQuery(size=100_000))
    return [
        (
            i.timestamp,
            i.influencer_field_name,
            i.influencer_field_value,
            i.probability,
            round(i.influencer_score, 3),
            round(i.initial_influencer_score, 3),
        )
        for i in rows
    ]


def _close(job: Job, close_id: str) -> None:
    for step in ("stop_intake", "flush_buffers", "finalize_results", "persist_snapshot"):
        getattr(job, step)(close_id)


def test_the_band_holds_the_median_and_the_spike_falls_outside(
    store: Store, clock: FakeClock
) -> None:
    job = Job.open(store, "m", CONFIG, clock=clock)
    job.post_data(_data(0, 600))
    job.finalize_results("end")
    count, rows = store.query_model_plot("m", ALL)
    assert count == len(rows) == 600 * 3  # two hosts of the mean, the count
    for m in rows:
        assert m.model_lower <= m.model_median <= m.model_upper
        assert m.bucket_span == SPAN
        assert not m.is_interim
    spike = [
        m
        for m in rows
        if m.timestamp == (T0 + SPIKE * SPAN) * 1000 and m.partition_field_value == "b"
    ]
    assert len(spike) == 1
    assert spike[0].actual > spike[0].model_upper
    assert spike[0].partition_field_name == "host"
    warm = [m for m in rows if m.timestamp > (T0 + 300 * SPAN) * 1000 and m.detector_index == 0]
    inside = sum(m.model_lower <= m.actual <= m.model_upper for m in warm)
    assert inside >= 0.85 * len(warm)
    counts = [m for m in rows if m.detector_index == 1]
    assert all(m.partition_field_value is None and m.model_lower >= 0 for m in counts)

    n_b, only_b = store.query_model_plot(
        "m", ModelPlotQuery(partition_field_value="b", start_ms=spike[0].timestamp, size=1)
    )
    assert n_b == 600 - SPIKE
    assert only_b[0].actual == spike[0].actual


def test_influencers_name_the_spike_scored_like_its_record(store: Store, clock: FakeClock) -> None:
    job = Job.open(store, "i", CONFIG, clock=clock)
    job.post_data(_data(0, 600))
    job.finalize_results("end")
    at = (T0 + SPIKE * SPAN) * 1000
    _, records = store.query_records("i", ResultsQuery(start_ms=at, end_ms=at + 1))
    _, found = store.query_influencers("i", ResultsQuery(start_ms=at, end_ms=at + 1, size=100))
    by_value = {(i.influencer_field_name, i.influencer_field_value): i for i in found}
    assert ("user", "mallory") in by_value
    assert ("host", "b") in by_value
    mallory = by_value["user", "mallory"]
    worst = min(records, key=lambda r: r.probability)
    assert mallory.probability == worst.probability
    assert mallory.influencer_score == worst.record_score
    assert mallory.initial_influencer_score == worst.initial_record_score
    assert mallory.influencer_score > 50
    assert not mallory.is_interim

    top_n, top = store.query_influencers(
        "i", ResultsQuery(min_score=50, sort="influencer_score", desc=True, size=1)
    )
    assert top_n >= 1
    assert top[0].influencer_score >= 50


def test_off_by_default_and_switched_on_an_open_job(store: Store, clock: FakeClock) -> None:
    job = Job.open(store, "s", replace(CONFIG, model_plot_enabled=False), clock=clock)
    job.post_data(_data(0, 100))
    assert store.query_model_plot("s", ALL)[0] == 0
    job.set_model_plot(True)
    job.post_data(_data(100, 200))
    _, rows = store.query_model_plot("s", ALL)
    assert min(m.timestamp for m in rows) == (T0 + 99 * SPAN) * 1000  # the bucket still open
    job.set_model_plot(False)
    job.post_data(_data(200, 300))
    assert max(m.timestamp for m in store.query_model_plot("s", ALL)[1]) < (T0 + 200 * SPAN) * 1000


def test_at_most_the_cap_of_series_a_bucket(store: Store, clock: FakeClock) -> None:
    cfg = JobConfig(
        detectors=(DetectorConfig("count", by_field_name="user"),),
        bucket_span_s=SPAN,
        background_persist_interval_s=None,
        model_plot_enabled=True,
    )
    job = Job.open(store, "cap", cfg, clock=clock)
    users = MODEL_PLOT_SERIES_PER_BUCKET + 50
    job.post_data(
        ndjson(
            [{"time": T0 + b * SPAN, "user": f"u{u:03}"} for b in range(3) for u in range(users)]
        )
    )
    job.finalize_results("end")
    _, rows = store.query_model_plot("cap", ALL)
    per_bucket = [sum(m.timestamp == (T0 + b * SPAN) * 1000 for m in rows) for b in range(3)]
    assert per_bucket == [MODEL_PLOT_SERIES_PER_BUCKET] * 3
    assert sorted({m.by_field_value for m in rows}) == [
        f"u{u:03}" for u in range(MODEL_PLOT_SERIES_PER_BUCKET)
    ]


def test_interim_rows_make_way_for_final_ones(store: Store, clock: FakeClock) -> None:
    job = Job.open(store, "f", CONFIG, clock=clock)
    job.post_data(_data(0, 50))
    job.flush(calc_interim=True)
    interim = [m for m in store.query_model_plot("f", ALL)[1] if m.is_interim]
    assert {m.timestamp for m in interim} == {(T0 + 49 * SPAN) * 1000}
    assert len(interim) == 3
    job.post_data(_data(50, 51))
    rows = store.query_model_plot("f", ALL)[1]
    assert not any(m.is_interim for m in rows)
    assert sum(m.timestamp == (T0 + 49 * SPAN) * 1000 for m in rows) == 3
    excluded, _ = store.query_model_plot("f", ModelPlotQuery(exclude_interim=True))
    assert excluded == len(rows)


def test_the_same_rows_after_close_reopen_and_crash_replay(
    store_backend: StoreBackend, tmp_path: Path, clock: FakeClock
) -> None:
    store = store_backend.open(tmp_path)
    whole = Job.open(store, "whole", CONFIG, clock=clock)
    for start in range(0, 900, 100):
        whole.post_data(_data(start, start + 100))
    _close(whole, "end")

    split = Job.open(store, "split", CONFIG, clock=clock)
    for start in range(0, 300, 100):
        split.post_data(_data(start, start + 100))
    _close(split, "mid")
    split.release()
    split = Job.open(store, "split", CONFIG, clock=clock)
    for start in range(300, 600, 100):
        split.post_data(_data(start, start + 100))
    store.close()  # killed: the model since the snapshot lives only in the log

    store = store_backend.open(tmp_path)
    split = Job.open(store, "split", CONFIG, clock=clock)
    for start in range(600, 900, 100):
        split.post_data(_data(start, start + 100))
    _close(split, "end")

    assert _plot(store, "whole") == _plot(store, "split")
    assert _influencers(store, "whole") == _influencers(store, "split")
    assert len(_plot(store, "whole")) == 900 * 3
    store.close()


def _counts(store: Store, job_id: str) -> list[int]:
    q = ResultsQuery(size=0)
    return [
        store.query_buckets(job_id, q)[0],
        store.query_records(job_id, q)[0],
        store.query_model_plot(job_id, ModelPlotQuery(size=0))[0],
        store.query_influencers(job_id, q)[0],
    ]


def test_retention_and_deletion_take_model_plot_and_influencers(
    store: Store, clock: FakeClock
) -> None:
    cfg = replace(CONFIG, results_retention_days=1)
    job = Job.open(store, "r", cfg, clock=clock)
    job.post_data(_data(0, 600))
    job.finalize_results("c")
    before = _counts(store, "r")
    result = job.prune_history("c")
    after = _counts(store, "r")
    assert all(a < b for a, b in zip(after, before, strict=True))
    assert result.results_deleted == sum(before) - sum(after)
    _, plot = store.query_model_plot("r", ALL)
    latest = store.latest_bucket_ms("r")
    assert latest is not None
    assert min(m.timestamp for m in plot) == latest - 86_400_000
    store.delete_job("r")
    assert _counts(store, "r") == [0, 0, 0, 0]


def test_any_split_value_is_stored_and_matched(store: Store, clock: FakeClock) -> None:
    """NUL (which PostgreSQL text cannot hold) and non-ASCII values round-trip and filter;
    influencer values sort in byte order on both stores."""
    hosts = ("a\x00b", "ünï", "a", "Z")
    cfg = JobConfig(
        detectors=(DetectorConfig("count", partition_field_name="host"),),
        influencers=("host",),
        bucket_span_s=SPAN,
        background_persist_interval_s=None,
        model_plot_enabled=True,
    )
    job = Job.open(store, "nul", cfg, clock=clock)
    records = [
        {"time": T0 + b * SPAN + i, "host": h}
        for b in range(30)
        for i in range(3 if b != 25 else 40)
        for h in hosts
    ]
    job.post_data(ndjson(records))
    job.finalize_results("end")
    _, rows = store.query_model_plot("nul", ALL)
    assert {m.partition_field_value for m in rows} == set(hosts)
    for h in hosts:
        count, only = store.query_model_plot("nul", ModelPlotQuery(partition_field_value=h))
        assert count == 30
        assert {m.partition_field_value for m in only} == {h}
    at = (T0 + 25 * SPAN) * 1000
    _, found = store.query_influencers(
        "nul", ResultsQuery(start_ms=at, end_ms=at + 1, sort="influencer_field_value")
    )
    assert [i.influencer_field_value for i in found] == sorted(hosts, key=str.encode)
