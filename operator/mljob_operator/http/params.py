"""Query-parameter parsing for the results APIs: the seed's parameters, camelCase.

Bad values raise `BadRequest` with a message naming the parameter, which the server
answers as 400; nothing here knows aiohttp.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from mljob_operator.store.base import ResultsQuery

MAX_PAGE_SIZE = 10_000
TRUE_WORDS = {"true", "1", "yes", ""}
FALSE_WORDS = {"false", "0", "no"}


class BadRequest(ValueError):
    """A request the client must fix (answered 400)."""


def parse_bool(params: Mapping[str, str], name: str, default: bool = False) -> bool:
    if name not in params:
        return default
    value = params[name].strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise BadRequest(f"{name} must be true or false, got {params[name]!r}")


def parse_int(
    params: Mapping[str, str], name: str, default: int, lo: int = 0, hi: int | None = None
) -> int:
    if name not in params:
        return default
    try:
        value = int(params[name])
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {params[name]!r}") from None
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise BadRequest(f"{name} must be {bound}, got {value}")
    return value


def parse_float(params: Mapping[str, str], name: str) -> float | None:
    if name not in params:
        return None
    try:
        value = float(params[name])
    except ValueError:
        raise BadRequest(f"{name} must be a number, got {params[name]!r}") from None
    if not 0.0 <= value <= 100.0:
        raise BadRequest(f"{name} must be between 0 and 100, got {value}")
    return value


def parse_time_ms(params: Mapping[str, str], name: str) -> int | None:
    """Epoch milliseconds or an ISO 8601 timestamp."""
    if name not in params:
        return None
    raw = params[name].strip()
    if raw.lstrip("-").isdigit():
        return int(raw)
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be epoch ms or ISO 8601, got {raw!r}") from None
    if parsed.tzinfo is None:
        raise BadRequest(f"{name} must carry a time zone (e.g. Z), got {raw!r}")
    return int(parsed.timestamp() * 1000)


def results_query(params: Mapping[str, str], score_param: str) -> ResultsQuery:
    """The sort field is checked by the store, which knows its columns."""
    start, end = parse_time_ms(params, "start"), parse_time_ms(params, "end")
    if start is not None and end is not None and end < start:
        raise BadRequest("end must not be before start")
    return ResultsQuery(
        start_ms=start,
        end_ms=end,
        min_score=parse_float(params, score_param),
        exclude_interim=parse_bool(params, "excludeInterim"),
        sort=params.get("sort"),
        desc=parse_bool(params, "desc"),
        from_=parse_int(params, "from", 0),
        size=parse_int(params, "size", 100, lo=0, hi=MAX_PAGE_SIZE),
    )
