"""Which interval a datafeed pulls next: a pure function of its config, progress and clock.

Intervals are half-open `[start, end)` in epoch milliseconds. While catching up on history
the datafeed pulls chunks of `chunk_ms` back to back; in real time it pulls up to the last
multiple of `frequency_ms` that ended at least `query_delay_ms` ago, so windows are regular
and the source has had time to get the data. A restarted datafeed resumes at whichever is
later: the progress the status recorded, or the end of what the job already has (just
after its latest record; the end of its last final bucket, which a close finalises).
Since a window's records are committed by the engine together, everything up to that
record was posted, so nothing is posted twice even when the status write was lost in a
crash, and nothing is posted only to be dropped as out of order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mljob_operator.datafeed.credentials import ClientConfig

RETRY_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class PrometheusQuery:
    url: str
    query: str
    step_ms: int
    value_field: str
    client: ClientConfig = field(default_factory=ClientConfig)


@dataclass(frozen=True)
class HttpQuery:
    url: str
    client: ClientConfig = field(default_factory=ClientConfig)


@dataclass(frozen=True)
class FeedConfig:
    source: PrometheusQuery | HttpQuery
    start_ms: int | None
    end_ms: int | None
    frequency_ms: int
    query_delay_ms: int
    chunk_ms: int
    time_field: str
    time_format: str
    """epoch, epoch_ms or iso8601: how records carry their time (the job's dataDescription)."""


@dataclass(frozen=True)
class Window:
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class Plan:
    window: Window | None = None
    """Pull this interval now."""
    wake_at_ms: int | None = None
    """Otherwise: nothing to pull before this time."""
    end_reached: bool = False
    """Otherwise: the cursor is at the configured end; the datafeed is done."""


def resume_point(
    config: FeedConfig, searched_until: int | None, analysed_until: int | None, now_ms: int
) -> int:
    """Where a (re)started datafeed begins: its recorded progress, else the configured
    start, else now (real-time only); never before `analysed_until`, the end of what the
    job already has (just after its latest record, or the end of its last final bucket)."""
    if searched_until is not None:
        cursor = searched_until
    elif config.start_ms is not None:
        cursor = config.start_ms
    else:
        cursor = _floor(now_ms - config.query_delay_ms, config.frequency_ms)
    return cursor if analysed_until is None else max(cursor, analysed_until)


def plan(config: FeedConfig, cursor: int, now_ms: int) -> Plan:
    end = config.end_ms
    if end is not None and cursor >= end:
        return Plan(end_reached=True)
    horizon = now_ms - config.query_delay_ms
    available = end if end is not None and horizon >= end else _floor(horizon, config.frequency_ms)
    if available > cursor:
        return Plan(window=Window(cursor, min(available, cursor + config.chunk_ms)))
    wake = _floor(cursor, config.frequency_ms) + config.frequency_ms + config.query_delay_ms
    if end is not None:
        wake = min(wake, end + config.query_delay_ms)
    return Plan(wake_at_ms=max(wake, now_ms))


def retry_delay_s(failures: int) -> float:
    """Backoff after `failures` consecutive failed pulls (1 s up to a minute)."""
    return RETRY_DELAYS_S[min(max(failures, 1), len(RETRY_DELAYS_S)) - 1]


def _floor(ms: int, unit: int) -> int:
    return ms // unit * unit
