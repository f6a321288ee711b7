"""The shared store: PostgreSQL (psycopg 3 with a connection pool), for several replicas.

The same contract and the same SQL as the SQLite store (`store.sql`): `commit` is one
transaction and returns only after it has committed, so an acknowledged post survives
anything but the database. Snapshots are bytea; text columns are "C"-collated and model
plot and influencer field names and values UTF-8 bytea, so results sort in byte order as
in SQLite. What is this store's own: the connection pool, `%s` placeholders, COPY for
bulk inserts, arrays for statements over many keys, and its migrations. The
schema lives in the connection's schema (the first of its `search_path`), versioned in
`schema_version` and migrated forward on open under an advisory lock, so replicas
starting together migrate once. Each connection is checked as it leaves the pool, so after
a database restart or failover the next operation gets a fresh one instead of an error;
TCP keepalives notice a vanished peer, and a session left idle inside a transaction (a
process paused mid-commit) is ended by the server, so the rows it locked are freed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from mljob_operator.engine.persistence import StoreError
from mljob_operator.store.sql import SqlStore, migrate
from mljob_operator.store.tx import Tx

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
IDLE_IN_TRANSACTION_S = 60.0
"""The server ends a session idle inside a transaction this long (a replica paused
mid-commit), so the rows it locked are released."""
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
"""TCP keepalives: a connection to a vanished peer is noticed in about 25 s."""


class PgTx(Tx):
    """A pooled connection: `%s` placeholders, COPY, arrays, bytea field values."""

    conn: psycopg.Connection[Any]

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")  # no statement has a literal ? or %

    def script(self, sql: str) -> None:
        self.conn.execute(sql)

    def insert(
        self, table: str, columns: str, rows: Iterable[Sequence[Any]], texts: Sequence[int] = ()
    ) -> None:
        with self.conn.cursor().copy(f"COPY {table} (job_id, {columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(_bytea(row, texts) if texts else row)

    def delete_in(self, table: str, column: str, job_id: str, values: Sequence[Any]) -> int:
        return self.run(
            f"DELETE FROM {table} WHERE job_id = ? AND {column} = ANY(?)", (job_id, list(values))
        )

    def update_in(
        self, table: str, column: str, key: str, job_id: str, values: Sequence[tuple[Any, Any]]
    ) -> None:
        self.run(
            f"UPDATE {table} AS t SET {column} = u.value"
            " FROM unnest(?::bigint[], ?::double precision[]) AS u(key, value)"
            f" WHERE t.job_id = ? AND t.{key} = u.key",
            ([int(k) for k, _ in values], [v for _, v in values], job_id),
        )

    def text(self, value: str | None) -> Any:
        return None if value is None else value.encode()


class PostgresStore(SqlStore):
    """Store implementation over a PostgreSQL database (see module docstring)."""

    wal_page = 32
    """A page of the log per round trip on replay (a body may be up to the API's limit; a
    pooled connection is not held while the replay works)."""

    def __init__(
        self,
        url: str,
        max_connections: int = 16,
        timeout_s: float = 30.0,
        idle_in_transaction_s: float = IDLE_IN_TRANSACTION_S,
    ) -> None:
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
            kwargs={"autocommit": True, **KEEPALIVES},
            configure=_session(idle_in_transaction_s),
            check=ConnectionPool.check_connection,
            open=False,
            name="mljob-store",
        )
        try:
            self._pool.open(wait=True, timeout=timeout_s)
            with self._write() as tx:
                tx.run("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
                migrate(tx, MIGRATIONS)
        except BaseException:
            self._pool.close()
            raise

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _read(self) -> Iterator[Tx]:
        with self._pool.connection() as conn:
            yield PgTx(conn)

    @contextmanager
    def _write(self) -> Iterator[Tx]:
        """Leaving the block commits, and raises if the commit fails."""
        with self._pool.connection() as conn, conn.transaction():
            yield PgTx(conn)

    def _stream(self, sql: str, args: tuple[Any, ...]) -> Iterable[tuple[Any, ...]]:
        with self._read() as tx:
            return tx.all(sql, args)


def _session(idle_in_transaction_s: float) -> Callable[[psycopg.Connection[Any]], None]:
    """Each new pooled connection's session settings."""
    idle = f"{max(1, int(idle_in_transaction_s * 1000))}ms"

    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, false)", (idle,))

    return configure


def _bytea(row: Sequence[Any], texts: Sequence[int]) -> list[Any]:
    """`row` with its text at `texts` as UTF-8 bytes."""
    out = list(row)
    for i in texts:
        if out[i] is not None:
            out[i] = out[i].encode()
    return out


def describe(url: str) -> str:
    """The URL's user, host, port and database, never its password (for messages)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as err:
        raise StoreError(f"MLJOB_STORE_URL is not a valid PostgreSQL URL: {err}") from None
    shown = {k: params[k] for k in ("user", "host", "port", "dbname") if params.get(k)}
    return " ".join(f"{k}={v}" for k, v in shown.items()) or "(libpq defaults)"
