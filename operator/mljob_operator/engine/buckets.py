"""Bucket accumulators: what one detector has seen of each still-open bucket.

A batch is grouped by (bucket, series) with one stable sort and numpy reductions, and each
open bucket keeps the reduced chunks; the chunks are merged only when the bucket is
finalised. Distinct values and influencer values are the only per-record Python work, and
only when a detector or the job asks for them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from mljob_operator.engine.functions import Metric

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

INFLUENCER_VALUES_KEPT = 10


@dataclass
class Chunk:
    series: I64
    count: F64
    total: F64
    low: F64
    high: F64


@dataclass
class BucketAgg:
    chunks: list[Chunk] = field(default_factory=list)
    samples: list[tuple[I64, F64]] = field(default_factory=list)
    distinct: dict[int, set[str | None]] = field(default_factory=dict)
    influencers: dict[str, dict[int, set[str]]] = field(default_factory=dict)

    def nbytes(self) -> int:
        size = sum(c.series.nbytes * 5 for c in self.chunks)
        size += sum(s.nbytes + v.nbytes for s, v in self.samples)
        size += sum(48 * len(v) + 64 for v in self.distinct.values())
        return size + 64

    def to_json(self) -> dict[str, Any]:
        return {
            "c": [
                [
                    c.series.tolist(),
                    c.count.tolist(),
                    c.total.tolist(),
                    c.low.tolist(),
                    c.high.tolist(),
                ]
                for c in self.chunks
            ],
            "s": [[s.tolist(), v.tolist()] for s, v in self.samples],
            "d": [[k, sorted(v, key=str)] for k, v in self.distinct.items()],
            "i": {f: [[k, sorted(v)] for k, v in m.items()] for f, m in self.influencers.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BucketAgg:
        agg = cls()
        for s, c, t, lo, hi in data["c"]:
            agg.chunks.append(
                Chunk(
                    np.array(s, dtype=np.int64),
                    np.array(c, dtype=np.float64),
                    np.array(t, dtype=np.float64),
                    np.array(lo, dtype=np.float64),
                    np.array(hi, dtype=np.float64),
                )
            )
        agg.samples = [
            (np.array(s, dtype=np.int64), np.array(v, dtype=np.float64)) for s, v in data["s"]
        ]
        agg.distinct = {int(k): set(v) for k, v in data["d"]}
        agg.influencers = {f: {int(k): set(v) for k, v in m} for f, m in data["i"].items()}
        return agg


@dataclass
class SeriesValues:
    """Per-series reductions of one bucket, series sorted ascending."""

    series: I64
    count: F64
    total: F64
    low: F64
    high: F64


def group(bucket: I64, series: I64, values: F64 | None) -> list[tuple[int, Chunk]]:
    """Reduce a batch to one chunk per bucket; values=None counts records only."""
    if len(bucket) == 0:
        return []
    width = int(series.max()) + 1
    key = (bucket - bucket.min()) * width + series
    order = np.argsort(key, kind="stable")
    ks = key[order]
    starts = np.flatnonzero(np.concatenate(([True], ks[1:] != ks[:-1])))
    uk = ks[starts]
    count = np.diff(np.append(starts, len(ks))).astype(np.float64)
    if values is None:
        total = count.copy()
        low = np.ones_like(count)
        high = low
    else:
        v = values[order]
        total = np.add.reduceat(v, starts)
        low = np.minimum.reduceat(v, starts)
        high = np.maximum.reduceat(v, starts)
    ub = uk // width + bucket.min()
    us = uk % width
    cuts = np.flatnonzero(np.concatenate(([True], ub[1:] != ub[:-1], [True])))
    out = []
    for lo, hi in itertools.pairwise(cuts.tolist()):
        out.append(
            (int(ub[lo]), Chunk(us[lo:hi], count[lo:hi], total[lo:hi], low[lo:hi], high[lo:hi]))
        )
    return out


def reduce(agg: BucketAgg) -> SeriesValues:
    if len(agg.chunks) == 1:
        c = agg.chunks[0]
        return SeriesValues(c.series, c.count, c.total, c.low, c.high)
    if not agg.chunks:
        empty = np.zeros(0, dtype=np.float64)
        return SeriesValues(np.zeros(0, dtype=np.int64), empty, empty, empty, empty)
    s = np.concatenate([c.series for c in agg.chunks])
    uniq, inv = np.unique(s, return_inverse=True)
    size = len(uniq)
    count = np.bincount(inv, np.concatenate([c.count for c in agg.chunks]), size).astype(np.float64)
    total = np.bincount(inv, np.concatenate([c.total for c in agg.chunks]), size).astype(np.float64)
    low = np.full(size, np.inf)
    np.minimum.at(low, inv, np.concatenate([c.low for c in agg.chunks]))
    high = np.full(size, -np.inf)
    np.maximum.at(high, inv, np.concatenate([c.high for c in agg.chunks]))
    return SeriesValues(uniq.astype(np.int64), count, total, low, high)


def medians(agg: BucketAgg) -> tuple[I64, F64]:
    s = np.concatenate([x for x, _ in agg.samples])
    v = np.concatenate([y for _, y in agg.samples])
    order = np.lexsort((v, s))
    s, v = s[order], v[order]
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    sizes = np.diff(np.append(starts, len(s)))
    mid = (v[starts + (sizes - 1) // 2] + v[starts + sizes // 2]) / 2.0
    return s[starts], mid


_REDUCED: dict[Metric, Callable[[SeriesValues], F64]] = {
    Metric.COUNT: lambda sv: sv.count,
    Metric.MEAN: lambda sv: sv.total / sv.count,
    Metric.SUM: lambda sv: sv.total,
    Metric.MIN: lambda sv: sv.low,
    Metric.MAX: lambda sv: sv.high,
}


def metric_values(agg: BucketAgg, metric: Metric) -> tuple[I64, F64]:
    """Series present in the bucket and the detector's metric for each."""
    if metric is Metric.DISTINCT:
        keys = sorted(agg.distinct)
        return (
            np.array(keys, dtype=np.int64),
            np.array([len(agg.distinct[k]) for k in keys], dtype=np.float64),
        )
    if metric is Metric.MEDIAN:
        if not agg.samples:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        return medians(agg)
    sv = reduce(agg)
    return sv.series, _REDUCED[metric](sv)
