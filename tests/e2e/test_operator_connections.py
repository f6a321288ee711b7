"""The operator's connections to the apiserver stay bounded in a burst.

200 jobs created and then closed by 8 clients at once: kopf's requests take turns
(`kopf_session`, 16 in flight, watches apart) and the operator's own client has a fixed
pool, so the connections the operator holds to the apiserver never exceed those limits.
With kopf's default session the same burst held about a hundred (113 measured).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess
from mljob_operator.api import GROUP, PLURAL, VERSION
from mljob_operator.kopf_session import MAX_IN_FLIGHT
from mljob_operator.kube import KUBE_THREADS, REVIEW_THREADS
from tests.e2e.jobs import mljob, wait_for

JOBS = 200
CLIENTS = 8
WATCHES = 1
SLACK = 4
"""A request whose answer has come is given its turn back while its body is still read."""
DEADLINE_S = 180.0


def apiserver_connections(pid: int, port: int) -> int:
    """Established TCP connections of process `pid` to `port` (from /proc)."""
    sockets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            sockets.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if fields[9] in sockets and remote_port == port and fields[3] == "01":
                count += 1
    return count


def until_all(custom: Any, namespace: str, done: Callable[[dict[str, Any]], bool]) -> None:
    def all_done() -> bool:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        return len(items) == JOBS and all(done(item.get("status") or {}) for item in items)

    wait_for(all_done, "the burst's jobs all to get there", DEADLINE_S)


def test_a_burst_keeps_the_operators_connections_bounded(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    assert operator.proc is not None
    pid, port = operator.proc.pid, int(control_plane.server.rsplit(":", 1)[1])
    api = kubernetes.config.new_client_from_config(str(control_plane.kubeconfig))  # type: ignore[no-untyped-call]
    custom = kubernetes.client.CustomObjectsApi(api)
    most, sampling = [0], threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            most[0] = max(most[0], apiserver_connections(pid, port))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    names = [f"burst-{i}" for i in range(JOBS)]
    closing = {"spec": {"state": "closed"}}
    try:
        with ThreadPoolExecutor(CLIENTS) as clients:
            list(
                clients.map(
                    lambda n: custom.create_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, json.loads(mljob(n))
                    ),
                    names,
                )
            )
            until_all(custom, namespace, lambda st: st.get("state") == "opened")
            list(
                clients.map(
                    lambda n: custom.patch_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, n, closing
                    ),
                    names,
                )
            )
            until_all(custom, namespace, lambda st: st.get("closed") is True)
    finally:
        sampling.set()
        sampler.join()
    bound = MAX_IN_FLIGHT + KUBE_THREADS + REVIEW_THREADS + WATCHES + SLACK
    assert 0 < most[0] <= bound, f"{most[0]} connections to the apiserver at once"
