"""Parse posted data into columns.

The hot path stays in C: orjson parses the whole body in one call (NDJSON is joined into a
JSON array first), every field becomes one list comprehension, and numpy converts columns.
Per-record Python work happens only on the rare slow paths (strings, bad values).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from mljob_operator.engine.errors import DataFormatError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

_MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_ABS_VALUE = 1e50
"""Field values beyond ±1e50 are dropped like missing ones: their squares (the model's
variances) stay far from float64's overflow, and no real metric comes near."""


def parse_records(body: bytes) -> list[Any]:
    """Decode NDJSON or a JSON array; raise DataFormatError if the body is not JSON."""
    data = body.strip()
    if not data:
        return []
    try:
        if data[:1] == b"[":
            parsed = orjson.loads(data)
            if not isinstance(parsed, list):
                raise DataFormatError("a JSON body must be an array of objects")
            return parsed
        lines = [line for line in data.split(b"\n") if line and not line.isspace()]
        records: list[Any] = orjson.loads(b"[" + b",".join(lines) + b"]")
    except orjson.JSONDecodeError:
        return _parse_lines_slow(data)
    if len(records) != len(lines):
        return _parse_lines_slow(data)
    return records


def _parse_lines_slow(data: bytes) -> list[Any]:
    out: list[Any] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise DataFormatError(f"line {number} is not valid JSON: {exc}") from None
    return out


def column(records: list[Any], name: str) -> list[Any]:
    """The values of one field, None where a record lacks it or is not an object."""
    try:
        return [r.get(name) for r in records]
    except AttributeError:
        return [r.get(name) if isinstance(r, dict) else None for r in records]


def to_float(values: list[Any]) -> F64:
    """Numbers and numeric strings become floats; anything else (booleans, lists,
    objects) becomes NaN. numpy converts a clean column at once; any other goes value by
    value, so a list or a boolean never passes for a number."""
    try:
        arr: F64 | None = np.array(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        arr = None
    if arr is not None and arr.shape == (len(values),) and ((arr == 0) | (arr == 1)).any():
        arr = None if bool in set(map(type, values)) else arr
    if arr is None or arr.shape != (len(values),):
        arr = np.fromiter((_one_float(v) for v in values), dtype=np.float64, count=len(values))
    arr[~np.isfinite(arr)] = np.nan
    return arr


def to_value(values: list[Any]) -> F64:
    """A field's values for a detector: NaN (dropped, counted as missing) where not a
    number or beyond ±MAX_ABS_VALUE."""
    arr = to_float(values)
    arr[np.abs(arr) > MAX_ABS_VALUE] = np.nan
    return arr


def _one_float(v: Any) -> float:
    if isinstance(v, bool) or v is None:
        return math.nan
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return math.nan
    return math.nan


def parse_times(values: list[Any], time_format: str) -> tuple[I64, Bools]:
    """Epoch milliseconds and a validity mask for the time column."""
    if time_format == "iso8601":
        ms = np.fromiter((_iso_ms(v) for v in values), dtype=np.float64, count=len(values))
    else:
        ms = to_float(values)
        if time_format == "epoch":
            with np.errstate(over="ignore"):
                ms = ms * 1000.0
        ms = np.rint(ms)
    valid = np.isfinite(ms) & (ms >= 0) & (ms <= _MAX_EPOCH_MS)
    out = np.zeros(len(values), dtype=np.int64)
    out[valid] = ms[valid].astype(np.int64)
    return out, valid


def _iso_ms(v: Any) -> float:
    if not isinstance(v, str):
        return math.nan
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        return math.nan
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return math.floor(dt.timestamp() * 1000.0 + 0.5)


def label(v: Any) -> str | None:
    """A by/partition/influencer value as the string the results show."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v) if isinstance(v, float) and not v.is_integer() else str(int(v))
    return orjson.dumps(v).decode()
