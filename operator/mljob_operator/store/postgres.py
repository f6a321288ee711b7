"""The shared store: PostgreSQL (psycopg 3 with a connection pool), for several replicas.

The same contract as the SQLite store: `commit` is one transaction and returns only after
it has committed, so an acknowledged post survives anything but the database. Snapshots
are bytea; results are sorted, filtered and paged in SQL exactly as SQLite does it (NULLs
first ascending, text in byte order, ties broken by time and insertion order). The
schema lives in the connection's schema (the first of its `search_path`), versioned in
`schema_version` and migrated forward on open under an advisory lock, so replicas
starting together migrate once. Each connection is checked as it leaves the pool, so after
a database restart or failover the next operation gets a fresh one instead of an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from mljob_operator.engine.persistence import (
    ActiveSnapshotError,
    CommitResult,
    JobRow,
    ModelPlotQuery,
    NotFoundError,
    ResultsQuery,
    SnapshotQuery,
    StoreError,
    WalEntry,
    WriteBatch,
)
from mljob_operator.engine.results import (
    BucketResult,
    DataCounts,
    InfluencerResult,
    ModelPlotResult,
    ModelSizeStats,
    ModelSnapshot,
    RecordResult,
)
from mljob_operator.store.rows import (
    BUCKET_COLS,
    BUCKET_SORT,
    INFLUENCER_COLS,
    INFLUENCER_SORT,
    MODEL_PLOT_COLS,
    MODEL_PLOT_SORT,
    RECORD_SORT,
    RESULT_TABLES,
    SNAPSHOT_COLS,
    SNAPSHOT_SORT,
    bucket,
    influencer,
    influencer_row,
    model_plot,
    model_plot_row,
    record,
    record_body,
    snapshot,
    sort_column,
)

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        job_id TEXT COLLATE "C" PRIMARY KEY,
        active_snapshot_id TEXT COLLATE "C",
        intake_open BOOLEAN NOT NULL DEFAULT TRUE,
        close_id TEXT,
        close_complete BOOLEAN NOT NULL DEFAULT FALSE,
        data_counts TEXT NOT NULL DEFAULT '{}',
        model_size_stats TEXT NOT NULL DEFAULT '{}',
        owner_uid TEXT
    );
    CREATE TABLE wal (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        job_id TEXT COLLATE "C" NOT NULL,
        kind TEXT NOT NULL,
        payload BYTEA NOT NULL,
        received_ms BIGINT NOT NULL
    );
    CREATE INDEX wal_job ON wal (job_id, seq);
    CREATE TABLE snapshots (
        job_id TEXT COLLATE "C" NOT NULL,
        snapshot_id TEXT COLLATE "C" NOT NULL,
        timestamp_ms BIGINT NOT NULL,
        description TEXT NOT NULL,
        latest_record_ms BIGINT,
        latest_result_ms BIGINT,
        doc_count BIGINT NOT NULL,
        size_bytes BIGINT NOT NULL,
        retain BOOLEAN NOT NULL DEFAULT FALSE,
        wal_seq BIGINT NOT NULL,
        model_size_stats TEXT NOT NULL,
        data_counts TEXT NOT NULL,
        state BYTEA NOT NULL,
        PRIMARY KEY (job_id, snapshot_id)
    );
    CREATE INDEX snapshots_time ON snapshots (job_id, timestamp_ms);
    CREATE TABLE buckets (
        job_id TEXT COLLATE "C" NOT NULL,
        timestamp_ms BIGINT NOT NULL,
        bucket_span BIGINT NOT NULL,
        anomaly_score DOUBLE PRECISION NOT NULL,
        initial_anomaly_score DOUBLE PRECISION NOT NULL,
        raw_score DOUBLE PRECISION NOT NULL,
        is_interim BOOLEAN NOT NULL,
        event_count BIGINT NOT NULL,
        PRIMARY KEY (job_id, timestamp_ms)
    );
    CREATE INDEX buckets_score ON buckets (job_id, anomaly_score);
    CREATE TABLE records (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        job_id TEXT COLLATE "C" NOT NULL,
        timestamp_ms BIGINT NOT NULL,
        detector_index INTEGER NOT NULL,
        probability DOUBLE PRECISION NOT NULL,
        raw_score DOUBLE PRECISION NOT NULL,
        record_score DOUBLE PRECISION NOT NULL,
        initial_record_score DOUBLE PRECISION NOT NULL,
        is_interim BOOLEAN NOT NULL,
        body BYTEA NOT NULL
    );
    CREATE INDEX records_time ON records (job_id, timestamp_ms);
    CREATE INDEX records_score ON records (job_id, record_score);
    CREATE TABLE close_steps (
        job_id TEXT COLLATE "C" NOT NULL,
        close_id TEXT COLLATE "C" NOT NULL,
        step TEXT COLLATE "C" NOT NULL,
        result TEXT NOT NULL,
        PRIMARY KEY (job_id, close_id, step)
    );
    """,
    """
    CREATE TABLE model_plot (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        job_id TEXT COLLATE "C" NOT NULL,
        timestamp_ms BIGINT NOT NULL,
        bucket_span BIGINT NOT NULL,
        detector_index INTEGER NOT NULL,
        partition_field_name BYTEA,
        partition_field_value BYTEA,
        by_field_name BYTEA,
        by_field_value BYTEA,
        actual DOUBLE PRECISION NOT NULL,
        model_median DOUBLE PRECISION NOT NULL,
        model_lower DOUBLE PRECISION NOT NULL,
        model_upper DOUBLE PRECISION NOT NULL,
        is_interim BOOLEAN NOT NULL
    );
    CREATE INDEX model_plot_time ON model_plot (job_id, timestamp_ms);
    CREATE TABLE influencers (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        job_id TEXT COLLATE "C" NOT NULL,
        timestamp_ms BIGINT NOT NULL,
        bucket_span BIGINT NOT NULL,
        field_name BYTEA NOT NULL,
        field_value BYTEA NOT NULL,
        probability DOUBLE PRECISION NOT NULL,
        raw_score DOUBLE PRECISION NOT NULL,
        influencer_score DOUBLE PRECISION NOT NULL,
        initial_influencer_score DOUBLE PRECISION NOT NULL,
        is_interim BOOLEAN NOT NULL
    );
    CREATE INDEX influencers_time ON influencers (job_id, timestamp_ms);
    CREATE INDEX influencers_score ON influencers (job_id, influencer_score);
    """,
)

