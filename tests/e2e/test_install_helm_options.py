"""The chart's optional objects against a real apiserver with the Prometheus Operator's and
cert-manager's CRDs installed (from their Go modules, devtools/thirdparty_crds.py): TLS from
an existing Secret or a cert-manager Certificate, a ServiceMonitor, the PrometheusRule, the
Grafana dashboard and JSON logs pass a server-side dry run and install; what they render is
checked against the files they come from; manifests/monitoring/ passes the same dry run.

A dedicated control plane: the chart owns the MLJob CRD here, as in test_install_helm.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.controlplane import ControlPlane
from devtools.thirdparty_crds import SOURCES, crd_files

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mljob-operator"
MONITORING = REPO / "manifests" / "monitoring"
NAMESPACE = "mljob-system"
RELEASE = "mljob-operator"

ALL_OPTIONS = (
    "tls.existingSecret=mljob-tls",
    "serviceMonitor.enabled=true",
    "logFormat=json",
    "prometheusRule.enabled=true",
    "grafanaDashboard.enabled=true",
    "serviceMonitor.labels.release=kube-prometheus-stack",
    "probes.readiness.periodSeconds=7",
)
CERT_MANAGER = (
    "tls.certManager.enabled=true",
    "tls.certManager.issuerRef.name=cluster-ca",
    "tls.certManager.issuerRef.kind=ClusterIssuer",
)

Objects = dict[tuple[str, str], dict[str, Any]]


@pytest.fixture(scope="module")
def cluster() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        for source in SOURCES:
            for path in crd_files(source):
                cp.kubectl("apply", "--server-side", "-f", str(path))
        cp.kubectl(
            "wait",
            "--for=condition=Established",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
            "crd/certificates.cert-manager.io",
            "--timeout=60s",
        )
        cp.kubectl("create", "namespace", NAMESPACE)
        yield cp


def render(cluster: ControlPlane, *values: str) -> str:
    sets = [arg for value in values for arg in ("--set", value)]
    return cluster.helm("template", RELEASE, str(CHART), "-n", NAMESPACE, *sets).stdout


def objects(text: str) -> Objects:
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    return {(o["kind"], o["metadata"]["name"]): o for o in docs}


def dry_run(cluster: ControlPlane, text: str) -> None:
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=text)
    assert result.stdout.count("(server dry run)") == len(objects(text)), result.stdout


def container(rendered: Objects) -> dict[str, Any]:
    pod = rendered[("Deployment", RELEASE)]["spec"]["template"]["spec"]
    return dict(pod["containers"][0])


def test_every_option_passes_a_server_side_dry_run(cluster: ControlPlane) -> None:
    for values in (ALL_OPTIONS, (*ALL_OPTIONS[1:], *CERT_MANAGER)):
        sets = [arg for value in values for arg in ("--set", value)]
        linted = cluster.helm("lint", "--strict", str(CHART), *sets)
        assert "0 chart(s) failed" in linted.stdout
        assert "[WARNING]" not in linted.stdout
        text = render(cluster, *values)
        rendered = objects(text)
        for kind in ("ServiceMonitor", "PrometheusRule", "ConfigMap", "Deployment"):
            assert (kind, RELEASE if kind != "ConfigMap" else f"{RELEASE}-dashboard") in rendered
        assert (("Certificate", RELEASE) in rendered) == (values[-1] in CERT_MANAGER)
        dry_run(cluster, text)


def test_the_options_install(cluster: ControlPlane) -> None:
    sets = [arg for value in (*ALL_OPTIONS[1:], *CERT_MANAGER) for arg in ("--set", value)]
    installed = cluster.helm("install", RELEASE, str(CHART), "-n", NAMESPACE, *sets)
    assert "STATUS: deployed" in installed.stdout
    assert f"Secret {RELEASE}-tls's: trust its issuer" in installed.stdout
    assert f"(scraped through the ServiceMonitor {RELEASE})" in installed.stdout
    for kind in ("servicemonitor", "prometheusrule", "certificate", "configmap"):
        name = RELEASE if kind != "configmap" else f"{RELEASE}-dashboard"
        cluster.kubectl("get", kind, name, "-n", NAMESPACE)
    cluster.helm("uninstall", RELEASE, "-n", NAMESPACE)


def test_tls_from_an_existing_secret_is_mounted_whole(cluster: ControlPlane) -> None:
    rendered = objects(render(cluster, *ALL_OPTIONS))
    operator = container(rendered)
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["MLJOB_TLS_CERT"] == "/etc/mljob/tls/tls.crt"
    assert env["MLJOB_TLS_KEY"] == "/etc/mljob/tls/tls.key"
    assert "MLJOB_TLS_SANS" not in env
    mount = next(m for m in operator["volumeMounts"] if m["name"] == "tls")
    assert mount["mountPath"] == "/etc/mljob/tls"
    assert "subPath" not in mount, "a subPath mount never sees a renewed Secret"
    pod = rendered[("Deployment", RELEASE)]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "tls")
    assert volume["secret"]["secretName"] == "mljob-tls"
    assert "--log-format=json" in operator["args"]
    assert operator["readinessProbe"]["periodSeconds"] == 7


def test_cert_manager_writes_the_secret_the_pod_mounts(cluster: ControlPlane) -> None:
    rendered = objects(render(cluster, *CERT_MANAGER))
    cert = rendered[("Certificate", RELEASE)]["spec"]
    pod = rendered[("Deployment", RELEASE)]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "tls")
    assert cert["secretName"] == volume["secret"]["secretName"] == f"{RELEASE}-tls"
    assert f"{RELEASE}.{NAMESPACE}.svc" in cert["dnsNames"]
    assert cert["issuerRef"] == {
        "name": "cluster-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert "--log-format=json" not in container(rendered)["args"]


def test_the_service_monitor_scrapes_the_metrics_port_with_honor_labels(
    cluster: ControlPlane,
) -> None:
    rendered = objects(render(cluster, *ALL_OPTIONS))
    monitor = rendered[("ServiceMonitor", RELEASE)]
    service = rendered[("Service", RELEASE)]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["honorLabels"] is True
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    operator = container(rendered)
    target = next(p for p in operator["ports"] if p["name"] == port["targetPort"])
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["MLJOB_METRICS_ADDR"] == f"0.0.0.0:{target['containerPort']}"


def test_the_rule_and_dashboard_are_the_files_of_manifests_monitoring(
    cluster: ControlPlane,
) -> None:
    rendered = objects(render(cluster, *ALL_OPTIONS))
    rules = yaml.safe_load((MONITORING / "mljob-alerts.rules.yaml").read_text())
    assert rendered[("PrometheusRule", RELEASE)]["spec"] == rules
    dashboard = rendered[("ConfigMap", f"{RELEASE}-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    served = json.loads(dashboard["data"]["mljob-operator.json"])
    assert served == json.loads((MONITORING / "mljob-dashboard.json").read_text())


def test_manifests_monitoring_passes_a_server_side_dry_run(cluster: ControlPlane) -> None:
    text = cluster.kubectl("kustomize", str(MONITORING)).stdout
    kinds = sorted(o[0] for o in objects(text))
    assert kinds == ["ConfigMap", "PrometheusRule", "ServiceMonitor"]
    dry_run(cluster, text)
