"""Datafeeds from an HTTP endpoint served on loopback by the test (real HTTP, no mocks):
an unreachable source is reported and retried while the job stays open, the feed closes
the job at its end, a later end reopens it, and a real-time feed keeps every record exactly
once across a close and a reopen (going on at the bucket after the one the close
finalised)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess
from devtools.processes import free_port
from tests.e2e.jobs import (
    BASE_TIME,
    api_get,
    condition,
    events,
    mljob,
    post,
    set_state,
    status,
    wait_for,
)

SPIKE_MINUTE = 200


def event_times(start_ms: int, end_ms: int, every_s: int) -> list[int]:
    """The source's records in [start, end): one every `every_s` seconds, and one every
    2 s in the spike minute. The same window always gives the same records."""
    out = []
    first = -(-start_ms // 1000)
    for second in range(first, -(-end_ms // 1000)):
        minute = (second - BASE_TIME) // 60
        step = 2 if minute == SPIKE_MINUTE and second >= BASE_TIME else every_s
        if second % step == 0:
            out.append(second)
    return out


class Source:
    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        source = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                source.requests.append(query)
                times = event_times(int(query["start"]), int(query["end"]), int(query["every"]))
                body = "\n".join(json.dumps({"time": t, "host": "a"}) for t in times).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def source() -> Iterator[Source]:
    src = Source()
    src.thread.start()
    yield src
    src.server.shutdown()
    src.server.server_close()
    src.thread.join(timeout=10)


def iso(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def patch_spec(cp: ControlPlane, ns: str, name: str, spec: dict[str, Any]) -> None:
    cp.kubectl("patch", "mljob", name, "-n", ns, "--type=merge", "-p", json.dumps({"spec": spec}))


def wait_status(
    cp: ControlPlane, ns: str, name: str, what: str, check: Any, timeout: float = 90
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        st = status(cp, ns, name)
        return st if check(st) else None

    try:
        return wait_for(probe, what, timeout)
    except AssertionError as err:
        raise AssertionError(f"{err}\nstatus: {json.dumps(status(cp, ns, name))}") from None


def test_unreachable_source_then_fixed_closes_at_end_and_a_later_end_reopens(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess, source: Source
) -> None:
    cp, ns, name = control_plane, namespace, "http-feed"
    six_hours = BASE_TIME + 6 * 3600
    dead = f"http://127.0.0.1:{free_port()}/events?every=20"
    feed = {"http": {"url": dead}, "start": iso(BASE_TIME), "end": iso(six_hours)}
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name, datafeed=feed))

    st = wait_status(
        cp, ns, name, "a datafeed error", lambda s: (s.get("datafeed") or {}).get("lastError")
    )
    assert st["state"] == "opened"
    assert "Cannot connect" in st["datafeed"]["lastError"], st["datafeed"]
    code, refused = post(operator, ns, name, b'{"time": 1699999800}')
    assert code == 409, refused
    assert "takes its data from its datafeed" in refused["error"]["message"]
    assert st["datafeed"]["state"] == "started"
    ready = condition(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "DatafeedError")
    warnings = wait_for(
        lambda: [e for e in events(cp, ns, name) if e["reason"] == "DatafeedError"],
        "a DatafeedError event",
    )
    assert warnings[0]["type"] == "Warning"
    assert "127.0.0.1" in warnings[0]["message"]

    patch_spec(cp, ns, name, {"datafeed": {"http": {"url": f"{source.url}?every=20"}}})
    st = wait_status(cp, ns, name, "closed", lambda s: condition(s, "Closed")["status"] == "True")
    cp.kubectl("wait", "-n", ns, "--for=condition=Closed", f"mljob/{name}", "--timeout=10s")
    first_close = st["lastClose"]
    assert condition(st, "Closed")["reason"] == "DatafeedEnded"
    assert first_close["trigger"] == "datafeed"
    assert "lastError" not in st["datafeed"]
    assert st["datafeed"]["endReached"] is True
    expected = len(event_times(BASE_TIME * 1000, six_hours * 1000, 20))
    assert st["dataCounts"]["processedRecordCount"] == expected
    buckets = api_get(operator, ns, name, "results/buckets?size=1000")["buckets"]
    assert sum(b["eventCount"] for b in buckets) == expected
    top = max(buckets, key=lambda b: b["anomalyScore"])
    assert top["timestamp"] == (BASE_TIME + SPIKE_MINUTE * 60) * 1000
    assert all(int(r["end"]) <= six_hours * 1000 for r in source.requests)

    twelve_hours = BASE_TIME + 12 * 3600
    patch_spec(cp, ns, name, {"datafeed": {"end": iso(twelve_hours)}})
    st = wait_status(
        cp,
        ns,
        name,
        "a second close by the datafeed",
        lambda s: (
            s.get("state") == "closed"
            and (s.get("lastClose") or {}).get("closeId") != first_close["closeId"]
        ),
    )
    assert st["lastClose"]["trigger"] == "datafeed"
    assert st["lastOpen"]["restoredSnapshotId"] == first_close["snapshotId"]
    expected = len(event_times(BASE_TIME * 1000, twelve_hours * 1000, 20))
    assert st["dataCounts"]["processedRecordCount"] == expected
    assert st["datafeed"]["searchedUntil"] == twelve_hours * 1000
    snapshots = api_get(operator, ns, name, "modelsnapshots")["modelSnapshots"]
    assert len(snapshots) == 2


def contiguous(st: dict[str, Any]) -> bool:
    """Every second from the earliest to the latest record analysed, each once."""
    counts = st["dataCounts"]
    span = (counts["latestRecordTimestamp"] - counts["earliestRecordTimestamp"]) // 1000
    return bool(counts["processedRecordCount"] == span + 1 == counts["inputRecordCount"])


def test_real_time_feed_keeps_every_record_once_across_close_and_reopen(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess, source: Source
) -> None:
    cp, ns, name = control_plane, namespace, "http-realtime"
    feed = {"http": {"url": f"{source.url}?every=1"}, "frequency": "1s", "queryDelay": "1s"}
    body = mljob(
        name,
        analysisConfig={"bucketSpan": "10s", "detectors": [{"function": "count"}]},
        datafeed=feed,
    )
    cp.kubectl("apply", "-n", ns, "-f", "-", input=body)

    def records(s: dict[str, Any]) -> int:
        return int((s.get("dataCounts") or {}).get("processedRecordCount", 0))

    st = wait_status(cp, ns, name, "records pulled in real time", lambda s: records(s) >= 5)
    assert st["state"] == "opened"
    assert st["datafeed"]["state"] == "started"
    assert "end" not in st["datafeed"] or not st["datafeed"]["endReached"]

    set_state(cp, ns, name, "closed")
    st = wait_status(cp, ns, name, "closed", lambda s: condition(s, "Closed")["status"] == "True")
    assert condition(st, "Closed")["reason"] == "Closed"
    assert st["lastClose"]["trigger"] == "spec"
    assert st["datafeed"]["state"] == "stopped"
    assert st["datafeed"]["endReached"] is False
    assert contiguous(st), json.dumps([st["dataCounts"], st["datafeed"]])
    closed_at, before = records(st), st

    set_state(cp, ns, name, "opened")
    st = wait_status(
        cp,
        ns,
        name,
        "records after reopening",
        lambda s: s.get("state") == "opened" and records(s) >= closed_at + 5,
    )
    # The close finalised the bucket it stopped in; the reopened feed goes on at the next
    # bucket with every record once: none repeated, none dropped as out of order.
    latest_at_close = before["dataCounts"]["latestRecordTimestamp"]
    next_bucket = (latest_at_close // 10_000 + 1) * 10_000
    after = st["dataCounts"]
    assert after["outOfOrderTimestampCount"] == 0
    assert after["processedRecordCount"] == after["inputRecordCount"]
    assert after["processedRecordCount"] == closed_at + (
        (after["latestRecordTimestamp"] - next_bucket) // 1000 + 1
    ), json.dumps([before["dataCounts"], before["datafeed"], after, st["datafeed"]])