MIGRATION_LOCK = 0x6D6C6A6F62  # pg_advisory_xact_lock key: "mljob"
WAL_PAGE = 32
PLOT_TEXT = (3, 4, 5, 6)
INFLUENCER_TEXT = (2, 3)
"""Positions in MODEL_PLOT_COLS and INFLUENCER_COLS of the field names and values, kept
as UTF-8 bytea: a value may hold NUL, which PostgreSQL text cannot, and bytea
compares in byte order as SQLite does."""
"""WAL entries fetched per round trip on replay (a body may be up to the API's limit)."""

_RECORD_COLS = (
    "timestamp_ms, detector_index, probability, raw_score, record_score,"
    " initial_record_score, is_interim, body"
)
_TABLES = ("wal", "snapshots", *RESULT_TABLES, "close_steps", "jobs")


class PostgresStore:
    """Store implementation over a PostgreSQL database (see module docstring)."""

    def __init__(self, url: str, max_connections: int = 16, timeout_s: float = 30.0) -> None:
        self.url = url
        where = describe(url)
        try:
            psycopg.connect(url, connect_timeout=max(2, int(timeout_s))).close()
        except psycopg.Error as err:
            raise StoreError(f"cannot connect to the PostgreSQL store {where}: {err}") from None
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            timeout=timeout_s,
            kwargs={"autocommit": True},
            check=ConnectionPool.check_connection,
            open=False,
            name="mljob-store",
        )
        try:
            self._pool.open(wait=True, timeout=timeout_s)
            self._migrate()
        except BaseException:
            self._pool.close()
            raise

    def close(self) -> None:
        self._pool.close()

    def _migrate(self) -> None:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = int(row[0]) if row else 0
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            if version > len(MIGRATIONS):
                raise StoreError(f"database schema {version} is newer than this operator")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                conn.execute(script)
                conn.execute("UPDATE schema_version SET version = %s", (number,))

    def schema_version(self) -> int:
        return int(self._one("SELECT version FROM schema_version", ())[0])

    def _one(self, sql: str, args: tuple[Any, ...] | list[Any]) -> tuple[Any, ...]:
        with self._pool.connection() as conn:
            row = conn.execute(sql, args).fetchone()
        assert row is not None
        return row

    def _maybe(self, sql: str, args: tuple[Any, ...] | list[Any]) -> tuple[Any, ...] | None:
        with self._pool.connection() as conn:
            return conn.execute(sql, args).fetchone()

    def _all(self, sql: str, args: tuple[Any, ...] | list[Any]) -> list[tuple[Any, ...]]:
        with self._pool.connection() as conn:
            return conn.execute(sql, args).fetchall()

    # ---- jobs --------------------------------------------------------------------------
    def ensure_job(self, job_id: str) -> JobRow:
        with self._pool.connection() as conn:
            conn.execute("INSERT INTO jobs (job_id) VALUES (%s) ON CONFLICT DO NOTHING", (job_id,))
        row = self.get_job(job_id)
        assert row is not None
        return row

    def get_job(self, job_id: str) -> JobRow | None:
        row = self._maybe(
            "SELECT active_snapshot_id, intake_open, close_id, close_complete, data_counts,"
            " model_size_stats, owner_uid FROM jobs WHERE job_id = %s",
            (job_id,),
        )
        if row is None:
            return None
        return JobRow(
            job_id=job_id,
            active_snapshot_id=row[0],
            intake_open=bool(row[1]),
            close_id=row[2],
            close_complete=bool(row[3]),
            data_counts=DataCounts.from_dict(orjson.loads(row[4])),
            model_size_stats=ModelSizeStats.from_dict(orjson.loads(row[5])),
            owner_uid=row[6],
        )

    def list_jobs(self) -> list[str]:
        return [r[0] for r in self._all("SELECT job_id FROM jobs ORDER BY job_id", ())]

    def delete_job(self, job_id: str) -> None:
        with self._pool.connection() as conn, conn.transaction():
            for table in _TABLES:
                conn.execute(f"DELETE FROM {table} WHERE job_id = %s", (job_id,))

    # ---- the write path ----------------------------------------------------------------
    def commit(self, job_id: str, batch: WriteBatch) -> CommitResult:
        """Applies the batch in one transaction; returns once PostgreSQL has committed it
        (leaving the `with` block commits, and raises if the commit fails)."""
        with self._pool.connection() as conn, conn.transaction():
            return _apply(conn, job_id, batch)

    # ---- replay and close bookkeeping ---------------------------------------------------
    def wal_entries(self, job_id: str, after_seq: int) -> Iterator[WalEntry]:
        last = after_seq
        while True:
            rows = self._all(
                "SELECT seq, kind, payload, received_ms FROM wal WHERE job_id = %s AND seq > %s"
                " ORDER BY seq LIMIT %s",
                (job_id, last, WAL_PAGE),
            )
            for seq, kind, payload, received in rows:
                yield WalEntry(int(seq), kind, bytes(payload), int(received))
            if len(rows) < WAL_PAGE:
                return
            last = int(rows[-1][0])

    def last_wal_seq(self, job_id: str) -> int:
        return int(self._one("SELECT MAX(seq) FROM wal WHERE job_id = %s", (job_id,))[0] or 0)

    def close_step(self, job_id: str, close_id: str, step: str) -> dict[str, Any] | None:
        row = self._maybe(
            "SELECT result FROM close_steps WHERE job_id = %s AND close_id = %s AND step = %s",
            (job_id, close_id, step),
        )
        return None if row is None else dict(orjson.loads(row[0]))

    # ---- snapshots ---------------------------------------------------------------------
    def get_snapshot(self, job_id: str, snapshot_id: str) -> ModelSnapshot | None:
        row = self._maybe(
            f"SELECT {SNAPSHOT_COLS} FROM snapshots WHERE job_id = %s AND snapshot_id = %s",
            (job_id, snapshot_id),
        )
        return None if row is None else snapshot(row)

    def snapshot_state(self, job_id: str, snapshot_id: str) -> bytes:
        row = self._maybe(
            "SELECT state FROM snapshots WHERE job_id = %s AND snapshot_id = %s",
            (job_id, snapshot_id),
        )
        if row is None:
            raise NotFoundError(f"no model snapshot {snapshot_id!r} for job {job_id!r}")
        return bytes(row[0])

    def list_snapshots(
        self, job_id: str, query: SnapshotQuery | None = None
    ) -> tuple[int, list[ModelSnapshot]]:
        q = query or SnapshotQuery()
        where, args = _window(job_id, q.start_ms, q.end_ms)
        if q.snapshot_id is not None:
            where.append("snapshot_id = %s")
            args.append(q.snapshot_id)
        clause = " AND ".join(where)
        order = f"{sort_column(q.sort, SNAPSHOT_SORT)} {_direction(q.desc)}"
        with self._pool.connection() as conn:
            count = conn.execute(f"SELECT COUNT(*) FROM snapshots WHERE {clause}", args).fetchone()
            rows = conn.execute(
                f"SELECT {SNAPSHOT_COLS} FROM snapshots WHERE {clause}"
                f" ORDER BY {order}, snapshot_id LIMIT %s OFFSET %s",
                (*args, q.size, q.from_),
            ).fetchall()
        assert count is not None
        return int(count[0]), [snapshot(x) for x in rows]

    def all_snapshots(self, job_id: str) -> list[ModelSnapshot]:
        rows = self._all(
            f"SELECT {SNAPSHOT_COLS} FROM snapshots WHERE job_id = %s"
            " ORDER BY timestamp_ms, snapshot_id",
            (job_id,),
        )
        return [snapshot(x) for x in rows]

    def set_snapshot_retain(self, job_id: str, snapshot_id: str, retain: bool) -> ModelSnapshot:
        with self._pool.connection() as conn:
            cur = conn.execute(
                "UPDATE snapshots SET retain = %s WHERE job_id = %s AND snapshot_id = %s",
                (retain, job_id, snapshot_id),
            )
        if cur.rowcount == 0:
            raise NotFoundError(f"no model snapshot {snapshot_id!r} for job {job_id!r}")
        found = self.get_snapshot(job_id, snapshot_id)
        assert found is not None
        return found

    def delete_snapshot(self, job_id: str, snapshot_id: str) -> None:
        if self.get_snapshot(job_id, snapshot_id) is None:
            raise NotFoundError(f"no model snapshot {snapshot_id!r} for job {job_id!r}")
        self.commit(job_id, WriteBatch(delete_snapshots=[snapshot_id]))

    # ---- results -----------------------------------------------------------------------
    def _query(
        self,
        table: str,
        columns: str,
        score: str,
        sorts: dict[str, str],
        job_id: str,
        q: ResultsQuery,
    ) -> tuple[int, list[tuple[Any, ...]]]:
        where, args = _window(job_id, q.start_ms, q.end_ms)
        split = q if isinstance(q, ModelPlotQuery) else ModelPlotQuery()
        for cond, value in (
            (f"{score} >= %s", q.min_score),
            ("partition_field_value = %s", _bytes(split.partition_field_value)),
            ("by_field_value = %s", _bytes(split.by_field_value)),
        ):
            if value is not None:
                where.append(cond)
                args.append(value)
        if q.exclude_interim:
            where.append("NOT is_interim")
        clause = " AND ".join(where)
        order = f"{sort_column(q.sort, sorts)} {_direction(q.desc)}"
        tie = "timestamp_ms" if table == "buckets" else "timestamp_ms, id"
        with self._pool.connection() as conn:
            count = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {clause}", args).fetchone()
            rows = conn.execute(
                f"SELECT {columns} FROM {table} WHERE {clause}"
                f" ORDER BY {order}, {tie} LIMIT %s OFFSET %s",
                (*args, q.size, q.from_),
            ).fetchall()
        assert count is not None
        return int(count[0]), rows

    def query_buckets(
        self, job_id: str, query: ResultsQuery | None = None
    ) -> tuple[int, list[BucketResult]]:
        count, rows = self._query(
            "buckets", BUCKET_COLS, "anomaly_score", BUCKET_SORT, job_id, query or ResultsQuery()
        )
        return count, [bucket(r) for r in rows]

    def query_records(
        self, job_id: str, query: ResultsQuery | None = None
    ) -> tuple[int, list[RecordResult]]:
        count, rows = self._query(
            "records", _RECORD_COLS, "record_score", RECORD_SORT, job_id, query or ResultsQuery()
        )
        return count, [record(r) for r in rows]

    def query_model_plot(
        self, job_id: str, query: ModelPlotQuery | None = None
    ) -> tuple[int, list[ModelPlotResult]]:
        count, rows = self._query(
            "model_plot",
            MODEL_PLOT_COLS,
            "actual",
            MODEL_PLOT_SORT,
            job_id,
            query or ModelPlotQuery(),
        )
        return count, [model_plot(_texts(r, PLOT_TEXT, 0)) for r in rows]

    def query_influencers(
        self, job_id: str, query: ResultsQuery | None = None
    ) -> tuple[int, list[InfluencerResult]]:
        count, rows = self._query(
            "influencers",
            INFLUENCER_COLS,
            "influencer_score",
            INFLUENCER_SORT,
            job_id,
            query or ResultsQuery(),
        )
        return count, [influencer(_texts(r, INFLUENCER_TEXT, 0)) for r in rows]

    def latest_bucket_ms(self, job_id: str) -> int | None:
        row = self._one("SELECT MAX(timestamp_ms) FROM buckets WHERE job_id = %s", (job_id,))
        return None if row[0] is None else int(row[0])

    def count_results_before(self, job_id: str, before_ms: int) -> int:
        counts = " + ".join(
            f"(SELECT COUNT(*) FROM {table} WHERE job_id = %s AND timestamp_ms < %s)"
            for table in RESULT_TABLES
        )
        row = self._one(f"SELECT {counts}", (job_id, before_ms) * len(RESULT_TABLES))
        return int(row[0])


