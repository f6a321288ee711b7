"""Fencing tokens for shared-store replicas: a replica that lost a shard writes nothing.

A Lease says who *should* run a shard's jobs, but a replica paused past its Lease (a
stopped process, a long GC, a partition) does not know it lost it, and its engine may
still be committing. So each shard has an epoch in the store, bumped in the store by
the replica that takes the shard over (`take`), and every commit of a job checks, in
its own transaction, that the shard's epoch is still the one this replica took
(`check`, a `FOR SHARE` row lock, so a takeover waits for a commit in flight and every
later commit of the old holder is refused). The new holder opens its jobs only after
taking the epoch, so it replays everything the old holder committed.

`FencedPostgresStore` is the PostgreSQL store with the check first in the transaction of
every write of a job (the insert of its row on open, each commit, retain change and
deletion: the store's `_guard`).
Taking an epoch waits for the commits in flight (its UPDATE needs the row their
`FOR SHARE` holds), but never longer than the timeout it is given (`lock_timeout`): a
replica paused mid-commit must not freeze the taker's Lease loop, so a timeout is
`ShardBusy` (not acquired; the Lease is handed back and tried again later), and the
paused session is ended by the pool's `idle_in_transaction_session_timeout`.
A take is two steps, each its own call: read the epoch (`epoch_of`), then bump it only
if it is still the one read (`take`, a conditional UPDATE). The taker's Lease loop gives
up on a take that runs too long (`asyncio.wait_for`) and hands the Lease back, but it
cannot stop the database thread: a bump still on its way would otherwise land after
another replica took the shard, and fence that new holder out. Conditional, it is a
no-op then (`EpochMoved`), and the epoch this replica holds is recorded (`hold`) only by
the caller that waited for the take, never by the thread.
The table is this module's own (created if missing when leased mode starts), kept out
of the store's versioned migrations: a single-replica store never has it.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from mljob_operator.engine.persistence import StoreError, WriteRefused
from mljob_operator.store import postgres
from mljob_operator.store.tx import Tx

SETUP = """
CREATE TABLE IF NOT EXISTS shard_epochs (
    shard INTEGER PRIMARY KEY,
    epoch BIGINT NOT NULL,
    holder TEXT NOT NULL
)
"""
SETUP_LOCK = 0x6D6C6A6F62 + 1  # next to the migration lock


class FencedError(WriteRefused):
    """This replica does not hold the job's shard (any more): nothing was written (a
    retry reaches the new holder)."""


class ShardBusy(StoreError):
    """The shard's epoch row stayed locked by a commit in flight past the timeout: not
    taken (the caller hands the Lease back)."""


class EpochMoved(ShardBusy):
    """The shard's epoch changed since this replica read it (another replica took the
    shard meanwhile): not taken, nothing written."""


class ShardFence:
    """The epochs this replica took, the shard of each job it runs, and the check."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epochs: dict[int, int] = {}
        self._job_shards: dict[str, int] = {}

    def setup(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SETUP_LOCK,))
            conn.execute(SETUP)

    def epoch_of(self, conn: psycopg.Connection[Any], shard: int, timeout_s: float) -> int:
        """The shard's epoch now (0: never taken); a plain read, never waits on a lock."""
        wait = f"{max(1, int(timeout_s * 1000))}ms"
        with conn.transaction():
            conn.execute("SELECT set_config('statement_timeout', %s, true)", (wait,))
            row = conn.execute(
                "SELECT epoch FROM shard_epochs WHERE shard = %s", (shard,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def take(
        self, conn: psycopg.Connection[Any], shard: int, holder: str, timeout_s: float, seen: int
    ) -> int:
        """Bump the shard's epoch from `seen` (as `epoch_of` read it) for `holder`,
        committed before this returns: `EpochMoved` if it is no longer `seen`, `ShardBusy`
        if a commit holds the row longer than `timeout_s`. Not yet this replica's epoch:
        the caller `hold`s it once it knows it still wants the shard."""
        wait = f"{max(1, int(timeout_s * 1000))}ms"
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (wait,))
                conn.execute("SELECT set_config('statement_timeout', %s, true)", (wait,))
                if seen == 0:
                    row = conn.execute(
                        "INSERT INTO shard_epochs (shard, epoch, holder) VALUES (%s, 1, %s)"
                        " ON CONFLICT (shard) DO NOTHING RETURNING epoch",
                        (shard, holder),
                    ).fetchone()
                else:
                    row = conn.execute(
                        "UPDATE shard_epochs SET epoch = epoch + 1, holder = %s"
                        " WHERE shard = %s AND epoch = %s RETURNING epoch",
                        (holder, shard, seen),
                    ).fetchone()
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as err:
            raise ShardBusy(
                f"shard {shard}: a commit held its epoch for over {wait}; not taken"
            ) from err
        if row is None:
            raise EpochMoved(
                f"shard {shard}: its epoch moved past {seen} since it was read (another"
                " replica took it); not taken"
            )
        return int(row[0])

    def hold(self, shard: int, epoch: int) -> None:
        """This replica writes for the shard's jobs at `epoch` from now on."""
        with self._lock:
            self._epochs[shard] = epoch

    def drop(self, shard: int) -> None:
        """Stop writing for this shard at once (its hold ran out or was released)."""
        with self._lock:
            self._epochs.pop(shard, None)

    def assign(self, job_id: str, shard: int) -> None:
        with self._lock:
            self._job_shards[job_id] = shard

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._job_shards.pop(job_id, None)

    def token(self, job_id: str) -> tuple[int, int] | None:
        with self._lock:
            shard = self._job_shards.get(job_id)
            epoch = None if shard is None else self._epochs.get(shard)
        return None if shard is None or epoch is None else (shard, epoch)

    def check(self, conn: psycopg.Connection[Any], job_id: str) -> None:
        """Inside the commit's transaction: refuse unless this replica's epoch for the
        job's shard is still the store's."""
        token = self.token(job_id)
        if token is None:
            raise FencedError(f"job {job_id}: this replica does not hold its shard")
        shard, epoch = token
        row = conn.execute(
            "SELECT epoch, holder FROM shard_epochs WHERE shard = %s FOR SHARE", (shard,)
        ).fetchone()
        if row is None or int(row[0]) != epoch:
            holder = "nobody" if row is None else row[1]
            raise FencedError(
                f"job {job_id}: shard {shard} was taken over by {holder} (epoch"
                f" {None if row is None else row[0]}, this replica's {epoch}); write refused"
            )


class FencedPostgresStore(postgres.PostgresStore):
    """The PostgreSQL store of a replica in leased mode: any write of a job (its row's
    insert too) is refused (`FencedError`, so the engine's `StoreWriteError`) unless this
    replica holds the job's shard at the epoch the store has, checked in the same
    transaction."""

    def __init__(
        self,
        url: str,
        fence: ShardFence,
        max_connections: int = 16,
        idle_in_transaction_s: float = postgres.IDLE_IN_TRANSACTION_S,
    ) -> None:
        super().__init__(
            url, max_connections=max_connections, idle_in_transaction_s=idle_in_transaction_s
        )
        self.fence = fence
        with self._pool.connection() as conn:
            fence.setup(conn)

    def shard_epoch(self, shard: int, timeout_s: float) -> int:
        """The shard's epoch now (0: never taken), read in at most about `timeout_s`."""
        try:
            with self._pool.connection(timeout=timeout_s) as conn:
                return self.fence.epoch_of(conn, shard, timeout_s)
        except PoolTimeout as err:
            raise ShardBusy(f"shard {shard}: no store connection in {timeout_s:g}s") from err

    def take_shard(self, shard: int, holder: str, timeout_s: float, seen: int) -> int:
        """Bump the shard's epoch from `seen` for this replica (see `ShardFence.take`);
        done before it opens any job. Waits at most `timeout_s` for a connection and as
        long again for the row (`ShardBusy`)."""
        try:
            with self._pool.connection(timeout=timeout_s) as conn:
                return self.fence.take(conn, shard, holder, timeout_s, seen)
        except PoolTimeout as err:
            raise ShardBusy(f"shard {shard}: no store connection in {timeout_s:g}s") from err

    def _guard(self, tx: Tx, job_id: str) -> None:
        assert isinstance(tx, postgres.PgTx)
        self.fence.check(tx.conn, job_id)
