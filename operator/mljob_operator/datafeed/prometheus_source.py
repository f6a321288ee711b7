"""Pull a Prometheus range query: each sample of each series becomes one input record.

A record is the series' labels plus `{timeField: sample time, valueField: value}`, so
detectors can split and partition by labels (`byFieldName: instance`). The query is
evaluated at multiples of `step` since the epoch, whatever the window, so pulling an
interval in one piece or in several (or again after a restart) yields the same samples:
that is what lets a resumed datafeed skip exactly what was already posted. Non-finite
values (NaN, ±Inf) are left out.
"""

from __future__ import annotations

import math
from typing import Any

import aiohttp
import orjson

from mljob_operator.datafeed.planner import PrometheusQuery, Window
from mljob_operator.datafeed.sources import (
    FeedError,
    Pull,
    format_time,
    ndjson,
    one_line,
    refused,
)


def eval_range(window: Window, step_ms: int) -> tuple[int, int] | None:
    """First and last evaluation times (epoch ms, multiples of the step) in the window."""
    first = -(-window.start_ms // step_ms) * step_ms
    last = (window.end_ms - 1) // step_ms * step_ms
    return (first, last) if first <= last else None


def matrix_records(
    result: list[dict[str, Any]],
    window: Window,
    time_field: str,
    time_format: str,
    value_field: str,
) -> list[dict[str, Any]]:
    """Records from a `matrix` result, ordered by time, only samples within the window."""
    out: list[tuple[int, dict[str, Any]]] = []
    for series in result:
        labels = series.get("metric") or {}
        for ts, raw in series.get("values") or []:
            ms = round(float(ts) * 1000)
            value = float(raw)
            if not window.start_ms <= ms < window.end_ms or not math.isfinite(value):
                continue
            record = {**labels, value_field: value, time_field: format_time(ms, time_format)}
            out.append((ms, record))
    out.sort(key=lambda pair: pair[0])
    return [record for _, record in out]


async def fetch(
    session: aiohttp.ClientSession, source: PrometheusQuery, pull: Pull
) -> tuple[bytes, int]:
    """NDJSON of the window's samples and how many records it holds."""
    span = eval_range(pull.window, source.step_ms)
    if span is None:
        return b"", 0
    url = source.url.rstrip("/") + "/api/v1/query_range"
    form = {
        "query": source.query,
        "start": _seconds(span[0]),
        "end": _seconds(span[1]),
        "step": _seconds(source.step_ms),
    }
    status, body = await pull.request(session, "POST", url, data=form)
    if status in (401, 403):
        raise FeedError(refused("POST", url, status))
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise FeedError(f"{url}: HTTP {status}, not a Prometheus answer") from None
    if not isinstance(answer, dict) or answer.get("status") != "success":
        raise FeedError(
            f"Prometheus {source.url} (HTTP {status}) refused the query: {_api_error(answer)}"
        )
    data = answer.get("data") or {}
    if data.get("resultType") != "matrix":
        raise FeedError(
            f"Prometheus {source.url}: expected a matrix result, got {data.get('resultType')!r}"
        )
    try:
        records = matrix_records(
            data.get("result") or [],
            pull.window,
            pull.time_field,
            pull.time_format,
            source.value_field,
        )
    except (TypeError, ValueError) as err:
        raise FeedError(f"Prometheus {source.url}: malformed matrix: {err}") from None
    return ndjson(records), len(records)


PROMETHEUS_ERROR_TYPES = frozenset(
    ("bad_data", "timeout", "canceled", "execution", "internal", "unavailable", "not_found")
)
"""The `errorType` values of Prometheus's HTTP API (web/api/v1)."""


def _api_error(answer: Any) -> str:
    """A Prometheus API error as `errorType: error`; nothing of any other answer (the
    server may be anything the URL points at)."""
    if not isinstance(answer, dict) or answer.get("status") != "error":
        return "not a Prometheus API answer"
    kind, message = answer.get("errorType"), answer.get("error")
    if kind not in PROMETHEUS_ERROR_TYPES or not isinstance(message, str):
        return "not a Prometheus API answer"
    return f"{kind}: {one_line(message)}"


def _seconds(ms: int) -> str:
    return str(ms // 1000) if ms % 1000 == 0 else f"{ms / 1000:.3f}"