def describe(url: str) -> str:
    """The URL's user, host, port and database, never its password (for messages)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as err:
        raise StoreError(f"MLJOB_STORE_URL is not a valid PostgreSQL URL: {err}") from None
    shown = {k: params[k] for k in ("user", "host", "port", "dbname") if params.get(k)}
    return " ".join(f"{k}={v}" for k, v in shown.items()) or "(libpq defaults)"


def _bytes(value: str | None) -> bytes | None:
    return None if value is None else value.encode()


def _texts(row: tuple[Any, ...], positions: tuple[int, ...], offset: int) -> tuple[Any, ...]:
    """`row` with the columns at `positions` (each + `offset`: 1 for a row to write, which
    starts with job_id) as bytes if they are str (to write), as str if bytes (as read)."""
    out = list(row)
    for i in positions:
        j = i + offset
        v = out[j]
        if isinstance(v, str):
            out[j] = v.encode()
        elif v is not None:
            out[j] = bytes(v).decode()
    return tuple(out)


def _direction(desc: bool) -> str:
    """SQLite's order: NULL is the smallest value."""
    return "DESC NULLS LAST" if desc else "ASC NULLS FIRST"


def _window(job_id: str, start_ms: int | None, end_ms: int | None) -> tuple[list[str], list[Any]]:
    where: list[str] = ["job_id = %s"]
    args: list[Any] = [job_id]
    for cond, value in (("timestamp_ms >= %s", start_ms), ("timestamp_ms < %s", end_ms)):
        if value is not None:
            where.append(cond)
            args.append(value)
    return where, args


