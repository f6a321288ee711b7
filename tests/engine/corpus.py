"""A labelled synthetic corpus and its precision/recall evaluation.

Each series carries anomalies of one type, placed at random after a week of history, on top
of a daily and weekly seasonal pattern with noise. The label is a window: the anomaly
itself plus the time a sane detector may take to notice it or to settle after it.
`python -m tests.engine.corpus` prints the table that docs/engine.md quotes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from mljob_operator.engine import DetectorConfig, Job, JobConfig
from mljob_operator.store import ResultsQuery, SQLiteStore

SPAN = 1800
T0 = 1_700_000_000 - 1_700_000_000 % 604_800  # a Thursday midnight UTC
DAYS = 21
BUCKETS = DAYS * 86_400 // SPAN
PER_DAY = 86_400 // SPAN
SERIES_PER_TYPE = 6
TOLERANCE = 2
THRESHOLD = 50.0

TYPES = ("spike", "dip", "level_shift", "variance", "seasonality_break", "dropout", "none")


@dataclass
class Series:
    name: str
    kind: str
    values: np.ndarray
    windows: list[tuple[int, int]]


def _baseline(rng: np.random.Generator) -> np.ndarray:
    b = np.arange(BUCKETS)
    phase = rng.uniform(0, 2 * np.pi)
    daily = rng.uniform(3, 8) * np.sin(2 * np.pi * b / PER_DAY + phase)
    weekday = ((T0 // 86_400 + b // PER_DAY + 3) % 7) < 5  # epoch day 0 was a Thursday
    weekly = np.where(weekday, 0.0, -rng.uniform(2, 5))
    return 50.0 + daily + weekly + rng.standard_normal(BUCKETS)


def _starts(rng: np.random.Generator, count: int, length: int) -> list[int]:
    lo, hi = 7 * PER_DAY, BUCKETS - length - 5
    picks: list[int] = []
    while len(picks) < count:
        s = int(rng.integers(lo, hi))
        if all(abs(s - p) > length + 2 * PER_DAY for p in picks):
            picks.append(s)
    return sorted(picks)


def make_series(kind: str, k: int) -> Series:  # noqa: C901 (one branch per anomaly kind)
    rng = np.random.default_rng(1000 * TYPES.index(kind) + k)
    v = _baseline(rng)
    windows: list[tuple[int, int]] = []
    if kind == "spike":
        for s in _starts(rng, 3, 1):
            v[s] += rng.choice([-1, 1]) * rng.uniform(7, 12)
            windows.append((s, s))
    elif kind == "dip":
        for s in _starts(rng, 3, 3):
            v[s : s + 3] -= rng.uniform(8, 12)
            windows.append((s, s + 2))
    elif kind == "level_shift":
        (s,) = _starts(rng, 1, PER_DAY)
        v[s:] += rng.choice([-1, 1]) * rng.uniform(8, 12)
        windows.append((s, s + 6))
    elif kind == "variance":
        for s in _starts(rng, 2, PER_DAY // 2):
            v[s : s + PER_DAY // 2] += 5 * rng.standard_normal(PER_DAY // 2)
            windows.append((s, s + PER_DAY // 2))
    elif kind == "seasonality_break":
        for s in _starts(rng, 2, PER_DAY):
            day = slice(s, s + PER_DAY)
            base = v[day].mean()
            v[day] = base - (v[day] - base)
            windows.append((s, s + PER_DAY))
    elif kind == "dropout":
        counts = np.maximum(rng.poisson(np.maximum(v / 2, 1)), 0).astype(float)
        for s in _starts(rng, 2, 4):
            counts[s : s + 4] = 0
            windows.append((s, s + 3))
        v = counts
    return Series(f"{kind}-{k}", kind, v, windows)


def corpus() -> list[Series]:
    return [make_series(kind, k) for kind in TYPES for k in range(SERIES_PER_TYPE)]


def _metric_bodies(series: list[Series]) -> Iterator[bytes]:
    for start in range(0, BUCKETS, 100):
        yield b"\n".join(
            orjson.dumps({"time": T0 + b * SPAN + i, "series": s.name, "value": float(s.values[b])})
            for b in range(start, min(start + 100, BUCKETS))
            for i, s in enumerate(series)
        )


def _event_bodies(series: list[Series]) -> Iterator[bytes]:
    for start in range(0, BUCKETS, 100):
        lines = []
        for b in range(start, min(start + 100, BUCKETS)):
            for i in range(int(max(s.values[b] for s in series))):
                for s in series:
                    if i < s.values[b]:
                        lines.append(orjson.dumps({"time": T0 + b * SPAN + i, "series": s.name}))
        yield b"\n".join(lines)


def detections(series: list[Series], tmp: Path) -> dict[str, list[int]]:
    """Flagged buckets per series name, from a real job on a real store."""
    store = SQLiteStore(tmp / "corpus.sqlite")
    flagged: dict[str, list[int]] = {s.name: [] for s in series}
    for job_id, function, field, group, bodies in (
        ("metric", "mean", "value", [s for s in series if s.kind != "dropout"], _metric_bodies),
        ("events", "count", None, [s for s in series if s.kind == "dropout"], _event_bodies),
    ):
        cfg = JobConfig(
            detectors=(DetectorConfig(function, field, partition_field_name="series"),),
            bucket_span_s=SPAN,
            background_persist_interval_s=None,
        )
        job = Job.open(store, job_id, cfg)
        for body in bodies(group):
            job.post_data(body)
        job.flush(advance_time_ms=(T0 + BUCKETS * SPAN) * 1000)
        _, records = store.query_records(job_id, ResultsQuery(min_score=THRESHOLD, size=100_000))
        for r in records:
            assert r.partition_field_value is not None
            flagged[r.partition_field_value].append((r.timestamp // 1000 - T0) // SPAN)
    store.close()
    return flagged


@dataclass
class Score:
    anomalies: int
    found: int
    flags: int
    true_flags: int

    @property
    def recall(self) -> float:
        return self.found / self.anomalies if self.anomalies else 1.0

    @property
    def precision(self) -> float:
        return self.true_flags / self.flags if self.flags else 1.0


def evaluate(series: list[Series], flagged: dict[str, list[int]]) -> dict[str, Score]:
    scores = {kind: Score(0, 0, 0, 0) for kind in TYPES}
    for s in series:
        sc = scores[s.kind]
        hits = flagged[s.name]
        sc.anomalies += len(s.windows)
        sc.found += sum(any(a <= h <= b + TOLERANCE for h in hits) for a, b in s.windows)
        sc.flags += len(hits)
        sc.true_flags += sum(any(a <= h <= b + TOLERANCE for a, b in s.windows) for h in hits)
    return scores


def report(scores: dict[str, Score]) -> str:
    lines = [f"{'type':<18} {'anomalies':>9} {'recall':>7} {'flags':>6} {'precision':>9}"]
    for kind, sc in scores.items():
        lines.append(
            f"{kind:<18} {sc.anomalies:>9} {sc.recall:>7.2f} {sc.flags:>6} {sc.precision:>9.2f}"
        )
    clean = scores["none"]
    rate = 1000 * clean.flags / (SERIES_PER_TYPE * BUCKETS)
    lines.append(f"false alarms on clean seasonal series: {rate:.2f} per 1000 buckets")
    return "\n".join(lines)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        data = corpus()
        print(report(evaluate(data, detections(data, Path(tmp)))))
