"""The seed's snapshot retention rule as a table, and results retention."""

from __future__ import annotations

import pytest

from mljob_operator.engine.results import ModelSnapshot
from mljob_operator.engine.retention import DAY_MS, results_cutoff_ms, snapshots_to_delete

H = 3_600_000
LATEST = 100 * DAY_MS + 7 * H  # the newest snapshot, mid-day on purpose


def snap(sid: str, ts: int, retain: bool = False) -> ModelSnapshot:
    return ModelSnapshot(sid, ts, "", None, None, 1, 1, retain, 0)


CASES = [
    # (name, snapshots as (id, age from LATEST, retain), retention, daily-after, active, deleted)
    ("only newest", [("n", 0, False)], 10, 1, "n", []),
    ("no active snapshot: nothing", [("a", 20 * DAY_MS, False), ("n", 0, False)], 10, 1, None, []),
    (
        "younger than daily cutoff kept",
        [("a", DAY_MS - 1, False), ("b", 1, False), ("n", 0, False)],
        10,
        1,
        "n",
        [],
    ),
    ("exactly at daily cutoff kept", [("a", DAY_MS, False), ("n", 0, False)], 10, 1, "n", []),
    (
        "older than retention deleted",
        [("a", 10 * DAY_MS + 1, False), ("n", 0, False)],
        10,
        1,
        "n",
        ["a"],
    ),
    ("exactly at retention kept", [("a", 10 * DAY_MS, False), ("n", 0, False)], 10, 1, "n", []),
    (
        "first per day kept, rest of that day deleted",
        [
            ("a", 5 * DAY_MS, False),
            ("b", 5 * DAY_MS - 2 * H, False),
            ("c", 5 * DAY_MS - 20 * H, False),
            ("n", 0, False),
        ],
        10,
        1,
        "n",
        ["b", "c"],
    ),
    (
        "day windows start at the hard cutoff, not midnight",
        # hard cutoff = LATEST - 10d; windows [cutoff+k*d, cutoff+(k+1)*d)
        [
            ("a", 10 * DAY_MS - 1, False),
            ("b", 9 * DAY_MS + 1, False),
            ("c", 9 * DAY_MS, False),
            ("d", 9 * DAY_MS - 1, False),
            ("n", 0, False),
        ],
        10,
        1,
        "n",
        ["b", "d"],
    ),
    (
        "a gap of days moves the window to the next snapshot",
        [
            ("a", 8 * DAY_MS, False),
            ("b", 3 * DAY_MS, False),
            ("c", 3 * DAY_MS - H, False),
            ("n", 0, False),
        ],
        10,
        1,
        "n",
        ["c"],
    ),
    (
        "retain is never deleted and does not take the day's slot",
        [
            ("a", 5 * DAY_MS, True),
            ("b", 5 * DAY_MS - H, False),
            ("c", 5 * DAY_MS - 2 * H, False),
            ("z", 30 * DAY_MS, True),
            ("n", 0, False),
        ],
        10,
        1,
        "n",
        ["c"],
    ),
    (
        "the active snapshot is never deleted, even when old",
        [("old", 30 * DAY_MS, False), ("x", 29 * DAY_MS, False), ("n", 0, False)],
        10,
        1,
        "old",
        ["x"],
    ),
    (
        "daily-after 0 considers everything older than the newest",
        [("a", 2 * H, False), ("b", H, False), ("n", 0, False)],
        10,
        0,
        "n",
        ["b"],
    ),
    (
        "daily-after equal to retention: only the hard cutoff applies",
        [
            ("a", 5 * DAY_MS, False),
            ("b", 5 * DAY_MS - H, False),
            ("c", 11 * DAY_MS, False),
            ("n", 0, False),
        ],
        10,
        10,
        "n",
        ["c"],
    ),
    (
        "retention 0 deletes all older than the newest except active and retained",
        [("a", 2 * DAY_MS, False), ("b", DAY_MS + 5, True), ("n", 0, False)],
        0,
        0,
        "n",
        ["a"],
    ),
]


@pytest.mark.parametrize(
    ("snapshots", "retention", "daily", "active", "deleted"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_snapshot_retention_rule(
    snapshots: list[tuple[str, int, bool]],
    retention: int,
    daily: int,
    active: str | None,
    deleted: list[str],
) -> None:
    snaps = [snap(sid, LATEST - age, retain) for sid, age, retain in snapshots]
    got = snapshots_to_delete(
        snaps, retention_days=retention, daily_after_days=daily, active_id=active
    )
    assert sorted(got) == sorted(deleted)


def test_results_cutoff() -> None:
    assert results_cutoff_ms(None, 3) is None
    assert results_cutoff_ms(10 * DAY_MS, None) is None
    assert results_cutoff_ms(10 * DAY_MS, 3) == 7 * DAY_MS