# The parts of one commit, in the order `WriteBatch` documents.


def _apply(conn: psycopg.Connection[Any], job_id: str, b: WriteBatch) -> CommitResult:
    conn.execute("INSERT INTO jobs (job_id) VALUES (%s) ON CONFLICT DO NOTHING", (job_id,))
    seq = None
    if b.wal_kind is not None:
        row = conn.execute(
            "INSERT INTO wal (job_id, kind, payload, received_ms) VALUES (%s, %s, %s, %s)"
            " RETURNING seq",
            (job_id, b.wal_kind, b.wal_payload, b.received_ms),
        ).fetchone()
        assert row is not None
        seq = int(row[0])
    _write_results(conn, job_id, b)
    if b.rescore is not None:
        _rescore(conn, job_id, b)
    _update_job_row(conn, job_id, b)
    _insert_snapshot(conn, job_id, b)
    results_deleted, snapshots_deleted = _delete(conn, job_id, b)
    if b.close_step is not None:
        conn.execute(
            "INSERT INTO close_steps (job_id, close_id, step, result) VALUES (%s, %s, %s, %s)",
            (
                job_id,
                b.close_step.close_id,
                b.close_step.step,
                orjson.dumps(b.close_step.result).decode(),
            ),
        )
    return CommitResult(seq, results_deleted, snapshots_deleted)


