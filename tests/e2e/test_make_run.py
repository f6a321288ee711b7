"""`make run` keeps its promise: a demo job takes data, closes, and shows results."""

from __future__ import annotations

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
