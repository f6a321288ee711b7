"""Map raw scores (-log10 probability) to the seed's 0-100 anomaly scores.

A normaliser keeps a decaying histogram of past raw scores and the largest raw score in
the renormalisation window. Scores up to the 99th percentile of history (at least
p = 0.001) stay below 25; above it they grow logarithmically to 100 at the window's
largest anomaly (at least p = 1e-10). So a bigger anomaly lowers the scores of earlier
ones in the window (renormalisation) while their initial scores stay as first published.
The parameters are quantised to histogram edges and 0.01 so that rescoring stored results
happens only when the scale really moves. The quantile counts a prior of PRIOR_BUCKETS
unremarkable buckets, so in a short history one extreme anomaly cannot be its own 99th
percentile (and score like noise); over a long history the prior weighs nothing.

A bucket's raw score is first discounted by how often the window has already seen one at
least as extreme (`Normaliser.discounted`, before the bucket is observed): the seed ranks a
score against its quantiles, and a burst that recurs every few hours, or the twentieth
spike of a spiky series, is not news, while the first of its size is. Without it the
largest raw score pinned the scale and every repeat of it scored 100. The discounted value
is what a bucket stores as its raw score, so renormalisation rescales it consistently.
The bucket normaliser also counts the last few hours apart (`recent`, a second histogram
with a memory of RECENT_MEMORY_S): bursts come in flurries (a news cycle, a rush hour), and
a burst no larger than one a couple of hours before is part of the same flurry, so that
count weighs RECENT_WEIGHT times more. The first burst of a flurry is not affected.

Before that, a bucket that directly follows another is scored on what it adds to it
(`continued`): a quarter of the smaller of the two raw scores is taken off. An anomaly that
lasts (a burst over several buckets, a run before a level shift is learnt) is then
reported at its first bucket, which is where an operator wants the alert, and its later
buckets neither pile up as separate alerts nor fill the quantile history; a bucket after a
quiet one is scored in full. The normaliser observes this value.

The models' multi-bucket feature (a sustained deviation, `SeriesModel.feature_raw`) is
scored on normalisers of its own, a bucket one with the same episode, repeat and recent
discounts and a record one, and a bucket or record scores the larger of its own score and
FEATURE_WEIGHT times its feature's (`with_feature`). Its stored raw score is then the main
scale's inverse of that score (`ScoreScale.raw_for`): the initial score is exact, and a
later renormalisation rescales it on the main scale, an approximation (the feature's own
scale may have moved differently).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

EDGES: F64 = np.concatenate([np.arange(0.0, 10.0, 0.1), np.geomspace(10.0, 320.0, 31)])
NOISE_RAW = 1.3  # p = 0.05: below this a score is 0
MIN_QUANTILE_RAW = 3.0
MIN_MAX_RAW = 10.0
QUANTILE = 0.99
PRIOR_BUCKETS = 100.0
REPEAT_WEIGHT = 0.5
"""A raw score seen n times before in the window (decayed count) is divided by
1 + REPEAT_WEIGHT * n. Scores 60.2 on the benchmark's development folders; 0.3 to 1 all
score within a point of it (docs/engine.md)."""
RECENT_MEMORY_S = 3 * 3600
RECENT_WEIGHT = 16.0
"""The bucket normaliser's `recent` histogram decays with a memory of RECENT_MEMORY_S, and
a raw score is divided by 1 + REPEAT_WEIGHT * n + RECENT_WEIGHT * n_recent: a burst no
larger than one in the last few hours is muted. On the benchmark's development folders
67.4 -> 69.6; weights 4 to 64 and memories of 1.5 to 6 hours score 68.9-69.8
(docs/engine.md)."""
FEATURE_WEIGHT = 0.5
"""A bucket or record scores max(its score, FEATURE_WEIGHT * its feature's score): a
sustained rise that tops its feature's window reports at 50. 0.4 to 0.7 score 72.2-73.5 on
the benchmark's development folders, 0.5 73.1 (docs/engine.md, ninth and tenth passes)."""
EPISODE_WEIGHT = 0.25
"""A bucket right after a bucket with raw score r_prev is scored on
raw - EPISODE_WEIGHT * min(raw, r_prev): what it adds to the episode already reported.
0.2 to 0.3 score within a point of each other on the benchmark (docs/engine.md)."""


def continued(raw: float, previous: float) -> float:
    """The raw score of a bucket that follows one of raw score `previous` (0 if the bucket
    before it was quiet or not seen): an anomaly that lasts several buckets is reported
    in full at its start, its continuation less, and a bucket after a quiet one in full."""
    return max(raw - EPISODE_WEIGHT * min(raw, previous), 0.0)


@dataclass(frozen=True, slots=True)
class ScoreScale:
    quantile_raw: float
    max_raw: float

    def score(self, raw: F64) -> F64:
        q = max(self.quantile_raw, MIN_QUANTILE_RAW)
        top = max(self.max_raw, MIN_MAX_RAW, q * 1.01)
        low = 25.0 * np.clip((raw - NOISE_RAW) / (q - NOISE_RAW), 0.0, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            high = 25.0 + 75.0 * np.log(np.maximum(raw, q) / q) / math.log(top / q)
        out = np.where(raw <= q, low, np.minimum(high, 100.0))
        return np.asarray(np.round(out, 4), dtype=np.float64)

    def score_one(self, raw: float) -> float:
        return float(self.score(np.array([raw]))[0])

    def raw_for(self, score: F64) -> F64:
        """The raw scores that this scale maps to `score` (0 for 0): the inverse of
        `score` on (0, 100], up to its rounding."""
        q = max(self.quantile_raw, MIN_QUANTILE_RAW)
        top = max(self.max_raw, MIN_MAX_RAW, q * 1.01)
        low = NOISE_RAW + np.clip(score, 0.0, 25.0) / 25.0 * (q - NOISE_RAW)
        high = q * np.exp((np.clip(score, 25.0, 100.0) - 25.0) / 75.0 * math.log(top / q))
        return np.asarray(np.where(score <= 0, 0.0, np.where(score <= 25.0, low, high)))


def with_feature(scale: ScoreScale, raw: F64, score: F64, feature_score: F64) -> tuple[F64, F64]:
    """Scores max(score, FEATURE_WEIGHT * feature_score) and the raw scores to store: `raw`
    where the score stands, else the main scale's inverse of the feature's part (so that
    renormalisation rescales it on the main scale)."""
    part = np.round(FEATURE_WEIGHT * feature_score, 4)
    wins = part > score
    if not wins.any():
        return score, raw
    return np.where(wins, part, score), np.where(wins, scale.raw_for(part), raw)


class Normaliser:
    """Raw-score history of one result level (buckets or records)."""

    def __init__(self, window_ms: int, bucket_span_ms: int, *, recent: bool = False) -> None:
        self.window_ms = window_ms
        self.decay = math.exp(-bucket_span_ms / window_ms)
        self.hist: F64 = np.zeros(len(EDGES), dtype=np.float64)
        self.maxima: list[tuple[int, float]] = []
        self.recent: F64 | None = np.zeros(len(EDGES), dtype=np.float64) if recent else None
        """The same histogram over the last few hours (RECENT_MEMORY_S), for the bucket
        normaliser's discount; None for records, which are not discounted."""
        self.recent_decay = math.exp(-bucket_span_ms / (RECENT_MEMORY_S * 1000.0))

    def observe(self, bucket_ms: int, raws: F64) -> None:
        self.hist *= self.decay
        if self.recent is not None:
            self.recent *= self.recent_decay
        if len(raws):
            bins = np.searchsorted(EDGES, raws, side="right") - 1
            counts = np.bincount(bins, minlength=len(EDGES))[: len(EDGES)]
            self.hist += counts
            if self.recent is not None:
                self.recent += counts
            top = float(raws.max())
            while self.maxima and self.maxima[-1][1] <= top:
                self.maxima.pop()
            self.maxima.append((bucket_ms, top))
        self._forget_before(bucket_ms - self.window_ms)

    def discounted(self, raw: float) -> float:
        """`raw` divided by 1 + REPEAT_WEIGHT * the decayed count of earlier observations in
        its histogram bin or above, + RECENT_WEIGHT * that count over the last few hours
        (call before observing it)."""
        if raw <= NOISE_RAW:
            return raw
        j = int(np.searchsorted(EDGES, raw, side="right")) - 1
        n = REPEAT_WEIGHT * float(self.hist[j:].sum())
        if self.recent is not None:
            n += RECENT_WEIGHT * float(self.recent[j:].sum())
        return raw / (1.0 + n)

    def observe_quiet(self, buckets: int, last_ms: int, *, zero_top: bool) -> None:
        """`buckets` observations in one step, each of nothing or (`zero_top`) of one raw
        score 0: what `observe` would leave, up to rounding, in O(1)."""
        factor = self.decay**buckets
        self.hist *= factor
        if self.recent is not None:  # raw 0 never counts as a repeat: only the decay
            self.recent *= self.recent_decay**buckets
        if zero_top:
            self.hist[0] += buckets if self.decay >= 1.0 else (1.0 - factor) / (1.0 - self.decay)
            while self.maxima and self.maxima[-1][1] <= 0.0:
                self.maxima.pop()
            self.maxima.append((last_ms, 0.0))
        self._forget_before(last_ms - self.window_ms)

    def _forget_before(self, horizon_ms: int) -> None:
        while self.maxima and self.maxima[0][0] < horizon_ms:
            self.maxima.pop(0)

    def scale(self) -> ScoreScale:
        hist = self.hist.copy()
        hist[0] += PRIOR_BUCKETS
        total = float(hist.sum())
        q = 0.0
        if total > 0:
            cum = np.cumsum(hist)
            i = int(np.searchsorted(cum, QUANTILE * total))
            q = float(EDGES[min(i + 1, len(EDGES) - 1)])
        top = round(self.maxima[0][1], 2) if self.maxima else 0.0
        return ScoreScale(round(q, 4), top)

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hist": self.hist.tolist(), "maxima": self.maxima}
        if self.recent is not None:
            out["recent"] = self.recent.tolist()
        return out

    def restore(self, state: dict[str, Any]) -> None:
        """A bucket normaliser from a snapshot taken before the recent histogram restores
        with an empty one: for its first hours no burst counts as a recent repeat."""
        self.hist = np.array(state["hist"], dtype=np.float64)
        self.maxima = [(int(t), float(r)) for t, r in state["maxima"]]
        if self.recent is not None:
            self.recent = np.array(state.get("recent", np.zeros(len(EDGES))), dtype=np.float64)
