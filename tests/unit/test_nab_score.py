"""Our NAB scorer on tiny hand-made files (no benchmark data)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from bench.quality.nab_score import (
    EARLIEST_REWARD,
    PROFILES,
    LabelledFile,
    Profile,
    best_threshold,
    calibration_gap,
    detections,
    position_reward,
    probation_rows,
    score_corpus,
    score_file,
    sweep,
)

STANDARD, LOW_FP, LOW_FN = PROFILES


def _file(
    detect_rows: list[int], n: int = 20, windows: list[tuple[int, int]] | None = None
) -> LabelledFile:
    scores = np.zeros(n)
    scores[detect_rows] = 1.0
    return LabelledFile.build("f.csv", scores, [(10, 13)] if windows is None else windows)


def test_reward_curve_and_probation() -> None:
    assert position_reward(-1.0) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert pytest.approx(0.98661, abs=1e-5) == EARLIEST_REWARD
    assert position_reward(0.0) == 0.0
    assert position_reward(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert position_reward(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert position_reward(3.01) == -1.0
    assert probation_rows(20) == 3
    assert probation_rows(4032) == 604
    assert probation_rows(15_000) == 750


def test_earliest_detection_in_a_window_gets_the_full_reward() -> None:
    f = _file([10])
    s = score_file(f, STANDARD, 0.5)
    assert s.raw == pytest.approx(1.0)
    assert (s.tp, s.fp, s.fn, s.tn) == (1, 0, 3, 13)
    # Halfway into the 4-row window: position -(13 - 12 + 1) / 4 = -0.5.
    assert score_file(_file([12]), STANDARD, 0.5).raw == pytest.approx(0.84828 / 0.98661, 1e-4)
    # Only the best (earliest) detection of a window counts.
    assert score_file(_file([10, 11, 12, 13]), STANDARD, 0.5).raw == pytest.approx(1.0)


def test_misses_false_positives_and_probation() -> None:
    assert score_file(_file([]), STANDARD, 0.5).raw == -1.0
    assert score_file(_file([]), LOW_FN, 0.5).raw == -2.0
    # Before any window a false positive costs the whole fpWeight; in probation nothing.
    assert score_file(_file([1, 5]), STANDARD, 0.5).raw == pytest.approx(-1.0 - 0.11)
    assert score_file(_file([5]), LOW_FP, 0.5).raw == pytest.approx(-1.0 - 0.22)
    # After a window: position (15 - 13) / (4 - 1) past its end.
    got = score_file(_file([10, 15]), STANDARD, 0.5).raw
    assert got == pytest.approx(1.0 + 0.11 * position_reward(2 / 3))
    assert position_reward(2 / 3) < 0
    # Far past a window (more than 3 widths): the whole fpWeight.
    assert score_file(_file([10, 30], n=40), STANDARD, 0.5).raw == pytest.approx(1.0 - 0.11)
    assert score_file(_file([10, 19]), STANDARD, 0.5).raw == pytest.approx(
        1.0 + 0.11 * position_reward(2.0)
    )


def test_a_window_inside_the_probationary_period_is_not_scored() -> None:
    f = _file([], windows=[(0, 1), (10, 13)])
    assert score_file(f, STANDARD, 0.5).raw == -1.0
    assert f.n_windows == 2


def test_sweep_agrees_with_scoring_each_threshold() -> None:
    rng = np.random.default_rng(7)
    files = [
        LabelledFile.build(f"f{i}.csv", np.round(rng.random(60), 1), [(20, 25), (40, 44)])
        for i in range(3)
    ]
    for p in PROFILES:
        thresholds, totals = sweep(files, p)
        assert thresholds[0] > 1.0
        assert np.all(np.diff(thresholds) < 0)
        for t, total in zip(thresholds, totals, strict=True):
            assert sum(score_file(f, p, t).raw for f in files) == pytest.approx(total)
        t, best = best_threshold(files, p)
        assert best == pytest.approx(max(totals))


def test_normalisation_null_is_zero_and_perfect_is_one_hundred() -> None:
    # Long enough that flagging every row (the null detector's other choice) costs more
    # than missing both windows.
    windows = [(100, 103), (130, 135)]
    perfect = np.zeros(300)
    perfect[[100, 130]] = 0.9
    null = np.full(300, 0.5)
    p = Profile("standard", 1.0, 0.11, 1.0)
    for scores, want in ((perfect, 100.0), (null, 0.0)):
        got = score_corpus([LabelledFile.build("a/f.csv", scores, windows)], p, {"a/f.csv": "a"})
        assert got.total.score == pytest.approx(want)
        assert got.groups[0].name == "a"
        assert got.groups[0].score == pytest.approx(want)
    # One of the two windows found at its start, no false positive: halfway.
    half = np.zeros(300)
    half[100] = 0.9
    got = score_corpus([LabelledFile.build("f.csv", half, windows)], p)
    assert got.total.score == pytest.approx(50.0)
    assert got.threshold == 0.9


def test_detections_and_the_calibration_gap() -> None:
    windows = [(100, 103)]
    # Series a flags its window at 0.9 and noise at 0.5; series b flags its window at 0.4
    # and noise at 0.3: one threshold cannot serve both, one per series can.
    a = np.zeros(300)
    a[[100, 200]] = [0.9, 0.5]
    b = np.zeros(300)
    b[[100, 200]] = [0.4, 0.3]
    files = [LabelledFile.build(n, s, windows) for n, s in (("a", a), ("b", b))]
    d = detections(files, 0.45)
    assert (d.windows, d.found, d.false_positives) == (2, 1, 1)
    one, per_group, per_file = calibration_gap(files, STANDARD, {"a": "x", "b": "x"})
    assert per_group == pytest.approx(one)
    assert per_file == pytest.approx(100.0)
    assert one < per_file
