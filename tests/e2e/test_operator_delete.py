"""Deletion through the finalizer: the job is closed first (honouring force), then its
results and snapshots leave the store, then the object goes. Nothing gets stuck."""

from __future__ import annotations

import json
from pathlib import Path

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess
from mljob_operator.store.sqlite import SQLiteStore
from tests.e2e.jobs import (
    INVALID_LIMITS,
    event_series,
    mljob,
    ndjson,
    post,
    set_state,
    wait_for,
    wait_state,
)

CYCLES = 20


def _store_jobs(op: OperatorProcess) -> list[str]:
    store = SQLiteStore(op.data_dir / "mljobs.sqlite")
    try:
        return store.list_jobs()
    finally:
        store.close()


def _gone(cp: ControlPlane, ns: str, name: str) -> bool:
    got = cp.kubectl("get", "mljob", name, "-n", ns, check=False)
    return got.returncode != 0 and "NotFound" in got.stderr


def _delete(cp: ControlPlane, ns: str, name: str) -> None:
    cp.kubectl("delete", "mljob", name, "-n", ns, "--wait=true", "--timeout=60s")
    assert _gone(cp, ns, name)


def test_create_close_delete_cycles_leave_nothing_behind(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    cp, ns = control_plane, namespace
    records = ndjson(event_series(20))
    for i in range(CYCLES):
        name = f"cycle-{i}"
        cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
        wait_state(cp, ns, name, "opened")
        assert post(operator, ns, name, records)[0] == 202
        if i % 2 == 0:
            set_state(cp, ns, name, "closed")
            wait_state(cp, ns, name, "closed")
        # odd cycles delete an open job: the finalizer closes it first
        _delete(cp, ns, name)
    left = json.loads(cp.kubectl("get", "mljobs", "-n", ns, "-o", "json").stdout)["items"]
    assert left == []
    assert _store_jobs(operator) == []
    assert "Traceback" not in Path(operator.log_path).read_text()


def test_deleting_a_failed_job_does_not_get_stuck(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    cp, ns, name = control_plane, namespace, "broken"
    bad = mljob(name, **INVALID_LIMITS)
    cp.kubectl("apply", "-n", ns, "-f", "-", input=bad)
    wait_state(cp, ns, name, "failed")
    _delete(cp, ns, name)
    assert wait_for(lambda: _store_jobs(operator) == [], "store to forget the job")


def test_deletion_while_the_operator_is_down_completes_when_it_returns(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: object,
) -> None:
    assert callable(operator_factory)
    cp, ns, name = control_plane, namespace, "orphan"
    first: OperatorProcess = operator_factory()
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    wait_state(cp, ns, name, "opened")
    assert post(first, ns, name, ndjson(event_series(10)))[0] == 202
    first.stop()
    cp.kubectl("delete", "mljob", name, "-n", ns, "--wait=false")
    assert not _gone(cp, ns, name), "the finalizer holds the object while no operator runs"
    second: OperatorProcess = operator_factory()
    assert wait_for(lambda: _gone(cp, ns, name), "deletion to finish", timeout=60)
    assert _store_jobs(second) == []
