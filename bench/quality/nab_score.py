"""Our implementation of the Numenta Anomaly Benchmark's scoring (NAB v1.1 rules).

Written from the benchmark's description and checked against its published per-file
scores (`python -m bench.quality.run_nab --check-scorer`); no benchmark code is used.

The rules, per data file:

- The first 15 % of the rows (at most 750) are the probationary period: never scored.
- Each labelled anomaly window rewards its *earliest* detection only, by a scaled
  sigmoid of the detection's position in the window: ``tpWeight`` at the window's first
  row, falling towards 0 at its last. A window with no detection costs ``fnWeight``.
- A detection outside every window costs ``fpWeight`` times a sigmoid of its distance
  past the previous window's end (in window widths, so a detection just after a window
  costs little), or the full ``fpWeight`` when no window came before it.
- A row is a detection when its anomaly score is at or above the threshold. One
  threshold serves the whole corpus; it is the one that maximises the corpus's total.
- The total is normalised to 100 for a perfect detector (every window found at its first
  row, nothing else) and 0 for the null detector (a constant score).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

PROBATION_FRACTION = 0.15
PROBATION_MAX_ROWS = 750
OUTSIDE = -1


@dataclass(frozen=True)
class Profile:
    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


PROFILES = (
    Profile("standard", 1.0, 0.11, 1.0),
    Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
)


def probation_rows(n_rows: int) -> int:
    return min(math.floor(PROBATION_FRACTION * n_rows), PROBATION_MAX_ROWS)


def position_reward(position: float) -> float:
    """-1 at and past 3 widths after a window; 2*sigmoid(-5*position) - 1 otherwise
    (0.9866 at a window's first row, 0 just past its last)."""
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


EARLIEST_REWARD = position_reward(-1.0)


@dataclass
class LabelledFile:
    """One data file's rows, ready to score: the detector's score for every row, the
    window each row lies in (OUTSIDE if none), the unweighted reward of detecting it
    (tp part inside windows, fp part outside) and whether it is scored at all."""

    name: str
    scores: F64
    window: I64
    reward: F64
    scored: B
    n_windows: int

    @classmethod
    def build(
        cls, name: str, scores: Sequence[float] | F64, windows: Iterable[tuple[int, int]]
    ) -> LabelledFile:
        """`windows`: (first row, last row) of each window, inclusive, in order."""
        s = np.asarray(scores, dtype=np.float64)
        n = len(s)
        window = np.full(n, OUTSIDE, dtype=np.int64)
        reward = np.empty(n, dtype=np.float64)
        spans = sorted(windows)
        for k, (lo, hi) in enumerate(spans):
            if not 0 <= lo <= hi < n:
                raise ValueError(f"{name}: window {lo}..{hi} outside 0..{n - 1}")
            window[lo : hi + 1] = k
        prev_end: int | None = None
        prev_width = 0
        for i in range(n):
            k = int(window[i])
            if k != OUTSIDE:
                lo, hi = spans[k]
                width = hi - lo + 1
                reward[i] = position_reward(-(hi - i + 1) / width) / EARLIEST_REWARD
                if i == hi:
                    prev_end, prev_width = hi, width
            elif prev_end is None:
                reward[i] = -1.0
            else:
                past = (i - prev_end) / (prev_width - 1) if prev_width > 1 else math.inf
                reward[i] = position_reward(past)
        scored = np.arange(n) >= probation_rows(n)
        return cls(name, s, window, reward, scored, len(spans))

    def weighted(self, p: Profile) -> F64:
        inside = self.window != OUTSIDE
        return np.where(inside, self.reward * p.tp_weight, self.reward * p.fp_weight)


@dataclass(frozen=True)
class FileScore:
    name: str
    raw: float
    tp: int
    fp: int
    fn: int
    tn: int


def score_file(f: LabelledFile, p: Profile, threshold: float) -> FileScore:
    """The file's raw score when every scored row with score >= threshold is a detection."""
    w = f.weighted(p)
    detected = f.scored & (f.scores >= threshold)
    inside = f.window != OUTSIDE
    total = float(w[detected & ~inside].sum())
    for k in np.unique(f.window[f.scored & inside]).tolist():
        hit = detected & (f.window == k)
        total += float(w[hit].max()) if hit.any() else -p.fn_weight
    s = f.scored
    return FileScore(
        f.name,
        total,
        tp=int((detected & inside).sum()),
        fp=int((detected & ~inside).sum()),
        fn=int((s & ~detected & inside).sum()),
        tn=int((s & ~detected & ~inside).sum()),
    )


def sweep(files: Sequence[LabelledFile], p: Profile) -> tuple[F64, F64]:
    """Every distinct threshold (descending, starting above every score) and the corpus's
    total raw score at it."""
    scores, gid, weight = [], [], []
    offset = 0
    for f in files:
        s = f.scored
        scores.append(f.scores[s])
        win = f.window[s]
        gid.append(np.where(win == OUTSIDE, OUTSIDE, win + offset))
        weight.append(f.weighted(p)[s])
        offset += f.n_windows
    sc = np.concatenate(scores) if scores else np.zeros(0)
    g = np.concatenate(gid) if gid else np.zeros(0, dtype=np.int64)
    w = np.concatenate(weight) if weight else np.zeros(0)
    order = np.argsort(-sc, kind="stable")
    sc, g, w = sc[order], g[order], w[order]
    delta = np.where(g == OUTSIDE, w, 0.0)
    best: dict[int, float] = {}
    for i in np.flatnonzero(g != OUTSIDE).tolist():
        k = int(g[i])
        cur = best.get(k, -p.fn_weight)
        if w[i] > cur:
            delta[i] = w[i] - cur
            best[k] = float(w[i])
    base = -p.fn_weight * len(np.unique(g[g != OUTSIDE]))
    totals = base + np.cumsum(delta)
    last_of_value = np.flatnonzero(np.r_[sc[1:] != sc[:-1], True]) if len(sc) else np.zeros(0, int)
    top = float(sc[0]) + 1.0 if len(sc) else 1.0
    thresholds = np.r_[max(1.1, top), sc[last_of_value]]
    return thresholds, np.r_[base, totals[last_of_value]]


def best_threshold(files: Sequence[LabelledFile], p: Profile) -> tuple[float, float]:
    """The threshold that maximises the corpus total (the highest one on a tie)."""
    thresholds, totals = sweep(files, p)
    i = int(np.argmax(totals))
    return float(thresholds[i]), float(totals[i])


def null_files(files: Sequence[LabelledFile]) -> list[LabelledFile]:
    """The same files scored by the null detector (a constant 0.5)."""
    return [
        LabelledFile(f.name, np.full(len(f.scores), 0.5), f.window, f.reward, f.scored, f.n_windows)
        for f in files
    ]


def normalised(raw: float, null_raw: float, perfect: float) -> float:
    return 100.0 * (raw - null_raw) / (perfect - null_raw) if perfect != null_raw else 0.0


@dataclass(frozen=True)
class GroupScore:
    name: str
    raw: float
    null_raw: float
    perfect: float
    score: float
    files: int
    windows: int


@dataclass(frozen=True)
class CorpusScore:
    profile: str
    threshold: float
    total: GroupScore
    groups: tuple[GroupScore, ...]
    per_file: dict[str, FileScore]


def score_corpus(
    files: Sequence[LabelledFile],
    p: Profile,
    group_of: dict[str, str] | None = None,
    threshold: float | None = None,
) -> CorpusScore:
    """Optimise one threshold over all files (unless given), then score every file at it
    and normalise the total and each group (e.g. folder) against its own null and perfect
    scores."""
    if threshold is None:
        threshold, _ = best_threshold(files, p)
    nulls = null_files(files)
    null_t, _ = best_threshold(nulls, p)
    per_file = {f.name: score_file(f, p, threshold) for f in files}
    null_per = {f.name: score_file(f, p, null_t).raw for f in nulls}
    groups: dict[str, list[LabelledFile]] = {}
    for f in files:
        groups.setdefault((group_of or {}).get(f.name, "all"), []).append(f)

    def group(name: str, members: Sequence[LabelledFile]) -> GroupScore:
        raw = sum(per_file[f.name].raw for f in members)
        null_raw = sum(null_per[f.name] for f in members)
        windows = sum(f.n_windows for f in members)
        perfect = p.tp_weight * windows
        return GroupScore(
            name, raw, null_raw, perfect, normalised(raw, null_raw, perfect), len(members), windows
        )

    return CorpusScore(
        p.name,
        threshold,
        group("total", files),
        tuple(group(g, m) for g, m in sorted(groups.items())),
        per_file,
    )


@dataclass(frozen=True)
class Detections:
    windows: int
    found: int
    false_positives: int


def detections(files: Sequence[LabelledFile], threshold: float) -> Detections:
    """Windows with at least one detection, and detections outside every window."""
    found = fps = windows = 0
    for f in files:
        detected = f.scored & (f.scores >= threshold)
        fps += int((detected & (f.window == OUTSIDE)).sum())
        windows += f.n_windows
        found += len(np.unique(f.window[detected & (f.window != OUTSIDE)]))
    return Detections(windows, found, fps)


def calibration_gap(
    files: Sequence[LabelledFile], p: Profile, group_of: dict[str, str]
) -> tuple[float, float, float]:
    """Normalised totals with one threshold for all files, one per group, one per file:
    how much is lost because scores of different series are not on one scale. Diagnostic
    only; the benchmark allows one threshold."""
    nulls = null_files(files)
    null_t, _ = best_threshold(nulls, p)
    null_raw = sum(score_file(f, p, null_t).raw for f in nulls)
    perfect = p.tp_weight * sum(f.n_windows for f in files)
    groups: dict[str, list[LabelledFile]] = {}
    for f in files:
        groups.setdefault(group_of.get(f.name, "all"), []).append(f)
    one = best_threshold(files, p)[1]
    per_group = sum(best_threshold(g, p)[1] for g in groups.values())
    per_file = sum(best_threshold([f], p)[1] for f in files)
    return tuple(normalised(r, null_raw, perfect) for r in (one, per_group, per_file))  # type: ignore[return-value]
