"""The detector functions of the seed service and what each one models.

A function reduces the records of one series in one bucket to a single value (the metric),
names the side it may flag, and says whether a bucket without records is a real observation
(a zero count or sum) or no observation at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Side(Enum):
    BOTH = "both"
    HIGH = "high"
    LOW = "low"


class Metric(Enum):
    COUNT = "count"
    DISTINCT = "distinct"
    MEAN = "mean"
    SUM = "sum"
    MIN = "min"
    MAX = "max"
    MEDIAN = "median"


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    metric: Metric
    side: Side
    needs_field: bool
    fill_empty: bool

    @property
    def count_like(self) -> bool:
        return self.metric in (Metric.COUNT, Metric.DISTINCT)


def _family(
    base: str, metric: Metric, *, needs_field: bool, fill_empty: bool, sided: bool = True
) -> dict[str, FunctionSpec]:
    out = {base: FunctionSpec(base, metric, Side.BOTH, needs_field, fill_empty)}
    if sided:
        for side in (Side.HIGH, Side.LOW):
            name = f"{side.value}_{base}"
            out[name] = FunctionSpec(name, metric, side, needs_field, fill_empty)
    return out


FUNCTIONS: dict[str, FunctionSpec] = {
    **_family("count", Metric.COUNT, needs_field=False, fill_empty=True),
    **_family("non_zero_count", Metric.COUNT, needs_field=False, fill_empty=False),
    **_family("distinct_count", Metric.DISTINCT, needs_field=True, fill_empty=False),
    **_family("mean", Metric.MEAN, needs_field=True, fill_empty=False),
    **_family("sum", Metric.SUM, needs_field=True, fill_empty=True),
    **_family("non_null_sum", Metric.SUM, needs_field=True, fill_empty=False),
    **_family("median", Metric.MEDIAN, needs_field=True, fill_empty=False),
    **_family("min", Metric.MIN, needs_field=True, fill_empty=False, sided=False),
    **_family("max", Metric.MAX, needs_field=True, fill_empty=False, sided=False),
}
