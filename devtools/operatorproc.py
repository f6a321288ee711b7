"""Run the real operator (`kopf run -m mljob_operator`) as a subprocess against a control plane.

It signs in as the ServiceAccount the manifests bind to the least-privilege ClusterRole,
with a bound token as a pod's projected one (`operator_kubeconfig`), so every end-to-end
test also proves the operator's RBAC is enough, and the apiserver authenticates it as in
a cluster (a token cache hit per request; a client certificate would cost it a chain
verification on every request, a twentieth of its CPU in a 1,000-job storm). Tests can
SIGKILL it and start it again on the same data directory.

Its data API is HTTPS with the certificate the operator generates on its volume;
`ssl_context()` trusts exactly that certificate, so tests verify TLS instead of turning
verification off. Callers authenticate with real ServiceAccount tokens
(`service_account_token`), which the operator checks with TokenReview.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from devtools.controlplane import REPO_ROOT, ControlPlane
from devtools.processes import free_port

OPERATOR_NAMESPACE, OPERATOR_SA = "mljob-system", "mljob-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SA}"
OPERATOR_TOKEN_HOURS = 168
"""Long enough for any test session or `make run` demo on one control plane."""
INSTALL_FILES = ("manifests/crd", "manifests/rbac/operator.yaml")
SERVICE_ACCOUNT = REPO_ROOT / "manifests" / "rbac" / "serviceaccount.yaml"
LEASE_RBAC = REPO_ROOT / "manifests" / "rbac" / "leases.yaml"
USER_ROLES = REPO_ROOT / "manifests" / "rbac" / "user-roles.yaml"
FINALIZER_POLICY = REPO_ROOT / "manifests" / "admission" / "finalizer-policy.yaml"
TEST_ADMIN_SA = "mljob-test-admin"


def install_crd_and_rbac(cp: ControlPlane) -> None:
    """The CRD and the operator's own RBAC from manifests/, applied server-side."""
    cp.kubectl("apply", "-f", str(REPO_ROOT / "manifests" / "namespace.yaml"))
    cp.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "manifests/crd")
    )
    cp.kubectl("apply", "-f", str(REPO_ROOT / "manifests/rbac/operator.yaml"))
    cp.kubectl("apply", "-f", str(USER_ROLES))
    cp.kubectl("wait", "--for=condition=Established", "crd/mljobs.ml.mljob.dev", "--timeout=30s")


def operator_kubeconfig(cp: ControlPlane) -> Path:
    """A kubeconfig for the operator's ServiceAccount (from manifests/) with a bound token;
    one per control plane, made on first use."""
    path = cp.root / f"{OPERATOR_SA}.kubeconfig"
    if path.exists():
        return path
    cp.kubectl(
        "apply", "-f", str(REPO_ROOT / "manifests" / "namespace.yaml"), "-f", str(SERVICE_ACCOUNT)
    )
    token = cp.kubectl(
        "create",
        "token",
        OPERATOR_SA,
        "-n",
        OPERATOR_NAMESPACE,
        f"--duration={OPERATOR_TOKEN_HOURS}h",
    ).stdout.strip()
    return cp.kubeconfig_with_token(OPERATOR_SA, token)


def install_finalizer_policy(cp: ControlPlane, timeout: float = 30.0) -> None:
    """The optional manifests/admission/finalizer-policy.yaml (the chart's
    `admission.finalizerPolicy`); returns once the apiserver applies it: the policy takes
    effect a moment after it is stored."""
    cp.kubectl("apply", "-f", str(FINALIZER_POLICY))
    _until_finalized_at_creation(cp, True, timeout)


def remove_finalizer_policy(cp: ControlPlane, timeout: float = 30.0) -> None:
    """Delete the policy; returns once creates no longer get the finalizer."""
    cp.kubectl("delete", "--ignore-not-found", "-f", str(FINALIZER_POLICY))
    _until_finalized_at_creation(cp, False, timeout)


def _until_finalized_at_creation(cp: ControlPlane, finalized: bool, timeout: float) -> None:
    """Poll a server-side dry-run create until its object has (or lacks) the finalizer."""
    probe = {
        "apiVersion": "ml.mljob.dev/v1alpha1",
        "kind": "MLJob",
        "metadata": {"name": "finalizer-policy-probe", "namespace": "default"},
        "spec": {"analysisConfig": {"detectors": [{"function": "count"}]}},
    }
    deadline = time.monotonic() + timeout
    while True:
        created = cp.kubectl(
            "create",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
            input=json.dumps(probe),
            check=False,
        )  # 503 while the policy's type-checker has not got the CRD's schema yet
        if created.returncode == 0:
            has = bool(json.loads(created.stdout)["metadata"].get("finalizers"))
            if has == finalized:
                return
        if time.monotonic() > deadline:
            state = "in effect" if finalized else "gone"
            raise TimeoutError(f"{FINALIZER_POLICY.name} not {state} after {timeout}s")
        time.sleep(0.2)


