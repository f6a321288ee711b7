"""Crash safety: SIGKILL the real operator at every point of a close (and while opening),
restart it, and check the close completes with exactly one new snapshot and no
acknowledged record lost. The kill points come from MLJOB_FAULT_KILL_AT (faults.py)."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess
from mljob_operator.lifecycle import CLOSE_STEPS
from mljob_operator.store.sqlite import SQLiteStore
from tests.e2e.jobs import (
    api_get,
    condition,
    event_series,
    mljob,
    ndjson,
    post,
    set_state,
    status,
    wait_for,
    wait_state,
)

CLOSE_POINTS = [
    f"{when}:{step}"
    for step in ("beginClose", *(s.value for s in CLOSE_STEPS))
    for when in ("before", "after", "recorded")
]


@pytest.mark.parametrize("kill_at", CLOSE_POINTS)
def test_close_survives_sigkill(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    kill_at: str,
) -> None:
    cp, ns, name = control_plane, namespace, "crashy"
    records = event_series(60, spike_at=40)
    doomed = operator_factory(MLJOB_FAULT_KILL_AT=kill_at)
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    wait_state(cp, ns, name, "opened")
    code, counts = post(doomed, ns, name, ndjson(records))
    assert code == 202
    assert counts["processedRecordCount"] == len(records)
    set_state(cp, ns, name, "closed")
    assert doomed.wait_exit(timeout=60) == -signal.SIGKILL, doomed.log_tail()

    survivor = operator_factory()
    cp.kubectl("wait", "-n", ns, "--for=condition=Closed", f"mljob/{name}", "--timeout=60s")
    st = status(cp, ns, name)
    assert condition(st, "Closed")["reason"] == "Closed"
    assert set(st["lastClose"]["steps"]) == {s.value for s in CLOSE_STEPS}
    snapshots = api_get(survivor, ns, name, "modelsnapshots")["modelSnapshots"]
    assert [s["snapshotId"] for s in snapshots] == [st["modelSnapshotId"]], snapshots
    assert st["lastClose"]["snapshotId"] == st["modelSnapshotId"]
    assert st["dataCounts"]["processedRecordCount"] == len(records)
    buckets = api_get(survivor, ns, name, "results/buckets?size=1000")
    assert sum(b["eventCount"] for b in buckets["buckets"]) == len(records)
    store = SQLiteStore(survivor.data_dir / "mljobs.sqlite")
    try:
        row = store.get_job(f"{ns}/{name}")
    finally:
        store.close()
    assert row is not None
    assert row.intake_open is False, "the store knows the job is closed (revert needs it)"


def test_killed_while_opening_opens_after_restart(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    cp, ns, name = control_plane, namespace, "opening"
    doomed = operator_factory(MLJOB_FAULT_KILL_AT="after:open")
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    assert doomed.wait_exit(timeout=60) == -signal.SIGKILL
    assert status(cp, ns, name).get("state") in (None, "opening"), (
        "killed before opened was written (a fast open writes no opening state)"
    )
    survivor = operator_factory()
    st = wait_state(cp, ns, name, "opened")
    assert condition(st, "Ready")["status"] == "True"
    assert post(survivor, ns, name, ndjson(event_series(5)))[0] == 202


def test_restart_of_an_open_job_keeps_taking_data(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    cp, ns, name = control_plane, namespace, "steady"
    first = operator_factory()
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    wait_state(cp, ns, name, "opened")
    records = event_series(30)
    assert post(first, ns, name, ndjson(records[:40]))[0] == 202
    first.kill()
    second = operator_factory()

    def accepted() -> tuple[int, dict[str, int]] | None:
        code, counts = post(second, ns, name, ndjson(records[40:]))
        return None if code == 409 else (code, counts)  # 409: not reloaded yet, nothing taken

    code, counts = wait_for(accepted, "the restarted operator to take data again")
    assert code == 202, counts
    assert counts["processedRecordCount"] == len(records)
