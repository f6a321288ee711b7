"""Who may do what on the data API: real ServiceAccount tokens, real TokenReview and
SubjectAccessReview against the shipped user roles, real HTTPS on loopback."""

from __future__ import annotations

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess, service_account_token
from tests.e2e.jobs import event_series, mljob, ndjson, status, wait_state

JOB = "web"


def path(ns: str, tail: str, name: str = JOB) -> str:
    return f"/v1/namespaces/{ns}/mljobs/{name}/{tail}"


def test_editor_posts_and_closes_viewer_reads_strangers_are_refused(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    cp, ns, op = control_plane, namespace, operator
    editor = service_account_token(cp, ns, "pipeline", "mljob-editor")
    viewer = service_account_token(cp, ns, "dashboard", "mljob-viewer")
    stranger = service_account_token(cp, ns, "stranger", None)
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(JOB))
    wait_state(cp, ns, JOB, "opened")
    records = ndjson(event_series(30))

    code, body = op.request("POST", path(ns, "data"), records)
    assert code == 401, body
    assert body["error"]["reason"] == "Unauthorized"
    code, body = op.request("POST", path(ns, "data"), records, token="not-a-token")
    assert code == 401, body
    code, body = op.request("GET", path(ns, "results/buckets"), token=stranger)
    assert code == 403, body
    assert '"get" on "mljobs/results"' in body["error"]["message"]

    code, body = op.request("POST", path(ns, "data"), records, token=viewer)
    assert code == 403, body
    assert '"create" on "mljobs/data"' in body["error"]["message"]
    assert "system:serviceaccount:" + ns + ":dashboard" in body["error"]["message"]
    code, counts = op.request("POST", path(ns, "data"), records, token=editor)
    assert code == 202, counts
    assert counts["processedRecordCount"] == 90

    for tail in ("results/buckets", "results/records", "stats", "modelsnapshots"):
        code, body = op.request("GET", path(ns, tail), token=viewer)
        assert code == 200, (tail, body)
    code, body = op.request("POST", f"/v1/namespaces/{ns}/mljobs/{JOB}/close", token=viewer)
    assert code == 403, body
    assert '"create" on "mljobs/close"' in body["error"]["message"]
    code, body = op.request("POST", path(ns, "open"), token=viewer)
    assert code == 403, body
    assert status(cp, ns, JOB)["state"] == "opened"

    code, body = op.request("POST", path(ns, "close?force=true"), token=editor)
    assert code == 403, body
    assert '"create" on "mljobs/forceclose"' in body["error"]["message"]
    assert status(cp, ns, JOB)["state"] == "opened"

    code, body = op.request("POST", path(ns, "close?timeout=2m"), token=editor, timeout=150)
    assert (code, body) == (200, {"closed": True})
    closed = status(cp, ns, JOB)
    assert closed["state"] == "closed"
    assert closed["lastClose"]["forced"] is False
    assert closed["dataCounts"]["processedRecordCount"] == 90


def test_posting_to_a_closed_job_is_409_and_changes_nothing(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    cp, ns, op = control_plane, namespace, operator
    editor = service_account_token(cp, ns, "pipeline", "mljob-editor")
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(JOB))
    wait_state(cp, ns, JOB, "opened")
    assert op.request("POST", path(ns, "data"), ndjson(event_series(60)), token=editor)[0] == 202
    code, body = op.request("POST", path(ns, "close"), token=editor, timeout=120)
    assert (code, body) == (200, {"closed": True})
    code, before = op.request("GET", path(ns, "stats"), token=editor)
    assert code == 200
    assert before["state"] == "closed"
    assert before["open"] is False
    code, buckets = op.request("GET", path(ns, "results/buckets?size=1000"), token=editor)
    assert code == 200
    assert buckets["count"] == 12

    code, body = op.request("POST", path(ns, "data"), ndjson(event_series(5)), token=editor)
    assert code == 409, body
    assert body["error"]["reason"] == "JobNotOpen"
    assert "closed" in body["error"]["message"]
    code, body = op.request("POST", path(ns, "flush?calcInterim=true"), token=editor)
    assert code == 409, body

    code, after = op.request("GET", path(ns, "stats"), token=editor)
    assert after["dataCounts"] == before["dataCounts"]
    in_status = status(cp, ns, JOB)["dataCounts"]
    assert {k: in_status[k] for k in before["dataCounts"]} == before["dataCounts"]
    assert op.request("GET", path(ns, "results/buckets?size=1000"), token=editor)[1] == buckets
    code, again = op.request("POST", path(ns, "close"), token=editor)
    assert (code, again) == (200, {"closed": True}), "closing a closed job is a no-op success"
