#!/usr/bin/env python3
"""Build the test control plane (kube-apiserver, kubectl, etcd, helm) from Go modules.

There is no Docker here, so no kind/k3d and no envtest tarballs: the binaries are built
from the Go module proxy, the way envtest runs them (apiserver + etcd, no kubelet).

`go install k8s.io/kubernetes/cmd/...@v` cannot work: k8s.io/kubernetes requires its
staging modules at `v0.0.0` and replaces them with local paths, which a dependent module
ignores. So each binary is built from a small wrapper module generated here whose
`replace` lines are *derived* from upstream's go.mod (every `k8s.io/*` required at
`v0.0.0` maps to `v0.<minor>.<patch>`), with upstream's `godebug` line copied.

Binaries are cached outside the repo, keyed by version:
  $MLJOB_CACHE_DIR (default ~/.cache/mljob-operator)/bin/<component>-<version>/
Only the first run on a machine pays the build; later runs print the cached paths.

Usage: build.py [--print-env]   (--print-env prints shell exports of the binary paths)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v3.22.0"

CACHE_DIR = Path(os.environ.get("MLJOB_CACHE_DIR", Path.home() / ".cache" / "mljob-operator"))


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    binaries: tuple[str, ...]

    @property
    def bin_dir(self) -> Path:
        return CACHE_DIR / "bin" / f"{self.name}-{self.version}"

    @property
    def work_dir(self) -> Path:
        return CACHE_DIR / "build" / f"{self.name}-{self.version}"

    def is_built(self) -> bool:
        return (self.bin_dir / ".complete").exists() and all(
            (self.bin_dir / b).exists() for b in self.binaries
        )


KUBERNETES = Component("kubernetes", KUBERNETES_VERSION, ("kube-apiserver", "kubectl"))
ETCD = Component("etcd", ETCD_VERSION, ("etcd",))
HELM = Component("helm", HELM_VERSION, ("helm",))
COMPONENTS = (ETCD, HELM, KUBERNETES)


def log(msg: str) -> None:
    print(f"[controlplane-build {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def go(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, "GOFLAGS": "-mod=mod", **(env or {})}
    log(f"  go {' '.join(args)}")
    result = subprocess.run(
        ["go", *args], cwd=cwd, env=full_env, check=False, capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"go {' '.join(args)} failed in {cwd} (exit {result.returncode})")
    return result.stdout


def fresh_module(component: Component, module_path: str) -> Path:
    work = component.work_dir
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    go(["mod", "init", module_path], cwd=work)
    return work


def upstream_gomod(work: Path, module: str, version: str) -> dict[str, object]:
    info = json.loads(go(["mod", "download", "-json", f"{module}@{version}"], cwd=work))
    gomod_file = info["GoMod"]
    parsed: dict[str, object] = json.loads(go(["mod", "edit", "-json", gomod_file], cwd=work))
    return parsed


def install(component: Component, work: Path, packages: dict[str, str], ldflags: str) -> None:
    staging = component.bin_dir.with_name(component.bin_dir.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for binary, package in packages.items():
        started = time.monotonic()
        log(f"building {binary} ({package}); the first build takes minutes")
        target = str(staging / binary)
        go(["build", "-trimpath", "-ldflags", ldflags, "-o", target, package], cwd=work)
        log(f"built {binary} in {time.monotonic() - started:.0f}s")
    (staging / ".complete").write_text(component.version + "\n")
    if component.bin_dir.exists():
        shutil.rmtree(component.bin_dir)
    staging.rename(component.bin_dir)


def build_kubernetes() -> None:
    comp = KUBERNETES
    work = fresh_module(comp, "mljob.dev/controlplane/kubernetes")
    upstream = upstream_gomod(work, "k8s.io/kubernetes", comp.version)
    major, minor, patch = comp.version.lstrip("v").split(".")
    staging_version = f"v0.{minor}.{patch}"
    requires = upstream.get("Require") or []
    assert isinstance(requires, list)
    staging_modules = [
        r["Path"] for r in requires if r["Path"].startswith("k8s.io/") and r["Version"] == "v0.0.0"
    ]
    log(f"{len(staging_modules)} k8s.io staging modules required at v0.0.0 -> {staging_version}")
    edits = [f"-replace={m}={m}@{staging_version}" for m in staging_modules]
    go_version = upstream.get("Go")
    if isinstance(go_version, str):
        edits.append(f"-go={go_version}")
    go(["mod", "edit", *edits], cwd=work)
    godebug = upstream.get("Godebug") or []
    assert isinstance(godebug, list)
    if godebug:
        lines = " ".join(f"{d['Key']}={d['Value']}" for d in godebug)
        with (work / "go.mod").open("a") as fh:
            fh.write(f"\ngodebug {lines}\n")
    go(["get", f"k8s.io/kubernetes@{comp.version}"], cwd=work)
    build_date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    pkg = "k8s.io/component-base/version"
    ldflags = " ".join(
        [
            "-s -w",
            f"-X {pkg}.gitVersion={comp.version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={build_date}",
            f"-X {pkg}/verflag.programName=kubernetes",
        ]
    )
    install(
        comp,
        work,
        {
            "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
            "kubectl": "k8s.io/kubernetes/cmd/kubectl",
        },
        ldflags,
    )


def build_etcd() -> None:
    comp = ETCD
    work = fresh_module(comp, "mljob.dev/controlplane/etcd")
    # etcd's server/go.mod replaces its sibling modules with relative paths, which a
    # dependent module ignores; requiring the server module pins them to its versions.
    go(["get", f"go.etcd.io/etcd/server/v3@{comp.version}"], cwd=work)
    install(comp, work, {"etcd": "go.etcd.io/etcd/server/v3"}, "-s -w")


def build_helm() -> None:
    comp = HELM
    work = fresh_module(comp, "mljob.dev/controlplane/helm")
    go(["get", f"helm.sh/helm/v3@{comp.version}"], cwd=work)
    ldflags = f"-s -w -X helm.sh/helm/v3/internal/version.version={comp.version}"
    install(comp, work, {"helm": "helm.sh/helm/v3/cmd/helm"}, ldflags)


BUILDERS = {"etcd": build_etcd, "helm": build_helm, "kubernetes": build_kubernetes}


def binary_paths() -> dict[str, Path]:
    return {b: c.bin_dir / b for c in COMPONENTS for b in c.binaries}


def main(argv: list[str]) -> int:
    if shutil.which("go") is None:
        raise SystemExit("go is not on PATH; it is needed once to build the control plane")
    for comp in COMPONENTS:
        if comp.is_built():
            log(f"{comp.name} {comp.version}: cached in {comp.bin_dir}")
            continue
        started = time.monotonic()
        log(f"{comp.name} {comp.version}: building (cache miss)")
        BUILDERS[comp.name]()
        log(f"{comp.name} {comp.version}: done in {time.monotonic() - started:.0f}s")
    if "--print-env" in argv:
        for comp in COMPONENTS:
            print(f"export PATH={comp.bin_dir}:$PATH")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
