"""`make verify-generated` passes on this tree and fails after an un-regenerated model change.

The changed model is a copy of the package on PYTHONPATH (ahead of the editable install),
so the real tree is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "mljob_operator"
ORIGINAL = "How long a close may take before the job is reported as timed out"
CHANGED = "How long a close may take before it is reported as TIMED OUT"


def make_verify_generated(pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        ["make", "-s", "--no-print-directory", "verify-generated"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_verify_generated_passes_on_this_tree() -> None:
    result = make_verify_generated()
    assert result.returncode == 0, result.stdout + result.stderr


def test_verify_generated_fails_after_a_model_change(tmp_path: Path) -> None:
    copy = tmp_path / "mljob_operator"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    models = copy / "api" / "v1alpha1.py"
    source = models.read_text()
    assert ORIGINAL in source
    models.write_text(source.replace(ORIGINAL, CHANGED))

    result = make_verify_generated(pythonpath=tmp_path)

    assert result.returncode != 0
    assert "manifests/crd/ml.mljob.dev_mljobs.yaml (generated)" in result.stdout
    assert "charts/mljob-operator/templates/crd-mljobs.yaml (generated)" in result.stdout
    assert "TIMED OUT" in result.stdout
    assert "make generate" in result.stderr