def service_account_token(
    cp: ControlPlane, namespace: str, name: str, clusterrole: str | None, timeout: float = 30.0
) -> str:
    """A ServiceAccount in `namespace`, bound there to `clusterrole` (None: no binding),
    and a token for it; returns once the RBAC authorizer has seen the binding. Idempotent."""
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
    ]
    if clusterrole is not None:
        objects.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": f"{name}-{clusterrole}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": clusterrole,
                },
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            }
        )
    listing = {"apiVersion": "v1", "kind": "List", "items": objects}
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(listing))
    user = f"system:serviceaccount:{namespace}:{name}"
    deadline = time.monotonic() + timeout
    while clusterrole is not None:
        can = cp.kubectl(
            "auth",
            "can-i",
            "get",
            "mljobs.ml.mljob.dev",
            "--subresource=results",
            "-n",
            namespace,
            f"--as={user}",
            check=False,
        )
        if can.stdout.strip() == "yes":
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"RBAC never allowed {user} ({clusterrole}): {can.stderr}")
        time.sleep(0.1)
    token = cp.kubectl("create", "token", name, "-n", namespace, "--duration=2h").stdout
    return token.strip()


def grant_leases(cp: ControlPlane, namespace: str) -> None:
    """The Lease Role of manifests/rbac/leases.yaml in `namespace` (where a test's replicas
    keep their Leases), bound to the operator's ServiceAccount."""
    items = list(yaml.safe_load_all(LEASE_RBAC.read_text()))
    for item in items:
        item["metadata"]["namespace"] = namespace
    listing = {"apiVersion": "v1", "kind": "List", "items": items}
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(listing))
    user = OPERATOR_USER
    deadline = time.monotonic() + 30
    while True:
        can = cp.kubectl(
            "auth",
            "can-i",
            "update",
            "leases.coordination.k8s.io",
            "-n",
            namespace,
            f"--as={user}",
            check=False,
        )
        if can.stdout.strip() == "yes" or time.monotonic() > deadline:
            return
        time.sleep(0.1)


class OperatorProcess:
    def __init__(self, cp: ControlPlane, data_dir: Path, log_path: Path) -> None:
        self.cp = cp
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.kubeconfig: Path | None = None
        """The operator's ServiceAccount kubeconfig (made by `start`)."""
        self.proc: subprocess.Popen[bytes] | None = None
        self.tls = True
        self.token: str | None = None
        """A token bound to mljob-admin in the operator's namespace (set by `start`)."""

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The self-signed certificate the operator generated (and serves)."""
        return self.data_dir / "tls" / "tls.crt"

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file))

    def start(
        self, namespace: str | None = None, args: tuple[str, ...] = (), **env: str
    ) -> OperatorProcess:
        """Start kopf; scoped to `namespace` when given (tests run one operator each);
        `args` are more `kopf run` options (e.g. `--log-format=json`)."""
        if self.kubeconfig is None:
            self.kubeconfig = operator_kubeconfig(self.cp)
        full_env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "MLJOB_DATA_DIR": str(self.data_dir),
            "MLJOB_HTTP_ADDR": f"127.0.0.1:{self.port}",
            "MLJOB_STATUS_INTERVAL": "0.5",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.tls = full_env.get("MLJOB_TLS", "on") != "off"
        leased = full_env.get("MLJOB_REPLICAS_SHARDS", "").lower() not in ("0", "off")
        if namespace and full_env.get("MLJOB_STORE_URL") and leased:
            # leased mode: the test's namespace holds the Leases, each process its own id
            grant_leases(self.cp, full_env.setdefault("MLJOB_NAMESPACE", namespace))
            full_env.setdefault("MLJOB_REPLICA_ID", f"operator-{self.port}")
        if namespace and self.token is None:
            self.token = service_account_token(self.cp, namespace, TEST_ADMIN_SA, "mljob-admin")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kopf",
                    "run",
                    "-m",
                    "mljob_operator",
                    *(["--namespace", namespace] if namespace else ["--all-namespaces"]),
                    "--standalone",
                    *args,
                ],
                cwd=REPO_ROOT,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.wait_http()
        return self

    def wait_http(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"operator exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                ctx = self.ssl_context()
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2, context=ctx) as resp:
                    if resp.status == 200:
                        return
            except (OSError, ssl.SSLError):
                time.sleep(0.1)
        raise TimeoutError(f"operator HTTP not up after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        token: str | None = None,
        content_type: str = "application/x-ndjson",
        timeout: float = 60.0,
    ) -> tuple[int, Any]:
        """One API call; `token=None` sends none (pass `self.token` for the admin)."""
        req = urllib.request.Request(f"{self.url}{path}", data=body, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if body is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")
