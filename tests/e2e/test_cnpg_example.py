"""The CloudNativePG example (manifests/postgres/cloudnativepg-cluster.yaml) against
CloudNativePG's own Cluster CRD, on the real apiserver: every field must be one the CRD
knows, with a value its openAPIV3Schema accepts (server-side dry run, strict field
validation).

CloudNativePG's CRD is not shipped by any package this project can install (its Go
module is not served by the module proxy here), and it is not vendored: point
`MLJOB_CNPG_CRD` at `config/crd/bases/postgresql.cnpg.io_clusters.yaml` of a
CloudNativePG checkout to run this; without it the test is skipped. Last run against
CloudNativePG v1.30.0-86-ga95a534db: accepted.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from devtools.controlplane import ControlPlane
from tests.e2e.jobs import eventually

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "manifests" / "postgres" / "cloudnativepg-cluster.yaml"
)
CRD = os.environ.get("MLJOB_CNPG_CRD", "")


@pytest.mark.skipif(not CRD, reason="MLJOB_CNPG_CRD (CloudNativePG's Cluster CRD) not given")
def test_the_example_is_a_valid_cloudnativepg_cluster(control_plane: ControlPlane) -> None:
    cp = control_plane
    cp.kubectl("apply", "--server-side", "-f", CRD)
    established = eventually(
        lambda: cp.kubectl(
            "wait",
            "--for=condition=Established",
            "crd/clusters.postgresql.cnpg.io",
            "--timeout=30s",
            check=False,
        )
    )
    assert established.returncode == 0, established.stderr
    cp.kubectl("create", "namespace", "mljob-system", check=False)
    text = EXAMPLE.read_text()

    def dry_run(manifest: str) -> subprocess.CompletedProcess[str]:
        return cp.kubectl(
            "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=manifest, check=False
        )

    done = eventually(lambda: dry_run(text))
    assert done.returncode == 0, done.stderr
    assert "(server dry run)" in done.stdout
    typo = dry_run(text.replace("minSyncReplicas", "minSyncReplica"))
    assert typo.returncode != 0
    assert 'unknown field "spec.minSyncReplica"' in typo.stderr
