"""Status upkeep: counts stay current while a job takes data, without flooding the
apiserver; kopf's bookkeeping lives under our API group."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess
from tests.e2e.jobs import event_series, get, mljob, ndjson, post, status, wait_for, wait_state

BATCHES = 30


def test_counts_follow_data_at_a_bounded_rate(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    cp, ns, name = control_plane, namespace, "busy"
    op = operator_factory(MLJOB_STATUS_INTERVAL="3")
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    wait_state(cp, ns, name, "opened")
    watch = subprocess.Popen(
        [
            str(cp.binaries["kubectl"]),
            "get",
            "mljob",
            name,
            "-n",
            ns,
            "--watch-only",
            "--output-watch-events",
            "-o",
            "name",
        ],
        env=cp.env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    modified: list[float] = []

    def read_events() -> None:
        assert watch.stdout is not None
        for line in watch.stdout:
            if line.strip():  # --watch-only: one line per change
                modified.append(time.monotonic())

    reader = threading.Thread(target=read_events, daemon=True)
    reader.start()
    probes = iter(range(1000))

    def watch_is_live() -> bool:
        cp.kubectl("label", "mljob", name, "-n", ns, f"probe={next(probes)}", "--overwrite")
        time.sleep(0.3)  # pacing of the probe loop, not synchronisation
        return bool(modified)

    wait_for(watch_is_live, "the watch to see a probe label change")
    modified.clear()
    records = event_series(BATCHES * 5)
    per_batch = len(records) // BATCHES
    started = time.monotonic()
    for i in range(BATCHES):
        code, _ = post(op, ns, name, ndjson(records[i * per_batch : (i + 1) * per_batch]))
        assert code == 202
    posted_in = time.monotonic() - started

    def all_counted() -> dict[str, object] | None:
        counts = status(cp, ns, name).get("dataCounts", {})
        return counts if counts.get("processedRecordCount") == per_batch * BATCHES else None

    counts = wait_for(all_counted, "dataCounts to catch up", timeout=30)
    assert counts["inputRecordCount"] == per_batch * BATCHES
    assert status(cp, ns, name)["modelSizeStats"]["modelBytes"] > 0
    writes_while_posting = [t for t in modified if t <= started + posted_in]
    allowed = 1 + int(posted_in / 3) + 1
    watch.terminate()
    watch.wait(timeout=10)
    reader.join(timeout=10)
    assert watch.stdout is not None
    watch.stdout.close()
    assert len(writes_while_posting) <= allowed, (len(writes_while_posting), posted_in)


def test_kopf_bookkeeping_is_under_our_group(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    cp, ns, name = control_plane, namespace, "tidy"
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
    wait_state(cp, ns, name, "opened")
    meta = get(cp, ns, name)["metadata"]
    assert meta["finalizers"] == ["ml.mljob.dev/close-and-cleanup"]
    keys = list(meta.get("annotations", {}))
    assert not [k for k in keys if "kopf.zalando.org" in k], keys
    st = status(cp, ns, name)
    assert st["observedGeneration"] == meta["generation"]
    assert all(c["observedGeneration"] == meta["generation"] for c in st["conditions"])
