"""Operator benchmark: how much the operator adds on top of the apiserver and the engine.

Every figure is a ratio to a floor measured in the same run on the same control plane:
- open and close latency (create/patch → the state seen on a client's watch) against a
  bare in-process operator: one watch and one status patch over one connection, reacting
  the moment it sees the change (the least any reconcile can cost), timed the same way;
- apiserver writes on mljobs per close beyond the user's own patch (the apiserver's
  /metrics), against the bare operator's one;
- data API throughput (HTTPS + token check + engine + durable write) against the same
  bodies posted to the engine in-process;
- a storm: BENCH_JOBS (default 1,000) jobs created at once by 8 clients, then all closed
  at once: seconds until all are opened / closed against the bare operator's storm, the
  apiserver's 429s, the operator's RSS (and its growth over a second storm of as many new
  jobs: memory freed by the first is used again, not added to).
Run with `make bench`; it asserts nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import urllib3

from devtools.controlplane import ControlPlane
from devtools.operatorproc import (
    OperatorProcess,
    install_crd_and_rbac,
    install_finalizer_policy,
    service_account_token,
)
from mljob_operator.api import GROUP, PLURAL, VERSION
from mljob_operator.engine import DetectorConfig, Job, JobConfig
from mljob_operator.store import SQLiteStore, Store

NAMESPACE = "bench"
FLOOR_NAMESPACE = "bench-floor"
ROUNDS = 8
RECORDS = 200_000
BATCH = 20_000
T0 = 1_699_920_000
SETTLE_S = 0.5
"""Quiet time around a close, so its writes are counted and no other's are (a pause of
the bench, not a synchronisation: no figure's correctness waits on it)."""
WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "UPDATE", "DELETE"}
STORM_JOBS = int(os.environ.get("BENCH_JOBS", "1000"))
STORM_CLIENTS = 8
"""Clients creating or patching the storm's jobs at once (as a GitOps controller applying
many objects does), the same for the bare operator and the real one."""
FINALIZER_POLICY = os.environ.get("BENCH_FINALIZER_POLICY") == "1"
"""Install manifests/admission/finalizer-policy.yaml (opt-in) before the operator starts."""

Obj = dict[str, Any]


def _job(name: str) -> Obj:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MLJob",
        "metadata": {"name": name},
        "spec": {
            "analysisConfig": {
                "bucketSpan": "5m",
                "detectors": [{"function": "mean", "fieldName": "v"}],
            }
        },
    }


def _state(obj: Obj) -> str | None:
    state = (obj.get("status") or {}).get("state")
    return None if state is None else str(state)


def _closed(obj: Obj) -> bool:
    return bool((obj.get("status") or {}).get("closed"))


def _opened(obj: Obj) -> bool:
    return _state(obj) == "opened"


class Watcher:
    """One watch on the MLJobs of a namespace, over one connection, in a thread: tells a
    waiter when the object it waits for satisfies its predicate."""

    def __init__(
        self, api_client: Any, namespace: str, on_event: Callable[[Obj], None] | None = None
    ) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.namespace, self.on_event = namespace, on_event
        self._waits: dict[str, tuple[Callable[[Obj], bool], threading.Event]] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with contextlib.suppress(urllib3.exceptions.HTTPError, OSError):  # the end of the run
            self._follow()

    def _follow(self) -> None:
        stream = kubernetes.watch.Watch().stream(
            self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL
        )
        for event in stream:
            obj = event["object"]
            if self.on_event is not None:
                self.on_event(obj)
            with self._lock:
                wait = self._waits.get(obj["metadata"]["name"])
            if wait is not None and wait[0](obj):
                wait[1].set()

    @contextmanager
    def expect(self, name: str, predicate: Callable[[Obj], bool]) -> Iterator[None]:
        """Run the block, then wait until `name` satisfies `predicate` on the watch."""
        done = threading.Event()
        with self._lock:
            self._waits[name] = (predicate, done)
        try:
            yield
            if not done.wait(timeout=120):
                raise TimeoutError(f"{self.namespace}/{name} never matched")
        finally:
            with self._lock:
                self._waits.pop(name, None)


def bare_operator(custom: Any, namespace: str) -> Callable[[Obj], None]:
    """The floor's reconcile: the asked state written to status the moment it is seen."""

    def react(obj: Obj) -> None:
        wanted = (obj.get("spec") or {}).get("state", "opened")
        if _state(obj) != wanted:
            custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                obj["metadata"]["name"],
                {"status": {"state": wanted, "closed": wanted == "closed"}},
            )

    return react


def mljob_writes(cp: ControlPlane) -> int:
    """Writes on mljobs the apiserver has served (its own /metrics)."""
    total = 0
    for line in cp.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if line.startswith("apiserver_request_total{") and 'resource="mljobs"' in line:
            verb = line.split('verb="', 1)[1].split('"', 1)[0]
            if verb in WRITE_VERBS:
                total += int(float(line.rsplit(" ", 1)[1]))
    return total


