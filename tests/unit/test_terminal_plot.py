"""The terminal single-metric view: what it draws and lists, with and without colour."""

from __future__ import annotations

import math

from mljob_operator.terminal_plot import Anomaly, anomalies_of, render, severity

T0 = 1_764_547_200_000


def _points(n: int) -> list[dict[str, float]]:
    return [
        {
            "timestamp": T0 + 60_000 * i,
            "actual": math.sin(i / 4) + (3.0 if i == 20 else 0.1),
            "modelMedian": math.sin(i / 4),
            "modelLower": math.sin(i / 4) - 1,
            "modelUpper": math.sin(i / 4) + 1,
        }
        for i in range(n)
    ]


def test_severity_bands() -> None:
    assert [severity(s)[0] for s in (0, 24.9, 25, 50, 74.9, 75, 100)] == [
        "warning",
        "warning",
        "minor",
        "major",
        "major",
        "critical",
        "critical",
    ]


def test_the_chart_has_the_band_the_series_and_the_anomalies_listed() -> None:
    points = _points(60)
    spike = Anomaly(T0 + 20 * 60_000, 88.0, points[20]["actual"], points[20]["modelMedian"])
    text = render(
        points, [spike, Anomaly(T0, 10.0, 1.0, None)], title="ns/web", width=90, height=20
    )
    assert "\x1b[" in text
    plain = render(
        points,
        [spike, Anomaly(T0, 10.0, 1.0, None)],
        title="ns/web",
        width=90,
        height=20,
        colour=False,
    )
    assert "\x1b[" not in plain
    chart, listing = plain.split("anomalies (", 1)
    assert "ns/web" in chart
    for label in ("model band (95%)", "model median", "actual", "anomaly: critical"):
        assert label in chart
    assert "00:00" in chart
    assert "00:59" in chart
    assert len(chart.splitlines()[1]) <= 90
    first, second = listing.splitlines()[1:3]
    assert "2025-12-01T00:20:00+00:00" in first
    assert "score  88.0 (critical)" in first
    assert "typical" in first
    assert "(warning)" in second
    assert "typical" not in second


def test_records_alone_and_nothing() -> None:
    records = [
        {"timestamp": T0, "recordScore": 60.0, "actual": [42.0], "typical": [15.0]},
        {"timestamp": T0 + 300_000, "recordScore": 5.0, "actual": [], "typical": []},
    ]
    anomalies = anomalies_of(records)
    assert anomalies == [Anomaly(T0, 60.0, 42.0, 15.0)]
    text = render([], anomalies, title="t", width=60, height=12, colour=False)
    assert "anomaly: major" in text
    assert "model band" not in text
    assert render([], [], title="t") == "t\nno results in this range\n"
