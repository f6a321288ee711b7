"""`make run` keeps its promise: a demo job takes data, closes, and shows results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_demo_takes_data_closes_and_stops_cleanly(tmp_path: Path) -> None:
    env = {**os.environ, "MLJOB_RUN_DIR": str(tmp_path / "run"), "PYTHONUNBUFFERED": "1"}
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "devtools.run"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        deadline = time.monotonic() + 180
        try:
            for line in proc.stdout:
                lines.append(line)
                if "Ctrl-C stops it all." in line or time.monotonic() > deadline:
                    break
            pasted = paste_the_exports(lines)
        finally:
            proc.send_signal(signal.SIGINT)
            rest, _ = proc.communicate(timeout=60)
        output = "".join(lines) + rest
        assert proc.returncode == 0, output
    assert "accepted: 8116 records" in output
    assert "closed in" in output
    assert "persisted snapshot" in output
    top = [line for line in output.splitlines() if "UTC  score" in line]
    assert top, output
    assert top[0].strip().startswith("15:"), top
    assert "stopping the operator and the control plane" in output
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    statuses = json.loads(pasted.stdout.splitlines()[0])
    assert statuses["event-rate"]["state"] == "closed", "the pasted exports reach the demo"
    assert "event-rate: " in pasted.stdout, "and the data API, with the pasted token"


def paste_the_exports(lines: list[str]) -> subprocess.CompletedProcess[str]:
    """Run what the demo tells a user to paste in another shell, then the CLI."""
    exports = [line.strip() for line in lines if line.startswith("  export ")]
    assert len(exports) == 4, lines
    script = "\n".join(
        [*exports, "mljob -n demo status -o json", "mljob -n demo results event-rate --size 3"]
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLJOB_", "KUBECONFIG"))}
    return subprocess.run(
        ["bash", "-c", script], env=clean, capture_output=True, text=True, timeout=60, check=False
    )
