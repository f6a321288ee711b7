"""One connection of a SQL store, as the shared SQL sees it: the few things SQLite and
PostgreSQL do differently, behind one interface.

The stores' SQL is written once (`store.sql`, `store.commit`) with SQLite's `?`
placeholders; a PostgreSQL `Tx` turns them into `%s` (`_sql`). What the two databases do
in different ways is a method here, overridden by the PostgreSQL one: a bulk insert
(`executemany`, or COPY), a statement over a list of keys (one execution a key, or one
with arrays: `= ANY(...)`, `unnest(...)`), a migration script (one statement at a time,
or whole), and how a model plot or influencer field name or value is bound (as text, or
as UTF-8 bytea: a value may hold NUL, which PostgreSQL text cannot).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> object: ...


class Connection(Protocol):
    def execute(self, sql: str, args: Sequence[Any], /) -> Any: ...

    def cursor(self) -> Any: ...


class Tx:
    """A connection to read on, or one in a write transaction (SQLite's behaviour; the
    PostgreSQL store subclasses it)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _sql(self, sql: str) -> str:
        return sql

    def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Executes one statement; the number of rows it changed."""
        return int(self.conn.execute(self._sql(sql), args).rowcount)

    def one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...]:
        row = self.conn.execute(self._sql(sql), args).fetchone()
        assert row is not None
        return tuple(row)

    def maybe(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row = self.conn.execute(self._sql(sql), args).fetchone()
        return None if row is None else tuple(row)

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(self._sql(sql), args).fetchall())

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Executes one statement for each of `rows`; the rows changed in all."""
        cur: Cursor = self.conn.cursor()
        cur.executemany(self._sql(sql), rows)
        return int(cur.rowcount)

    def script(self, sql: str) -> None:
        """A migration: statements separated by `;` (sqlite3 executes one at a time)."""
        for statement in sql.split(";"):
            if statement.strip():
                self.conn.execute(statement, ())

    def insert(
        self, table: str, columns: str, rows: Iterable[Sequence[Any]], texts: Sequence[int] = ()
    ) -> None:
        """Appends `rows` (job_id, then `columns`) to `table`; `texts` are the positions of
        model plot or influencer field names and values in a row (see `text`)."""
        marks = ", ".join("?" * (columns.count(",") + 2))
        self.many(f"INSERT INTO {table} (job_id, {columns}) VALUES ({marks})", rows)

    def delete_in(self, table: str, column: str, job_id: str, values: Sequence[Any]) -> int:
        """Deletes the job's rows whose `column` is one of `values`; how many."""
        return self.many(
            f"DELETE FROM {table} WHERE job_id = ? AND {column} = ?",
            [(job_id, v) for v in values],
        )

    def update_in(
        self, table: str, column: str, key: str, job_id: str, values: Sequence[tuple[Any, Any]]
    ) -> None:
        """Sets `column` of the job's rows by `key`, from (key, value) pairs."""
        self.many(
            f"UPDATE {table} SET {column} = ? WHERE job_id = ? AND {key} = ?",
            [(value, job_id, k) for k, value in values],
        )

    def text(self, value: str | None) -> Any:
        """A model plot or influencer field name or value, as this database keeps it."""
        return value
