"""The store written once in SQL, for SQLite and PostgreSQL alike: every read, filter,
sort and page, the job and snapshot operations, the commit's transaction and the schema
migration's frame.

A subclass says only how it reaches its database (`_read`, `_write`, `_stream`) and
brings its own migrations. Results and snapshots sort as SQLite does: NULL is the
smallest value (spelt out as NULLS FIRST/LAST, which both read), text in byte order
(PostgreSQL's columns are "C"-collated text or bytea), ties broken by time and insertion
order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from mljob_operator.engine import persistence as port
from mljob_operator.engine.results import (
    BucketResult,
    InfluencerResult,
    ModelPlotResult,
    ModelSnapshot,
    RecordResult,
)
from mljob_operator.store import rows
from mljob_operator.store.commit import ADD_JOB, apply
from mljob_operator.store.tx import Tx

R = TypeVar("R")
Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Listing(Generic[R]):
    """One table of results as the API lists it."""

    table: str
    columns: str
    score: str
    """The column `min_score` filters on."""
    sorts: dict[str, str]
    tie: str
    """What orders rows the sort column leaves equal."""
    read: Callable[[Row], R]


BUCKETS = Listing(
    "buckets", rows.BUCKET_COLS, "anomaly_score", rows.BUCKET_SORT, "timestamp_ms", rows.BUCKET.read
)
RECORDS = Listing(
    "records", rows.RECORD_COLS, "record_score", rows.RECORD_SORT, "timestamp_ms, id", rows.record
)
MODEL_PLOT = Listing(
    "model_plot",
    rows.MODEL_PLOT_COLS,
    "actual",
    rows.MODEL_PLOT_SORT,
    "timestamp_ms, id",
    rows.MODEL_PLOT.read,
)
INFLUENCERS = Listing(
    "influencers",
    rows.INFLUENCER_COLS,
    "influencer_score",
    rows.INFLUENCER_SORT,
    "timestamp_ms, id",
    rows.INFLUENCER.read,
)
SNAPSHOT_BY_ID = f"SELECT {rows.SNAPSHOT_COLS} FROM snapshots WHERE job_id = ? AND snapshot_id = ?"
WAL_AFTER = (
    "SELECT seq, kind, payload, received_ms FROM wal WHERE job_id = ? AND seq > ?"
    " ORDER BY seq LIMIT ?"
)


def _where(job_id: str, conds: Iterable[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """The job's rows, narrowed by each condition whose value is not None."""
    where: list[str] = ["job_id = ?"]
    args: list[Any] = [job_id]
    for cond, value in conds:
        if value is not None:
            where.append(cond)
            args.append(value)
    return " AND ".join(where), args


def _no_snapshot(job_id: str, snapshot_id: str) -> port.NotFoundError:
    return port.NotFoundError(f"no model snapshot {snapshot_id!r} for job {job_id!r}")


def _order(column: str, desc: bool) -> str:
    """SQLite's order: NULL is the smallest value."""
    return f"{column} DESC NULLS LAST" if desc else f"{column} ASC NULLS FIRST"


def migrate(tx: Tx, migrations: tuple[str, ...]) -> None:
    """Brings the schema from its version in `schema_version` to the last of `migrations`."""
    tx.run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = tx.maybe("SELECT version FROM schema_version")
    version = int(row[0]) if row else 0
    if row is None:
        tx.run("INSERT INTO schema_version (version) VALUES (0)")
    if version > len(migrations):
        raise port.StoreError(f"database schema {version} is newer than this operator")
    for number, script in enumerate(migrations[version:], start=version + 1):
        tx.script(script)
        tx.run("UPDATE schema_version SET version = ?", (number,))


