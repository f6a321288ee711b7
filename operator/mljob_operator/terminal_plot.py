"""The single-metric view in a terminal: one series, the model's band, anomalies by score.

It draws the data API's wire shapes (model plot points and anomaly records) with plotext
and returns text, so `mljob plot` only fetches and prints, and tests read the chart as a
string. Anomalies are coloured by the seed service's severity bands (warning below 25,
minor, major, critical from 75) and also listed below the chart, so the view says the same
without colours (a pipe, a log) as with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import plotext

SEVERITIES = ((75.0, "critical", "red"), (50.0, "major", 208), (25.0, "minor", "yellow"))
LOW = ("warning", "blue")
MAX_LISTED = 10


@dataclass(frozen=True)
class Anomaly:
    timestamp: int
    score: float
    actual: float
    typical: float | None


def severity(score: float) -> tuple[str, str | int]:
    for floor, name, colour in SEVERITIES:
        if score >= floor:
            return name, colour
    return LOW


def anomalies_of(records: Sequence[dict[str, Any]]) -> list[Anomaly]:
    """Record results (wire shape) as anomalies to mark, one value each."""
    return [
        Anomaly(
            r["timestamp"],
            float(r["recordScore"]),
            float(r["actual"][0]),
            float(r["typical"][0]) if r.get("typical") else None,
        )
        for r in records
        if r.get("actual")
    ]


def _label(ms: int, span_ms: int) -> str:
    fmt = "%H:%M" if span_ms <= 86_400_000 else "%m-%d %H:%M"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime(fmt)


def render(
    points: Sequence[dict[str, Any]],
    anomalies: Sequence[Anomaly],
    *,
    title: str,
    width: int = 100,
    height: int = 24,
    colour: bool = True,
) -> str:
    """The chart and, below it, the highest anomalies; times are UTC."""
    stamps = [p["timestamp"] for p in points] + [a.timestamp for a in anomalies]
    if not stamps:
        return f"{title}\nno results in this range\n"
    fig = plotext.figure
    fig.clear.all()
    fig.plot_size(width, height)
    fig.theme("default" if colour else "clear")
    fig.title(title)
    ys: list[float] = []
    if points:
        x = [p["timestamp"] / 1000 for p in points]
        upper = fig.signal(x, [p["modelUpper"] for p in points], marker=".").lines()
        lower = fig.signal(x, [p["modelLower"] for p in points], marker=".").lines()
        upper.fill(lower).label("model band (95%)")
        median = fig.signal(x, [p["modelMedian"] for p in points], marker="dot").lines()
        actual = fig.signal(x, [p["actual"] for p in points], marker="braille").lines()
        median.label("model median")
        actual.label("actual")
        for sig in (upper, lower, median, actual):
            fig.draw(sig)
        ys += [p["modelUpper"] for p in points] + [p["modelLower"] for p in points]
        ys += [p["actual"] for p in points]
    for floor, name, colour_code in (*SEVERITIES, (0.0, *LOW)):
        marked = [a for a in anomalies if severity(a.score)[0] == name and a.score >= floor]
        if marked:
            sig = fig.signal(
                [a.timestamp / 1000 for a in marked],
                [a.actual for a in marked],
                marker=plotext.marker("●", colour_code if colour else None),
            )
            fig.draw(sig.lines(False).label(f"anomaly: {name}"))
            ys += [a.actual for a in marked]
    low, high = min(ys), max(ys)
    pad = (high - low) * 0.05 or 1.0
    fig.ruler("y").lim(low - pad, high + pad)
    first, last = min(stamps), max(stamps)
    ticks = [first + (last - first) * i // 4 for i in range(5)] if last > first else [first]
    fig.ruler("x").ticks([t / 1000 for t in ticks], [_label(t, last - first) for t in ticks])
    chart = str(fig.build().string(colorless=not colour))
    return chart + "\n" + _listing(anomalies)


def _listing(anomalies: Sequence[Anomaly]) -> str:
    if not anomalies:
        return "no anomalies in this range\n"
    top = sorted(anomalies, key=lambda a: (-a.score, a.timestamp))[:MAX_LISTED]
    lines = [f"anomalies ({len(anomalies)}, highest first):"]
    for a in top:
        when = datetime.fromtimestamp(a.timestamp / 1000, UTC).isoformat(timespec="seconds")
        typical = "" if a.typical is None else f"  typical {a.typical:.4g}"
        lines.append(
            f"  {when}  score {a.score:5.1f} ({severity(a.score)[0]})  actual {a.actual:.4g}"
            + typical
        )
    return "\n".join(lines) + "\n"
