"""The example alerts (manifests/monitoring/) are valid Prometheus rules, fire as their unit
tests say (`promtool check rules`, `promtool test rules`, the Debian package's promtool),
and the PrometheusRule carries exactly the same groups."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

MONITORING = Path(__file__).resolve().parents[2] / "manifests" / "monitoring"
PROMTOOL = "/usr/bin/promtool"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], cwd=MONITORING, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_rules_are_valid_and_fire_as_tested() -> None:
    checked = promtool("check", "rules", "mljob-alerts.rules.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "4 rules found" in checked.stdout
    tested = promtool("test", "rules", "mljob-alerts.test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_prometheus_rule_carries_the_same_groups() -> None:
    rules = yaml.safe_load((MONITORING / "mljob-alerts.rules.yaml").read_text())
    resource = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"] == rules


def test_every_alert_uses_a_metric_the_operator_serves() -> None:
    metrics = Path(__file__).resolve().parents[2] / "operator" / "mljob_operator" / "metrics.py"
    served = metrics.read_text()
    rules = yaml.safe_load((MONITORING / "mljob-alerts.rules.yaml").read_text())
    for rule in rules["groups"][0]["rules"]:
        name = next(w for w in rule["expr"].replace("(", " ").split() if w.startswith("mljob_"))
        base = name.split("{", 1)[0].removesuffix("_total")
        assert f'"{base}"' in served, (rule["alert"], base)
