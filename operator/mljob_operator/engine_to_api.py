"""The engine's own types → the API's models, in this one place.

The engine knows nothing of the API (an import-linter contract). Where an API field has
the engine field's name the model reads it by attribute; the names that differ are mapped
here. `tests/unit/test_engine_to_api.py` checks that every API field has an engine
source, so a renamed engine field fails a test instead of leaving a default on the wire.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel

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

M = TypeVar("M", bound=BaseModel)

RENAMED = {
    (Influence, "influencer_field_name"): "field_name",
    (Influence, "influencer_field_values"): "field_values",
    (Flushed, "flushed"): "flushed",
}
"""API field → engine field, where the names differ."""


def _same_names(model: type[M]) -> Callable[[object], M]:
    """The API model read from the engine object's attributes of the same names."""
    return functools.partial(model.model_validate, from_attributes=True)


data_counts = _same_names(DataCounts)
model_size_stats = _same_names(ModelSizeStats)
bucket = _same_names(Bucket)
model_plot = _same_names(ModelPlotPoint)
influencer = _same_names(InfluencerResult)
model_snapshot = _same_names(ModelSnapshot)


def record(r: engine.RecordResult) -> AnomalyRecord:
    fields = {
        name: getattr(r, name) for name in AnomalyRecord.model_fields if name != "influencers"
    }
    fields["influencers"] = [
        Influence(influencer_field_name=i.field_name, influencer_field_values=list(i.field_values))
        for i in r.influencers
    ]
    return AnomalyRecord.model_validate(fields)


def flushed(f: engine.FlushResult) -> Flushed:
    return Flushed(flushed=True, last_finalized_bucket_end=f.last_finalized_bucket_end)
