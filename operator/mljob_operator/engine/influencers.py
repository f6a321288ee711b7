"""Influencer results: per bucket, each influencer value seen in the bucket's anomalous
records, with the lowest probability among the records it was in.

Its score is that record's raw score on the record scale, so influencer scores are
renormalised with record scores (and keep their initial score the same way).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mljob_operator.engine.results import InfluencerResult, RecordResult
from mljob_operator.engine.scoring import ScoreScale


def influencer_results(
    records: Sequence[RecordResult], scale: ScoreScale
) -> list[InfluencerResult]:
    """The influencer results of one bucket's records (all final or all interim)."""
    worst: dict[tuple[str, str], RecordResult] = {}
    for r in records:
        for infl in r.influencers:
            for value in infl.field_values:
                key = (infl.field_name, value)
                seen = worst.get(key)
                if seen is None or (r.raw_score, -r.probability) > (
                    seen.raw_score,
                    -seen.probability,
                ):
                    worst[key] = r
    if not worst:
        return []
    keys = sorted(worst)
    scores = scale.score(np.array([worst[k].raw_score for k in keys], dtype=np.float64))
    return [
        InfluencerResult(
            timestamp=worst[k].timestamp,
            bucket_span=worst[k].bucket_span,
            influencer_field_name=k[0],
            influencer_field_value=k[1],
            probability=worst[k].probability,
            raw_score=worst[k].raw_score,
            influencer_score=score,
            initial_influencer_score=score,
            is_interim=worst[k].is_interim,
        )
        for k, score in zip(keys, scores.tolist(), strict=True)
    ]
