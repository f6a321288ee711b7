"""Scale-out benchmark (issue 14): the same work on the embedded SQLite store with one
replica, and on the PostgreSQL store with one and with two replicas sharing the jobs.

Every figure is a ratio to a floor measured in the same run:
- data API ingest (records/s through HTTPS, the token check, the engine and a durable
  commit) against the engine in-process on the same kind of store (a SQLite file, or the
  same PostgreSQL server), so the row shows what the operator and the network add;
- a storm of BENCH_REPLICA_JOBS jobs (default 200) created at once, then all closed at
  once: seconds until all are opened / closed, against the single SQLite replica (the
  embedded default) in the same run.
With two replicas every post goes to the first one, which forwards the calls for the jobs
the other one holds: the figure includes forwarding. Run with `make bench`; it asserts
nothing.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes
from bench.operator_bench import Census, _bodies, _job, _row, engine_floor

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess, install_crd_and_rbac
from devtools.postgres import PostgresCluster
from mljob_operator.api import GROUP, PLURAL, VERSION
from mljob_operator.store import open_store

STORM_JOBS = int(os.environ.get("BENCH_REPLICA_JOBS", "200"))
INGEST_JOBS = 4
SHARDS = 16


def _wait_shards_held(cp: ControlPlane, ns: str, replicas: int, timeout: float = 120) -> None:
    """Until every shard Lease is held and the replicas have balanced them (at most a fair
    share each), so the figures do not include a rebalance."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = cp.kubectl(
            "get",
            "leases",
            "-n",
            ns,
            "-l",
            "ml.mljob.dev/lease",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.spec.holderIdentity}{'\\n'}{end}",
        ).stdout
        shards = dict(line.split("=", 1) for line in out.splitlines() if "shard" in line)
        held = Counter(shards.values())
        fair = -(-SHARDS // replicas)
        if (
            len(shards) == SHARDS
            and "" not in held
            and len(held) == replicas
            and max(held.values()) <= fair
        ):
            return
        time.sleep(0.5)
    raise TimeoutError(f"the shard Leases of {ns} were not all held by {replicas} replicas")


def _ingest(ops: list[OperatorProcess], ns: str, custom: Any, census: Census) -> float:
    """Records/s posted through the first replica to INGEST_JOBS jobs, round robin."""
    names = [f"ingest-{i}" for i in range(INGEST_JOBS)]
    for name in names:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, _job(name))
    census.wait_all(names, "opened")
    bodies = _bodies()
    front = ops[0]
    start = time.perf_counter()
    for i, body in enumerate(bodies):
        path = f"/v1/namespaces/{ns}/mljobs/{names[i % len(names)]}/data"
        code, answer = front.request("POST", path, body, token=front.token)
        while code == 503:  # a shard changing hands: retry as a client would
            time.sleep(0.2)
            code, answer = front.request("POST", path, body, token=front.token)
        assert code == 202, (code, answer)
    records = sum(body.count(b"\n") + 1 for body in bodies)
    return records / (time.perf_counter() - start)


def _storm(ns: str, custom: Any, census: Census) -> tuple[float, float]:
    names = [f"storm-{i}" for i in range(STORM_JOBS)]
    start = time.perf_counter()
    for name in names:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, _job(name))
    census.wait_all(names, "opened")
    opened_s = time.perf_counter() - start
    start = time.perf_counter()
    for name in names:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, name, {"spec": {"state": "closed"}}
        )
    census.wait_all(names, "closed")
    return opened_s, time.perf_counter() - start


def _run(
    cp: ControlPlane,
    api_client: Any,
    tmp: Path,
    label: str,
    replicas: int,
    env: dict[str, str],
) -> tuple[float, float, float]:
    """Ingest records/s, seconds to all opened, seconds to all closed."""
    ns = f"bench-{label}"
    cp.kubectl("create", "namespace", ns)
    custom = kubernetes.client.CustomObjectsApi(api_client)
    census = Census(api_client, ns)
    ops: list[OperatorProcess] = []
    try:
        for i in range(replicas):
            op = OperatorProcess(cp, tmp / f"data-{label}", tmp / f"operator-{label}-{i}.log")
            ops.append(op.start(namespace=ns, MLJOB_STATUS_INTERVAL="2", **env))
        if env.get("MLJOB_STORE_URL"):
            _wait_shards_held(cp, ns, replicas)
        rate = _ingest(ops, ns, custom, census)
        opened_s, closed_s = _storm(ns, custom, census)
        return rate, opened_s, closed_s
    finally:
        for op in ops:
            op.stop()


def main() -> int:
    bodies = _bodies()
    with (
        ControlPlane() as cp,
        PostgresCluster() as pg,
        tempfile.TemporaryDirectory() as tmp_dir,
    ):
        tmp = Path(tmp_dir)
        install_crd_and_rbac(cp)
        api_client = kubernetes.config.new_client_from_config(config_file=str(cp.kubeconfig))
        (tmp / "floor").mkdir()
        floor_sqlite = engine_floor(lambda: open_store(tmp / "floor"), bodies)
        floor_pg = engine_floor(
            lambda: open_store(tmp, pg.url(pg.create_database("floor"))), bodies
        )
        _row("floor: engine on SQLite, records/s", floor_sqlite, "")
        _row("floor: engine on PostgreSQL, records/s", floor_pg, "")
        sqlite = _run(cp, api_client, tmp, "sqlite", 1, {})
        for label, replicas, floor in (
            ("SQLite, 1 replica", 0, floor_sqlite),
            ("PostgreSQL, 1 replica", 1, floor_pg),
            ("PostgreSQL, 2 replicas", 2, floor_pg),
        ):
            if replicas:
                url = pg.url(pg.create_database(f"replicas{replicas}"))
                rate, opened_s, closed_s = _run(
                    cp, api_client, tmp, f"pg{replicas}", replicas, {"MLJOB_STORE_URL": url}
                )
            else:
                rate, opened_s, closed_s = sqlite
            print(label, flush=True)
            _row("  data API ingest, records/s", rate, "", rate / floor)
            _row(f"  {STORM_JOBS} created → opened, s", opened_s, "", opened_s / sqlite[1])
            _row(f"  {STORM_JOBS} closed → closed, s", closed_s, "", closed_s / sqlite[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
