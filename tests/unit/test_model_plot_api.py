"""Model plot and influencers at the API's edge: the spec field (default off, outside the
immutable analysisConfig), the query parameters, the routes' OpenAPI entries, and a spec
change reaching a loaded job without a reopen (real engine, temporary SQLite store)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from mljob_operator.api import MLJobSpec
from mljob_operator.crdgen import build_crd
from mljob_operator.engine.persistence import ModelPlotQuery
from mljob_operator.http.openapi import openapi_document
from mljob_operator.http.params import (
    MAX_SPLIT_VALUE,
    BadRequest,
    model_plot_query,
    results_query,
)
from mljob_operator.runtime import JobRuntime, engine_config
from mljob_operator.store import SQLiteStore

T0 = 1_764_547_200
BASE = {"analysisConfig": {"bucketSpan": "1m", "detectors": [{"function": "count"}]}}


def test_model_plot_is_off_by_default_and_read_in_camel_case() -> None:
    assert not MLJobSpec.model_validate(BASE).model_plot_config.enabled
    assert not engine_config(MLJobSpec.model_validate(BASE)).model_plot_enabled
    spec = MLJobSpec.model_validate({**BASE, "modelPlotConfig": {"enabled": True}})
    assert spec.model_plot_config.enabled
    assert engine_config(spec).model_plot_enabled


def test_the_crd_has_the_field_outside_the_immutable_analysis_config() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    field = schema["properties"]["modelPlotConfig"]
    assert field["properties"]["enabled"]["type"] == "boolean"
    assert field["properties"]["enabled"]["default"] is False
    assert "x-kubernetes-validations" not in field


def test_model_plot_query() -> None:
    q = model_plot_query(
        {
            "start": "1000",
            "end": "2000",
            "excludeInterim": "true",
            "partitionFieldValue": "web-1",
            "byFieldValue": "GET",
            "sort": "actual",
            "desc": "true",
            "from": "5",
            "size": "7",
        }
    )
    assert q == ModelPlotQuery(
        start_ms=1000,
        end_ms=2000,
        exclude_interim=True,
        partition_field_value="web-1",
        by_field_value="GET",
        sort="actual",
        desc=True,
        from_=5,
        size=7,
    )
    assert model_plot_query({}) == ModelPlotQuery()
    assert model_plot_query({"partitionFieldValue": ""}).partition_field_value == ""


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"sort": "anomalyScore"}, "cannot sort by 'anomalyScore'"),
        ({"partitionFieldValue": "x" * (MAX_SPLIT_VALUE + 1)}, "partitionFieldValue"),
        ({"byFieldValue": "a\x00b"}, "byFieldValue must not contain NUL"),
        ({"size": "10001"}, "size"),
        ({"start": "2000", "end": "1000"}, "end must not be before start"),
    ],
)
def test_model_plot_query_refuses(params: dict[str, str], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        model_plot_query(params)


def test_influencers_query() -> None:
    q = results_query(
        {"influencerScore": "75", "sort": "influencerScore", "desc": "1"}, "influencerScore"
    )
    assert (q.min_score, q.sort, q.desc) == (75.0, "influencer_score", True)
    assert results_query({"sort": "influencerFieldValue"}, "influencerScore").sort == (
        "influencer_field_value"
    )
    with pytest.raises(BadRequest, match="influencerScore must be between 0 and 100"):
        results_query({"influencerScore": "101"}, "influencerScore")
    with pytest.raises(BadRequest, match="cannot sort by 'recordScore'"):
        results_query({"sort": "recordScore"}, "influencerScore")


def test_openapi_lists_both_routes_with_their_shapes() -> None:
    doc = openapi_document(1 << 20)
    job = "/v1/namespaces/{namespace}/mljobs/{name}"
    plot = doc["paths"][job + "/results/modelplot"]["get"]
    names = {p.get("name") for p in plot["parameters"]}
    assert {"partitionFieldValue", "byFieldValue", "start", "end", "excludeInterim"} <= names
    assert {"from", "size", "sort", "desc"} <= names
    infl = doc["paths"][job + "/results/influencers"]["get"]
    assert "influencerScore" in {p.get("name") for p in infl["parameters"]}
    schemas = doc["components"]["schemas"]
    assert set(schemas["ModelPlotPage"]["properties"]) == {"count", "modelPlot"}
    point = set(schemas["ModelPlotPoint"]["properties"])
    assert {"timestamp", "bucketSpan", "actual", "modelMedian", "modelLower", "modelUpper"} <= point
    assert {"partitionFieldValue", "byFieldValue", "isInterim"} <= point
    assert set(schemas["InfluencerPage"]["properties"]) == {"count", "influencers"}
    assert set(schemas["InfluencerResult"]["properties"]) >= {
        "timestamp",
        "influencerFieldName",
        "influencerFieldValue",
        "influencerScore",
        "initialInfluencerScore",
        "probability",
        "isInterim",
    }


def _minutes(start: int, stop: int) -> bytes:
    return b"\n".join(
        orjson.dumps({"time": T0 + 60 * m + s}) for m in range(start, stop) for s in (0, 30)
    )


def test_a_spec_change_reaches_the_loaded_job(tmp_path: Path) -> None:
    async def scenario() -> None:
        runtime = JobRuntime(SQLiteStore(tmp_path / "s.sqlite"), threads=1)
        spec = MLJobSpec.model_validate(BASE)
        await runtime.load("ns/j", spec, accepting=True)
        await runtime.post_data("ns/j", _minutes(0, 10))
        assert (await runtime.model_plot("ns/j", ModelPlotQuery())).count == 0
        runtime.apply_live_spec(
            "ns/j", MLJobSpec.model_validate({**BASE, "modelPlotConfig": {"enabled": True}})
        )
        await runtime.post_data("ns/j", _minutes(10, 20))
        page = await runtime.model_plot("ns/j", ModelPlotQuery(size=100))
        assert page.count == 10  # minutes 9 (open when switched) to 18; 19 is still open
        wire = page.model_dump(by_alias=True)
        first = wire["modelPlot"][0]
        assert first["timestamp"] == (T0 + 9 * 60) * 1000
        assert first["modelLower"] <= first["modelMedian"] <= first["modelUpper"]
        assert first["partitionFieldValue"] is None
        runtime.close()

    asyncio.run(asyncio.wait_for(scenario(), timeout=30))
