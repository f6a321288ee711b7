"""The monitoring files the chart ships are the ones in manifests/monitoring/ (the chart
reads its copies with .Files.Get), and the Grafana dashboard only queries metrics the
operator serves, by their exposed names (`_total`, `_bucket`)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from mljob_operator import metrics
from mljob_operator.api import DatafeedStatus, JobState, MLJobStatus

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "manifests" / "monitoring"
CHART_FILES = REPO / "charts" / "mljob-operator" / "files"
PROMTOOL = "/usr/bin/promtool"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((MONITORING / "mljob-dashboard.json").read_text())
    return loaded


def served_names() -> set[str]:
    """Every series name the operator exposes: its event metrics and, for a job with a
    datafeed and scores, the per-job ones."""
    jobs = CollectorRegistry()
    status = MLJobStatus(state=JobState.OPENED, datafeed=DatafeedStatus(searched_until=1))
    jobs.register(metrics.JobsCollector(lambda: [("ns", "j", status)], lambda ns, j: (1, 2)))
    names = set()
    for registry in (metrics.REGISTRY, jobs):
        for family in registry.collect():
            names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


@pytest.mark.parametrize("name", ["mljob-alerts.rules.yaml", "mljob-dashboard.json"])
def test_the_chart_ships_the_files_of_manifests_monitoring(name: str) -> None:
    assert (CHART_FILES / name).read_bytes() == (MONITORING / name).read_bytes()


def test_the_dashboard_queries_only_served_metrics() -> None:
    served = served_names()
    queried = {
        name
        for panel in dashboard()["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bmljob_[a-z_]+", target["expr"])
    }
    assert queried, "the dashboard queries the operator's metrics"
    assert queried <= served, queried - served
    for variable in dashboard()["templating"]["list"]:
        for name in re.findall(r"\bmljob_[a-z_]+", variable.get("definition", "")):
            assert name in served, (variable["name"], name)


def test_the_dashboard_is_well_formed() -> None:
    board = dashboard()
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "namespace", "job"} <= variables
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert [t["refId"] for t in panel["targets"]] == [
            chr(ord("A") + i) for i in range(len(panel["targets"]))
        ]


def test_the_kustomization_carries_every_monitoring_object() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {"servicemonitor.yaml", "prometheusrule.yaml"}
    generated = kustomization["configMapGenerator"][0]
    assert generated["files"] == ["mljob-operator.json=mljob-dashboard.json"]
    assert generated["options"]["labels"]["grafana_dashboard"] == "1"
    monitor = yaml.safe_load((MONITORING / "servicemonitor.yaml").read_text())
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def test_the_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each query, with Grafana's variables filled in, as a recording rule for
    `promtool check rules` (which parses every expression)."""
    grafana = {"$__rate_interval": "5m", "$__range": "1h", "$namespace": ".*", "$job": ".*"}
    rules = []
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in grafana.items():
                expr = expr.replace(variable, value)
            rules.append(
                {"record": f"dashboard:panel{panel['id']}:{target['refId']}", "expr": expr}
            )
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(rules)} rules found" in checked.stdout
