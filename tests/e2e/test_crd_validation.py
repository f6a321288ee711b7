"""The MLJob CRD against a real apiserver: samples accepted, columns, explain, and the
apiserver itself rejecting invalid specs with a message a user can act on."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.controlplane import ControlPlane
from tests.e2e.jobs import eventually

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "manifests" / "crd" / "ml.mljob.dev_mljobs.yaml"
SAMPLES = REPO / "manifests" / "samples"
DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def crd(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-f", str(CRD_FILE))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "crd/mljobs.ml.mljob.dev", "--timeout=30s"
    )


def mljob(name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "ml.mljob.dev/v1alpha1",
            "kind": "MLJob",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def create(
    cp: ControlPlane, namespace: str, name: str, spec: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return cp.kubectl("create", "-n", namespace, "-f", "-", input=mljob(name, spec), check=False)


COUNT = {"analysisConfig": {"detectors": [{"function": "count"}]}}


@pytest.mark.usefixtures("crd")
def test_samples_are_accepted_and_defaulted(control_plane: ControlPlane, namespace: str) -> None:
    applied = eventually(
        lambda: control_plane.kubectl("apply", "-n", namespace, "-k", str(SAMPLES), check=False)
    )
    assert applied.returncode == 0, applied.stderr
    names = json.loads(control_plane.kubectl("get", "mlj", "-n", namespace, "-o", "json").stdout)
    jobs = {item["metadata"]["name"]: item for item in names["items"]}
    assert set(jobs) == {"event-rate", "response-times", "http-request-rate"}
    spec = jobs["event-rate"]["spec"]
    assert spec["state"] == "opened"
    assert spec["closeTimeout"] == "30m"
    assert spec["dataDescription"] == {"timeField": "time", "timeFormat": "epoch"}
    assert spec["modelSnapshotRetentionDays"] == 10
    assert spec["dailyModelSnapshotRetentionAfterDays"] == 1
    assert spec["analysisConfig"]["latency"] == "0s"
    assert "resultsRetentionDays" not in spec


@pytest.mark.usefixtures("crd")
def test_get_shows_the_columns(control_plane: ControlPlane, namespace: str) -> None:
    assert eventually(lambda: create(control_plane, namespace, "cols", COUNT)).returncode == 0
    status = {
        "status": {
            "state": "closed",
            "closed": True,
            "modelSnapshotId": "snap-0001",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Closed",
                    "message": "closed as spec.state asks",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
    }
    control_plane.kubectl(
        "patch",
        "mlj",
        "cols",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    header, row = control_plane.kubectl("get", "mlj", "cols", "-n", namespace).stdout.splitlines()
    assert header.split() == ["NAME", "STATE", "CLOSED", "SNAPSHOT", "READY", "AGE"]
    assert row.split()[:5] == ["cols", "closed", "true", "snap-0001", "True"]
    wide = control_plane.kubectl("get", "mlj", "cols", "-n", namespace, "-o", "wide").stdout
    assert "DESIRED" in wide.splitlines()[0]
    by_category = control_plane.kubectl("get", "ml", "-n", namespace).stdout
    assert "cols" in by_category


@pytest.mark.usefixtures("crd")
def test_status_subresource_ignores_status_in_spec_writes(
    control_plane: ControlPlane, namespace: str
) -> None:
    body = {**yaml.safe_load(mljob("sub", COUNT)), "status": {"state": "failed"}}
    created = eventually(
        lambda: control_plane.kubectl(
            "create", "-n", namespace, "-f", "-", input=yaml.safe_dump(body), check=False
        )
    )
    assert created.returncode == 0, created.stderr
    got = json.loads(
        control_plane.kubectl("get", "mlj", "sub", "-n", namespace, "-o", "json").stdout
    )
    assert "status" not in got or "state" not in got["status"]


@pytest.mark.usefixtures("crd")
def test_explain_prints_descriptions(control_plane: ControlPlane) -> None:
    out = eventually(
        lambda: control_plane.kubectl("explain", "mljob.spec.closeTimeout", check=False)
    ).stdout
    assert "How long a close may take" in out
    assert "30m" in out
    spec = control_plane.kubectl("explain", "mljob.spec").stdout
    for field in ("analysisConfig", "dataDescription", "closeTimeout", "datafeed", "state"):
        assert field in spec
    status = control_plane.kubectl("explain", "mljob.status.lastClose").stdout
    assert "snapshotId" in status


@pytest.mark.usefixtures("crd")
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            {"analysisConfig": {"detectors": [{"function": "p99"}]}},
            'spec.analysisConfig.detectors[0].function: Unsupported value: "p99"',
            id="unknown-detector-function",
        ),
        pytest.param(
            {"state": "opened"}, "spec.analysisConfig: Required value", id="missing-analysis-config"
        ),
        pytest.param(
            {"analysisConfig": {"detectors": [{"function": "mean"}]}},
            "spec.analysisConfig.detectors[0].fieldName: Required value: fieldName is required "
            "for every detector function but count",
            id="missing-field-name",
        ),
        pytest.param(
            {**COUNT, "closeTimeout": "30minutes"},
            'spec.closeTimeout: Invalid value: "30minutes": spec.closeTimeout in body should match',
            id="bad-close-timeout",
        ),
        pytest.param(
            {"analysisConfig": {"bucketSpan": "five", "detectors": [{"function": "count"}]}},
            'spec.analysisConfig.bucketSpan: Invalid value: "five"',
            id="bad-bucket-span",
        ),
        pytest.param(
            {"analysisConfig": {"bucketSpan": "0s", "detectors": [{"function": "count"}]}},
            'spec.analysisConfig.bucketSpan: Invalid value: "0s": must be a positive duration',
            id="zero-bucket-span",
        ),
        pytest.param(
            {"analysisConfig": {"detectors": []}},
            "spec.analysisConfig.detectors in body should have at least 1 items",
            id="no-detectors",
        ),
        pytest.param(
            {**COUNT, "state": "paused"}, 'spec.state: Unsupported value: "paused"', id="bad-state"
        ),
        pytest.param(
            {**COUNT, "dataDescription": {"timeFormat": "rfc822"}},
            'spec.dataDescription.timeFormat: Unsupported value: "rfc822"',
            id="bad-time-format",
        ),
        pytest.param(
            {**COUNT, "analysisLimits": {"modelMemoryLimit": "lots"}},
            'spec.analysisLimits.modelMemoryLimit: Invalid value: "lots"',
            id="bad-memory-limit",
        ),
        pytest.param(
            {**COUNT, "datafeed": {"start": "2026-01-01T00:00:00Z"}},
            "exactly one of datafeed.prometheus and datafeed.http must be set",
            id="datafeed-without-source",
        ),
        pytest.param(
            {
                **COUNT,
                "datafeed": {
                    "http": {"url": "http://data.example/x"},
                    "start": "2026-01-02T00:00:00Z",
                    "end": "2026-01-01T00:00:00Z",
                },
            },
            "datafeed.end must be after datafeed.start",
            id="datafeed-end-before-start",
        ),
        pytest.param(
            {**COUNT, "modelSnapshotRetentionDays": -1},
            "spec.modelSnapshotRetentionDays: Invalid value: -1",
            id="negative-retention",
        ),
    ],
)
def test_apiserver_rejects(
    control_plane: ControlPlane, namespace: str, spec: dict[str, Any], message: str
) -> None:
    eventually(lambda: control_plane.kubectl("get", "mlj", "-n", namespace, check=False))
    result = create(control_plane, namespace, "bad", spec)
    assert result.returncode != 0
    assert 'The MLJob "bad" is invalid' in result.stderr
    assert message in result.stderr


@pytest.mark.usefixtures("crd")
def test_analysis_config_is_immutable(control_plane: ControlPlane, namespace: str) -> None:
    assert eventually(lambda: create(control_plane, namespace, "fixed", COUNT)).returncode == 0
    changed = control_plane.kubectl(
        "patch",
        "mlj",
        "fixed",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"analysisConfig": {"bucketSpan": "10m"}}}),
        check=False,
    )
    assert changed.returncode != 0
    assert "spec.analysisConfig: Invalid value" in changed.stderr
    assert "analysisConfig is immutable after creation" in changed.stderr

    detectors = {
        "spec": {"analysisConfig": {"detectors": [{"function": "mean", "fieldName": "x"}]}}
    }
    replaced = control_plane.kubectl(
        "patch",
        "mlj",
        "fixed",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps(detectors),
        check=False,
    )
    assert "analysisConfig is immutable after creation" in replaced.stderr

    other = {"spec": {"state": "closed", "closeTimeout": "1h", "resultsRetentionDays": 7}}
    control_plane.kubectl(
        "patch", "mlj", "fixed", "-n", namespace, "--type=merge", "-p", json.dumps(other)
    )
    got = json.loads(
        control_plane.kubectl("get", "mlj", "fixed", "-n", namespace, "-o", "json").stdout
    )
    assert got["spec"]["state"] == "closed"
    assert got["spec"]["analysisConfig"]["bucketSpan"] == "5m"


@pytest.mark.usefixtures("crd")
def test_kubectl_wait_for_closed_condition(control_plane: ControlPlane, namespace: str) -> None:
    assert eventually(lambda: create(control_plane, namespace, "waited", COUNT)).returncode == 0
    closed = {
        "status": {
            "state": "closed",
            "closed": True,
            "conditions": [
                {
                    "type": "Closed",
                    "status": "True",
                    "reason": "Closed",
                    "message": "housekeeping done",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
    }
    control_plane.kubectl(
        "patch",
        "mlj",
        "waited",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(closed),
    )
    waited = control_plane.kubectl(
        "wait", "--for=condition=Closed", "mljob/waited", "-n", namespace, "--timeout=10s"
    )
    assert "condition met" in waited.stdout


@pytest.mark.usefixtures("crd")
def test_status_rejects_unknown_condition_status(
    control_plane: ControlPlane, namespace: str
) -> None:
    assert eventually(lambda: create(control_plane, namespace, "cond", COUNT)).returncode == 0
    bad = {
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "Maybe",
                    "reason": "Closed",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ]
        }
    }
    result = control_plane.kubectl(
        "patch",
        "mlj",
        "cond",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(bad),
        check=False,
    )
    assert 'status.conditions[0].status: Unsupported value: "Maybe"' in result.stderr
