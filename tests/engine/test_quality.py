"""Detection quality on the labelled synthetic corpus, with floors (not tuned targets)."""

from __future__ import annotations

from pathlib import Path

from tests.engine.corpus import BUCKETS, SERIES_PER_TYPE, corpus, detections, evaluate, report

RECALL_FLOORS = {
    "spike": 0.6,
    "dip": 0.8,
    "level_shift": 0.8,
    "variance": 0.5,
    "seasonality_break": 0.3,
    "dropout": 0.75,
}


def test_precision_and_recall_per_anomaly_type(tmp_path: Path) -> None:
    data = corpus()
    scores = evaluate(data, detections(data, tmp_path))
    print("\n" + report(scores))
    for kind, floor in RECALL_FLOORS.items():
        assert scores[kind].recall >= floor, (kind, scores[kind])
        assert scores[kind].precision >= 0.8, (kind, scores[kind])
    assert scores["none"].flags <= SERIES_PER_TYPE * BUCKETS / 1000
