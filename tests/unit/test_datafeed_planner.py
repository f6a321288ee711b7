"""The datafeed's windows as a pure function of (config, cursor, clock): catching up in
chunks, real time on the frequency grid behind the query delay, the end, and resuming."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from mljob_operator.datafeed import FeedConfig, HttpQuery, Plan, Window, plan, resume_point
from mljob_operator.datafeed.planner import retry_delay_s

MIN = 60_000
T0 = 1_700_000_000_000 // (5 * MIN) * (5 * MIN)

CONFIG = FeedConfig(
    source=HttpQuery("http://source.test/"),
    start_ms=T0,
    end_ms=T0 + 60 * MIN,
    frequency_ms=5 * MIN,
    query_delay_ms=MIN,
    chunk_ms=20 * MIN,
    time_field="time",
    time_format="epoch",
)
REALTIME = replace(CONFIG, end_ms=None)
LATE = T0 + 365 * 24 * 60 * MIN


@pytest.mark.parametrize(
    ("config", "cursor", "now", "expected"),
    [
        (CONFIG, T0, LATE, Plan(window=Window(T0, T0 + 20 * MIN))),
        (CONFIG, T0 + 50 * MIN, LATE, Plan(window=Window(T0 + 50 * MIN, T0 + 60 * MIN))),
        (CONFIG, T0 + 60 * MIN, LATE, Plan(end_reached=True)),
        (CONFIG, T0 + 61 * MIN, LATE, Plan(end_reached=True)),
        # the end not yet reached by the clock: real time on the grid, behind the delay
        (CONFIG, T0, T0 + 13 * MIN, Plan(window=Window(T0, T0 + 10 * MIN))),
        (CONFIG, T0 + 10 * MIN, T0 + 13 * MIN, Plan(wake_at_ms=T0 + 16 * MIN)),
        (CONFIG, T0 + 55 * MIN, T0 + 60 * MIN + 30_000, Plan(wake_at_ms=T0 + 61 * MIN)),
        (CONFIG, T0 + 55 * MIN, T0 + 61 * MIN, Plan(window=Window(T0 + 55 * MIN, T0 + 60 * MIN))),
        (REALTIME, T0, T0 + 6 * MIN, Plan(window=Window(T0, T0 + 5 * MIN))),
        (REALTIME, T0 + 5 * MIN, T0 + 6 * MIN, Plan(wake_at_ms=T0 + 11 * MIN)),
        (REALTIME, T0 + 5 * MIN, T0 + 11 * MIN, Plan(window=Window(T0 + 5 * MIN, T0 + 10 * MIN))),
        (REALTIME, T0 + 7 * MIN, T0 + 11 * MIN, Plan(window=Window(T0 + 7 * MIN, T0 + 10 * MIN))),
        # behind by more than a chunk: chunks until caught up
        (REALTIME, T0, T0 + 100 * MIN, Plan(window=Window(T0, T0 + 20 * MIN))),
    ],
)
def test_plan(config: FeedConfig, cursor: int, now: int, expected: Plan) -> None:
    assert plan(config, cursor, now) == expected


def test_history_is_pulled_in_chunks_back_to_back_up_to_the_end() -> None:
    cursor, windows = T0, []
    while not (step := plan(CONFIG, cursor, LATE)).end_reached:
        assert step.window is not None
        windows.append(step.window)
        cursor = step.window.end_ms
    assert windows == [Window(T0 + i * 20 * MIN, T0 + (i + 1) * 20 * MIN) for i in range(3)]


def test_real_time_windows_tile_the_timeline() -> None:
    cursor, now, windows = T0, T0, []
    while now < T0 + 60 * MIN:
        step = plan(REALTIME, cursor, now)
        if step.window is not None:
            windows.append(step.window)
            cursor = step.window.end_ms
            continue
        assert step.wake_at_ms is not None
        assert step.wake_at_ms > now
        now = step.wake_at_ms
    assert all(a.end_ms == b.start_ms for a, b in itertools.pairwise(windows))
    assert windows[-1].end_ms == T0 + 55 * MIN
    assert all(w.end_ms % REALTIME.frequency_ms == 0 for w in windows)


@pytest.mark.parametrize(
    ("searched_until", "analysed_until", "expected"),
    [
        (None, None, T0),
        (T0 + 20 * MIN, None, T0 + 20 * MIN),
        (T0 + 20 * MIN, T0 + 30 * MIN, T0 + 30 * MIN),
        (T0 + 20 * MIN, T0 + 10 * MIN, T0 + 20 * MIN),
        (None, T0 + 5 * MIN, T0 + 5 * MIN),
    ],
)
def test_resume_after_recorded_progress_or_what_the_job_has(
    searched_until: int | None, analysed_until: int | None, expected: int
) -> None:
    assert resume_point(CONFIG, searched_until, analysed_until, LATE) == expected


def test_no_start_begins_at_now_on_the_grid() -> None:
    now = T0 + 7 * MIN + 123
    assert resume_point(replace(REALTIME, start_ms=None), None, None, now) == (T0 + 5 * MIN)


def test_retry_backoff_grows_to_a_minute() -> None:
    assert [retry_delay_s(n) for n in (1, 2, 3, 7, 100)] == [1.0, 2.0, 5.0, 60.0, 60.0]