def _write_results(conn: psycopg.Connection[Any], job_id: str, b: WriteBatch) -> None:
    cur = conn.cursor()
    if b.clear_interim:
        for table in RESULT_TABLES:
            cur.execute(f"DELETE FROM {table} WHERE job_id = %s AND is_interim", (job_id,))
    if b.buckets:
        stamps = [x.timestamp for x in b.buckets]
        for table in RESULT_TABLES[1:]:
            cur.execute(
                f"DELETE FROM {table} WHERE job_id = %s AND timestamp_ms = ANY(%s)",
                (job_id, stamps),
            )
        cur.executemany(
            f"INSERT INTO buckets (job_id, {BUCKET_COLS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (job_id, timestamp_ms) DO UPDATE"
            " SET bucket_span = EXCLUDED.bucket_span, anomaly_score = EXCLUDED.anomaly_score,"
            " initial_anomaly_score = EXCLUDED.initial_anomaly_score,"
            " raw_score = EXCLUDED.raw_score, is_interim = EXCLUDED.is_interim,"
            " event_count = EXCLUDED.event_count",
            [
                (
                    job_id,
                    x.timestamp,
                    x.bucket_span,
                    x.anomaly_score,
                    x.initial_anomaly_score,
                    x.raw_score,
                    x.is_interim,
                    x.event_count,
                )
                for x in b.buckets
            ],
        )
    if b.records:
        with cur.copy(f"COPY records (job_id, {_RECORD_COLS}) FROM STDIN") as copy:
            for r in b.records:
                copy.write_row(
                    (
                        job_id,
                        r.timestamp,
                        r.detector_index,
                        r.probability,
                        r.raw_score,
                        r.record_score,
                        r.initial_record_score,
                        r.is_interim,
                        record_body(r),
                    )
                )
    _write_plot_and_influencers(cur, job_id, b)


