"""The `mljob` CLI as a user runs it: a kubeconfig whose user is an mljob-editor
ServiceAccount token, the operator's HTTPS API with its certificate as the CA."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess, service_account_token
from tests.e2e.jobs import event_series, mljob, ndjson, status, wait_state


def editor_env(cp: ControlPlane, ns: str, op: OperatorProcess, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment as a user bound to mljob-editor in `ns`."""
    token = service_account_token(cp, ns, "pipeline", "mljob-editor")
    return {
        **cp.env(cp.kubeconfig_with_token("editor", token, ns, tmp_path / "editor.kubeconfig")),
        "MLJOB_SERVER": op.url,
        "MLJOB_CA": str(op.ca_file),
        "COLUMNS": "200",
    }


def run_cli(
    env: dict[str, str], *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mljob_operator.cli", *args],
        env=env,
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        timeout=360,
        check=False,
    )


def test_cli_close_by_pattern_post_results_status(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    cp, ns, op = control_plane, namespace, operator
    mljob_cli = functools.partial(run_cli, editor_env(cp, ns, op, tmp_path))
    jobs = ("web-1", "web-2", "db-1")
    for name in jobs:
        cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    for name in jobs:
        wait_state(cp, ns, name, "opened")

    posted = mljob_cli("post", "web-1", "-", stdin=ndjson(event_series(60, spike_at=40)))
    assert posted.returncode == 0, posted.stderr
    assert json.loads(posted.stdout)["processedRecordCount"] == len(event_series(60, spike_at=40))

    closed = mljob_cli("close", "web-*", "--timeout", "5m")
    assert closed.returncode == 0, closed.stderr
    assert json.loads(closed.stdout) == {"closed": True}
    assert "persistSnapshot" in closed.stderr, "the progress display shows housekeeping steps"
    assert {n: status(cp, ns, n)["state"] for n in jobs} == {
        "web-1": "closed",
        "web-2": "closed",
        "db-1": "opened",
    }

    none = mljob_cli("close", "api-*", "--no-allow-no-match")
    assert none.returncode != 0
    assert "api-*" in none.stderr
    assert none.stdout == ""
    assert mljob_cli("close", "api-*").returncode == 0, "allowed by default"
    missing = mljob_cli("close", "nope")
    assert missing.returncode != 0
    assert "nope" in missing.stderr

    page = json.loads(mljob_cli("results", "web-1", "-o", "json", "--size", "1000").stdout)
    assert page["count"] == 12
    table = mljob_cli("results", "web-1", "--sort", "anomalyScore", "--desc", "--size", "3")
    assert table.returncode == 0, table.stderr
    assert "web-1: 12 buckets" in table.stdout
    records = mljob_cli("results", "web-1", "--records", "-o", "json")
    assert records.returncode == 0, records.stderr
    snaps = json.loads(mljob_cli("snapshots", "web-1", "-o", "json").stdout)
    assert snaps["count"] == 1
    assert snaps["modelSnapshots"][0]["snapshotId"] == status(cp, ns, "web-1")["modelSnapshotId"]
    shown = mljob_cli("status")
    assert shown.returncode == 0, shown.stderr
    assert "web-1" in shown.stdout
    assert "closed" in shown.stdout

    refused = mljob_cli("post", "web-1", "-", stdin=ndjson(event_series(2)))
    assert refused.returncode != 0
    assert "409" in refused.stderr

    opened = mljob_cli("open", "web-1", "--timeout", "2m")
    assert opened.returncode == 0, opened.stderr
    assert json.loads(opened.stdout) == {"opened": True}
    assert status(cp, ns, "web-1")["state"] == "opened"
    flushed = mljob_cli("flush", "web-1", "--calc-interim")
    assert flushed.returncode == 0, flushed.stderr
    assert json.loads(flushed.stdout)["flushed"] is True

    forced = mljob_cli("close", "web-1", "--force")
    assert forced.returncode != 0, "an editor may not force-close"
    assert "mljobs/forceclose" in forced.stderr
    assert "ForceClosed" not in json.dumps(status(cp, ns, "web-1"))
