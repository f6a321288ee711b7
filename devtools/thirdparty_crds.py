"""Third-party CRDs the chart's optional objects need on the test apiserver.

The chart can render a ServiceMonitor and a PrometheusRule (Prometheus Operator) and a
cert-manager Certificate, and manifests/postgres/ has a CloudNativePG Cluster; a
server-side dry run of them needs those CRDs installed. They are not committed here: they
come once from the projects' Go modules through the Go module proxy (the only way out of
this machine), and only the few CRD files are kept in $MLJOB_CACHE_DIR (default
~/.cache/mljob-operator)/crds/<project>-<version>/, the way hack/controlplane/build.py
caches the control plane's binaries.

Usage: python -m devtools.thirdparty_crds   (prints the cached files, fetching when missing)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE_DIR = Path(os.environ.get("MLJOB_CACHE_DIR", Path.home() / ".cache" / "mljob-operator"))


@dataclass(frozen=True)
class CrdSource:
    name: str
    module: str
    version: str
    directory: str
    files: tuple[str, ...]

    @property
    def cache_dir(self) -> Path:
        return CACHE_DIR / "crds" / f"{self.name}-{self.version}"


PROMETHEUS_OPERATOR = CrdSource(
    "prometheus-operator",
    "github.com/prometheus-operator/prometheus-operator",
    "v0.85.0",
    "example/prometheus-operator-crd",
    ("monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_prometheusrules.yaml"),
)
CERT_MANAGER = CrdSource(
    "cert-manager",
    "github.com/cert-manager/cert-manager",
    "v1.21.2",
    "deploy/crds",
    ("cert-manager.io_certificates.yaml",),
)
SOURCES = (PROMETHEUS_OPERATOR, CERT_MANAGER)
"""The CRDs the chart's optional objects need."""
CLOUDNATIVE_PG = CrdSource(
    "cloudnative-pg",
    "github.com/cloudnative-pg/cloudnative-pg",
    "v1.29.0",
    "config/crd/bases",
    ("postgresql.cnpg.io_clusters.yaml",),
)
"""The Cluster CRD the example PostgreSQL manifest (manifests/postgres/) is checked against."""


def crd_files(source: CrdSource) -> list[Path]:
    """The source's CRD files in the cache, fetched from its Go module when missing."""
    target = source.cache_dir
    paths = [target / f for f in source.files]
    if (target / ".complete").exists() and all(p.exists() for p in paths):
        return paths
    if shutil.which("go") is None:
        raise RuntimeError(f"go is not on PATH; it is needed once to fetch {source.module}")
    with tempfile.TemporaryDirectory(prefix="mljob-crds-") as scratch:
        result = subprocess.run(
            ["go", "mod", "download", "-json", f"{source.module}@{source.version}"],
            cwd=scratch,
            env={**os.environ, "GOFLAGS": "-mod=mod"},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"go mod download {source.module}: {result.stdout}{result.stderr}")
    module_dir = Path(json.loads(result.stdout)["Dir"]) / source.directory
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in source.files:
        shutil.copyfile(module_dir / name, staging / name)
    (staging / ".complete").write_text(f"{source.module}@{source.version}\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return paths


def main() -> int:
    for source in (*SOURCES, CLOUDNATIVE_PG):
        for path in crd_files(source):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
