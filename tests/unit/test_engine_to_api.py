"""Engine types → API models: every API field has an engine source (so a renamed engine
field fails here, not silently on the wire), and the conversions carry the values."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import BaseModel

from mljob_operator import engine_to_api
from mljob_operator.api import DataCounts, ModelSizeStats
from mljob_operator.api.results import (
    AnomalyRecord,
    Bucket,
    Flushed,
    Influence,
    InfluencerResult,
    ModelPlotPoint,
    ModelSnapshot,
)
from mljob_operator.engine import results as engine

PAIRS: list[tuple[type[BaseModel], type]] = [
    (DataCounts, engine.DataCounts),
    (ModelSizeStats, engine.ModelSizeStats),
    (Bucket, engine.BucketResult),
    (AnomalyRecord, engine.RecordResult),
    (Influence, engine.Influence),
    (ModelSnapshot, engine.ModelSnapshot),
    (Flushed, engine.FlushResult),
    (ModelPlotPoint, engine.ModelPlotResult),
    (InfluencerResult, engine.InfluencerResult),
]


@pytest.mark.parametrize(("model", "source"), PAIRS)
def test_every_api_field_has_an_engine_source(model: type[BaseModel], source: type) -> None:
    engine_fields = {f.name for f in dataclasses.fields(source)}
    for name in model.model_fields:
        assert engine_to_api.RENAMED.get((model, name), name) in engine_fields, (model, name)


def test_values_are_carried() -> None:
    record = engine.RecordResult(
        timestamp=60_000,
        bucket_span=60,
        detector_index=1,
        function="mean",
        field_name="v",
        by_field_name="host",
        by_field_value="a",
        partition_field_name=None,
        partition_field_value=None,
        probability=1e-9,
        raw_score=9.0,
        record_score=97.5,
        initial_record_score=90.0,
        actual=(10.0,),
        typical=(1.0,),
        is_interim=False,
        influencers=(engine.Influence("host", ("a",)),),
    )
    wire = engine_to_api.record(record).model_dump(by_alias=True)
    assert wire == {
        "timestamp": 60_000,
        "bucketSpan": 60,
        "detectorIndex": 1,
        "recordScore": 97.5,
        "initialRecordScore": 90.0,
        "probability": 1e-9,
        "function": "mean",
        "fieldName": "v",
        "byFieldName": "host",
        "byFieldValue": "a",
        "partitionFieldName": None,
        "partitionFieldValue": None,
        "actual": [10.0],
        "typical": [1.0],
        "isInterim": False,
        "influencers": [{"influencerFieldName": "host", "influencerFieldValues": ["a"]}],
    }
    counts = engine.DataCounts(input_record_count=3, processed_record_count=2, bucket_count=1)
    assert engine_to_api.data_counts(counts).model_dump(by_alias=True)["processedRecordCount"] == 2
    sizes = engine.ModelSizeStats(model_bytes=10, memory_status="hard_limit")
    snap = engine.ModelSnapshot("s1", 5, "d", 4, 3, 2, 1, True, 7, model_size_stats=sizes)
    wire_snap = engine_to_api.model_snapshot(snap).model_dump(by_alias=True, mode="json")
    assert wire_snap["modelSizeStats"]["memoryStatus"] == "hard_limit"
    assert (wire_snap["snapshotId"], wire_snap["retain"], wire_snap["sizeBytes"]) == ("s1", True, 1)
    assert "walSeq" not in wire_snap, "engine bookkeeping stays off the wire"
