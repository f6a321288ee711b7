"""Query-parameter parsing for the results APIs: the seed's parameters, camelCase.

Bad values raise `BadRequest` with a message naming the parameter, which the server
answers as 400; nothing here knows aiohttp.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from mljob_operator.api import parse_duration
from mljob_operator.engine.persistence import (
    BUCKET_SORTS,
    INFLUENCER_SORTS,
    MODEL_PLOT_SORTS,
    RECORD_SORTS,
    SNAPSHOT_SORTS,
    ModelPlotQuery,
    ResultsQuery,
    SnapshotQuery,
)

MAX_PAGE_SIZE = 10_000
MAX_OFFSET = 1_000_000_000
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_WAIT = timedelta(hours=24)
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
    if raw.lstrip("-").isascii() and raw.lstrip("-").isdigit():
        if len(raw) > 20:
            raise BadRequest(f"{name} is out of range: {raw[:40]!r}")
        value = int(raw)
    else:
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f"{name} must be epoch ms or ISO 8601, got {raw!r}") from None
        if parsed.tzinfo is None:
            raise BadRequest(f"{name} must carry a time zone (e.g. Z), got {raw!r}")
        try:
            value = int(parsed.timestamp() * 1000)
        except (OverflowError, ValueError):
            raise BadRequest(f"{name} is out of range: {raw!r}") from None
    if not 0 <= value <= MAX_EPOCH_MS:
        raise BadRequest(f"{name} must be between 1970 and 9999, got {raw!r}")
    return value


def parse_wait(params: Mapping[str, str], name: str, default: timedelta) -> timedelta:
    """A duration such as `30m` or `90s` (the seed's time units), at most `MAX_WAIT`."""
    if name not in params:
        return default
    try:
        value = parse_duration(params[name].strip())
    except (ValueError, OverflowError) as err:
        raise BadRequest(f"{name}: {err}") from None
    if value > MAX_WAIT:
        raise BadRequest(f"{name} must be at most 24h, got {params[name]!r}")
    return value


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def sort_names(fields: Iterable[str]) -> dict[str, str]:
    """API sort names (camelCase, as the results' JSON) → the engine's field names."""
    return {_camel(f): f for f in fields}


BUCKET_SORT_NAMES = sort_names(BUCKET_SORTS)
RECORD_SORT_NAMES = sort_names(RECORD_SORTS)
SNAPSHOT_SORT_NAMES = sort_names(SNAPSHOT_SORTS)
MODEL_PLOT_SORT_NAMES = sort_names(MODEL_PLOT_SORTS)
INFLUENCER_SORT_NAMES = sort_names(INFLUENCER_SORTS)
SCORED_SORTS = {
    "anomalyScore": BUCKET_SORT_NAMES,
    "recordScore": RECORD_SORT_NAMES,
    "influencerScore": INFLUENCER_SORT_NAMES,
}
"""The minimum-score parameter of each scored listing → its sort names."""
MAX_SPLIT_VALUE = 1024
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 500
"""Jobs a page of `GET /v1/namespaces/{ns}/mljobs` holds: each costs a store row and, for
a caller without namespace-wide `get mljobs/results`, a SubjectAccessReview."""
MAX_CONTINUE = 4096
"""Characters of a `continue` token (the apiserver's own, a few hundred at most)."""


def parse_sort(params: Mapping[str, str], allowed: Mapping[str, str]) -> str | None:
    value = params.get("sort")
    if value is None or value == "":
        return None
    if value not in allowed:
        raise BadRequest(f"cannot sort by {value!r}; use one of {', '.join(sorted(allowed))}")
    return allowed[value]


def _window_and_page(params: Mapping[str, str], sorts: Mapping[str, str]) -> dict[str, Any]:
    """start/end, sort, desc, from and size: what every listing takes."""
    start, end = parse_time_ms(params, "start"), parse_time_ms(params, "end")
    if start is not None and end is not None and end < start:
        raise BadRequest("end must not be before start")
    return {
        "start_ms": start,
        "end_ms": end,
        "sort": parse_sort(params, sorts),
        "desc": parse_bool(params, "desc"),
        "from_": parse_int(params, "from", 0, hi=MAX_OFFSET),
        "size": parse_int(params, "size", 100, lo=0, hi=MAX_PAGE_SIZE),
    }


def results_query(params: Mapping[str, str], score_param: str) -> ResultsQuery:
    """Buckets (`score_param` anomalyScore), records (recordScore) or influencers
    (influencerScore)."""
    return ResultsQuery(
        min_score=parse_float(params, score_param),
        exclude_interim=parse_bool(params, "excludeInterim"),
        **_window_and_page(params, SCORED_SORTS[score_param]),
    )


def _split_value(params: Mapping[str, str], name: str) -> str | None:
    """A partition or by value to match exactly. Refused with a 400 naming the parameter:
    more than `MAX_SPLIT_VALUE` characters, or any NUL. Stored values may hold NUL (a
    record's JSON can carry one; PostgreSQL keeps these values as bytea for it), so the
    refusal is the API's input rule, not the store's limit: no client of ours sends NUL,
    and in a query string it is far likelier an encoding bug or a probe. A series whose
    value holds one is still listed by a query without this filter (the explorer page
    filters its series itself; `kubectl mljob plot` cannot pick it)."""
    value = params.get(name)
    if value is not None and len(value) > MAX_SPLIT_VALUE:
        raise BadRequest(f"{name} must be at most {MAX_SPLIT_VALUE} characters")
    if value is not None and "\x00" in value:
        raise BadRequest(f"{name} must not contain NUL characters")
    return value


def list_page(params: Mapping[str, str]) -> tuple[int, str | None]:
    """`limit` and `continue` of the jobs listing, as `kubectl get --chunk-size` sends
    them: the token is the apiserver's, passed on untouched (it judges it)."""
    limit = parse_int(params, "limit", DEFAULT_LIST_LIMIT, lo=1, hi=MAX_LIST_LIMIT)
    token = params.get("continue") or None
    if token is not None and len(token) > MAX_CONTINUE:
        raise BadRequest(f"continue must be at most {MAX_CONTINUE} characters")
    return limit, token


def model_plot_query(params: Mapping[str, str]) -> ModelPlotQuery:
    """The buckets' parameters (no score) and a partition and/or by value to match."""
    return ModelPlotQuery(
        exclude_interim=parse_bool(params, "excludeInterim"),
        partition_field_value=_split_value(params, "partitionFieldValue"),
        by_field_value=_split_value(params, "byFieldValue"),
        **_window_and_page(params, MODEL_PLOT_SORT_NAMES),
    )


def snapshots_query(params: Mapping[str, str]) -> SnapshotQuery:
    return SnapshotQuery(**_window_and_page(params, SNAPSHOT_SORT_NAMES))
