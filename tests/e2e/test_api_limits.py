"""Body size and malformed input against the real operator: 413 and 400 as JSON, bad
records inside a valid body counted by the engine, and the job unharmed afterwards."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from typing import Any

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess
from tests.e2e.jobs import event_series, mljob, ndjson, wait_state

LIMIT = 64 * 1024


def test_body_size_limit_and_malformed_input(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    cp, ns = control_plane, namespace
    op = operator_factory(MLJOB_HTTP_MAX_BODY=str(LIMIT))
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob("web"))
    wait_state(cp, ns, "web", "opened")
    base = f"/v1/namespaces/{ns}/mljobs/web"

    def call(
        method: str, tail: str, body: bytes | None = None, ctype: str = "application/json"
    ) -> tuple[int, Any]:
        return op.request(method, base + tail, body, token=op.token, content_type=ctype)

    big = ndjson(event_series(2000))
    assert len(big) > LIMIT
    code, body = call("POST", "/data", big)
    assert code == 413, body
    assert body["error"]["reason"] == "RequestEntityTooLarge"
    assert str(LIMIT) in body["error"]["message"]

    conn = http.client.HTTPSConnection("127.0.0.1", op.port, context=op.ssl_context(), timeout=30)
    conn.putrequest("POST", base + "/data")
    conn.putheader("Authorization", f"Bearer {op.token}")
    conn.putheader("Content-Length", str(10 * LIMIT))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413, "refused on the declared length, before the body is sent"
    assert json.loads(resp.read())["error"]["status"] == 413
    conn.close()

    for bad in (b"", b"   \n", b"{not json", b'[{"time": 1}', b'{"time": 1}\n{oops}\n', b'{"a": 1'):
        code, body = call("POST", "/data", bad)
        assert code == 400, (bad, body)
        assert body["error"]["reason"] == "BadRequest"
    code, counts = call("GET", "/stats")
    assert counts["dataCounts"]["inputRecordCount"] == 0, "refused bodies count nothing"

    mixed = [
        {"time": 1_700_000_000},
        {"time": "yesterday"},
        {"no_time": 1},
        "a string",
        None,
        [1, 2],
        {"time": 1_700_000_060},
    ]
    code, counts = call("POST", "/data", json.dumps(mixed).encode())
    assert code == 202, counts
    assert counts["inputRecordCount"] == len(mixed)
    assert counts["processedRecordCount"] == 2
    assert counts["invalidDateCount"] + counts["missingFieldCount"] >= 3

    for tail, problem in [
        ("/results/buckets?size=100000", "size"),
        ("/results/buckets?from=-1", "from"),
        ("/results/buckets?anomalyScore=high", "anomalyScore"),
        ("/results/records?start=soon", "start"),
        ("/results/records?sort=nonsense", "sort"),
        ("/results/buckets?start=2023-11-14T22:13:20", "zone"),
        ("/results/buckets?excludeInterim=perhaps", "excludeInterim"),
        ("/modelsnapshots?end=99999999999999999999999", "end"),
    ]:
        code, body = call("GET", tail)
        assert code == 400, (tail, body)
        assert problem in body["error"]["message"], (tail, body)
    for tail in ("/flush?advanceTime=later", "/flush?calcInterim=2"):
        code, body = call("POST", tail)
        assert code == 400, (tail, body)
    for payload in (b"[]", b'{"retain": 1}', b'{"retain": true, "x": 1}', b"{"):
        code, body = call("POST", "/modelsnapshots/any/_update", payload)
        assert code == 400, (payload, body)
    code, body = call("POST", "/modelsnapshots/any/_update", b'{"retain": true}')
    assert code == 404, body
    code, body = call("GET", "/no/such/path")
    assert code == 404, body
    assert "error" in body
    code, body = call("DELETE", "/data")
    assert code == 405, body

    code, counts = call("POST", "/data", ndjson(event_series(3)), "application/x-ndjson")
    assert code == 202, "the job still takes data"


def test_first_body_without_timed_records_is_counted(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    cp, ns, op = control_plane, namespace, operator
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob("web"))
    wait_state(cp, ns, "web", "opened")
    path = f"/v1/namespaces/{ns}/mljobs/web/data"
    code, counts = op.request("POST", path, b'{"no_time": 1}\n42\n', token=op.token)
    assert code == 202, counts
    assert (counts["inputRecordCount"], counts["processedRecordCount"]) == (2, 0)
