"""Datafeeds from a REAL Prometheus (the Debian package's binary, history backfilled by
promtool): a job pulls a day of a gauge over [start, end), finds the injected anomaly,
reaches its end and closes by itself; a bad query is reported and retried without failing
the job; an operator SIGKILLed mid-feed resumes without losing or repeating a sample."""

from __future__ import annotations

import json
import math
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess
from devtools.prometheus import Prometheus, openmetrics
from tests.e2e.jobs import api_get, condition, events, mljob, status, wait_for

BASE = 1_699_999_800  # epoch seconds on a 5-minute boundary
MINUTES = 24 * 60
HOSTS = ("web-1", "web-2", "web-3")
ANOMALY_HOST, ANOMALY_MINUTES = "web-2", range(900, 905)
METRIC = "http_requests_per_minute"
RECORDS = MINUTES * len(HOSTS)


def traffic() -> list[tuple[dict[str, str], int, float]]:
    """A day of requests per minute per host: a daily wave plus noise, and a burst on one
    host for five minutes."""
    rng = random.Random(7)
    samples = []
    for minute in range(MINUTES):
        for host in HOSTS:
            value = 100 + 20 * math.sin(2 * math.pi * minute / MINUTES) + rng.gauss(0, 3)
            if host == ANOMALY_HOST and minute in ANOMALY_MINUTES:
                value *= 4
            samples.append(({"host": host, "job": "web"}, BASE + minute * 60, round(value, 3)))
    return samples


@pytest.fixture(scope="module")
def prometheus() -> Iterator[Prometheus]:
    with Prometheus(openmetrics(METRIC, traffic(), "Requests per minute.")) as prom:
        pid = prom.pid
        yield prom
    assert pid is not None
    assert not Path(f"/proc/{pid}").exists(), f"prometheus {pid} left running"


