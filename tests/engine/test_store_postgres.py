"""The PostgreSQL store on a real server: its schema versions, its URL, a commit the server
refuses, many jobs writing at once, and the same answers as SQLite to every query."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from devtools.postgres import PostgresCluster
from devtools.processes import free_port
from mljob_operator.engine import DetectorConfig, Job, JobConfig, StoreWriteError
from mljob_operator.engine.persistence import (
    BUCKET_SORTS,
    RECORD_SORTS,
    SNAPSHOT_SORTS,
    ResultsQuery,
    SnapshotQuery,
    Store,
)
from mljob_operator.engine.results import ModelSnapshot
from mljob_operator.settings import OperatorSettings
from mljob_operator.store import SQLiteStore, StoreError, WriteBatch, open_store
from mljob_operator.store.postgres import MIGRATIONS, PostgresStore
from tests.engine.conftest import T0, FakeClock, ndjson

DB = "mljob_tests"
CONFIG = JobConfig(
    detectors=(
        DetectorConfig("mean", "v", partition_field_name="p"),
        DetectorConfig("count"),
        DetectorConfig("high_sum", "v", by_field_name="p"),
    ),
    bucket_span_s=60,
    background_persist_interval_s=None,
)


def _schema(pg: PostgresCluster, name: str) -> tuple[str, str]:
    schema = f"{name}_{uuid.uuid4().hex[:8]}"
    return schema, pg.schema_url(schema, DB)


def _batch(job: int, n: int) -> bytes:
    spike = 40.0 if n % 7 == 3 and job % 2 == 0 else 0.0
    return ndjson(
        [
            {
                "time": T0 + n * 600 + i * 3,
                "v": float((i * (job + 3)) % 11) + (spike if i % 50 == 0 else 0.0),
                "p": f"p{(i + job) % 4}",
            }
            for i in range(200)
        ]
    )


def _feed(store: Store, job_id: str, job: int, batches: int) -> None:
    engine = Job.open(store, job_id, CONFIG, clock=FakeClock())
    for n in range(batches):
        engine.post_data(_batch(job, n))
        if n == batches // 2:
            engine.persist_background_snapshot()
    engine.flush(calc_interim=True)


def _answers(store: Store, job_id: str) -> list[object]:
    """Every listing the API offers, over every sort, direction, filter and a page."""
    out: list[object] = []
    for sorts, query in ((BUCKET_SORTS, store.query_buckets), (RECORD_SORTS, store.query_records)):
        for sort in sorts:
            for desc in (False, True):
                out.append(query(job_id, ResultsQuery(sort=sort, desc=desc, from_=3, size=17)))
        out.append(query(job_id, ResultsQuery(size=10_000)))
        out.append(query(job_id, ResultsQuery(min_score=10, exclude_interim=True, size=10_000)))
        out.append(
            query(job_id, ResultsQuery(start_ms=(T0 + 1800) * 1000, end_ms=(T0 + 4200) * 1000))
        )
    for sort in SNAPSHOT_SORTS:
        for desc in (False, True):
            count, page = store.list_snapshots(job_id, SnapshotQuery(sort=sort, desc=desc))
            out.append((count, [replace(x, wal_seq=0) for x in page]))
    row = store.get_job(job_id)
    assert row is not None
    out.append((row.data_counts, row.model_size_stats, row.intake_open))
    out.append(
        (store.latest_bucket_ms(job_id), store.count_results_before(job_id, T0 * 1000 + 3_000_000))
    )
    return out


def test_schema_is_migrated_once_by_replicas_opening_together(
    postgres_cluster: PostgresCluster,
) -> None:
    schema, url = _schema(postgres_cluster, "migrate")
    barrier = threading.Barrier(4)
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            barrier.wait(timeout=30)
            stores.append(PostgresStore(url, max_connections=2))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [s.schema_version() for s in stores] == [len(MIGRATIONS)] * 4
    stores[0].commit("j", WriteBatch(wal_kind="data", wal_payload=b"{}", received_ms=1))
    for s in stores:
        s.close()
    again = PostgresStore(url)
    assert again.schema_version() == len(MIGRATIONS)
    assert [e.payload for e in again.wal_entries("j", 0)] == [b"{}"]
    again.close()
    with psycopg.connect(postgres_cluster.url(DB)) as conn:
        rows = conn.execute(f'SELECT version FROM "{schema}".schema_version').fetchall()
    assert rows == [(len(MIGRATIONS),)]


def test_newer_schema_is_refused(postgres_cluster: PostgresCluster) -> None:
    schema, url = _schema(postgres_cluster, "newer")
    PostgresStore(url).close()
    postgres_cluster.execute(f'UPDATE "{schema}".schema_version SET version = 999', DB)
    with pytest.raises(StoreError, match="newer than this operator"):
        PostgresStore(url)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("mysql://u:secret@db:3306/mljob", "scheme is 'mysql'"),
        ("/var/lib/mljob/x.sqlite", "scheme is 'missing'"),
        ("postgresql://u:secret@db:port/mljob", "is not a URL"),
        ("postgresql://u:secret@db:5432", "names no database"),
    ],
)
def test_a_bad_store_url_is_refused_with_a_clear_error(value: str, says: str) -> None:
    with pytest.raises(ValueError, match="MLJOB_STORE_URL") as info:
        OperatorSettings.from_env({"MLJOB_STORE_URL": value})
    assert says in str(info.value)
    assert "secret" not in str(info.value)


def test_the_store_url_selects_the_store(postgres_cluster: PostgresCluster, tmp_path: Path) -> None:
    assert OperatorSettings.from_env({}).store_url is None
    assert OperatorSettings.from_env({"MLJOB_STORE_URL": " "}).store_url is None
    sqlite = open_store(tmp_path, OperatorSettings.from_env({}).store_url)
    assert isinstance(sqlite, SQLiteStore)
    assert sqlite.path == tmp_path / "mljobs.sqlite"
    sqlite.close()
    _, url = _schema(postgres_cluster, "select")
    for given in (url, url.replace("postgresql://mljob@/", "postgresql:///") + "&user=mljob"):
        settings = OperatorSettings.from_env({"MLJOB_STORE_URL": given})
        assert settings.store_url == given
        store = open_store(tmp_path, settings.store_url)
        assert isinstance(store, PostgresStore)
        store.close()
    tcp = postgres_cluster.tcp_url(DB)
    store = open_store(tmp_path, OperatorSettings.from_env({"MLJOB_STORE_URL": tcp}).store_url)
    assert isinstance(store, PostgresStore)
    store.close()


def test_an_unreachable_store_fails_at_open_without_showing_the_password(
    postgres_cluster: PostgresCluster,
) -> None:
    port = free_port()
    with pytest.raises(StoreError) as info:
        PostgresStore(f"postgresql://u:secret@127.0.0.1:{port}/db", timeout_s=2)
    message = str(info.value)
    assert f"port={port}" in message
    assert "secret" not in message
    with pytest.raises(StoreError, match='database "no_such_db" does not exist'):
        PostgresStore(postgres_cluster.url("no_such_db"), timeout_s=2)
    with pytest.raises(StoreError, match="not a valid PostgreSQL URL"):
        PostgresStore("postgresql://u:secret@/db?nonsense=1", timeout_s=2)


def test_a_commit_the_server_refuses_at_commit_time_is_not_acknowledged(
    postgres_cluster: PostgresCluster,
) -> None:
    schema, url = _schema(postgres_cluster, "refuse")
    store = PostgresStore(url)
    job = Job.open(store, "j", CONFIG, clock=FakeClock())
    job.post_data(_batch(0, 0))
    job.post_data(_batch(0, 1))
    before = (store.last_wal_seq("j"), store.query_buckets("j"), store.query_records("j"))
    counts = job.data_counts
    # Every statement of the batch succeeds; the server refuses the transaction at COMMIT.
    postgres_cluster.execute(
        f"""
        CREATE FUNCTION "{schema}".refuse() RETURNS trigger LANGUAGE plpgsql
            AS $$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$;
        CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON "{schema}".wal
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse();
        """,
        DB,
    )
    with pytest.raises(StoreWriteError, match="refused at commit"):
        job.post_data(_batch(0, 2))
    assert job.failed
    assert (store.last_wal_seq("j"), store.query_buckets("j"), store.query_records("j")) == before
    row = store.get_job("j")
    assert row is not None
    assert row.data_counts == counts
    postgres_cluster.execute(f'DROP TRIGGER refuse ON "{schema}".wal', DB)
    again = Job.open(store, "j", CONFIG, clock=FakeClock())
    assert again.data_counts == counts
    again.post_data(_batch(0, 2))
    assert again.data_counts.processed_record_count == counts.processed_record_count + 200
    store.close()


def test_concurrent_jobs_on_one_store_answer_as_sequential_runs_on_sqlite(
    postgres_cluster: PostgresCluster, tmp_path: Path
) -> None:
    jobs, batches = 6, 14
    _, url = _schema(postgres_cluster, "concurrent")
    store = PostgresStore(url, max_connections=4)
    errors: list[BaseException] = []

    def run(job: int) -> None:
        try:
            _feed(store, f"job-{job}", job, batches)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(j,)) for j in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    reference = SQLiteStore(tmp_path / "reference.sqlite")
    for job in range(jobs):
        _feed(reference, f"job-{job}", job, batches)
    assert store.list_jobs() == reference.list_jobs()
    for job in range(jobs):
        job_id = f"job-{job}"
        seqs = [e.seq for e in store.wal_entries(job_id, 0)]
        assert len(seqs) == len(list(reference.wal_entries(job_id, 0)))
        assert seqs == sorted(seqs)
        assert _snapshots_without_ids(store, job_id) == _snapshots_without_ids(reference, job_id)
        assert _answers(store, job_id) == _answers(reference, job_id)
    store.close()
    reference.close()


def _snapshots_without_ids(store: Store, job_id: str) -> list[ModelSnapshot]:
    """WAL sequence numbers are per store (PostgreSQL's are shared by all jobs)."""
    return [replace(s, wal_seq=0) for s in store.all_snapshots(job_id)]


def test_snapshots_without_records_sort_first_as_in_sqlite(
    postgres_cluster: PostgresCluster, tmp_path: Path
) -> None:
    _, url = _schema(postgres_cluster, "nulls")
    stores: list[Store] = [PostgresStore(url), SQLiteStore(tmp_path / "s.sqlite")]
    for store in stores:
        for n, latest in enumerate((5_000, None, 1_000, None)):
            snapshot = ModelSnapshot(f"s{n}", 100 * (n % 2), "", latest, latest, 1, 10, False, 0)
            store.commit("j", WriteBatch(snapshot=snapshot, snapshot_state=bytes([n]) * 3))
    pg, lite = (
        [
            [s.snapshot_id for s in store.list_snapshots("j", SnapshotQuery(sort=k, desc=d))[1]]
            for k in SNAPSHOT_SORTS
            for d in (False, True)
        ]
        for store in stores
    )
    assert pg == lite
    assert pg[SNAPSHOT_SORTS.index("latest_record_time_stamp") * 2] == ["s1", "s3", "s2", "s0"]
    assert stores[0].snapshot_state("j", "s2") == b"\x02\x02\x02"
    for store in stores:
        store.close()


def test_the_store_goes_on_after_the_server_restarts() -> None:
    with PostgresCluster() as pg:
        store = PostgresStore(pg.url(pg.create_database("restart")), max_connections=3)
        job = Job.open(store, "j", CONFIG, clock=FakeClock())
        job.post_data(_batch(0, 0))
        assert store.query_buckets("j")[0] > 0
        pg.restart()  # every pooled connection is cut, as in a failover
        job.post_data(_batch(0, 1))
        assert not job.failed
        row = store.get_job("j")
        assert row is not None
        assert row.data_counts.processed_record_count == 400
        assert len(list(store.wal_entries("j", 0))) == 2
        store.close()
