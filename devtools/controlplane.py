"""A real Kubernetes control plane on loopback: etcd + kube-apiserver, no kubelet.

This is what controller-runtime's envtest runs, with binaries built from Go modules by
`hack/controlplane/build.py`. RBAC is on, so tests can prove authorization with
restricted users whose client certificates `kubeconfig_for()` mints, or ServiceAccounts
with bound tokens (`kubeconfig_with_token()`).

Children get PR_SET_PDEATHSIG, so even a SIGKILLed test session leaks no etcd or
apiserver. `python -m devtools.controlplane` runs one in the foreground (`make
controlplane`), prints `export KUBECONFIG=...` once ready and stops on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import yaml

from devtools.pki import CertificateAuthority, service_account_keys
from devtools.processes import Service, free_port, spawn_logged, stop_process, stop_requested

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "hack" / "controlplane" / "build.py"
READY_TIMEOUT_S = 90.0


def _load_build_module() -> object:
    spec = importlib.util.spec_from_file_location("controlplane_build", BUILD_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


KUBERNETES_VERSION: str = _load_build_module().KUBERNETES_VERSION  # type: ignore[attr-defined]


def binary_paths() -> dict[str, Path]:
    """Paths of the cached binaries; builds them first if the cache misses."""
    build = _load_build_module()
    paths: dict[str, Path] = build.binary_paths()  # type: ignore[attr-defined]
    if not all(p.exists() for p in paths.values()):
        build.main([])  # type: ignore[attr-defined]
    return paths


def bin_path_env() -> str:
    """A PATH with our built kubectl/helm/etcd first (never a system kubectl)."""
    dirs = sorted({str(p.parent) for p in binary_paths().values()})
    return os.pathsep.join([*dirs, os.environ.get("PATH", "")])


class ControlPlane(Service):
    """Start with `with ControlPlane() as cp:`; `cp.kubeconfig` is the admin kubeconfig."""

    def __init__(self, root: Path | None = None) -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="mljob-cp-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.binaries = binary_paths()
        self.path_env = bin_path_env()
        self.ca = CertificateAuthority()
        self.ca_file = self.root / "ca.crt"
        self.etcd_port = free_port()
        self.api_port = free_port()
        self.server = f"https://127.0.0.1:{self.api_port}"
        self.kubeconfig = self.root / "admin.kubeconfig"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._argv: dict[str, list[str]] = {}
        self.start_seconds = 0.0

    def _spawn(
        self, name: str, argv: Sequence[str], append: bool = False
    ) -> subprocess.Popen[bytes]:
        proc = spawn_logged(argv, self.root / f"{name}.log", append=append)
        self._procs[name] = proc
        self._argv[name] = list(argv)
        return proc

    def kill(self, name: str) -> None:
        """Kill one component (`etcd` or `kube-apiserver`) at once, as a crash would."""
        proc = self._procs[name]
        proc.kill()
        proc.wait(timeout=30)

    def restart(self, name: str) -> None:
        """Start a killed component again with the same arguments (and data), and wait
        until the apiserver is ready."""
        self._spawn(name, self._argv[name], append=True)
        self._wait_ready(self._procs["etcd"], self._procs["kube-apiserver"])

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.root / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def start(self) -> None:
        started = time.monotonic()
        self.ca_file.write_bytes(self.ca.cert_pem)
        serving = self.ca.server_cert(
            ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
            ["127.0.0.1", "10.0.0.1"],
        )
        serving_cert, serving_key = serving.write(self.root, "apiserver")
        sa = service_account_keys()
        sa_pub, sa_key = sa.write(self.root, "sa")
        self.kubeconfig = self.kubeconfig_for("admin", ("system:masters",), name="admin")
        peer_port = free_port()
        etcd = self._spawn(
            "etcd",
            [
                str(self.binaries["etcd"]),
                "--name=default",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self.binaries["kube-apiserver"]),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--cert-dir={self.root / 'certs'}",
                f"--tls-cert-file={serving_cert}",
                f"--tls-private-key-file={serving_key}",
                f"--client-ca-file={self.ca_file}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                "--v=1",
            ],
        )
        self._wait_ready(etcd, apiserver)
        self.start_seconds = time.monotonic() - started

    def _ssl_context(self, user: str = "admin") -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(self.root / f"{user}.crt", self.root / f"{user}.key")
        return ctx

    def _wait_ready(
        self, etcd: subprocess.Popen[bytes], apiserver: subprocess.Popen[bytes]
    ) -> None:
        ctx = self._ssl_context()
        deadline = time.monotonic() + READY_TIMEOUT_S
        last_error = ""
        while time.monotonic() < deadline:
            for name, proc in (("etcd", etcd), ("kube-apiserver", apiserver)):
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}"
                    )
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError as err:
                last_error = str(err)
            time.sleep(0.25)
        raise TimeoutError(
            f"kube-apiserver not ready after {READY_TIMEOUT_S}s ({last_error}):\n"
            f"{self.log_tail('kube-apiserver')}"
        )

    def kubeconfig_for(
        self, user: str, groups: tuple[str, ...] = (), name: str | None = None
    ) -> Path:
        """Mint a client certificate for `user` in `groups` and write a kubeconfig for it."""
        stem = name or user.replace(":", "_")
        cert, key = self.ca.client_cert(user, groups).write(self.root, stem)
        return self._kubeconfig(stem, {"client-certificate": str(cert), "client-key": str(key)})

    def kubeconfig_with_token(
        self, name: str, token: str, namespace: str | None = None, path: Path | None = None
    ) -> Path:
        """Write a kubeconfig (at `path`, else in the control plane's directory) that signs
        in with a bearer `token` (a ServiceAccount's, as a pod's projected token does),
        optionally defaulting to `namespace`."""
        return self._kubeconfig(name, {"token": token}, namespace, path)

    def _kubeconfig(
        self,
        name: str,
        credentials: dict[str, str],
        namespace: str | None = None,
        path: Path | None = None,
    ) -> Path:
        context = {"cluster": "mljob-dev", "user": name}
        if namespace is not None:
            context["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "mljob-dev",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": name, "user": credentials}],
            "contexts": [{"name": name, "context": context}],
            "current-context": name,
        }
        path = path or self.root / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(kubeconfig or self.kubeconfig),
            "PATH": self.path_env,
        }

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binaries["kubectl"]), *args],
            env=self.env(kubeconfig),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def helm(
        self, *args: str, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        env = self.env()
        for var, sub in (
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_DATA_HOME", "data"),
        ):
            env[var] = str(self.root / "helm" / sub)
        result = subprocess.run(
            [str(self.binaries["helm"]), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs.values()]

    def stop(self) -> None:
        for proc in reversed(list(self._procs.values())):
            stop_process(proc)
        self._procs.clear()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


def main() -> int:
    stop = stop_requested()
    root = REPO_ROOT / ".run" / "controlplane"
    if root.exists():
        shutil.rmtree(root)
    with ControlPlane(root) as cp:
        print(f"control plane ready in {cp.start_seconds:.1f}s at {cp.server}", flush=True)
        print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
        print(f"export PATH={cp.path_env.split(os.pathsep + os.environ.get('PATH', ''))[0]}:$PATH")
        print("Ctrl-C stops it.", flush=True)
        while not stop.wait(0.2):
            pass
        print("stopping control plane", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
