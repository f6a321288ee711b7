"""Fencing on a real PostgreSQL: two replicas' stores over one database; the one whose
shard was taken over writes nothing more, and the new holder replays all it committed."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from devtools.postgres import PostgresCluster
from mljob_operator.engine import DetectorConfig, Job, JobConfig, StoreWriteError
from mljob_operator.handlers import take_epoch
from mljob_operator.store import WriteBatch
from mljob_operator.store.fencing import (
    EpochMoved,
    FencedError,
    FencedPostgresStore,
    ShardBusy,
    ShardFence,
)
from tests.engine.conftest import T0, FakeClock, ndjson

CONFIG = JobConfig(
    detectors=(DetectorConfig("mean", "v"),), bucket_span_s=60, background_persist_interval_s=None
)
JOB = "ns/web"


def take(store: FencedPostgresStore, shard: int, holder: str, timeout_s: float = 5.0) -> int:
    """A take as the Lease loop makes it: read the epoch, bump it from there, hold it."""
    return asyncio.run(take_epoch(store, shard, holder, timeout_s))


def _body(n: int) -> bytes:
    return ndjson([{"time": T0 + n * 60 + i, "v": float(i % 7)} for i in range(30)])


@pytest.fixture
def replicas(
    postgres_cluster: PostgresCluster,
) -> Iterator[tuple[FencedPostgresStore, FencedPostgresStore]]:
    url = postgres_cluster.schema_url(f"fence_{uuid.uuid4().hex[:10]}", "mljob_tests")
    fences = ShardFence(), ShardFence()
    for fence in fences:
        fence.assign(JOB, 5)
    a, b = (FencedPostgresStore(url, fence, max_connections=2) for fence in fences)
    yield a, b
    a.close()
    b.close()


def test_without_the_shard_nothing_is_written(
    replicas: tuple[FencedPostgresStore, FencedPostgresStore],
) -> None:
    a, _ = replicas
    with pytest.raises(FencedError, match="does not hold"):
        a.commit(JOB, WriteBatch(intake_open=False))
    assert a.get_job(JOB) is None


def test_the_old_holder_is_refused_and_the_new_one_replays_what_it_committed(
    replicas: tuple[FencedPostgresStore, FencedPostgresStore],
) -> None:
    a, b = replicas
    assert take(a, 5, "a", 5.0) == 1
    old = Job.open(a, JOB, CONFIG, clock=FakeClock())
    for n in range(3):
        old.post_data(_body(n))

    assert take(b, 5, "b", 5.0) == 2  # a paused past its Lease; b took the shard over
    with pytest.raises(StoreWriteError, match="taken over by b"):
        old.post_data(_body(3))
    new = Job.open(b, JOB, CONFIG, clock=FakeClock())
    assert new.data_counts.processed_record_count == 90
    new.post_data(_body(3))
    assert b.last_wal_seq(JOB) == a.last_wal_seq(JOB)
    assert len(list(b.wal_entries(JOB, 0))) == 4

    a.fence.drop(5)  # its hold ran out: refused before asking the database
    with pytest.raises(FencedError, match="does not hold"):
        a.delete_job(JOB)


def test_a_commit_holding_the_epoch_row_makes_a_take_fail_in_bounded_time(
    replicas: tuple[FencedPostgresStore, FencedPostgresStore],
) -> None:
    """A replica paused mid-commit holds the shard's row FOR SHARE: the taker gives up
    after its timeout (not acquired) instead of waiting forever, and takes it once the
    commit is gone."""
    a, b = replicas
    assert take(a, 5, "a", 5.0) == 1
    with psycopg.connect(a.url) as paused:
        paused.execute("SELECT epoch FROM shard_epochs WHERE shard = 5 FOR SHARE")
        outcome: list[BaseException | int] = []

        def taker_b() -> None:
            try:
                outcome.append(take(b, 5, "b", 0.3))
            except BaseException as err:  # handed to the test thread
                outcome.append(err)

        taker = threading.Thread(target=taker_b, daemon=True)
        taker.start()
        taker.join(timeout=20)
        assert not taker.is_alive(), "the take waited on the locked row without bound"
        assert isinstance(outcome[0], ShardBusy)
        paused.rollback()
    assert take(b, 5, "b", 5.0) == 2


def test_a_retain_change_of_a_lost_shard_is_refused_too(
    replicas: tuple[FencedPostgresStore, FencedPostgresStore],
) -> None:
    a, b = replicas
    take(a, 5, "a", 5.0)
    job = Job.open(a, JOB, CONFIG, clock=FakeClock())
    job.post_data(_body(0))
    snapshot_id = job.persist_background_snapshot().snapshot_id
    take(b, 5, "b", 5.0)
    with pytest.raises(FencedError, match="taken over by b"):
        a.set_snapshot_retain(JOB, snapshot_id, True)
    kept = b.get_snapshot(JOB, snapshot_id)
    assert kept is not None
    assert not kept.retain
    assert b.set_snapshot_retain(JOB, snapshot_id, True).retain


def test_the_job_row_is_not_created_without_the_shard(
    replicas: tuple[FencedPostgresStore, FencedPostgresStore],
) -> None:
    """Opening a job inserts its row (`ensure_job`): a replica that does not hold the
    shard, or lost it, inserts nothing either."""
    a, b = replicas
    with pytest.raises(FencedError, match="does not hold"):
        a.ensure_job(JOB)
    assert b.get_job(JOB) is None
    take(a, 5, "a", 5.0)
    take(b, 5, "b", 5.0)
    with pytest.raises(FencedError, match="taken over by b"):
        a.ensure_job(JOB)
    assert b.get_job(JOB) is None
    assert b.ensure_job(JOB).job_id == JOB


def _epoch_row(store: FencedPostgresStore) -> tuple[int, str] | None:
    with psycopg.connect(store.url) as conn:
        row = conn.execute("SELECT epoch, holder FROM shard_epochs WHERE shard = 5").fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def _wait_for_bumps_on_the_lock(store: FencedPostgresStore, count: int) -> None:
    """Until `count` epoch bumps wait on the shard's row lock (autocommit, so
    pg_stat_activity is read afresh each time)."""
    deadline = time.monotonic() + 20
    with psycopg.connect(store.url, autocommit=True) as probe:
        while probe.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE shard_epochs%'"
        ).fetchone() != (count,):
            assert time.monotonic() < deadline, "the bumps never queued on the row"
            time.sleep(0.02)


def test_a_bump_landing_after_another_replica_took_the_shard_is_a_no_op(
    replicas: tuple[FencedPostgresStore, FencedPostgresStore],
) -> None:
    """a read the epoch, then its take was cut off (its database thread delayed) and
    the Lease handed back; b took the shard. a's bump arriving now changes nothing: b
    keeps writing."""
    a, b = replicas
    assert take(b, 5, "b") == 1
    seen = a.shard_epoch(5, 5.0)
    assert take(b, 5, "b") == 2  # b took it again meanwhile (any other take does the same)
    with pytest.raises(EpochMoved, match="moved past 1"):
        a.take_shard(5, "a", 5.0, seen)
    assert _epoch_row(b) == (2, "b")
    assert a.fence.token(JOB) is None
    Job.open(b, JOB, CONFIG, clock=FakeClock()).post_data(_body(0))
    with pytest.raises(EpochMoved):
        a.take_shard(5, "a", 5.0, 0)  # a late first-ever take is a no-op as well


def test_a_take_cut_off_by_its_timeout_leaves_this_replica_no_epoch(
    replicas: tuple[FencedPostgresStore, FencedPostgresStore],
) -> None:
    """The Lease loop gives up on a take stuck behind a commit (asyncio.wait_for) while
    its database thread goes on; when that bump lands, the replica that gave up does not
    count it as its own epoch (it handed the Lease back), so it writes nothing."""
    a, b = replicas
    assert take(b, 5, "b") == 1

    async def cut_off() -> None:
        with psycopg.connect(a.url) as paused:
            paused.execute("SELECT epoch FROM shard_epochs WHERE shard = 5 FOR SHARE")
            taking = asyncio.ensure_future(take_epoch(a, 5, "a", 10.0))
            await asyncio.to_thread(_wait_for_bumps_on_the_lock, a, 1)
            taking.cancel()  # as asyncio.wait_for does on its timeout
            with pytest.raises(asyncio.CancelledError):
                await taking
            paused.rollback()  # the thread's bump goes through now
        deadline = time.monotonic() + 20
        while _epoch_row(a) != (2, "a"):
            assert time.monotonic() < deadline, f"the bump never landed: {_epoch_row(a)}"
            await asyncio.sleep(0.02)

    asyncio.run(cut_off())
    assert a.fence.token(JOB) is None
    with pytest.raises(FencedError, match="does not hold"):
        a.ensure_job(JOB)
    assert take(b, 5, "b") == 3
    Job.open(b, JOB, CONFIG, clock=FakeClock()).post_data(_body(0))


def test_of_two_takes_from_one_epoch_only_one_succeeds(
    replicas: tuple[FencedPostgresStore, FencedPostgresStore],
) -> None:
    """Both replicas read epoch 1 and bump it while a commit holds the row: once it is
    released one bump wins and the other finds the epoch moved, whatever the order."""
    a, b = replicas
    assert take(a, 5, "a") == 1
    outcome: dict[str, int | BaseException] = {}

    def bump(store: FencedPostgresStore, holder: str) -> None:
        try:
            outcome[holder] = store.take_shard(5, holder, 10.0, 1)
        except BaseException as err:  # handed to the test thread
            outcome[holder] = err

    with psycopg.connect(a.url) as paused:
        paused.execute("SELECT epoch FROM shard_epochs WHERE shard = 5 FOR SHARE")
        threads = [threading.Thread(target=bump, args=(s, h)) for s, h in ((a, "a"), (b, "b"))]
        for thread in threads:
            thread.start()
        _wait_for_bumps_on_the_lock(a, 2)
        paused.rollback()
    for thread in threads:
        thread.join(timeout=20)
    won = {h: e for h, e in outcome.items() if isinstance(e, int)}
    lost = [e for e in outcome.values() if not isinstance(e, int)]
    assert list(won.values()) == [2], outcome
    assert len(lost) == 1, outcome
    assert isinstance(lost[0], EpochMoved), outcome
    assert _epoch_row(a) == (2, next(iter(won)))
