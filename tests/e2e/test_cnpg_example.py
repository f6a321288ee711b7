"""The CloudNativePG example (manifests/postgres/cloudnativepg-cluster.yaml) against
CloudNativePG's own Cluster CRD, on the real apiserver: every field must be one the CRD
knows, with a value its openAPIV3Schema accepts (server-side dry run, strict field
validation).

The CRD comes from CloudNativePG's Go module (`devtools/thirdparty_crds.CLOUDNATIVE_PG`,
fetched once through the module proxy and cached, never committed).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from devtools.controlplane import ControlPlane
from devtools.thirdparty_crds import CLOUDNATIVE_PG, crd_files
from tests.e2e.jobs import eventually

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "manifests" / "postgres" / "cloudnativepg-cluster.yaml"
)


def test_the_example_is_a_valid_cloudnativepg_cluster(control_plane: ControlPlane) -> None:
    cp = control_plane
    (crd,) = crd_files(CLOUDNATIVE_PG)
    cp.kubectl("apply", "--server-side", "-f", str(crd))
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
