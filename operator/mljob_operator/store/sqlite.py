"""The embedded default store: one SQLite file for every job of an operator.

WAL journal mode lets the HTTP API read while a job writes; synchronous=FULL makes a
commit durable before `post_data` acknowledges it. One writer connection is serialised by
a lock; each reading thread gets its own connection. The schema is versioned in
`schema_version` and migrated forward on open.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

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
        job_id TEXT PRIMARY KEY,
        active_snapshot_id TEXT,
        intake_open INTEGER NOT NULL DEFAULT 1,
        close_id TEXT,
        close_complete INTEGER NOT NULL DEFAULT 0,
        data_counts TEXT NOT NULL DEFAULT '{}',
        model_size_stats TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE wal (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        payload BLOB NOT NULL,
        received_ms INTEGER NOT NULL
    );
    CREATE INDEX wal_job ON wal (job_id, seq);
    CREATE TABLE snapshots (
        job_id TEXT NOT NULL,
        snapshot_id TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        description TEXT NOT NULL,
        latest_record_ms INTEGER,
        latest_result_ms INTEGER,
        doc_count INTEGER NOT NULL,
        size_bytes INTEGER NOT NULL,
        retain INTEGER NOT NULL DEFAULT 0,
        wal_seq INTEGER NOT NULL,
        model_size_stats TEXT NOT NULL,
        data_counts TEXT NOT NULL,
        state BLOB NOT NULL,
        PRIMARY KEY (job_id, snapshot_id)
    );
    CREATE INDEX snapshots_time ON snapshots (job_id, timestamp_ms);
    CREATE TABLE buckets (
        job_id TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        bucket_span INTEGER NOT NULL,
        anomaly_score REAL NOT NULL,
        initial_anomaly_score REAL NOT NULL,
        raw_score REAL NOT NULL,
        is_interim INTEGER NOT NULL,
        event_count INTEGER NOT NULL,
        PRIMARY KEY (job_id, timestamp_ms)
    ) WITHOUT ROWID;
    CREATE INDEX buckets_score ON buckets (job_id, anomaly_score);
    CREATE TABLE records (
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        detector_index INTEGER NOT NULL,
        probability REAL NOT NULL,
        raw_score REAL NOT NULL,
        record_score REAL NOT NULL,
        initial_record_score REAL NOT NULL,
        is_interim INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX records_time ON records (job_id, timestamp_ms);
    CREATE INDEX records_score ON records (job_id, record_score);
    CREATE TABLE close_steps (
        job_id TEXT NOT NULL,
        close_id TEXT NOT NULL,
        step TEXT NOT NULL,
        result TEXT NOT NULL,
        PRIMARY KEY (job_id, close_id, step)
    ) WITHOUT ROWID;
    """,
    """
    ALTER TABLE jobs ADD COLUMN owner_uid TEXT
    """,
    """
    CREATE TABLE model_plot (
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        bucket_span INTEGER NOT NULL,
        detector_index INTEGER NOT NULL,
        partition_field_name TEXT,
        partition_field_value TEXT,
        by_field_name TEXT,
        by_field_value TEXT,
        actual REAL NOT NULL,
        model_median REAL NOT NULL,
        model_lower REAL NOT NULL,
        model_upper REAL NOT NULL,
        is_interim INTEGER NOT NULL
    );
    CREATE INDEX model_plot_time ON model_plot (job_id, timestamp_ms);
    CREATE TABLE influencers (
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        bucket_span INTEGER NOT NULL,
        field_name TEXT NOT NULL,
        field_value TEXT NOT NULL,
        probability REAL NOT NULL,
        raw_score REAL NOT NULL,
        influencer_score REAL NOT NULL,
        initial_influencer_score REAL NOT NULL,
        is_interim INTEGER NOT NULL
    );
    CREATE INDEX influencers_time ON influencers (job_id, timestamp_ms);
    CREATE INDEX influencers_score ON influencers (job_id, influencer_score)
    """,
)