def iso(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def feed_job(name: str, url: str, query: str = METRIC, **datafeed: Any) -> str:
    return mljob(
        name,
        analysisConfig={
            "bucketSpan": "5m",
            "detectors": [{"function": "high_mean", "fieldName": "value", "byFieldName": "host"}],
            "influencers": ["host"],
        },
        datafeed={
            "prometheus": {"url": url, "query": query, "step": "1m"},
            "start": iso(BASE),
            "end": iso(BASE + MINUTES * 60),
            **datafeed,
        },
    )


def wait_closed(cp: ControlPlane, ns: str, name: str, timeout: float = 120) -> dict[str, Any]:
    def closed() -> dict[str, Any] | None:
        st = status(cp, ns, name)
        return st if condition(st, "Closed").get("status") == "True" else None

    try:
        wait_for(closed, f"{name} to close", timeout)
    except AssertionError as err:
        raise AssertionError(f"{err}\nstatus: {json.dumps(status(cp, ns, name))}") from None
    cp.kubectl("wait", "-n", ns, "--for=condition=Closed", f"mljob/{name}", "--timeout=10s")
    return status(cp, ns, name)


def assert_whole_day_analysed(op: OperatorProcess, ns: str, name: str, st: dict[str, Any]) -> None:
    assert st["dataCounts"]["processedRecordCount"] == RECORDS, st["dataCounts"]
    assert st["dataCounts"]["inputRecordCount"] == RECORDS
    assert st["dataCounts"]["outOfOrderTimestampCount"] == 0
    assert st["dataCounts"]["earliestRecordTimestamp"] == BASE * 1000
    assert st["dataCounts"]["latestRecordTimestamp"] == (BASE + (MINUTES - 1) * 60) * 1000
    buckets = api_get(op, ns, name, "results/buckets?size=1000")["buckets"]
    assert len(buckets) == MINUTES // 5
    assert {b["eventCount"] for b in buckets} == {5 * len(HOSTS)}
    assert not any(b["isInterim"] for b in buckets)


def test_prometheus_datafeed_pulls_history_finds_the_burst_and_closes_itself(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess, prometheus: Prometheus
) -> None:
    cp, ns, name = control_plane, namespace, "prom-day"
    started = time.monotonic()
    cp.kubectl("apply", "-n", ns, "-f", "-", input=feed_job(name, prometheus.url))
    st = wait_closed(cp, ns, name)
    elapsed = time.monotonic() - started

    closed = condition(st, "Closed")
    assert (closed["status"], closed["reason"]) == ("True", "DatafeedEnded"), st
    assert condition(st, "Ready")["status"] == "True"
    assert st["lastClose"]["trigger"] == "datafeed"
    assert st["lastClose"]["snapshotId"] == st["modelSnapshotId"]
    feed = st["datafeed"]
    assert feed["endReached"] is True
    assert feed["state"] == "stopped"
    assert feed["searchedUntil"] == (BASE + MINUTES * 60) * 1000
    assert "lastError" not in feed
    assert_whole_day_analysed(operator, ns, name, st)

    snapshots = api_get(operator, ns, name, "modelsnapshots")["modelSnapshots"]
    assert [s["snapshotId"] for s in snapshots] == [st["modelSnapshotId"]]
    buckets = api_get(operator, ns, name, "results/buckets?size=1000")["buckets"]
    top = max(buckets, key=lambda b: b["anomalyScore"])
    assert top["timestamp"] == (BASE + ANOMALY_MINUTES[0] * 60) * 1000, top
    assert top["anomalyScore"] > 50
    records = api_get(operator, ns, name, "results/records?size=10000")["records"]
    worst = max(records, key=lambda r: r["recordScore"])
    assert worst["byFieldValue"] == ANOMALY_HOST
    assert worst["timestamp"] == top["timestamp"]
    reasons = {e["reason"] for e in events(cp, ns, name)}
    assert "DatafeedEnded" in reasons
    print(f"\n{RECORDS} Prometheus samples pulled, analysed and closed in {elapsed:.1f}s")

    # The operator never edits the spec: GitOps sees no drift.
    spec = json.loads(cp.kubectl("get", "mljob", name, "-n", ns, "-o", "json").stdout)["spec"]
    assert spec["state"] == "opened"


def test_bad_query_is_reported_and_retried_without_failing_the_job(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess, prometheus: Prometheus
) -> None:
    cp, ns, name = control_plane, namespace, "prom-bad-query"
    cp.kubectl(
        "apply", "-n", ns, "-f", "-", input=feed_job(name, prometheus.url, query=f"rate({METRIC}[")
    )

    def failing() -> dict[str, Any] | None:
        st = status(cp, ns, name)
        return st if (st.get("datafeed") or {}).get("lastError") else None

    st = failing_status = wait_for(failing, "the datafeed error in status")
    assert st["state"] == "opened"
    error = failing_status["datafeed"]["lastError"]
    assert "bad_data" in error
    assert "parse error" in error
    ready = condition(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "DatafeedError")
    assert "parse error" in ready["message"]
    assert condition(st, "Failed")["status"] == "False"
    warnings = wait_for(
        lambda: [e for e in events(cp, ns, name) if e["reason"] == "DatafeedError"],
        "a DatafeedError event",
    )
    assert warnings[0]["type"] == "Warning"
    assert "parse error" in warnings[0]["message"]

    fix = json.dumps({"spec": {"datafeed": {"prometheus": {"query": METRIC}}}})
    cp.kubectl("patch", "mljob", name, "-n", ns, "--type=merge", "-p", fix)
    st = wait_closed(cp, ns, name)
    assert condition(st, "Closed")["reason"] == "DatafeedEnded"
    assert "lastError" not in st["datafeed"]
    assert_whole_day_analysed(operator, ns, name, st)


@pytest.mark.parametrize("kill_at", ["after:datafeedPost:1", "after:datafeedPost:5"])
def test_sigkill_mid_feed_loses_and_repeats_nothing(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    prometheus: Prometheus,
    kill_at: str,
) -> None:
    """Killed right after the engine acknowledged a window and before any status records
    it; the restarted operator resumes after the latest record the job has."""
    cp, ns, name = control_plane, namespace, "prom-crash"
    doomed = operator_factory(MLJOB_FAULT_KILL_AT=kill_at)
    cp.kubectl("apply", "-n", ns, "-f", "-", input=feed_job(name, prometheus.url, chunkSpan="2h"))
    assert doomed.wait_exit(timeout=120) == -signal.SIGKILL, doomed.log_tail()
    before = status(cp, ns, name)
    assert before["state"] == "opened"
    assert (before.get("datafeed") or {}).get("endReached") is not True

    survivor = operator_factory()
    st = wait_closed(cp, ns, name)
    assert condition(st, "Closed")["reason"] == "DatafeedEnded"
    assert_whole_day_analysed(survivor, ns, name, st)
    snapshots = api_get(survivor, ns, name, "modelsnapshots")["modelSnapshots"]
    assert [s["snapshotId"] for s in snapshots] == [st["modelSnapshotId"]]