class SqlStore(ABC):
    """The `Store` over a SQL database (see module docstring)."""

    wal_page: int
    """WAL entries read per query on replay."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _read(self) -> AbstractContextManager[Tx]:
        """A connection to read on."""

    @abstractmethod
    def _write(self) -> AbstractContextManager[Tx]:
        """A connection in a transaction, committed when the block ends without error."""

    @abstractmethod
    def _stream(self, sql: str, args: tuple[Any, ...]) -> Iterable[Row]:
        """The rows of a query, for a generator: read as they are consumed, or at once."""

    def _guard(self, tx: Tx, job_id: str) -> None:  # noqa: B027 - a hook, open by default
        """First in every transaction that writes a job's data; may refuse it."""

    @contextmanager
    def _write_job(self, job_id: str) -> Iterator[Tx]:
        with self._write() as tx:
            self._guard(tx, job_id)
            yield tx

    def schema_version(self) -> int:
        with self._read() as tx:
            return int(tx.one("SELECT version FROM schema_version")[0])

    # ---- jobs --------------------------------------------------------------------------
    def ensure_job(self, job_id: str) -> port.JobRow:
        """The job's row, inserted if missing: a write like any other (guarded)."""
        with self._write_job(job_id) as tx:
            tx.run(ADD_JOB, (job_id,))
        row = self.get_job(job_id)
        assert row is not None
        return row

    def get_job(self, job_id: str) -> port.JobRow | None:
        with self._read() as tx:
            row = tx.maybe(f"SELECT {rows.JOB_COLS} FROM jobs WHERE job_id = ?", (job_id,))
        return None if row is None else rows.job(job_id, row)

    def list_jobs(self) -> list[str]:
        with self._read() as tx:
            return [r[0] for r in tx.all("SELECT job_id FROM jobs ORDER BY job_id")]

    def delete_job(self, job_id: str) -> None:
        with self._write_job(job_id) as tx:
            for table in rows.JOB_TABLES:
                tx.run(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))

    # ---- the write path ----------------------------------------------------------------
    def commit(self, job_id: str, batch: port.WriteBatch) -> port.CommitResult:
        """Applies the batch in one transaction; returns once it has committed."""
        with self._write_job(job_id) as tx:
            return apply(tx, job_id, batch)

    # ---- replay and close bookkeeping ---------------------------------------------------
    def wal_entries(self, job_id: str, after_seq: int) -> Iterator[port.WalEntry]:
        last = after_seq
        while True:
            n = 0
            for seq, kind, payload, received in self._stream(
                WAL_AFTER, (job_id, last, self.wal_page)
            ):
                n += 1
                last = int(seq)
                yield port.WalEntry(last, kind, bytes(payload), int(received))
            if n < self.wal_page:
                return

    def last_wal_seq(self, job_id: str) -> int:
        with self._read() as tx:
            return int(tx.one("SELECT MAX(seq) FROM wal WHERE job_id = ?", (job_id,))[0] or 0)

    def close_step(self, job_id: str, close_id: str, step: str) -> dict[str, Any] | None:
        with self._read() as tx:
            row = tx.maybe(
                "SELECT result FROM close_steps WHERE job_id = ? AND close_id = ? AND step = ?",
                (job_id, close_id, step),
            )
        return None if row is None else dict(orjson.loads(row[0]))

    # ---- snapshots ---------------------------------------------------------------------
    def get_snapshot(self, job_id: str, snapshot_id: str) -> ModelSnapshot | None:
        with self._read() as tx:
            row = tx.maybe(SNAPSHOT_BY_ID, (job_id, snapshot_id))
        return None if row is None else rows.snapshot(row)

    def snapshot_state(self, job_id: str, snapshot_id: str) -> bytes:
        with self._read() as tx:
            row = tx.maybe(
                "SELECT state FROM snapshots WHERE job_id = ? AND snapshot_id = ?",
                (job_id, snapshot_id),
            )
        if row is None:
            raise _no_snapshot(job_id, snapshot_id)
        return bytes(row[0])

    def list_snapshots(
        self, job_id: str, query: port.SnapshotQuery | None = None
    ) -> tuple[int, list[ModelSnapshot]]:
        q = query or port.SnapshotQuery()
        where = _where(
            job_id,
            (
                ("snapshot_id = ?", q.snapshot_id),
                ("timestamp_ms >= ?", q.start_ms),
                ("timestamp_ms < ?", q.end_ms),
            ),
        )
        order = f"{_order(rows.sort_column(q.sort, rows.SNAPSHOT_SORT), q.desc)}, snapshot_id"
        with self._read() as tx:
            count, found = _page(tx, "snapshots", rows.SNAPSHOT_COLS, where, order, q)
        return count, [rows.snapshot(x) for x in found]

    def all_snapshots(self, job_id: str) -> list[ModelSnapshot]:
        with self._read() as tx:
            found = tx.all(
                f"SELECT {rows.SNAPSHOT_COLS} FROM snapshots WHERE job_id = ?"
                " ORDER BY timestamp_ms, snapshot_id",
                (job_id,),
            )
        return [rows.snapshot(x) for x in found]

    def set_snapshot_retain(self, job_id: str, snapshot_id: str, retain: bool) -> ModelSnapshot:
        with self._write_job(job_id) as tx:
            changed = tx.run(
                "UPDATE snapshots SET retain = ? WHERE job_id = ? AND snapshot_id = ?",
                (retain, job_id, snapshot_id),
            )
        if changed == 0:
            raise _no_snapshot(job_id, snapshot_id)
        found = self.get_snapshot(job_id, snapshot_id)
        assert found is not None
        return found

    def delete_snapshot(self, job_id: str, snapshot_id: str) -> None:
        if self.get_snapshot(job_id, snapshot_id) is None:
            raise _no_snapshot(job_id, snapshot_id)
        self.commit(job_id, port.WriteBatch(delete_snapshots=[snapshot_id]))

    # ---- results -----------------------------------------------------------------------
    def _results(
        self, listing: Listing[R], job_id: str, q: port.ResultsQuery
    ) -> tuple[int, list[R]]:
        split = q if isinstance(q, port.ModelPlotQuery) else port.ModelPlotQuery()
        with self._read() as tx:
            clause, args = _where(
                job_id,
                (
                    ("timestamp_ms >= ?", q.start_ms),
                    ("timestamp_ms < ?", q.end_ms),
                    (f"{listing.score} >= ?", q.min_score),
                    ("partition_field_value = ?", tx.text(split.partition_field_value)),
                    ("by_field_value = ?", tx.text(split.by_field_value)),
                ),
            )
            if q.exclude_interim:
                clause += " AND NOT is_interim"
            order = f"{_order(rows.sort_column(q.sort, listing.sorts), q.desc)}, {listing.tie}"
            count, found = _page(tx, listing.table, listing.columns, (clause, args), order, q)
        return count, [listing.read(r) for r in found]

    def query_buckets(
        self, job_id: str, query: port.ResultsQuery | None = None
    ) -> tuple[int, list[BucketResult]]:
        return self._results(BUCKETS, job_id, query or port.ResultsQuery())

    def query_records(
        self, job_id: str, query: port.ResultsQuery | None = None
    ) -> tuple[int, list[RecordResult]]:
        return self._results(RECORDS, job_id, query or port.ResultsQuery())

    def query_model_plot(
        self, job_id: str, query: port.ModelPlotQuery | None = None
    ) -> tuple[int, list[ModelPlotResult]]:
        return self._results(MODEL_PLOT, job_id, query or port.ModelPlotQuery())

    def query_influencers(
        self, job_id: str, query: port.ResultsQuery | None = None
    ) -> tuple[int, list[InfluencerResult]]:
        return self._results(INFLUENCERS, job_id, query or port.ResultsQuery())

    def bucket_summaries(self, job_ids: Sequence[str]) -> dict[str, port.BucketSummary]:
        """One grouped query for a page of jobs (a jobs table), never one per job."""
        if not job_ids:
            return {}
        marks = ", ".join("?" * len(job_ids))
        with self._read() as tx:
            found = tx.all(
                "SELECT job_id, COUNT(*), MAX(anomaly_score) FROM buckets"
                f" WHERE job_id IN ({marks}) GROUP BY job_id",
                list(job_ids),
            )
        return {
            str(job_id): port.BucketSummary(int(count), None if top is None else float(top))
            for job_id, count, top in found
        }

    def latest_bucket_ms(self, job_id: str) -> int | None:
        with self._read() as tx:
            row = tx.one("SELECT MAX(timestamp_ms) FROM buckets WHERE job_id = ?", (job_id,))
        return None if row[0] is None else int(row[0])

    def count_results_before(self, job_id: str, before_ms: int) -> int:
        counts = " + ".join(
            f"(SELECT COUNT(*) FROM {table} WHERE job_id = ? AND timestamp_ms < ?)"
            for table in rows.RESULT_TABLES
        )
        with self._read() as tx:
            row = tx.one(f"SELECT {counts}", (job_id, before_ms) * len(rows.RESULT_TABLES))
        return int(row[0])


def _page(
    tx: Tx,
    table: str,
    columns: str,
    where: tuple[str, list[Any]],
    order: str,
    q: port.ResultsQuery | port.SnapshotQuery,
) -> tuple[int, list[Row]]:
    """How many rows match, and the page of them `q` asks for in `order`."""
    clause, args = where
    count = tx.one(f"SELECT COUNT(*) FROM {table} WHERE {clause}", args)[0]
    found = tx.all(
        f"SELECT {columns} FROM {table} WHERE {clause} ORDER BY {order} LIMIT ? OFFSET ?",
        (*args, q.size, q.from_),
    )
    return int(count), found
