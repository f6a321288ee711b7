"""The real operator on the PostgreSQL store (`MLJOB_STORE_URL`): a job opens, takes data,
survives a SIGKILL in the middle of its close and closes with exactly one snapshot; its
rows are in PostgreSQL and nothing is in the data directory."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

import pytest

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess
from devtools.postgres import PostgresCluster
from mljob_operator.lifecycle import CLOSE_STEPS
from mljob_operator.store.postgres import PostgresStore
from tests.e2e.jobs import (
    api_get,
    event_series,
    mljob,
    ndjson,
    post,
    set_state,
    status,
    wait_state,
)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    with PostgresCluster() as pg:
        yield pg


def test_a_close_killed_after_its_snapshot_finishes_on_postgres(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    postgres: PostgresCluster,
) -> None:
    cp, ns, name = control_plane, namespace, "pg-job"
    url = postgres.url(postgres.create_database("e2e"))
    records = event_series(60, spike_at=40)
    doomed = operator_factory(MLJOB_STORE_URL=url, MLJOB_FAULT_KILL_AT="after:persistSnapshot")
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    wait_state(cp, ns, name, "opened")
    code, counts = post(doomed, ns, name, ndjson(records))
    assert code == 202
    assert counts["processedRecordCount"] == len(records)
    set_state(cp, ns, name, "closed")
    assert doomed.wait_exit(timeout=60) == -signal.SIGKILL, doomed.log_tail()

    survivor = operator_factory(MLJOB_STORE_URL=url)
    cp.kubectl("wait", "-n", ns, "--for=condition=Closed", f"mljob/{name}", "--timeout=60s")
    st = status(cp, ns, name)
    assert set(st["lastClose"]["steps"]) == {s.value for s in CLOSE_STEPS}
    snapshots = api_get(survivor, ns, name, "modelsnapshots")["modelSnapshots"]
    assert [s["snapshotId"] for s in snapshots] == [st["modelSnapshotId"]], snapshots
    assert st["dataCounts"]["processedRecordCount"] == len(records)
    buckets = api_get(survivor, ns, name, "results/buckets?size=1000")
    assert sum(b["eventCount"] for b in buckets["buckets"]) == len(records)

    store = PostgresStore(url)
    try:
        row = store.get_job(f"{ns}/{name}")
        assert row is not None
        assert row.intake_open is False
        assert [s.snapshot_id for s in store.all_snapshots(f"{ns}/{name}")] == [
            st["modelSnapshotId"]
        ]
    finally:
        store.close()
    assert not (survivor.data_dir / "mljobs.sqlite").exists()
