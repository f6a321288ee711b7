"""The generated CRD: structural, described, and what DESIGN.md fixes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from mljob_operator import crdgen
from mljob_operator.api import MLJobSpec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return crdgen.build_crd()


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    versions: list[dict[str, Any]] = crd["spec"]["versions"]
    assert len(versions) == 1
    return versions[0]


@pytest.fixture(scope="module")
def root(version: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_names_and_scope(crd: dict[str, Any], version: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == "mljobs.ml.mljob.dev"
    spec = crd["spec"]
    assert spec["group"] == "ml.mljob.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "MLJob"
    assert spec["names"]["plural"] == "mljobs"
    assert spec["names"]["shortNames"] == ["mlj"]
    assert spec["names"]["categories"] == ["ml"]
    assert version["name"] == "v1alpha1"
    assert version["served"]
    assert version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns(version: dict[str, Any]) -> None:
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["State"] == ".status.state"
    assert columns["Closed"] == ".status.closed"
    assert columns["Snapshot"] == ".status.modelSnapshotId"
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_schema_is_structural_and_every_field_is_described(root: dict[str, Any]) -> None:
    for path, node in walk(root):
        assert "type" in node, path
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
        assert not {"$ref", "anyOf", "allOf", "oneOf", "title"} & node.keys(), path
        assert not ("properties" in node and "additionalProperties" in node), path
        if path.startswith((".spec", ".status")) and not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{path} has no description"


def test_status_has_no_defaults_and_spec_has_the_designed_ones(root: dict[str, Any]) -> None:
    assert not [p for p, n in walk(root["properties"]["status"]) if "default" in n]
    spec = root["properties"]["spec"]["properties"]
    assert spec["state"]["default"] == "opened"
    assert spec["state"]["enum"] == ["opened", "closed"]
    assert spec["closeTimeout"]["default"] == "30m"
    assert "pattern" in spec["closeTimeout"]
    assert spec["modelSnapshotRetentionDays"]["default"] == 10
    assert spec["dailyModelSnapshotRetentionAfterDays"]["default"] == 1
    assert "default" not in spec["resultsRetentionDays"]
    assert spec["dataDescription"]["default"] == {}
    data_description = spec["dataDescription"]["properties"]
    assert data_description["timeField"]["default"] == "time"
    assert data_description["timeFormat"]["enum"] == ["epoch", "epoch_ms", "iso8601"]
    assert spec["analysisConfig"]["properties"]["bucketSpan"]["default"] == "5m"


def test_cel_rules(root: dict[str, Any]) -> None:
    analysis = root["properties"]["spec"]["properties"]["analysisConfig"]
    assert analysis["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"
    assert "immutable" in analysis["x-kubernetes-validations"][0]["message"]
    detector = analysis["properties"]["detectors"]["items"]
    assert analysis["properties"]["detectors"]["minItems"] == 1
    (rule,) = detector["x-kubernetes-validations"]
    assert "has(self.fieldName)" in rule["rule"]
    assert rule["fieldPath"] == ".fieldName"


def test_conditions_are_a_map_keyed_by_type(root: dict[str, Any]) -> None:
    conditions = root["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert set(item["required"]) == {"type", "status", "lastTransitionTime", "reason", "message"}
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"


def test_checked_in_files_are_up_to_date() -> None:
    assert crdgen.drift(REPO) == []


def test_chart_template_wraps_the_same_spec() -> None:
    manifest = yaml.safe_load_all(crdgen.render_manifest(crdgen.build_crd()))
    template = crdgen.render_chart_template(crdgen.build_crd())
    assert template.startswith("{{- if .Values.crds.install }}")
    assert "helm.sh/resource-policy: keep" in template
    body = "\n".join(line for line in template.splitlines() if "{{" not in line)
    (from_template,) = [d for d in yaml.safe_load_all(body) if d]
    (from_manifest,) = [d for d in manifest if d]
    assert from_template["spec"] == from_manifest["spec"]


def test_generate_writes_into_a_fresh_root(tmp_path: Path) -> None:
    written = crdgen.generate(tmp_path)
    assert {p.relative_to(tmp_path) for p in written} == {crdgen.MANIFEST_PATH, crdgen.CHART_PATH}
    assert crdgen.drift(tmp_path) == []
    assert crdgen.generate(tmp_path) == []


def test_check_reports_drift_with_a_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crdgen.generate(tmp_path)
    target = tmp_path / crdgen.MANIFEST_PATH
    target.write_text(target.read_text().replace("default: 30m", "default: 45m"))
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "-                default: 45m" in out.out
    assert "+                default: 30m" in out.out
    assert "make generate" in out.err
    assert crdgen.main(["--root", str(tmp_path)]) == 0
    assert crdgen.main(["--check", "--root", str(tmp_path)]) == 0


def test_non_structural_unions_are_refused() -> None:
    class Bad(BaseModel):
        value: int | str = Field(description="either")

    with pytest.raises(crdgen.SchemaError, match="union"):
        crdgen.openapi_schema(Bad, defaults=True)


def test_openapi_schema_uses_wire_names() -> None:
    schema = crdgen.openapi_schema(MLJobSpec, defaults=True)
    assert "closeTimeout" in schema["properties"]
    assert "close_timeout" not in schema["properties"]
