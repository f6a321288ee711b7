"""The Helm chart against its own real apiserver: lint, template + server-side dry run,
install (the same objects as manifests/), upgrade (CRD included), a second release, and
uninstall keeping the CRD.

A dedicated control plane, because manifests/ and the chart are alternatives that own the
same cluster-scoped objects (the CRD, the user ClusterRoles): in the shared cluster the
manifests tests already applied them, and Helm rightly refuses to adopt them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mljob-operator"
MANIFESTS = REPO / "manifests"
RELEASE = "mljob-operator"
NAMESPACE = "mljob-system"

Key = tuple[str, str]


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_key(objects: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


@pytest.fixture(scope="module")
def cluster() -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        yield cp


@pytest.fixture(scope="module")
def manifests(cluster: ControlPlane) -> dict[Key, dict[str, Any]]:
    return by_key(documents(cluster.kubectl("kustomize", str(MANIFESTS)).stdout))


@pytest.fixture(scope="module")
def release(cluster: ControlPlane) -> dict[Key, dict[str, Any]]:
    cluster.kubectl("create", "namespace", NAMESPACE)
    rendered = cluster.helm("template", RELEASE, str(CHART), "-n", NAMESPACE).stdout
    dry = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert dry.stdout.count("created (server dry run)") == len(documents(rendered)), dry.stdout
    assert cluster.kubectl("get", "crd", "-o", "name").stdout.strip() == ""

    installed = cluster.helm("install", RELEASE, str(CHART), "-n", NAMESPACE)
    assert "STATUS: deployed" in installed.stdout
    assert "kubectl wait --for=condition=Closed" in installed.stdout
    manifest = cluster.helm("get", "manifest", RELEASE, "-n", NAMESPACE).stdout
    return by_key(documents(manifest))


def test_helm_lint_is_clean(cluster: ControlPlane) -> None:
    for args in (
        [],
        ["--set", "persistence.enabled=false,crds.install=false,rbac.userRoles=false"],
    ):
        result = cluster.helm("lint", "--strict", str(CHART), *args)
        assert "0 chart(s) failed" in result.stdout
        assert "[WARNING]" not in result.stdout
        assert "[ERROR]" not in result.stdout


def test_values_schema_rejects_typos(cluster: ControlPlane) -> None:
    result = cluster.helm(
        "template", "x", str(CHART), "--set", "persistance.enabled=false", check=False
    )
    assert result.returncode != 0
    assert "additional properties 'persistance' not allowed" in result.stderr


def test_install_creates_the_same_objects_as_manifests(
    cluster: ControlPlane,
    release: dict[Key, dict[str, Any]],
    manifests: dict[Key, dict[str, Any]],
) -> None:
    assert set(release) == set(manifests) - {("Namespace", NAMESPACE)}
    for (kind, name), obj in release.items():
        ns = obj["metadata"].get("namespace")
        assert ns in (None, NAMESPACE)
        cluster.kubectl("get", kind, name, "-o", "name", *(["-n", ns] if ns else []))


def test_chart_objects_match_manifests_field_by_field(
    release: dict[Key, dict[str, Any]], manifests: dict[Key, dict[str, Any]]
) -> None:
    for key, chart in release.items():
        plain = manifests[key]
        for field in ("spec", "rules", "roleRef", "subjects"):
            assert chart.get(field) == plain.get(field), (key, field)
        if key[0] == "Deployment":
            assert chart["spec"]["template"]["spec"] == plain["spec"]["template"]["spec"]
    crd = release[("CustomResourceDefinition", "mljobs.ml.mljob.dev")]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_upgrade_applies_changed_values(
    cluster: ControlPlane, release: dict[Key, dict[str, Any]]
) -> None:
    upgraded = cluster.helm(
        "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--set", "operator.extraArgs={--verbose}"
    )
    assert "STATUS: deployed" in upgraded.stdout
    args = cluster.kubectl(
        "get",
        "deployment",
        "mljob-operator",
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].args}",
    ).stdout
    assert "--verbose" in json.loads(args)
    history = cluster.helm("history", RELEASE, "-n", NAMESPACE, "-o", "json").stdout
    assert [r["revision"] for r in json.loads(history)][-1] >= 2


def test_upgrade_updates_the_crd(
    cluster: ControlPlane, release: dict[Key, dict[str, Any]], tmp_path: Path
) -> None:
    changed = tmp_path / "mljob-operator"
    shutil.copytree(CHART, changed)
    template = changed / "templates" / "crd-mljobs.yaml"
    marker = "How long a close may take"
    template.write_text(template.read_text().replace(marker, "CHANGED BY THE UPGRADE TEST"))

    def close_timeout_doc() -> str:
        crd = json.loads(cluster.kubectl("get", "crd", "mljobs.ml.mljob.dev", "-o", "json").stdout)
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        return str(schema["properties"]["spec"]["properties"]["closeTimeout"]["description"])

    cluster.helm("upgrade", RELEASE, str(changed), "-n", NAMESPACE)
    assert close_timeout_doc().startswith("CHANGED BY THE UPGRADE TEST")
    cluster.helm("upgrade", RELEASE, str(CHART), "-n", NAMESPACE)
    assert close_timeout_doc().startswith(marker)


def test_second_release_beside_the_first(
    cluster: ControlPlane, release: dict[Key, dict[str, Any]]
) -> None:
    cluster.kubectl("create", "namespace", "second")
    installed = cluster.helm(
        "install",
        "second",
        str(CHART),
        "-n",
        "second",
        "--set",
        "crds.install=false,rbac.userRoles=false",
    )
    assert "STATUS: deployed" in installed.stdout
    manifest = by_key(documents(cluster.helm("get", "manifest", "second", "-n", "second").stdout))
    assert ("ClusterRole", "second-mljob-operator") in manifest
    assert ("CustomResourceDefinition", "mljobs.ml.mljob.dev") not in manifest
    assert "The MLJob CRD is not managed by this release" in installed.stdout
    cluster.helm("uninstall", "second", "-n", "second")


def test_uninstall_keeps_the_crd(cluster: ControlPlane, release: dict[Key, dict[str, Any]]) -> None:
    cluster.kubectl("create", "namespace", "jobs")
    job = {
        "apiVersion": "ml.mljob.dev/v1alpha1",
        "kind": "MLJob",
        "metadata": {"name": "survivor", "namespace": "jobs"},
        "spec": {"analysisConfig": {"detectors": [{"function": "count"}]}},
    }
    cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(job))
    uninstalled = cluster.helm("uninstall", RELEASE, "-n", NAMESPACE)
    assert "kept due to the resource policy" in uninstalled.stdout
    cluster.kubectl("get", "crd", "mljobs.ml.mljob.dev")
    cluster.kubectl("get", "mlj", "survivor", "-n", "jobs")
    gone = cluster.kubectl("get", "deployment", "mljob-operator", "-n", NAMESPACE, check=False)
    assert "NotFound" in gone.stderr
