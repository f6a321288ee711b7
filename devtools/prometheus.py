"""A real Prometheus on loopback for datafeed tests, with history backfilled by promtool.

Backfilling (`promtool tsdb create-blocks-from openmetrics`) makes a day of samples exist
the moment the server is up, so tests are deterministic and never wait for scrapes. The
server runs the Debian package's `/usr/bin/prometheus` (`make system-deps` installs it)
on a free port with its own config and temporary TSDB, never the system service; like
the control plane it gets PR_SET_PDEATHSIG, so a killed test session leaks no process.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from devtools.processes import Service, free_port, spawn_logged, stop_process

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
READY_TIMEOUT_S = 60.0


def openmetrics(
    name: str, samples: Iterable[tuple[dict[str, str], int, float]], help_text: str = "."
) -> str:
    """An OpenMetrics gauge family from (labels, epoch seconds, value) samples."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    for labels, ts, value in samples:
        rendered = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        lines.append(f"{name}{{{rendered}}} {value!r} {ts}")
    return "\n".join([*lines, "# EOF", ""])


class Prometheus(Service):
    """`with Prometheus(openmetrics_text) as prom:` — `prom.url` serves the backfilled data."""

    def __init__(self, backfill: str) -> None:
        for binary in (PROMETHEUS, PROMTOOL):
            if not binary.exists():
                raise RuntimeError(
                    f"{binary} is missing: run `make system-deps` (apt-get install prometheus)"
                )
        self.root = Path(tempfile.mkdtemp(prefix="mljob-prom-"))
        self.backfill = backfill
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        data, source = self.root / "data", self.root / "backfill.om"
        source.write_text(self.backfill)
        subprocess.run(
            [str(PROMTOOL), "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
            check=True,
            capture_output=True,
        )
        config = self.root / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
        self.proc = spawn_logged(
            [
                str(PROMETHEUS),
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            self.root / "prometheus.log",
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise TimeoutError(f"prometheus not ready after {READY_TIMEOUT_S}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        log = self.root / "prometheus.log"
        return (
            "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""
        )

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        shutil.rmtree(self.root, ignore_errors=True)
