"""The stores: SQLite schema versions (an old file opens), and on both stores queries,
paging, concurrent reads and job deletion."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from mljob_operator import engine_to_api
from mljob_operator.engine import DetectorConfig, Job, JobConfig
from mljob_operator.engine.persistence import BucketSummary
from mljob_operator.engine.results import BucketResult
from mljob_operator.store import ResultsQuery, SQLiteStore, Store, StoreError, WriteBatch
from mljob_operator.store.sqlite import MIGRATIONS
from tests.engine.conftest import T0, FakeClock, ndjson


def _buckets(n: int) -> list[BucketResult]:
    return [
        BucketResult(
            T0 * 1000 + i * 60_000, 60, float(i % 7), float(i % 7), float(i % 7), i == n - 1, i
        )
        for i in range(n)
    ]


def test_schema_is_versioned_and_reopening_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = SQLiteStore(path)
    assert store.schema_version() == len(MIGRATIONS)
    store.commit("j", WriteBatch(buckets=_buckets(3)))
    store.close()
    store = SQLiteStore(path)
    assert store.schema_version() == len(MIGRATIONS)
    assert store.query_buckets("j")[0] == 3
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    store.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 999")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError):
        SQLiteStore(path)


def test_bucket_queries_filter_sort_and_page(store: Store) -> None:
    store.commit("j", WriteBatch(buckets=_buckets(30)))
    count, page = store.query_buckets(
        "j", ResultsQuery(min_score=5, sort="anomaly_score", desc=True, from_=3, size=3)
    )
    assert count == 8  # scores 5 and 6 among 30 buckets
    assert [b.anomaly_score for b in page] == [6.0, 5.0, 5.0]
    count, page = store.query_buckets(
        "j", ResultsQuery(start_ms=(T0 + 600) * 1000, end_ms=(T0 + 1200) * 1000)
    )
    assert count == 10
    assert page[0].timestamp == (T0 + 600) * 1000
    assert store.query_buckets("j", ResultsQuery(exclude_interim=True))[0] == 29
    assert engine_to_api.bucket(page[0]).model_dump(by_alias=True) == {
        "timestamp": (T0 + 600) * 1000,
        "bucketSpan": 60,
        "anomalyScore": 3.0,
        "initialAnomalyScore": 3.0,
        "isInterim": False,
        "eventCount": 10,
    }
    with pytest.raises(StoreError):
        store.query_buckets("j", ResultsQuery(sort="drop table"))


def test_readers_see_committed_data_while_a_job_writes(store: Store) -> None:
    cfg = JobConfig(
        detectors=(DetectorConfig("count"),), bucket_span_s=60, background_persist_interval_s=None
    )
    job = Job.open(store, "rw", cfg, clock=FakeClock())
    done = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not done.is_set():
                count, _ = store.query_buckets("rw", ResultsQuery(size=1))
                seen.append(count)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for n in range(40):
        job.post_data(ndjson([{"time": T0 + n * 60 + i} for i in range(50)]))
    done.set()
    reader.join()
    assert not errors
    assert seen == sorted(seen)
    assert store.query_buckets("rw")[0] == 39


def test_delete_job_removes_every_row(store: Store) -> None:
    cfg = JobConfig(
        detectors=(DetectorConfig("count"),), bucket_span_s=60, background_persist_interval_s=None
    )
    job = Job.open(store, "gone", cfg, clock=FakeClock())
    job.post_data(ndjson([{"time": T0 + i * 30} for i in range(100)]))
    job.persist_snapshot("c")
    job.post_data(ndjson([{"time": T0 + 3000 + i} for i in range(3)]))
    store.delete_job("gone")
    assert store.get_job("gone") is None
    assert store.query_buckets("gone")[0] == 0
    assert store.all_snapshots("gone") == []
    assert list(store.wal_entries("gone", 0)) == []
    assert store.close_step("gone", "c", "persist_snapshot") is None


def test_a_file_of_the_first_schema_version_opens_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    old = sqlite3.connect(path)
    old.executescript(MIGRATIONS[0])
    old.executescript(
        "CREATE TABLE schema_version (version INTEGER NOT NULL);"
        " INSERT INTO schema_version VALUES (1);"
        " INSERT INTO jobs (job_id, active_snapshot_id, data_counts)"
        """ VALUES ('old', NULL, '{"processed_record_count": 7}');"""
        " INSERT INTO wal (job_id, kind, payload, received_ms) VALUES ('old', 'data', x'7b7d', 5);"
        f" INSERT INTO buckets VALUES ('old', {T0 * 1000}, 60, 12.5, 20.0, 3.0, 0, 7);"
    )
    old.commit()
    old.close()
    store = SQLiteStore(path)
    assert store.schema_version() == len(MIGRATIONS)
    row = store.get_job("old")
    assert row is not None
    assert row.owner_uid is None
    assert row.data_counts.processed_record_count == 7
    assert [(e.kind, e.payload) for e in store.wal_entries("old", 0)] == [("data", b"{}")]
    assert store.query_buckets("old")[1][0].anomaly_score == 12.5
    store.commit("old", WriteBatch(owner_uid="uid-1"))
    assert store.get_job("old") == replace(row, owner_uid="uid-1")
    store.close()


def test_the_log_reads_back_in_order_from_any_point(store: Store) -> None:
    for n in range(75):
        batch = WriteBatch(wal_kind="data", wal_payload=f"{n}".encode(), received_ms=n)
        assert store.commit("log", batch).wal_seq == store.last_wal_seq("log")
        store.commit("other", WriteBatch(wal_kind="flush", wal_payload=b"x", received_ms=n))
    entries = list(store.wal_entries("log", 0))
    assert [e.payload for e in entries] == [f"{n}".encode() for n in range(75)]
    assert [e.received_ms for e in entries] == list(range(75))
    after = entries[40].seq
    assert [e.payload for e in store.wal_entries("log", after)] == [
        f"{n}".encode() for n in range(41, 75)
    ]
    store.commit("log", WriteBatch(truncate_wal_through=after))
    assert [e.seq for e in store.wal_entries("log", 0)] == [e.seq for e in entries[41:]]
    assert store.last_wal_seq("log") == entries[-1].seq


def test_bucket_summaries_of_many_jobs_match_their_own_queries(store: Store) -> None:
    store.commit("ns/a", WriteBatch(buckets=_buckets(30)))
    store.commit("ns/b", WriteBatch(buckets=_buckets(3)))  # its highest is its interim bucket
    store.commit("ns/it's", WriteBatch(buckets=_buckets(1)))
    store.commit("other/a", WriteBatch(buckets=_buckets(5)))
    store.ensure_job("ns/empty")
    asked = ["ns/a", "ns/b", "ns/it's", "ns/empty", "ns/unknown"]
    summaries = store.bucket_summaries(asked)
    assert summaries == {
        "ns/a": BucketSummary(30, 6.0),
        "ns/b": BucketSummary(3, 2.0),
        "ns/it's": BucketSummary(1, 0.0),
    }, "one row a job with buckets; jobs not asked about and jobs without buckets left out"
    top = ResultsQuery(sort="anomaly_score", desc=True, size=1)
    for job_id, summary in summaries.items():
        count, best = store.query_buckets(job_id, top)
        assert (count, best[0].anomaly_score) == (summary.count, summary.max_score)
    assert store.bucket_summaries([]) == {}
    many = [f"ns/j{i}" for i in range(500)]
    assert store.bucket_summaries(many) == {}, "a page of the largest size is one statement"