def _write_plot_and_influencers(cur: psycopg.Cursor[Any], job_id: str, b: WriteBatch) -> None:
    if b.model_plot:
        with cur.copy(f"COPY model_plot (job_id, {MODEL_PLOT_COLS}) FROM STDIN") as copy:
            for m in b.model_plot:
                copy.write_row(_texts(model_plot_row(job_id, m), PLOT_TEXT, 1))
    if b.influencers:
        with cur.copy(f"COPY influencers (job_id, {INFLUENCER_COLS}) FROM STDIN") as copy:
            for i in b.influencers:
                copy.write_row(_texts(influencer_row(job_id, i), INFLUENCER_TEXT, 1))


def _rescore(conn: psycopg.Connection[Any], job_id: str, b: WriteBatch) -> None:
    rs = b.rescore
    assert rs is not None
    for table, key, column, score in (
        ("buckets", "timestamp_ms", "anomaly_score", rs.bucket_score),
        ("records", "id", "record_score", rs.record_score),
        ("influencers", "id", "influencer_score", rs.record_score),
    ):
        rows = conn.execute(
            f"SELECT {key}, raw_score FROM {table} WHERE job_id = %s AND timestamp_ms >= %s"
            " AND NOT is_interim AND raw_score > %s",
            (job_id, rs.since_ms, rs.min_raw),
        ).fetchall()
        if rows:
            scores = score(np.array([r[1] for r in rows], dtype=np.float64)).tolist()
            conn.execute(
                f"UPDATE {table} AS t SET {column} = u.score"
                " FROM unnest(%s::bigint[], %s::double precision[]) AS u(key, score)"
                f" WHERE t.job_id = %s AND t.{key} = u.key",
                ([int(r[0]) for r in rows], scores, job_id),
            )