class SQLiteStore:
    """Store implementation over one SQLite database file (see module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._writer = self._connect()
        self._migrate()

    # ---- connections -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._writer.close()

    def _migrate(self) -> None:
        with self._lock:
            w = self._writer
            w.execute("BEGIN IMMEDIATE")
            try:
                w.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                row = w.execute("SELECT version FROM schema_version").fetchone()
                version = row[0] if row else 0
                if row is None:
                    w.execute("INSERT INTO schema_version (version) VALUES (0)")
                if version > len(MIGRATIONS):
                    raise StoreError(f"database schema {version} is newer than this operator")
                for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                    for statement in script.split(";"):
                        if statement.strip():
                            w.execute(statement)
                    w.execute("UPDATE schema_version SET version = ?", (number,))
                w.execute("COMMIT")
            except BaseException:
                w.execute("ROLLBACK")
                raise

    def schema_version(self) -> int:
        return int(self._reader().execute("SELECT version FROM schema_version").fetchone()[0])

    # ---- jobs --------------------------------------------------------------------------
    def ensure_job(self, job_id: str) -> JobRow:
        with self._lock:
            self._writer.execute("INSERT OR IGNORE INTO jobs (job_id) VALUES (?)", (job_id,))
        row = self.get_job(job_id)
        assert row is not None
        return row

    def get_job(self, job_id: str) -> JobRow | None:
        row = (
            self._reader()
            .execute(
                "SELECT active_snapshot_id, intake_open, close_id, close_complete, data_counts,"
                " model_size_stats, owner_uid FROM jobs WHERE job_id = ?",
                (job_id,),
            )
            .fetchone()
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
        rows = self._reader().execute("SELECT job_id FROM jobs ORDER BY job_id").fetchall()
        return [r[0] for r in rows]

    def delete_job(self, job_id: str) -> None:
        with self._lock:
            w = self._writer
            w.execute("BEGIN IMMEDIATE")
            try:
                for table in ("wal", "snapshots", *RESULT_TABLES, "close_steps", "jobs"):
                    w.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))
                w.execute("COMMIT")
            except BaseException:
                w.execute("ROLLBACK")
                raise

    # ---- the write path ----------------------------------------------------------------
    def commit(self, job_id: str, batch: WriteBatch) -> CommitResult:
        with self._lock:
            w = self._writer
            w.execute("BEGIN IMMEDIATE")
            try:
                result = self._apply(w, job_id, batch)
                w.execute("COMMIT")
            except BaseException:
                w.execute("ROLLBACK")
                raise
        return result

    def _apply(self, w: sqlite3.Connection, job_id: str, b: WriteBatch) -> CommitResult:
        w.execute("INSERT OR IGNORE INTO jobs (job_id) VALUES (?)", (job_id,))
        seq = _append_wal(w, job_id, b)
        _write_results(w, job_id, b)
        if b.rescore is not None:
            self._rescore(w, job_id, b)
        _update_job_row(w, job_id, b)
        _insert_snapshot(w, job_id, b)
        results_deleted, snapshots_deleted = _delete(w, job_id, b)
        _record_step(w, job_id, b)
        return CommitResult(seq, results_deleted, snapshots_deleted)

    def _rescore(self, w: sqlite3.Connection, job_id: str, b: WriteBatch) -> None:
        rs = b.rescore
        assert rs is not None
        for table, key, column, score in (
            ("buckets", "timestamp_ms", "anomaly_score", rs.bucket_score),
            ("records", "id", "record_score", rs.record_score),
            ("influencers", "id", "influencer_score", rs.record_score),
        ):
            rows = w.execute(
                f"SELECT {key}, raw_score FROM {table} WHERE job_id = ? AND timestamp_ms >= ?"
                " AND is_interim = 0 AND raw_score > ?",
                (job_id, rs.since_ms, rs.min_raw),
            ).fetchall()
            if rows:
                scores = score(np.array([r[1] for r in rows], dtype=np.float64)).tolist()
                w.executemany(
                    f"UPDATE {table} SET {column} = ? WHERE job_id = ? AND {key} = ?",
                    [(s, job_id, r[0]) for s, r in zip(scores, rows, strict=True)],
                )

    # ---- replay and close bookkeeping ---------------------------------------------------
    def wal_entries(self, job_id: str, after_seq: int) -> Iterator[WalEntry]:
        cur = self._reader().execute(
            "SELECT seq, kind, payload, received_ms FROM wal WHERE job_id = ? AND seq > ?"
            " ORDER BY seq",
            (job_id, after_seq),
        )
        for seq, kind, payload, received in cur:
            yield WalEntry(seq, kind, bytes(payload), received)

    def last_wal_seq(self, job_id: str) -> int:
        row = (
            self._reader()
            .execute("SELECT MAX(seq) FROM wal WHERE job_id = ?", (job_id,))
            .fetchone()
        )
        return int(row[0] or 0)

    def close_step(self, job_id: str, close_id: str, step: str) -> dict[str, Any] | None:
        row = (
            self._reader()
            .execute(
                "SELECT result FROM close_steps WHERE job_id = ? AND close_id = ? AND step = ?",
                (job_id, close_id, step),
            )
            .fetchone()
        )
        return None if row is None else dict(orjson.loads(row[0]))

    # ---- snapshots ---------------------------------------------------------------------
    def get_snapshot(self, job_id: str, snapshot_id: str) -> ModelSnapshot | None:
        row = (
            self._reader()
            .execute(
                f"SELECT {SNAPSHOT_COLS} FROM snapshots WHERE job_id = ? AND snapshot_id = ?",
                (job_id, snapshot_id),
            )
            .fetchone()
        )
        return None if row is None else snapshot(row)

    def snapshot_state(self, job_id: str, snapshot_id: str) -> bytes:
        row = (
            self._reader()
            .execute(
                "SELECT state FROM snapshots WHERE job_id = ? AND snapshot_id = ?",
                (job_id, snapshot_id),
            )
            .fetchone()
        )
        if row is None:
            raise NotFoundError(f"no model snapshot {snapshot_id!r} for job {job_id!r}")
        return bytes(row[0])

    def list_snapshots(
        self, job_id: str, query: SnapshotQuery | None = None
    ) -> tuple[int, list[ModelSnapshot]]:
        query = query or SnapshotQuery()
        where: list[str] = ["job_id = ?"]
        args: list[Any] = [job_id]
        if query.snapshot_id is not None:
            where.append("snapshot_id = ?")
            args.append(query.snapshot_id)
        if query.start_ms is not None:
            where.append("timestamp_ms >= ?")
            args.append(query.start_ms)
        if query.end_ms is not None:
            where.append("timestamp_ms < ?")
            args.append(query.end_ms)
        clause = " AND ".join(where)
        order = sort_column(query.sort, SNAPSHOT_SORT)
        r = self._reader()
        count = r.execute(f"SELECT COUNT(*) FROM snapshots WHERE {clause}", args).fetchone()[0]
        rows = r.execute(
            f"SELECT {SNAPSHOT_COLS} FROM snapshots WHERE {clause}"
            f" ORDER BY {order} {'DESC' if query.desc else 'ASC'}, snapshot_id LIMIT ? OFFSET ?",
            (*args, query.size, query.from_),
        ).fetchall()
        return int(count), [snapshot(x) for x in rows]

    def all_snapshots(self, job_id: str) -> list[ModelSnapshot]:
        rows = (
            self._reader()
            .execute(
                f"SELECT {SNAPSHOT_COLS} FROM snapshots WHERE job_id = ?"
                " ORDER BY timestamp_ms, snapshot_id",
                (job_id,),
            )
            .fetchall()
        )
        return [snapshot(x) for x in rows]

    def set_snapshot_retain(self, job_id: str, snapshot_id: str, retain: bool) -> ModelSnapshot:
        with self._lock:
            cur = self._writer.execute(
                "UPDATE snapshots SET retain = ? WHERE job_id = ? AND snapshot_id = ?",
                (int(retain), job_id, snapshot_id),
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
        where: list[str] = ["job_id = ?"]
        args: list[Any] = [job_id]
        split = q if isinstance(q, ModelPlotQuery) else ModelPlotQuery()
        for cond, value in (
            ("timestamp_ms >= ?", q.start_ms),
            ("timestamp_ms < ?", q.end_ms),
            (f"{score} >= ?", q.min_score),
            ("partition_field_value = ?", split.partition_field_value),
            ("by_field_value = ?", split.by_field_value),
        ):
            if value is not None:
                where.append(cond)
                args.append(value)
        if q.exclude_interim:
            where.append("is_interim = 0")
        clause = " AND ".join(where)
        order = sort_column(q.sort, sorts)
        r = self._reader()
        count = r.execute(f"SELECT COUNT(*) FROM {table} WHERE {clause}", args).fetchone()[0]
        tie = "timestamp_ms" if table == "buckets" else "timestamp_ms, id"
        rows = r.execute(
            f"SELECT {columns} FROM {table} WHERE {clause}"
            f" ORDER BY {order} {'DESC' if q.desc else 'ASC'}, {tie} LIMIT ? OFFSET ?",
            (*args, q.size, q.from_),
        ).fetchall()
        return int(count), rows

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
            "records",
            "timestamp_ms, detector_index, probability, raw_score, record_score,"
            " initial_record_score, is_interim, body",
            "record_score",
            RECORD_SORT,
            job_id,
            query or ResultsQuery(),
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
        return count, [model_plot(r) for r in rows]

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
        return count, [influencer(r) for r in rows]

    def latest_bucket_ms(self, job_id: str) -> int | None:
        row = (
            self._reader()
            .execute("SELECT MAX(timestamp_ms) FROM buckets WHERE job_id = ?", (job_id,))
            .fetchone()
        )
        return None if row[0] is None else int(row[0])

    def count_results_before(self, job_id: str, before_ms: int) -> int:
        r = self._reader()
        return sum(
            int(
                r.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE job_id = ? AND timestamp_ms < ?",
                    (job_id, before_ms),
                ).fetchone()[0]
            )
            for table in RESULT_TABLES
        )


# The parts of one commit, in the order `WriteBatch` documents.


def _append_wal(w: sqlite3.Connection, job_id: str, b: WriteBatch) -> int | None:
    seq = None
    if b.wal_kind is not None:
        cur = w.execute(
            "INSERT INTO wal (job_id, kind, payload, received_ms) VALUES (?, ?, ?, ?)",
            (job_id, b.wal_kind, b.wal_payload, b.received_ms),
        )
        seq = cur.lastrowid
    return seq


def _write_results(w: sqlite3.Connection, job_id: str, b: WriteBatch) -> None:
    if b.clear_interim:
        for table in RESULT_TABLES:
            w.execute(f"DELETE FROM {table} WHERE job_id = ? AND is_interim = 1", (job_id,))
    if b.buckets:
        stamps = [(job_id, x.timestamp) for x in b.buckets]
        for table in RESULT_TABLES[1:]:
            w.executemany(f"DELETE FROM {table} WHERE job_id = ? AND timestamp_ms = ?", stamps)
        w.executemany(
            f"INSERT OR REPLACE INTO buckets (job_id, {BUCKET_COLS}) VALUES (?,?,?,?,?,?,?,?)",
            [
                (
                    job_id,
                    x.timestamp,
                    x.bucket_span,
                    x.anomaly_score,
                    x.initial_anomaly_score,
                    x.raw_score,
                    int(x.is_interim),
                    x.event_count,
                )
                for x in b.buckets
            ],
        )
    if b.records:
        w.executemany(
            "INSERT INTO records (job_id, timestamp_ms, detector_index, probability, raw_score,"
            " record_score, initial_record_score, is_interim, body)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (
                    job_id,
                    r.timestamp,
                    r.detector_index,
                    r.probability,
                    r.raw_score,
                    r.record_score,
                    r.initial_record_score,
                    int(r.is_interim),
                    record_body(r),
                )
                for r in b.records
            ],
        )
    if b.model_plot:
        w.executemany(
            f"INSERT INTO model_plot (job_id, {MODEL_PLOT_COLS}) VALUES (?{', ?' * 12})",
            [model_plot_row(job_id, m) for m in b.model_plot],
        )
    if b.influencers:
        w.executemany(
            f"INSERT INTO influencers (job_id, {INFLUENCER_COLS}) VALUES (?{', ?' * 9})",
            [influencer_row(job_id, i) for i in b.influencers],
        )


def _update_job_row(w: sqlite3.Connection, job_id: str, b: WriteBatch) -> None:
    sets: list[str] = []
    args: list[Any] = []
    for column, value in (
        (
            "data_counts",
            None if b.data_counts is None else orjson.dumps(b.data_counts.to_dict()),
        ),
        (
            "model_size_stats",
            None if b.model_size_stats is None else orjson.dumps(b.model_size_stats.to_dict()),
        ),
        ("intake_open", None if b.intake_open is None else int(b.intake_open)),
        ("close_id", b.close_id),
        ("close_complete", None if b.close_complete is None else int(b.close_complete)),
        ("active_snapshot_id", b.activate_snapshot),
        ("owner_uid", b.owner_uid),
    ):
        if value is not None:
            sets.append(f"{column} = ?")
            args.append(value.decode() if isinstance(value, bytes) else value)
    if sets:
        w.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE job_id = ?", (*args, job_id))


def _insert_snapshot(w: sqlite3.Connection, job_id: str, b: WriteBatch) -> None:
    if b.snapshot is not None:
        s = b.snapshot
        w.execute(
            f"INSERT INTO snapshots (job_id, {SNAPSHOT_COLS}, state)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                job_id,
                s.snapshot_id,
                s.timestamp,
                s.description,
                s.latest_record_time_stamp,
                s.latest_result_time_stamp,
                s.snapshot_doc_count,
                s.size_bytes,
                int(s.retain),
                s.wal_seq,
                orjson.dumps(s.model_size_stats.to_dict()).decode(),
                orjson.dumps(s.data_counts.to_dict()).decode(),
                b.snapshot_state or b"",
            ),
        )


def _delete(w: sqlite3.Connection, job_id: str, b: WriteBatch) -> tuple[int, int]:
    """WAL truncation, snapshots and results the batch deletes: (results, snapshots)."""
    if b.truncate_wal_through is not None:
        w.execute("DELETE FROM wal WHERE job_id = ? AND seq <= ?", (job_id, b.truncate_wal_through))
    snapshots_deleted = 0
    if b.delete_snapshots:
        active = w.execute(
            "SELECT active_snapshot_id FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()[0]
        if active in b.delete_snapshots:
            raise ActiveSnapshotError(f"snapshot {active} is the active model snapshot")
        for sid in b.delete_snapshots:
            cur = w.execute(
                "DELETE FROM snapshots WHERE job_id = ? AND snapshot_id = ?", (job_id, sid)
            )
            snapshots_deleted += cur.rowcount
    results_deleted = 0
    for op, bound in (("<", b.delete_results_before_ms), (">", b.delete_results_after_ms)):
        if bound is not None:
            for table in RESULT_TABLES:
                cur = w.execute(
                    f"DELETE FROM {table} WHERE job_id = ? AND timestamp_ms {op} ?",
                    (job_id, bound),
                )
                results_deleted += cur.rowcount
    return results_deleted, snapshots_deleted


def _record_step(w: sqlite3.Connection, job_id: str, b: WriteBatch) -> None:
    if b.close_step is not None:
        w.execute(
            "INSERT INTO close_steps (job_id, close_id, step, result) VALUES (?, ?, ?, ?)",
            (
                job_id,
                b.close_step.close_id,
                b.close_step.step,
                orjson.dumps(b.close_step.result).decode(),
            ),
        )
