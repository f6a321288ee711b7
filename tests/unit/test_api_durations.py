"""Durations and memory limits: the Python parser and the CRD pattern accept the same text."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from mljob_operator.api import format_duration, parse_duration, parse_memory_limit
from mljob_operator.api.durations import DURATION_PATTERN, MEMORY_LIMIT_PATTERN


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("5m", timedelta(minutes=5)),
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("250ms", timedelta(milliseconds=250)),
        ("0s", timedelta(0)),
        ("0", timedelta(0)),
        ("1h0m5s", timedelta(hours=1, seconds=5)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert re.match(DURATION_PATTERN, text)


@pytest.mark.parametrize(
    "text", ["", "30", "30minutes", "-5m", "m", "1h 30m", "5M", "1.h", "P1D", "30m "]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)
    assert not re.match(DURATION_PATTERN, text)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(minutes=30), "30m"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=1, seconds=1, milliseconds=5), "1d1s5ms"),
    ],
)
def test_format_duration_round_trips(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text
    assert parse_duration(text) == delta


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1024mb", 1024 << 20),
        ("512Mi", 512 << 20),
        ("2gb", 2 << 30),
        ("1Gi", 1 << 30),
        ("4096", 4096 << 20),
        ("100b", 100),
        ("64kb", 64 << 10),
    ],
)
def test_parse_memory_limit(text: str, expected: int) -> None:
    assert parse_memory_limit(text) == expected
    assert re.match(MEMORY_LIMIT_PATTERN, text)


@pytest.mark.parametrize("text", ["", "lots", "1.5gb", "512MB", "-1mb", "1 gb", "1Gb"])
def test_parse_memory_limit_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid memory limit"):
        parse_memory_limit(text)
