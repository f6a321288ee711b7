"""A real Prometheus on loopback for datafeed tests, with history backfilled by promtool.

Backfilling (`promtool tsdb create-blocks-from openmetrics`) makes a day of samples exist
the moment the server is up, so tests are deterministic and never wait for scrapes. The
server runs the Debian package's `/usr/bin/prometheus` (`make system-deps` installs it)
on a free port with its own config and temporary TSDB, never the system service; like
the control plane it gets PR_SET_PDEATHSIG, so a killed test session leaks no process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
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

    def __init__(self, backfill: str, scrape: tuple[str, ...] = ()) -> None:
        """`scrape`: host:port targets scraped at /metrics every second (job `scraped`,
        honouring the targets' own labels: the operator labels its series `job`)."""
        for binary in (PROMETHEUS, PROMTOOL):
            if not binary.exists():
                raise RuntimeError(
                    f"{binary} is missing: run `make system-deps` (apt-get install prometheus)"
                )
        self.root = Path(tempfile.mkdtemp(prefix="mljob-prom-"))
        self.backfill = backfill
        self.scrape = scrape
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
        config.write_text(self._config())
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

    def _config(self) -> str:
        if not self.scrape:
            return "global:\n  scrape_interval: 1h\nscrape_configs: []\n"
        targets = ", ".join(f'"{t}"' for t in self.scrape)
        return (
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: scraped\n    honor_labels: true\n"
            f"    static_configs:\n      - targets: [{targets}]\n"
        )

    def query(self, promql: str) -> list[dict[str, object]]:
        """An instant query's result vector."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as resp:
            answer = json.loads(resp.read())
        result: list[dict[str, object]] = answer["data"]["result"]
        return result

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