@dataclass
class Rounds:
    opens: list[float] = field(default_factory=list)
    closes: list[float] = field(default_factory=list)
    writes_per_close: list[int] = field(default_factory=list)


def open_close_rounds(cp: ControlPlane, custom: Any, watcher: Watcher, prefix: str) -> Rounds:
    """Create jobs and close them, timing create → opened and patch → closed as a client's
    watch sees them, and counting the writes per close beyond the user's patch."""
    out = Rounds()
    ns = watcher.namespace
    for i in range(ROUNDS):
        name = f"{prefix}-{i}"
        start = time.perf_counter()
        with watcher.expect(name, _opened):
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, _job(name))
        out.opens.append(time.perf_counter() - start)
        time.sleep(SETTLE_S)
        before = mljob_writes(cp)
        start = time.perf_counter()
        with watcher.expect(name, _closed):
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, name, {"spec": {"state": "closed"}}
            )
        out.closes.append(time.perf_counter() - start)
        time.sleep(SETTLE_S)
        out.writes_per_close.append(mljob_writes(cp) - before - 1)
    return out


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def too_many_requests(cp: ControlPlane) -> int:
    """429 answers the apiserver has given on mljobs."""
    total = 0
    for line in cp.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if (
            line.startswith("apiserver_request_total{")
            and 'resource="mljobs"' in line
            and 'code="429"' in line
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


class Census:
    """How many jobs of a namespace are in each state, from one watch."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        self.states: dict[str, str | None] = {}
        self.counts: Counter[str | None] = Counter()
        self.changed = threading.Condition()
        Watcher(api_client, namespace, self._seen)

    def _seen(self, obj: Obj) -> None:
        name, state = obj["metadata"]["name"], _state(obj)
        with self.changed:
            if name in self.states:
                self.counts[self.states[name]] -= 1
            self.states[name] = state
            self.counts[state] += 1
            self.changed.notify_all()

    def wait_all(self, names: list[str], state: str, timeout: float = 600) -> None:
        """Wait until every job of the namespace (`names`, all of them) is in `state`."""
        with self.changed:
            ok = self.changed.wait_for(
                lambda: (
                    self.counts[state] >= len(names)
                    and all(self.states.get(n) == state for n in names)
                ),
                timeout=timeout,
            )
        if not ok:
            raise TimeoutError(f"not all {len(names)} jobs reached {state}")


@dataclass
class Storm:
    opened_s: float
    closed_s: float


def run_storm(
    custom: Any, namespace: str, census: Census, on_opened: Callable[[], None] = lambda: None
) -> Storm:
    """STORM_JOBS jobs created at once by STORM_CLIENTS clients, then all patched closed."""
    names = [f"storm-{i}" for i in range(STORM_JOBS)]

    def create(name: str) -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _job(name))

    def close(name: str) -> None:
        patch = {"spec": {"state": "closed"}}
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)

    with ThreadPoolExecutor(STORM_CLIENTS) as clients:
        start = time.perf_counter()
        list(clients.map(create, names))
        census.wait_all(names, "opened")
        opened_s = time.perf_counter() - start
        on_opened()
        start = time.perf_counter()
        list(clients.map(close, names))
        census.wait_all(names, "closed")
        return Storm(opened_s, time.perf_counter() - start)


def floor_storm(cp: ControlPlane, api_client: Any, custom: Any) -> Storm:
    """The storm against the bare operator, before the real one starts; its jobs are
    deleted after (the real operator would otherwise find them at its start)."""
    ns = "bench-storm-floor"
    cp.kubectl("create", "namespace", ns)
    Watcher(api_client, ns, bare_operator(custom, ns))
    floor = run_storm(custom, ns, Census(api_client, ns))
    custom.delete_collection_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
    deadline = time.monotonic() + 120
    while custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, limit=1)["items"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the floor's storm jobs in {ns} were not deleted")
        time.sleep(0.2)
    return floor


def storm(
    cp: ControlPlane, op: OperatorProcess, api_client: Any, custom: Any, floor: Storm
) -> None:
    """The storm against the operator, as ratios to the bare operator's."""
    ns = "bench-storm"
    cp.kubectl("create", "namespace", ns)
    census = Census(api_client, ns)
    refused = too_many_requests(cp)
    assert op.proc is not None
    pid = op.proc.pid
    base_rss = _rss_mb(pid)
    open_rss: list[float] = []
    real = run_storm(custom, ns, census, lambda: open_rss.append(_rss_mb(pid)))
    time.sleep(SETTLE_S)
    closed_rss = _rss_mb(pid)
    n = STORM_JOBS
    _row(f"floor: {n} created → opened, bare", floor.opened_s, "s")
    _row(f"{n} jobs created → all opened", real.opened_s, "s", real.opened_s / floor.opened_s)
    _row(f"floor: {n} patched → closed, bare", floor.closed_s, "s")
    ratio = real.closed_s / floor.closed_s
    _row(f"{n} jobs patched closed → all closed", real.closed_s, "s", ratio)
    _row("429s from the apiserver in the storm", too_many_requests(cp) - refused, "")
    _row("operator RSS per open idle job", (open_rss[0] - base_rss) * 1024 / n, "KB")
    _row("operator RSS after they closed, over base", closed_rss - base_rss, "MB")
    again = "bench-storm-again"
    cp.kubectl("create", "namespace", again)
    run_storm(custom, again, Census(api_client, again))
    time.sleep(SETTLE_S)
    _row("RSS after a second storm, over the first", _rss_mb(pid) - closed_rss, "MB")


def _bodies() -> list[bytes]:
    lines = [json.dumps({"time": T0 + i, "v": (i % 97) * 0.5}) for i in range(RECORDS)]
    return ["\n".join(lines[i : i + BATCH]).encode() for i in range(0, RECORDS, BATCH)]


def engine_floor(open_floor_store: Callable[[], Store], bodies: list[bytes]) -> float:
    """Records/s of the engine posting the same bodies in-process on a store like the
    operator's (the floor of the data API's ingest)."""
    config = JobConfig(detectors=(DetectorConfig("mean", field_name="v"),))
    store = open_floor_store()
    try:
        job = Job.open(store, "floor", config)
        start = time.perf_counter()
        for body in bodies:
            job.post_data(body)
        return sum(body.count(b"\n") + 1 for body in bodies) / (time.perf_counter() - start)
    finally:
        store.close()


def _row(what: str, value: float, unit: str, ratio: float | None = None) -> None:
    tail = f"  ratio to floor {ratio:5.2f}" if ratio is not None else ""
    print(f"{what:<40} {value:12,.1f} {unit:<3}{tail}", flush=True)


def _ingest(cp: ControlPlane, op: OperatorProcess, custom: Any, watcher: Watcher) -> None:
    token = service_account_token(cp, NAMESPACE, "bench-admin", "mljob-admin")
    with watcher.expect("ingest", _opened):
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, _job("ingest"))
    bodies = _bodies()
    start = time.perf_counter()
    for body in bodies:
        path = f"/v1/namespaces/{NAMESPACE}/mljobs/ingest/data"
        code, _ = op.request("POST", path, body, token=token)
        assert code == 202, code
    api_rate = RECORDS / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        engine_rate = engine_floor(lambda: SQLiteStore(Path(tmp) / "floor.sqlite"), bodies)
    _row("data API ingest, records/s", api_rate, "", api_rate / engine_rate)
    _row("floor: engine in-process, records/s", engine_rate, "")


