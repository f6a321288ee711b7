"""Duration and memory-size strings as the seed service spells them.

The seed takes time units like `30m`, `5m` or `90s`; Kubernetes users write Go durations
like `1h30m`. One grammar accepts both (a sequence of number+unit, units ns…d), and the
same regular expressions go into the CRD, so the apiserver rejects what `parse_duration`
would: the Python and the schema validation cannot drift apart.
"""

from __future__ import annotations

import re
from datetime import timedelta

DURATION_PATTERN = r"^(0|([0-9]{1,6}(\.[0-9]{1,6})?(ns|us|ms|s|m|h|d))+)$"
"""A non-negative duration: `0`, or number+unit parts (`90s`, `1h30m`, `1.5h`, `2d`); each
number has at most six digits (and six decimals), so no spelling the CRD admits can
overflow a timedelta."""

MAX_DURATION = timedelta(days=3650)
"""No duration a user types means more than ten years; fields have tighter maxima."""

POSITIVE_DURATION_RULE = "self.matches('[1-9]')"
"""CEL: a duration matching DURATION_PATTERN is positive iff it has a non-zero digit."""

MEMORY_LIMIT_PATTERN = r"^[0-9]{1,16}(b|kb|mb|gb|tb|Ki|Mi|Gi|Ti)?$"
"""The seed's byte units (`1024mb`, binary multiples) or Kubernetes ones (`512Mi`); a bare
number means MiB, as in the seed service."""

MAX_MEMORY_LIMIT = 1 << 40
"""A model memory limit above 1 TiB is a typing mistake, not a plan."""

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h|d)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_MEMORY_UNITS = {
    "": 1 << 20,
    "b": 1,
    "kb": 1 << 10,
    "mb": 1 << 20,
    "gb": 1 << 30,
    "tb": 1 << 40,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
}
_MEMORY = re.compile(MEMORY_LIMIT_PATTERN)
_DURATION = re.compile(DURATION_PATTERN)


def parse_duration(text: str) -> timedelta:
    """`"1h30m"` → `timedelta(hours=1, minutes=30)`; raises ValueError on anything else."""
    if not _DURATION.match(text):
        raise ValueError(
            f"invalid duration {text!r}: use number+unit parts like 30m, 90s, 1h30m "
            "(units ns, us, ms, s, m, h, d)"
        )
    seconds = sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _PART.findall(text))
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"duration {text!r} is longer than {format_duration(MAX_DURATION)}")
    return timedelta(seconds=seconds)


def check_duration(text: str, *, maximum: timedelta, positive: bool) -> str:
    """`text` if it parses within (0 or above, when positive) … maximum; else ValueError."""
    value = parse_duration(text)
    if positive and value <= timedelta(0):
        raise ValueError(f"duration {text!r} must be positive")
    if value > maximum:
        raise ValueError(f"duration {text!r} is longer than the maximum {format_duration(maximum)}")
    return text


def format_duration(delta: timedelta) -> str:
    """The shortest `1h30m`-style spelling of a whole-second or millisecond duration."""
    total_ms = round(delta.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, total_ms = divmod(total_ms, size)
        if count:
            parts.append(f"{count}{unit}")
    if total_ms:
        parts.append(f"{total_ms}ms")
    return "".join(parts)


def parse_memory_limit(text: str) -> int:
    """`"1024mb"` or `"512Mi"` → bytes; a bare number is MiB. Raises ValueError otherwise."""
    match = _MEMORY.match(text)
    if not match:
        raise ValueError(
            f"invalid memory limit {text!r}: use a number with b, kb, mb, gb, tb "
            "(binary multiples, as the seed service) or Ki, Mi, Gi, Ti"
        )
    unit = match.group(1) or ""
    size = int(text[: len(text) - len(unit)]) * _MEMORY_UNITS[unit]
    if size > MAX_MEMORY_LIMIT:
        raise ValueError(f"memory limit {text!r} is more than the maximum 1Ti")
    return size
