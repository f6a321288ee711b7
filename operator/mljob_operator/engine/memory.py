"""Model memory accounting against `modelMemoryLimit`.

The estimate is deterministic (state bytes plus fixed per-series and per-label overheads,
plus open-bucket buffers), not a process RSS reading, so the same data always produces the
same memory status, before and after a restart. As in the seed service, soft_limit starts
at 60% of the limit; at hard_limit new series are not modelled.
"""

from __future__ import annotations

SERIES_OVERHEAD = 120
LABEL_OVERHEAD = 64
SOFT_LIMIT_RATIO = 0.6


def series_bytes(columns: int) -> int:
    return 8 * columns + SERIES_OVERHEAD


def label_bytes(label: str | None) -> int:
    return LABEL_OVERHEAD + (len(label.encode()) if label else 0)


def memory_status(model_bytes: int, limit: int | None) -> str:
    if limit is None:
        return "ok"
    if model_bytes >= limit:
        return "hard_limit"
    if model_bytes >= SOFT_LIMIT_RATIO * limit:
        return "soft_limit"
    return "ok"
