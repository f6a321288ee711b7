"""The engine's own types → the API's models, in this one place.

The engine knows nothing of the API (an import-linter contract). Where an API field has
the engine field's name the model reads it by attribute; the names that differ are mapped
here. `tests/unit/test_engine_to_api.py` checks that every API field has an engine
source, so a renamed engine field fails a test instead of leaving a default on the wire.
"""

from __future__ import annotations

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

RENAMED = {
    (Influence, "influencer_field_name"): "field_name",
    (Influence, "influencer_field_values"): "field_values",
    (Flushed, "flushed"): "flushed",
}
"""API field → engine field, where the names differ."""


def data_counts(c: engine.DataCounts) -> DataCounts:
    return DataCounts.model_validate(c, from_attributes=True)


def model_size_stats(s: engine.ModelSizeStats) -> ModelSizeStats:
    return ModelSizeStats.model_validate(s, from_attributes=True)


def bucket(b: engine.BucketResult) -> Bucket:
    return Bucket.model_validate(b, from_attributes=True)


def record(r: engine.RecordResult) -> AnomalyRecord:
    fields = {
        name: getattr(r, name) for name in AnomalyRecord.model_fields if name != "influencers"
    }
    fields["influencers"] = [
        Influence(influencer_field_name=i.field_name, influencer_field_values=list(i.field_values))
        for i in r.influencers
    ]
    return AnomalyRecord.model_validate(fields)


def model_plot(m: engine.ModelPlotResult) -> ModelPlotPoint:
    return ModelPlotPoint.model_validate(m, from_attributes=True)


def influencer(i: engine.InfluencerResult) -> InfluencerResult:
    return InfluencerResult.model_validate(i, from_attributes=True)


def model_snapshot(s: engine.ModelSnapshot) -> ModelSnapshot:
    return ModelSnapshot.model_validate(s, from_attributes=True)


def flushed(f: engine.FlushResult) -> Flushed:
    return Flushed(flushed=True, last_finalized_bucket_end=f.last_finalized_bucket_end)
