"""Child processes of the dev tools: servers that die with their parent, and free ports.

Every server a test or `make run` starts (etcd, kube-apiserver, Prometheus) runs in its own
session with PR_SET_PDEATHSIG, so even a SIGKILLed owner leaks no process.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn_logged(
    argv: Sequence[str], log_path: Path, append: bool = False
) -> subprocess.Popen[bytes]:
    """Start a server in its own session, output to `log_path`, killed with its parent."""
    with log_path.open("ab" if append else "wb") as log:
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (no threads spawn children here)
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace_s)


def stop_requested() -> threading.Event:
    """An event set on SIGTERM or Ctrl-C, for tools that run until told to stop."""
    event = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        event.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return event


class Service:
    """`with Server(...) as s:` starts it and always stops it, also when start fails."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
