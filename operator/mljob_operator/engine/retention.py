"""Which model snapshots and results the history pruning deletes.

This follows the seed service exactly. All ages are relative to the newest snapshot (or,
for results, the newest bucket), not to the wall clock. Snapshots older than
`dailyModelSnapshotRetentionAfterDays` are walked oldest first: those older than
`modelSnapshotRetentionDays` go; among the rest, one is kept and every other snapshot within
24 hours after it goes. The 24-hour windows start at the hard cutoff, not at midnight.
Snapshots with `retain` set and the job's active snapshot are never deleted and do not
count as the kept one of their day.
"""

from __future__ import annotations

from collections.abc import Sequence

from mljob_operator.engine.results import ModelSnapshot

DAY_MS = 86_400_000


def snapshots_to_delete(
    snapshots: Sequence[ModelSnapshot],
    *,
    retention_days: int,
    daily_after_days: int,
    active_id: str | None,
) -> list[str]:
    if active_id is None or not snapshots:
        return []
    latest = max(s.timestamp for s in snapshots)
    consider_before = latest - daily_after_days * DAY_MS
    next_to_keep = latest - retention_days * DAY_MS
    doomed = []
    candidates = sorted(
        (s for s in snapshots if s.timestamp < consider_before),
        key=lambda s: (s.timestamp, s.snapshot_id),
    )
    for s in candidates:
        if s.snapshot_id == active_id or s.retain:
            continue
        if s.timestamp >= next_to_keep:
            while s.timestamp >= next_to_keep:
                next_to_keep += DAY_MS
            continue
        doomed.append(s.snapshot_id)
    return doomed


def results_cutoff_ms(latest_bucket_ms: int | None, retention_days: int | None) -> int | None:
    """Results with a timestamp before this are deleted (None: keep everything)."""
    if latest_bucket_ms is None or retention_days is None:
        return None
    return latest_bucket_ms - retention_days * DAY_MS
