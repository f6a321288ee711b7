"""Several real operator processes on one PostgreSQL store and the real apiserver (leased
mode): the shards spread over the replicas; a SIGKILLed replica's jobs are taken over
within the lease duration and end with the same results as jobs that never moved; a
replica paused (SIGSTOP) past its Lease writes nothing for the shards it lost."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess
from devtools.postgres import PostgresCluster
from mljob_operator.http.forward import FORWARDED_BY
from mljob_operator.shard_leases import member_lease_name
from mljob_operator.shards import shard_of
from mljob_operator.store.postgres import PostgresStore
from tests.e2e.jobs import api_get, event_series, get, mljob, ndjson, post, wait_for, wait_state

SHARDS = 16
LEASE_S = 15
JOBS = 30


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    with PostgresCluster() as pg:
        yield pg


def _leases(cp: ControlPlane, ns: str) -> dict[str, dict[str, Any]]:
    out = cp.kubectl("get", "leases", "-n", ns, "-l", "ml.mljob.dev/lease", "-o", "json")
    return {i["metadata"]["name"]: i for i in json.loads(out.stdout)["items"]}


def _shard_holders(cp: ControlPlane, ns: str) -> dict[int, str | None]:
    return {
        int(name.removeprefix("mljob-shard-")): lease["spec"].get("holderIdentity")
        for name, lease in _leases(cp, ns).items()
        if name.startswith("mljob-shard-")
    }


def _log(op: OperatorProcess) -> str:
    return op.log_path.read_text(errors="replace")


def _replica_id(op: OperatorProcess) -> str:
    return f"operator-{op.port}"


def _holder(
    cp: ControlPlane, ns: str, name: str, ops: list[OperatorProcess]
) -> OperatorProcess | None:
    uid = get(cp, ns, name)["metadata"]["uid"]
    holder = _shard_holders(cp, ns).get(shard_of(uid, SHARDS))
    return next((op for op in ops if _replica_id(op) == holder), None)


def _results(op: OperatorProcess, ns: str, name: str) -> tuple[Any, Any]:
    buckets = api_get(op, ns, name, "results/buckets?size=1000")["buckets"]
    records = api_get(op, ns, name, "results/records?size=1000")["records"]
    return buckets, records


def _snapshots(op: OperatorProcess, ns: str, name: str) -> list[Any]:
    found: list[Any] = api_get(op, ns, name, "modelsnapshots")["modelSnapshots"]
    return found


def _comparable(results: tuple[Any, Any]) -> tuple[Any, Any]:
    buckets, records = results
    return (
        [(b["timestamp"], b["anomalyScore"], b["eventCount"], b["isInterim"]) for b in buckets],
        [(r["timestamp"], r["recordScore"], r["actual"], r["typical"]) for r in records],
    )


def _spread(cp: ControlPlane, ns: str, replicas: int) -> Counter[str | None]:
    def balanced() -> Counter[str | None] | None:
        counts = Counter(_shard_holders(cp, ns).values())
        share = -(-SHARDS // replicas)
        fair = (
            sum(counts.values()) == SHARDS
            and None not in counts
            and len(counts) == replicas
            and max(counts.values()) <= share
        )
        return counts if fair else None

    return wait_for(balanced, f"{SHARDS} shards spread over {replicas} replicas", timeout=60)


def _post_at_holder(
    cp: ControlPlane, ns: str, name: str, ops: list[OperatorProcess], body: bytes
) -> OperatorProcess:
    """Post to the replica holding the job, retrying while the job is moving."""

    def attempt() -> OperatorProcess | None:
        op = _holder(cp, ns, name, ops)
        if op is None:
            return None
        code, payload = post(op, ns, name, body, timeout=30)
        if code == 202:
            return op
        assert code in (409, 404, 503), (code, payload)
        return None

    return wait_for(attempt, f"{ns}/{name} taking data at its holder", timeout=90)


def _close_all(cp: ControlPlane, ns: str, names: list[str]) -> None:
    for name in names:
        cp.kubectl(
            "patch", "mljob", name, "-n", ns, "--type=merge", "-p", '{"spec":{"state":"closed"}}'
        )
    for name in names:
        cp.kubectl("wait", "-n", ns, "--for=condition=Closed", f"mljob/{name}", "--timeout=90s")


def _run_twins(
    cp: ControlPlane,
    ns: str,
    names: list[str],
    ops: list[OperatorProcess],
    bodies: tuple[bytes, ...],
) -> None:
    """The same data into jobs that never move (`twin-<name>`), then those jobs and their
    twins closed."""
    for name in names:
        cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(f"twin-{name}"))
    for name in names:
        wait_state(cp, ns, f"twin-{name}", "opened")
        for body in bodies:
            _post_at_holder(cp, ns, f"twin-{name}", ops, body)
    _close_all(cp, ns, names + [f"twin-{n}" for n in names])


def _post_here(op: OperatorProcess, path: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(f"{op.url}{path}", data=body, method="POST")
    request.add_header("Authorization", f"Bearer {op.token}")
    request.add_header("Content-Type", "application/x-ndjson")
    request.add_header(FORWARDED_BY, "test")
    try:
        with urllib.request.urlopen(request, timeout=120, context=op.ssl_context()) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def _post_anywhere(op: OperatorProcess, ns: str, name: str, body: bytes) -> None:
    """Post through one replica, whichever holds the job (it forwards), retrying while
    the job is moving."""

    def attempt() -> bool:
        code, payload = post(op, ns, name, body, timeout=30)
        assert code in (202, 409, 503), (code, payload)
        return code == 202

    wait_for(attempt, f"{ns}/{name} taking data through {op.url}", timeout=90)


def test_shards_spread_and_a_killed_replica_is_taken_over_with_identical_results(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    postgres: PostgresCluster,
) -> None:
    cp, ns = control_plane, namespace
    url = postgres.url(postgres.create_database("replicas"))
    ops = [operator_factory(MLJOB_STORE_URL=url) for _ in range(3)]
    _spread(cp, ns, 3)  # at most ceil(16 / 3) = 6 each

    records = event_series(240, spike_at=200)
    first, second = ndjson(records[: len(records) // 2]), ndjson(records[len(records) // 2 :])
    names = [f"job-{i}" for i in range(JOBS)]
    for name in names:
        cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    for name in names:
        wait_state(cp, ns, name, "opened")
    holders = {name: _holder(cp, ns, name, ops) for name in names}
    for name in names:  # every call through one replica: it forwards to the holder
        code, answer = post(ops[0], ns, name, first)
        assert code == 202, (name, code, answer)

    victim = Counter(holders.values()).most_common(1)[0][0]
    assert victim is not None
    moved = [name for name, op in holders.items() if op is victim]
    survivors = [op for op in ops if op is not victim]
    victim.kill()
    killed_at = time.monotonic()
    for name in moved:
        _post_anywhere(survivors[0], ns, name, second)
    takeover_s = time.monotonic() - killed_at
    print(f"takeover of {len(moved)} jobs after SIGKILL: {takeover_s:.1f}s")
    assert takeover_s < 2 * LEASE_S, takeover_s
    for name in names:
        if name not in moved:
            _post_at_holder(cp, ns, name, survivors, second)
    _spread(cp, ns, 2)

    _run_twins(cp, ns, moved, survivors, (first, second))
    _close_all(cp, ns, [n for n in names if n not in moved])
    reader = survivors[0]
    for name in moved:
        moved_results = _comparable(_results(reader, ns, name))
        assert moved_results == _comparable(_results(reader, ns, f"twin-{name}")), name
        assert len(_snapshots(reader, ns, name)) == len(_snapshots(reader, ns, f"twin-{name}"))
    for name in names:  # no acknowledged record lost, moved or not
        buckets = _comparable(_results(reader, ns, name))[0]
        assert sum(b[2] for b in buckets) == len(records), name
        assert _snapshots(reader, ns, name), name

    # deletion: each job's holder closes it and removes its data; the other replica's
    # finalizer handler waits for that instead of removing the finalizer first
    cp.kubectl("delete", "mljobs", "--all", "-n", ns, "--wait=true", "--timeout=120s")
    store = PostgresStore(url)
    try:
        assert [j for j in store.list_jobs() if j.startswith(f"{ns}/")] == []
    finally:
        store.close()


def test_a_paused_replica_writes_nothing_for_the_shards_it_lost(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    postgres: PostgresCluster,
) -> None:
    cp, ns = control_plane, namespace
    url = postgres.url(postgres.create_database("fencing"))
    slow = {"MLJOB_STORE_URL": url, "MLJOB_FAULT_STEP_DELAY": "4"}
    ops = [operator_factory(**slow) for _ in range(2)]
    _spread(cp, ns, 2)
    records = event_series(120, spike_at=100)
    names = [f"job-{i}" for i in range(10)]
    for name in names:
        cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    for name in names:
        wait_state(cp, ns, name, "opened")
    holders = {name: _post_at_holder(cp, ns, name, ops, ndjson(records)) for name in names}
    paused = ops[0]
    mine = [name for name, op in holders.items() if op is paused]
    assert len(mine) >= 2, holders
    other = ops[1]
    *closing, fed = mine

    # a close in flight on the replica about to pause (each step waits 4 s first)
    for name in closing:
        cp.kubectl(
            "patch", "mljob", name, "-n", ns, "--type=merge", "-p", '{"spec":{"state":"closed"}}'
        )
    wait_for(lambda: get(cp, ns, closing[0]).get("status", {}).get("state") == "closing", "closing")
    late: dict[str, tuple[int, Any]] = {}

    def late_post() -> None:
        """Sent while paused, answered after SIGCONT by the paused replica itself (marked
        as forwarded already, so it cannot hand it to the new holder)."""
        body = ndjson(event_series(5, start=records[-1]["time"] + 3600))
        late["post"] = _post_here(paused, f"/v1/namespaces/{ns}/mljobs/{fed}/data", body)

    assert paused.proc is not None
    paused.proc.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    poster = threading.Thread(target=late_post)
    poster.start()
    try:
        wait_for(
            lambda: set(_shard_holders(cp, ns).values()) == {_replica_id(other)},
            "every shard held by the running replica",
            timeout=3 * LEASE_S,
        )
        for name in closing:
            cp.kubectl(
                "wait", "-n", ns, "--for=condition=Closed", f"mljob/{name}", "--timeout=120s"
            )
        closed = {name: get(cp, ns, name) for name in closing}
    finally:
        paused.proc.send_signal(signal.SIGCONT)
    print(f"paused {time.monotonic() - stopped_at:.1f}s")
    poster.join(timeout=120)
    wait_for(  # the resumed replica noticed, and its controllers of them returned
        lambda: all(f"{ns}/{name}: shard lost; stopped here" in _log(paused) for name in mine),
        "the resumed replica to stop its jobs",
    )

    for name, before in closed.items():
        after = get(cp, ns, name)
        assert after["status"] == before["status"], f"{name}: status rewritten after SIGCONT"
        assert after["metadata"] == before["metadata"], f"{name} written after SIGCONT"
    store = PostgresStore(url)
    try:
        for name in closing:
            snapshots = store.all_snapshots(f"{ns}/{name}")
            assert [s.snapshot_id for s in snapshots] == [
                closed[name]["status"]["modelSnapshotId"]
            ], name
        assert [e.kind for e in store.wal_entries(f"{ns}/{fed}", 0)] == ["data"]
    finally:
        store.close()
    code, answer = late["post"]
    assert (code, "this replica no longer holds" in str(answer)) == (503, True), (
        "a replica that lost the job's shard took data",
        answer,
    )


def test_a_close_cut_by_a_killed_replica_is_finished_by_another_with_one_snapshot(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    postgres: PostgresCluster,
) -> None:
    cp, ns = control_plane, namespace
    url = postgres.url(postgres.create_database("takeover_close"))
    doomed = operator_factory(MLJOB_STORE_URL=url, MLJOB_FAULT_KILL_AT="after:persistSnapshot")
    other = operator_factory(MLJOB_STORE_URL=url)
    _spread(cp, ns, 2)
    names = [f"job-{i}" for i in range(8)]
    for name in names:
        cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    records = event_series(60, spike_at=40)
    for name in names:
        wait_state(cp, ns, name, "opened")
        _post_anywhere(other, ns, name, ndjson(records))
    name = next(n for n in names if _holder(cp, ns, n, [doomed, other]) is doomed)
    cp.kubectl(
        "patch", "mljob", name, "-n", ns, "--type=merge", "-p", '{"spec":{"state":"closed"}}'
    )
    assert doomed.wait_exit(timeout=60) == -signal.SIGKILL, doomed.log_tail()
    killed_at = time.monotonic()
    cp.kubectl("wait", "-n", ns, "--for=condition=Closed", f"mljob/{name}", "--timeout=60s")
    print(f"close finished by the other replica {time.monotonic() - killed_at:.1f}s after the kill")
    st = get(cp, ns, name)["status"]
    assert set(st["lastClose"]["steps"]) == {
        "flush",
        "finalizeResults",
        "persistSnapshot",
        "pruneHistory",
    }
    store = PostgresStore(url)
    try:
        snapshots = store.all_snapshots(f"{ns}/{name}")
    finally:
        store.close()
    assert [s.snapshot_id for s in snapshots] == [st["modelSnapshotId"]]
    assert st["dataCounts"]["processedRecordCount"] == len(records)


def test_a_replica_stopped_on_purpose_hands_its_jobs_over_at_once(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    postgres: PostgresCluster,
) -> None:
    """A rolling update: SIGTERM hands the shards back, so the others take the jobs on
    their next renewal instead of after a whole lease duration."""
    cp, ns = control_plane, namespace
    url = postgres.url(postgres.create_database("handover"))
    ops = [operator_factory(MLJOB_STORE_URL=url) for _ in range(2)]
    _spread(cp, ns, 2)
    names = [f"job-{i}" for i in range(6)]
    for name in names:
        cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    records = event_series(60)
    for name in names:
        wait_state(cp, ns, name, "opened")
        _post_anywhere(ops[1], ns, name, ndjson(records[:30]))
    leaving, staying = ops
    moving = [n for n in names if _holder(cp, ns, n, ops) is leaving]
    stopped_at = time.monotonic()
    leaving.stop()
    for name in moving:
        _post_anywhere(staying, ns, name, ndjson(records[30:]))
    handover_s = time.monotonic() - stopped_at
    print(f"handover of {len(moving)} jobs after SIGTERM: {handover_s:.1f}s")
    assert handover_s < LEASE_S, handover_s
    wait_for(  # a released shard no job of `moving` is on is taken on the next renewal too
        lambda: set(_shard_holders(cp, ns).values()) == {_replica_id(staying)} or None,
        "every shard held by the staying replica",
        timeout=LEASE_S,
    )
    assert time.monotonic() - stopped_at < LEASE_S, "sooner than a lease duration"
    assert member_lease_name(_replica_id(leaving)) not in _leases(cp, ns)  # deleted on stop
