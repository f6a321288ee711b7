"""Model plot and influencer results through the real operator: switched on by patching the
spec of an open job (no reopen), a spike outside the model's band, the spike's influencer
value, RBAC on both routes, and `mljob plot` drawing the view (or falling back to records
with a hint when model plot is off)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess, service_account_token
from tests.e2e.jobs import (
    BASE_TIME,
    api_get,
    get,
    mljob,
    ndjson,
    post,
    status,
    wait_for,
    wait_state,
)
from tests.e2e.test_cli import editor_env, run_cli

SPIKE_MINUTE = 160
SPIKE_BUCKET_MS = (BASE_TIME + SPIKE_MINUTE // 5 * 300) * 1000
ANALYSIS = {
    "analysisConfig": {
        "bucketSpan": "5m",
        "detectors": [{"function": "count", "partitionFieldName": "host"}],
        "influencers": ["host", "user"],
    }
}


def _events(first: int, last: int) -> list[dict[str, Any]]:
    """Three events a minute from alice on web-1; thirty from mallory in SPIKE_MINUTE."""
    records = []
    for m in range(first, last):
        if m == SPIKE_MINUTE:
            records += [{"time": BASE_TIME + m * 60, "host": "web-1", "user": "mallory"}] * 30
        else:
            records += [
                {"time": BASE_TIME + m * 60 + i, "host": "web-1", "user": "alice"} for i in range(3)
            ]
    return records


def _enable_model_plot(cp: ControlPlane, ns: str, name: str) -> None:
    patch = json.dumps({"spec": {"modelPlotConfig": {"enabled": True}}})
    cp.kubectl("patch", "mljob", name, "-n", ns, "--type=merge", "-p", patch)
    generation = get(cp, ns, name)["metadata"]["generation"]

    def seen() -> bool:
        return status(cp, ns, name).get("observedGeneration") == generation

    wait_for(seen, f"{ns}/{name} to observe generation {generation}")


def test_model_plot_switched_on_an_open_job_and_influencers(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    cp, ns, op = control_plane, namespace, operator
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob("web", **ANALYSIS))
    wait_state(cp, ns, "web", "opened")
    assert post(op, ns, "web", ndjson(_events(0, 100)))[0] == 202
    assert api_get(op, ns, "web", "results/modelplot") == {"count": 0, "modelPlot": []}

    _enable_model_plot(cp, ns, "web")
    assert status(cp, ns, "web")["state"] == "opened"
    assert post(op, ns, "web", ndjson(_events(100, 200)))[0] == 202

    page = api_get(op, ns, "web", "results/modelplot?size=1000")
    points = page["modelPlot"]
    assert page["count"] == len(points) == 20  # buckets 19 (open at the switch) to 38
    assert min(p["timestamp"] for p in points) == (BASE_TIME + 19 * 300) * 1000
    for p in points:
        assert p["modelLower"] <= p["modelMedian"] <= p["modelUpper"], p
        assert p["bucketSpan"] == 300
        assert p["partitionFieldValue"] == "web-1"
        assert p["isInterim"] is False
    spike = next(p for p in points if p["timestamp"] == SPIKE_BUCKET_MS)
    assert spike["actual"] == 42
    assert spike["actual"] > spike["modelUpper"]
    quiet = [p for p in points if p["timestamp"] != SPIKE_BUCKET_MS]
    assert all(p["modelLower"] <= p["actual"] <= p["modelUpper"] for p in quiet[-5:])

    assert api_get(op, ns, "web", "results/modelplot?partitionFieldValue=nope")["count"] == 0
    window = f"start={SPIKE_BUCKET_MS}&end={SPIKE_BUCKET_MS + 1}"
    one = api_get(op, ns, "web", f"results/modelplot?partitionFieldValue=web-1&{window}")
    assert one["count"] == 1
    assert one["modelPlot"][0]["actual"] == 42

    influencers = api_get(op, ns, "web", f"results/influencers?{window}")
    found = {
        (i["influencerFieldName"], i["influencerFieldValue"]): i for i in influencers["influencers"]
    }
    assert influencers["count"] == len(found)
    assert ("user", "mallory") in found
    assert ("host", "web-1") in found
    mallory = found["user", "mallory"]
    records = api_get(op, ns, "web", f"results/records?{window}")["records"]
    assert mallory["probability"] == min(r["probability"] for r in records)
    assert mallory["influencerScore"] > 0
    assert mallory["initialInfluencerScore"] > 0
    assert mallory["isInterim"] is False
    top = api_get(op, ns, "web", "results/influencers?sort=influencerScore&desc=true&size=1")
    assert top["influencers"][0]["influencerScore"] >= mallory["influencerScore"]

    viewer = service_account_token(cp, ns, "viewer", "mljob-viewer")
    assert api_get(op, ns, "web", "results/influencers", token=viewer)["count"] >= 2
    nobody = service_account_token(cp, ns, "nobody", None)
    for route in ("results/modelplot", "results/influencers"):
        code, body = op.request("GET", f"/v1/namespaces/{ns}/mljobs/web/{route}", token=nobody)
        assert code == 403, body
        assert "mljobs/results" in body["error"]["message"]


def test_mljob_plot_draws_the_series_or_falls_back_to_records(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    cp, ns, op = control_plane, namespace, operator
    mljob_cli = functools.partial(run_cli, editor_env(cp, ns, op, tmp_path))
    plotted = {**ANALYSIS, "modelPlotConfig": {"enabled": True}}
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob("plotted", **plotted))
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob("plain", **ANALYSIS))
    for name in ("plotted", "plain"):
        wait_state(cp, ns, name, "opened")
        assert post(op, ns, name, ndjson(_events(0, 200)))[0] == 202

    drawn = mljob_cli("plot", "plotted", "--no-color", "--width", "100", "--height", "20")
    assert drawn.returncode == 0, drawn.stderr
    assert f"{ns}/plotted detector 0 host=web-1" in drawn.stdout
    assert "model band (95%)" in drawn.stdout
    assert "actual" in drawn.stdout
    assert "anomalies (" in drawn.stdout
    listed = drawn.stdout.split("anomalies (", 1)[1].splitlines()[1]
    assert "score" in listed
    assert "actual 42" in listed
    assert "\x1b[" not in drawn.stdout, "--no-color writes no escape codes"
    assert "modelPlotConfig" not in drawn.stderr

    narrowed = mljob_cli(
        "plot", "plotted", "--no-color", "--partition", "nope", "--width", "80", "--height", "15"
    )
    assert narrowed.returncode == 0, narrowed.stderr
    assert "no results in this range" in narrowed.stdout

    fallback = mljob_cli("plot", "plain", "--no-color", "--width", "100", "--height", "20")
    assert fallback.returncode == 0, fallback.stderr
    assert "modelPlotConfig" in fallback.stderr
    assert "kubectl patch mljob plain" in fallback.stderr
    assert "model band" not in fallback.stdout
    assert "actual 42" in fallback.stdout
