"""Fencing on a real PostgreSQL: two replicas' stores over one database; the one whose
shard was taken over writes nothing more, and the new holder replays all it committed."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from devtools.postgres import PostgresCluster
from mljob_operator.engine import DetectorConfig, Job, JobConfig, StoreWriteError
from mljob_operator.store import WriteBatch
from mljob_operator.store.fencing import FencedError, FencedPostgresStore, ShardBusy, ShardFence
from tests.engine.conftest import T0, FakeClock, ndjson

CONFIG = JobConfig(
    detectors=(DetectorConfig("mean", "v"),), bucket_span_s=60, background_persist_interval_s=None
)
JOB = "ns/web"


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
    assert a.take_shard(5, "a", 5.0) == 1
    old = Job.open(a, JOB, CONFIG, clock=FakeClock())
    for n in range(3):
        old.post_data(_body(n))

    assert b.take_shard(5, "b", 5.0) == 2  # a paused past its Lease; b took the shard over
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
    assert a.take_shard(5, "a", 5.0) == 1
    with psycopg.connect(a.url) as paused:
        paused.execute("SELECT epoch FROM shard_epochs WHERE shard = 5 FOR SHARE")
        outcome: list[BaseException | int] = []

        def take() -> None:
            try:
                outcome.append(b.take_shard(5, "b", 0.3))
            except BaseException as err:  # handed to the test thread
                outcome.append(err)

        taker = threading.Thread(target=take, daemon=True)
        taker.start()
        taker.join(timeout=20)
        assert not taker.is_alive(), "take_shard waited on the locked row without bound"
        assert isinstance(outcome[0], ShardBusy)
        paused.rollback()
    assert b.take_shard(5, "b", 5.0) == 2


def test_a_retain_change_of_a_lost_shard_is_refused_too(
    replicas: tuple[FencedPostgresStore, FencedPostgresStore],
) -> None:
    a, b = replicas
    a.take_shard(5, "a", 5.0)
    job = Job.open(a, JOB, CONFIG, clock=FakeClock())
    job.post_data(_body(0))
    snapshot_id = job.persist_background_snapshot().snapshot_id
    b.take_shard(5, "b", 5.0)
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
    a.take_shard(5, "a", 5.0)
    b.take_shard(5, "b", 5.0)
    with pytest.raises(FencedError, match="taken over by b"):
        a.ensure_job(JOB)
    assert b.get_job(JOB) is None
    assert b.ensure_job(JOB).job_id == JOB