def main() -> int:
    med = statistics.median
    with ControlPlane() as cp, tempfile.TemporaryDirectory() as tmp:
        install_crd_and_rbac(cp)
        for ns in (NAMESPACE, FLOOR_NAMESPACE):
            cp.kubectl("create", "namespace", ns)
        api_client = kubernetes.config.new_client_from_config(config_file=str(cp.kubeconfig))
        custom = kubernetes.client.CustomObjectsApi(api_client)
        bare = Watcher(api_client, FLOOR_NAMESPACE, bare_operator(custom, FLOOR_NAMESPACE))
        floor = open_close_rounds(cp, custom, bare, "floor")
        floor_of_storm = floor_storm(cp, api_client, custom)
        if FINALIZER_POLICY:
            install_finalizer_policy(cp)
            print("(with the optional finalizer policy, BENCH_FINALIZER_POLICY=1)", flush=True)
        op = OperatorProcess(cp, Path(tmp) / "data", Path(tmp) / "operator.log")
        op.start(MLJOB_STATUS_INTERVAL="2")
        try:
            watcher = Watcher(api_client, NAMESPACE)
            real = open_close_rounds(cp, custom, watcher, "job")
            _row("floor: open, bare watcher (p50)", med(floor.opens) * 1000, "ms")
            ratio = med(real.opens) / med(floor.opens)
            _row("open  (create → opened, p50)", med(real.opens) * 1000, "ms", ratio)
            _row("floor: close, bare watcher (p50)", med(floor.closes) * 1000, "ms")
            ratio = med(real.closes) / med(floor.closes)
            _row("close (patch → closed seen, p50)", med(real.closes) * 1000, "ms", ratio)
            floor_writes = med(floor.writes_per_close)
            _row("floor: writes on mljobs per close", floor_writes, "")
            ratio = med(real.writes_per_close) / max(floor_writes, 1)
            _row("writes on mljobs per close", med(real.writes_per_close), "", ratio)
            _ingest(cp, op, custom, watcher)
            storm(cp, op, api_client, custom, floor_of_storm)
        finally:
            op.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