def _update_job_row(conn: psycopg.Connection[Any], job_id: str, b: WriteBatch) -> None:
    sets: list[str] = []
    args: list[Any] = []
    for column, value in (
        (
            "data_counts",
            None if b.data_counts is None else orjson.dumps(b.data_counts.to_dict()).decode(),
        ),
        (
            "model_size_stats",
            None
            if b.model_size_stats is None
            else orjson.dumps(b.model_size_stats.to_dict()).decode(),
        ),
        ("intake_open", b.intake_open),
        ("close_id", b.close_id),
        ("close_complete", b.close_complete),
        ("active_snapshot_id", b.activate_snapshot),
        ("owner_uid", b.owner_uid),
    ):
        if value is not None:
            sets.append(f"{column} = %s")
            args.append(value)
    if sets:
        conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE job_id = %s", (*args, job_id))


def _insert_snapshot(conn: psycopg.Connection[Any], job_id: str, b: WriteBatch) -> None:
    if b.snapshot is None:
        return
    s = b.snapshot
    conn.execute(
        f"INSERT INTO snapshots (job_id, {SNAPSHOT_COLS}, state)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
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
            orjson.dumps(s.model_size_stats.to_dict()).decode(),
            orjson.dumps(s.data_counts.to_dict()).decode(),
            b.snapshot_state or b"",
        ),
    )


def _delete(conn: psycopg.Connection[Any], job_id: str, b: WriteBatch) -> tuple[int, int]:
    """WAL truncation, snapshots and results the batch deletes: (results, snapshots)."""
    if b.truncate_wal_through is not None:
        conn.execute(
            "DELETE FROM wal WHERE job_id = %s AND seq <= %s", (job_id, b.truncate_wal_through)
        )
    snapshots_deleted = 0
    if b.delete_snapshots:
        row = conn.execute(
            "SELECT active_snapshot_id FROM jobs WHERE job_id = %s", (job_id,)
        ).fetchone()
        active = None if row is None else row[0]
        if active in b.delete_snapshots:
            raise ActiveSnapshotError(f"snapshot {active} is the active model snapshot")
        cur = conn.execute(
            "DELETE FROM snapshots WHERE job_id = %s AND snapshot_id = ANY(%s)",
            (job_id, list(b.delete_snapshots)),
        )
        snapshots_deleted = cur.rowcount
    results_deleted = 0
    for op, bound in (("<", b.delete_results_before_ms), (">", b.delete_results_after_ms)):
        if bound is not None:
            for table in RESULT_TABLES:
                cur = conn.execute(
                    f"DELETE FROM {table} WHERE job_id = %s AND timestamp_ms {op} %s",
                    (job_id, bound),
                )
                results_deleted += cur.rowcount
    return results_deleted, snapshots_deleted
