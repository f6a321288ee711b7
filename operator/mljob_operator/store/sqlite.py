"""The embedded default store: one SQLite file for every job of an operator.

WAL journal mode lets the HTTP API read while a job writes; synchronous=FULL makes a
commit durable before `post_data` acknowledges it. One writer connection is serialised by
a lock; each reading thread gets its own connection (so a replay reads the log through one
cursor as it goes). The schema is versioned in `schema_version` and migrated forward on
open. The SQL itself is shared with the PostgreSQL store (`store.sql`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mljob_operator.store.sql import SqlStore, migrate
from mljob_operator.store.tx import Tx

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


class SQLiteStore(SqlStore):
    """Store implementation over one SQLite database file (see module docstring)."""

    wal_page = 2**62

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._writer = self._connect()
        with self._write() as tx:
            migrate(tx, MIGRATIONS)

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

    @contextmanager
    def _read(self) -> Iterator[Tx]:
        yield Tx(self._reader())

    @contextmanager
    def _write(self) -> Iterator[Tx]:
        with self._lock:
            w = self._writer
            w.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(w)
                w.execute("COMMIT")
            except BaseException:
                w.execute("ROLLBACK")
                raise

    def _stream(self, sql: str, args: tuple[Any, ...]) -> Iterable[tuple[Any, ...]]:
        return self._reader().execute(sql, args)
