"""Query parameters and job selection of the data API: the seed's semantics, bounded."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mljob_operator.http.params import (
    BadRequest,
    parse_time_ms,
    parse_wait,
    results_query,
    snapshots_query,
)
from mljob_operator.state_change import InvalidSelection, NoMatch, select_names

JOBS = ["web-1", "web-2", "db-1"]


@pytest.mark.parametrize(
    ("expression", "allow", "expected"),
    [
        ("web-1", True, ["web-1"]),
        ("web-*", True, ["web-1", "web-2"]),
        ("web-*", False, ["web-1", "web-2"]),
        ("db-1,web-2", True, ["db-1", "web-2"]),
        ("web-*,web-1", True, ["web-1", "web-2"]),
        ("_all", True, ["db-1", "web-1", "web-2"]),
        ("*", True, ["db-1", "web-1", "web-2"]),
        ("api-*", True, []),
        ("api-*,db-1", True, ["db-1"]),
    ],
)
def test_selection(expression: str, allow: bool, expected: list[str]) -> None:
    assert select_names(expression, JOBS, allow) == expected


@pytest.mark.parametrize(
    ("expression", "allow", "existing"),
    [
        ("api-1", True, JOBS),
        ("web-1,api-1", True, JOBS),
        ("api-*", False, JOBS),
        ("web-*,api-*", False, JOBS),
        ("_all", False, []),
    ],
)
def test_no_match(expression: str, allow: bool, existing: list[str]) -> None:
    with pytest.raises(NoMatch):
        select_names(expression, existing, allow)


@pytest.mark.parametrize("expression", ["", "web-1,", "Web-1", "web_1", "a/b", "-x"])
def test_bad_expressions(expression: str) -> None:
    with pytest.raises(InvalidSelection):
        select_names(expression, JOBS, True)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1700000000000", 1_700_000_000_000),
        ("2023-11-14T22:13:20Z", 1_700_000_000_000),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000_000),
    ],
)
def test_times(raw: str, expected: int) -> None:
    assert parse_time_ms({"start": raw}, "start") == expected


@pytest.mark.parametrize(
    "raw", ["-1", "9" * 30, "²", "2023-11-14T22:13:20", "tomorrow", "99999999999999999"]
)
def test_bad_times(raw: str) -> None:
    with pytest.raises(BadRequest, match="start"):
        parse_time_ms({"start": raw}, "start")


def test_wait() -> None:
    assert parse_wait({}, "timeout", timedelta(minutes=30)) == timedelta(minutes=30)
    assert parse_wait({"timeout": "5m"}, "timeout", timedelta()) == timedelta(minutes=5)
    for bad in ("5", "forever", "25h", "9" * 400 + "d"):
        with pytest.raises(BadRequest, match="timeout"):
            parse_wait({"timeout": bad}, "timeout", timedelta())


@pytest.mark.parametrize(
    "params",
    [
        {"from": "-1"},
        {"from": "10000000000"},
        {"size": "10001"},
        {"anomalyScore": "nan"},
        {"anomalyScore": "101"},
        {"excludeInterim": "maybe"},
        {"start": "2000", "end": "1000"},
    ],
)
def test_results_query_rejects(params: dict[str, str]) -> None:
    with pytest.raises(BadRequest):
        results_query(params, "anomalyScore")


def test_snapshots_query() -> None:
    q = snapshots_query({"sort": "timestamp", "desc": "true", "size": "5", "from": "2"})
    assert (q.sort, q.desc, q.size, q.from_) == ("timestamp", True, 5, 2)
