"""Process-wide operator settings, read once from the environment.

Everything that differs between a laptop, CI and a cluster is an environment variable
(the Deployment sets them); nothing else reads `os.environ`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HTTP_ADDR = "127.0.0.1:8080"


@dataclass(frozen=True)
class OperatorSettings:
    data_dir: Path
    """Where the job store lives (`MLJOB_DATA_DIR`)."""
    http_host: str
    http_port: int
    """Listen address of the data and results API (`MLJOB_HTTP_ADDR`, `host:port`)."""
    status_interval_s: float
    """Minimum seconds between two status updates of a busy job (`MLJOB_STATUS_INTERVAL`)."""
    fault_kill_at: str | None
    """Fault injection for crash tests: SIGKILL the operator at this point
    (`MLJOB_FAULT_KILL_AT`, e.g. `after:persist_snapshot`). Never set in production."""
    step_delay_s: float
    """Fault injection: sleep this long before each housekeeping step, to make a close slow
    on purpose (`MLJOB_FAULT_STEP_DELAY`). Never set in production."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorSettings:
        values = dict(os.environ if env is None else env)
        addr = values.get("MLJOB_HTTP_ADDR", DEFAULT_HTTP_ADDR)
        host, _, port = addr.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"MLJOB_HTTP_ADDR must be host:port, got {addr!r}")
        return cls(
            data_dir=Path(values.get("MLJOB_DATA_DIR", "/var/lib/mljob")),
            http_host=host.strip("[]"),
            http_port=int(port),
            status_interval_s=float(values.get("MLJOB_STATUS_INTERVAL", "2")),
            fault_kill_at=values.get("MLJOB_FAULT_KILL_AT") or None,
            step_delay_s=float(values.get("MLJOB_FAULT_STEP_DELAY", "0")),
        )
