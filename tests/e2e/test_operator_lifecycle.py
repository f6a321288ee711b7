"""The operator end to end: a real kopf process, a real apiserver, a real SQLite store.

Open → data → close with housekeeping → reopen restores the model → close again; force
close by annotation (handled once per value); a slow close past closeTimeout; a failed
job whose normal close is refused; delete through the finalizer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess
from mljob_operator.handlers import EVENT_POSTERS
from tests.e2e.jobs import (
    BASE_TIME,
    INVALID_LIMITS,
    annotate_force,
    api_get,
    condition,
    event_series,
    events,
    mljob,
    ndjson,
    post,
    set_state,
    status,
    wait_for,
    wait_reason,
    wait_state,
)

CLOSE_STEPS = {"flush", "finalizeResults", "persistSnapshot", "pruneHistory"}


def _scores(op: OperatorProcess, ns: str, name: str) -> list[tuple[int, float, int]]:
    buckets = api_get(op, ns, name, "results/buckets?size=10000")["buckets"]
    return [(b["timestamp"], b["anomalyScore"], b["eventCount"]) for b in buckets]


def _snapshots(op: OperatorProcess, ns: str, name: str) -> list[dict[str, Any]]:
    snaps: list[dict[str, Any]] = api_get(op, ns, name, "modelsnapshots")["modelSnapshots"]
    return snaps


def _close(cp: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    set_state(cp, ns, name, "closed")
    cp.kubectl("wait", "-n", ns, "--for=condition=Closed", f"mljob/{name}", "--timeout=60s")
    return status(cp, ns, name)


def test_open_data_close_reopen_close(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    cp, ns = control_plane, namespace
    records = event_series(240, spike_at=200)
    half = len(event_series(120))
    for name in ("split", "whole"):
        cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    for name in ("split", "whole"):
        st = wait_state(cp, ns, name, "opened")
        assert condition(st, "Ready")["status"] == "True"
        assert condition(st, "Opened")["status"] == "True"

    code, counts = post(operator, ns, "split", ndjson(records[:half]))
    assert code == 202, counts
    assert counts["processedRecordCount"] == half
    first = _close(cp, ns, "split")
    assert first["state"] == "closed"
    assert first["closed"] is True
    assert condition(first, "Closed")["reason"] == "Closed"
    assert condition(first, "Ready")["status"] == "True"
    assert first["dataCounts"]["processedRecordCount"] == half
    snapshot_1 = first["modelSnapshotId"]
    assert first["lastClose"]["snapshotId"] == snapshot_1
    assert set(first["lastClose"]["steps"]) == CLOSE_STEPS
    assert first["lastClose"]["durationSeconds"] >= 0
    assert [s["snapshotId"] for s in _snapshots(operator, ns, "split")] == [snapshot_1]
    reasons = [e["reason"] for e in events(cp, ns, "split")]
    assert {"Opened", "Closed"} <= set(reasons), "a fast close may skip Closing"

    code, refused = post(operator, ns, "split", ndjson(records[half:]))
    assert code == 409
    assert "closed" in refused["error"]["message"]
    assert status(cp, ns, "split")["dataCounts"]["processedRecordCount"] == half

    set_state(cp, ns, "split", "opened")
    reopened = wait_state(cp, ns, "split", "opened")
    assert reopened["lastOpen"]["restoredSnapshotId"] == snapshot_1
    code, counts = post(operator, ns, "split", ndjson(records[half:]))
    assert code == 202, counts
    assert counts["processedRecordCount"] == len(records)
    second = _close(cp, ns, "split")
    assert second["modelSnapshotId"] != snapshot_1
    assert len(_snapshots(operator, ns, "split")) == 2

    code, _ = post(operator, ns, "whole", ndjson(records))
    assert code == 202
    _close(cp, ns, "whole")
    split, whole = _scores(operator, ns, "split"), _scores(operator, ns, "whole")
    assert len(split) == len(whole) == 48
    for (ts_a, score_a, n_a), (ts_b, score_b, n_b) in zip(split, whole, strict=True):
        assert (ts_a, n_a) == (ts_b, n_b)
        assert score_a == pytest.approx(score_b, abs=1e-6)
    ranked = sorted(whole, key=lambda b: b[1], reverse=True)
    assert ranked[0][0] == (BASE_TIME + 200 * 60) * 1000, "the spike scores highest"
    assert ranked[0][1] > 75
    assert ranked[0][1] > 2 * ranked[1][1]


def test_force_close_skips_housekeeping_and_is_handled_once_per_value(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    cp, ns, name = control_plane, namespace, "forced"
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    wait_state(cp, ns, name, "opened")
    assert post(operator, ns, name, ndjson(event_series(30)))[0] == 202

    annotate_force(cp, ns, name, "v1")
    assert status(cp, ns, name)["state"] == "opened", "the annotation alone closes nothing"
    st = _close(cp, ns, name)
    closed = condition(st, "Closed")
    assert closed["reason"] == "ForceClosed"
    assert "recent results may be missing" in closed["message"]
    assert st["lastHandledForceClose"] == "v1"
    assert st["lastClose"]["forced"] is True
    assert _snapshots(operator, ns, name) == []
    assert any(e["reason"] == "ForceClosed" for e in events(cp, ns, name))

    set_state(cp, ns, name, "opened")
    wait_state(cp, ns, name, "opened")
    st = _close(cp, ns, name)
    assert condition(st, "Closed")["reason"] == "Closed", "v1 was handled already"
    assert len(_snapshots(operator, ns, name)) == 1

    set_state(cp, ns, name, "opened")
    wait_state(cp, ns, name, "opened")
    annotate_force(cp, ns, name, "v2")
    st = _close(cp, ns, name)
    assert condition(st, "Closed")["reason"] == "ForceClosed"
    assert st["lastHandledForceClose"] == "v2"
    assert len(_snapshots(operator, ns, name)) == 1


def test_slow_close_times_out_warns_and_completes(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    cp, ns, name = control_plane, namespace, "slow"
    op = operator_factory(MLJOB_FAULT_STEP_DELAY="1.0")
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name, closeTimeout="2s"))
    wait_state(cp, ns, name, "opened")
    assert post(op, ns, name, ndjson(event_series(20)))[0] == 202
    set_state(cp, ns, name, "closed")

    st = wait_reason(cp, ns, name, "Closing", "TimedOut", timeout=30)
    assert st["state"] == "closing"
    assert condition(st, "Closing")["status"] == "True"
    assert "ml.mljob.dev/force-close" in condition(st, "Closing")["message"]
    warnings = [e for e in events(cp, ns, name) if e["type"] == "Warning"]
    assert any(
        e["reason"] == "TimedOut" and "ml.mljob.dev/force-close" in e["message"] for e in warnings
    ), warnings
    cp.kubectl("wait", "-n", ns, "--for=condition=Closed", f"mljob/{name}", "--timeout=60s")
    done = status(cp, ns, name)
    assert {"Closing", "Closed"} <= {e["reason"] for e in events(cp, ns, name)}, "a slow close"
    assert done["lastClose"]["timedOut"] is True
    assert set(done["lastClose"]["steps"]) == CLOSE_STEPS
    assert done["modelSnapshotId"]


def test_invalid_spec_fails_and_only_force_closes_it(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    cp, ns, name = control_plane, namespace, "bad"
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name, **INVALID_LIMITS))
    st = wait_state(cp, ns, name, "failed")
    ready, failed = condition(st, "Ready"), condition(st, "Failed")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert (failed["status"], failed["reason"]) == ("True", "InvalidSpec")
    assert "memory limit" in failed["message"]

    set_state(cp, ns, name, "closed")

    st = wait_reason(cp, ns, name, "Closed", "CloseRefused")
    assert st["state"] == "failed"
    assert "ml.mljob.dev/force-close" in condition(st, "Closed")["message"]

    annotate_force(cp, ns, name, "now")
    cp.kubectl("wait", "-n", ns, "--for=condition=Closed", f"mljob/{name}", "--timeout=60s")
    st = status(cp, ns, name)
    assert condition(st, "Closed")["reason"] == "ForceClosed"
    assert st["lastHandledForceClose"] == "now"


def test_data_to_unknown_job_is_404(operator: OperatorProcess, namespace: str) -> None:
    code, payload = post(operator, namespace, "nope", b'{"time": 1}')
    assert code == 404
    assert "not found" in payload["error"]["message"]


def test_fixing_an_invalid_spec_opens_the_job(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    cp, ns, name = control_plane, namespace, "fixable"
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name, **INVALID_LIMITS))
    wait_state(cp, ns, name, "failed")
    fix = '{"spec":{"analysisLimits":{"modelMemoryLimit":"64mb"}}}'
    cp.kubectl("patch", "mljob", name, "-n", ns, "--type=merge", "-p", fix)
    st = wait_state(cp, ns, name, "opened")
    assert condition(st, "Failed")["status"] == "False"
    assert condition(st, "Ready")["status"] == "True"


def test_daily_retention_after_retention_is_capped_as_documented(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    cp, ns, name = control_plane, namespace, "capped"
    spec = {"modelSnapshotRetentionDays": 1, "dailyModelSnapshotRetentionAfterDays": 5}
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name, **spec))
    st = wait_state(cp, ns, name, "opened")
    assert condition(st, "Ready")["status"] == "True"
    assert condition(st, "Failed")["status"] == "False"


def test_engine_failure_is_retried_then_fails_the_job(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    cp, ns, name = control_plane, namespace, "fragile"
    op = operator_factory(MLJOB_FAULT_FAIL_AT="flush")
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    wait_state(cp, ns, name, "opened")
    assert post(op, ns, name, ndjson(event_series(20)))[0] == 202
    set_state(cp, ns, name, "closed")
    st = wait_state(cp, ns, name, "failed", timeout=60)
    failed = condition(st, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "EngineError")
    assert "injected failure in flush" in failed["message"]
    assert any(e["reason"] == "EngineError" for e in events(cp, ns, name))
    log = op.log_tail(400)
    assert log.count("runStep failed (attempt") == 4, "three retries, then failed"

    wait_reason(cp, ns, name, "Closed", "CloseRefused")
    annotate_force(cp, ns, name, "rescue")
    cp.kubectl("wait", "-n", ns, "--for=condition=Closed", f"mljob/{name}", "--timeout=60s")
    assert api_get(op, ns, name, "results/buckets")["count"] > 0, "results stay readable"


def test_force_close_interrupts_a_stuck_housekeeping_step(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    cp, ns, name = control_plane, namespace, "stuck"
    op = operator_factory(MLJOB_FAULT_STEP_DELAY="25")
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name, closeTimeout="1s"))
    wait_state(cp, ns, name, "opened")
    assert post(op, ns, name, ndjson(event_series(20)))[0] == 202
    set_state(cp, ns, name, "closed")
    st = wait_reason(cp, ns, name, "Closing", "TimedOut", timeout=20)
    assert st["lastClose"]["steps"] == {}, "the first step is still running"
    annotate_force(cp, ns, name, "unstick")
    st = wait_reason(cp, ns, name, "Closed", "ForceClosed", timeout=10)
    assert st["state"] == "closed"
    assert st["lastHandledForceClose"] == "unstick"
    assert st["lastClose"]["forced"] is True
    assert st["lastClose"]["timedOut"] is True

    set_state(cp, ns, name, "opened")
    wait_state(cp, ns, name, "opened", timeout=90)
    code, counts = post(op, ns, name, ndjson(event_series(5, start=BASE_TIME + 3600)))
    assert code == 202, counts
    assert counts["processedRecordCount"] == len(event_series(20)) + len(event_series(5))


def test_a_burst_of_jobs_gets_every_event_in_order(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    """More jobs than Event posters (`EVENT_POSTERS`) opened and closed at once: the
    bounded posters still post each job's Opened and then its Closed, none lost."""
    cp, ns = control_plane, namespace
    names = [f"burst-{i}" for i in range(4 * EVENT_POSTERS)]
    listing = {"apiVersion": "v1", "kind": "List", "items": [json.loads(mljob(n)) for n in names]}
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(listing))
    for name in names:
        wait_state(cp, ns, name, "opened")
    closing = json.dumps({"spec": {"state": "closed"}})
    cp.kubectl("patch", "mljob", *names, "-n", ns, "--type=merge", "-p", closing)
    for name in names:
        wait_state(cp, ns, name, "closed")

    def posted() -> dict[str, list[str]] | None:
        items = json.loads(cp.kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]
        by_job: dict[str, list[tuple[str, str]]] = {n: [] for n in names}
        for item in items:
            job = item["involvedObject"]["name"]
            if job in by_job:
                when = item.get("eventTime") or item.get("firstTimestamp") or ""
                by_job[job].append((when, item["reason"]))
        found = {job: [reason for _, reason in sorted(seen)] for job, seen in by_job.items()}
        return found if all({"Opened", "Closed"} <= set(r) for r in found.values()) else None

    for job, reasons in wait_for(posted, "an Opened and a Closed Event for every job").items():
        assert reasons.index("Opened") < reasons.index("Closed"), (job, reasons)
