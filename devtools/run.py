"""`make run`: a local control plane, the operator, and a demo job that takes data and closes.

Starts etcd + kube-apiserver, installs the CRD and the operator's RBAC from manifests/,
runs the real operator (`kopf run -m mljob_operator`), applies the `event-rate` sample,
posts a day of synthetic events with an anomaly through the data API as an mljob-admin
ServiceAccount, closes the job with `spec.state: closed`, and prints what housekeeping
did and the most anomalous buckets. Then it keeps everything running for you to explore
until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from devtools.controlplane import REPO_ROOT, ControlPlane
from devtools.operatorproc import OperatorProcess, install_crd_and_rbac, service_account_token
from devtools.processes import stop_requested

NAMESPACE = "demo"
JOB = "event-rate"
BUCKET_S = 300
DAY_START = 1_699_920_000  # 2023-11-14T00:00:00Z


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def demo_events() -> bytes:
    """A day of events with a daily rhythm, and a burst at 15:00 the model has not seen."""
    lines = []
    for minute in range(24 * 60):
        hour = minute // 60
        per_minute = 4 + (3 if 8 <= hour < 18 else 0)
        if 15 * 60 <= minute < 15 * 60 + 10:
            per_minute *= 12
        t = DAY_START + minute * 60
        lines += [json.dumps({"time": t + i}) for i in range(per_minute)]
    return "\n".join(lines).encode()


def wait_status(cp: ControlPlane, key: str, value: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = cp.kubectl("get", "mljob", JOB, "-n", NAMESPACE, "-o", "json").stdout
        status: dict[str, Any] = json.loads(out).get("status") or {}
        if status.get(key) == value:
            return status
        time.sleep(0.2)
    raise TimeoutError(f"{JOB} did not reach {key}={value} in {timeout}s")


def run_demo(cp: ControlPlane, op: OperatorProcess, token: str) -> None:
    say(f"applying manifests/samples/{JOB}.yaml into namespace {NAMESPACE}")
    cp.kubectl("apply", "-n", NAMESPACE, "-f", str(REPO_ROOT / "manifests/samples/event-rate.yaml"))
    wait_status(cp, "state", "opened")
    say("turning the model plot on (spec.modelPlotConfig.enabled), for the explorer's band")
    plot = '{"spec":{"modelPlotConfig":{"enabled":true}}}'
    cp.kubectl("patch", "mljob", JOB, "-n", NAMESPACE, "--type=merge", "-p", plot)
    say("job opened; posting a day of events (with a burst at 15:00) to the data API")
    body = demo_events()
    code, counts = op.request(
        "POST", f"/v1/namespaces/{NAMESPACE}/mljobs/{JOB}/data", body, token=token
    )
    if code >= 300:
        raise RuntimeError(f"posting data failed: {code} {counts}")
    say(f"accepted: {counts['processedRecordCount']} records in {counts['bucketCount']} buckets")
    say('closing: kubectl patch mljob event-rate -p \'{"spec":{"state":"closed"}}\'')
    cp.kubectl(
        "patch",
        "mljob",
        JOB,
        "-n",
        NAMESPACE,
        "--type=merge",
        "-p",
        '{"spec":{"state":"closed"}}',
    )
    cp.kubectl("wait", "-n", NAMESPACE, "--for=condition=Closed", f"mljob/{JOB}", "--timeout=120s")
    status = wait_status(cp, "state", "closed")
    close = status["lastClose"]
    say(
        f"closed in {close.get('durationSeconds', 0):.2f}s: flushed "
        f"{close.get('recordsFlushed', 0)} records, finalised {close.get('bucketsFinalized', 0)} "
        f"buckets, persisted snapshot {close.get('snapshotId')}, pruned "
        f"{close.get('snapshotsPruned', 0)} snapshots"
    )
    print(cp.kubectl("get", "mljobs", "-n", NAMESPACE).stdout, flush=True)
    code, results = op.request(
        "GET",
        f"/v1/namespaces/{NAMESPACE}/mljobs/{JOB}/results/buckets"
        "?sort=anomalyScore&desc=true&size=5",
        token=token,
    )
    say("most anomalous buckets (the closed job's results stay browsable):")
    for bucket in results.get("buckets", []):
        when = time.strftime("%H:%M", time.gmtime(bucket["timestamp"] / 1000))
        print(f"    {when} UTC  score {bucket['anomalyScore']:6.2f}  events {bucket['eventCount']}")


def main() -> int:
    stop = stop_requested()
    root = Path(os.environ.get("MLJOB_RUN_DIR", REPO_ROOT / ".run"))
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    say("starting etcd + kube-apiserver (RBAC on)")
    with ControlPlane(root / "controlplane") as cp:
        say(f"control plane ready in {cp.start_seconds:.1f}s")
        install_crd_and_rbac(cp)
        cp.kubectl("create", "namespace", NAMESPACE)
        op = OperatorProcess(cp, root / "data", root / "operator.log")
        say(f"starting the operator (log: {op.log_path})")
        op.start()
        try:
            token = service_account_token(cp, NAMESPACE, "demo-admin", "mljob-admin")
            service_account_token(cp, NAMESPACE, "demo-viewer", "mljob-viewer")
            run_demo(cp, op, token)
            print(
                "\nEverything keeps running. In another shell, paste:\n"
                f"  export KUBECONFIG={cp.kubeconfig}\n"
                f"  export PATH={Path(sys.executable).parent}:"
                f"{cp.binaries['kubectl'].parent}:$PATH\n"
                f"  export MLJOB_SERVER={op.url} MLJOB_CA={op.ca_file}\n"
                f'  export MLJOB_TOKEN="$(kubectl create token demo-admin -n {NAMESPACE})"\n'
                "then, for instance:\n"
                f"  mljob -n {NAMESPACE} status; mljob -n {NAMESPACE} results {JOB} --desc"
                " --sort anomalyScore --size 5\n"
                f"  kubectl get mlj -n {NAMESPACE}; kubectl describe mlj {JOB} -n {NAMESPACE}\n"
                f"The anomaly explorer: open {op.url}/ui/#ns={NAMESPACE}&job={JOB} (accept the "
                "self-signed certificate) and sign in with the token of\n"
                f"  kubectl create token demo-viewer -n {NAMESPACE}\n"
                "Ctrl-C stops it all.",
                flush=True,
            )
            while not stop.wait(0.2):
                pass
        finally:
            say("stopping the operator and the control plane")
            op.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
