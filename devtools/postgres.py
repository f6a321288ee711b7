"""A throw-away PostgreSQL cluster for tests, from Debian's `postgresql` binaries.

`initdb` refuses to run as root, so under root the cluster belongs to an unprivileged
user (`postgres`, which Debian's package creates, or `mljob-pg`, created here) and the
server runs as that user; the suite itself keeps its own user and connects with trust
authentication over a unix socket in the cluster's directory (and a loopback port).
The server dies with its parent (PR_SET_PDEATHSIG, set after the user switch, which would
clear it). fsync is off: the cluster is thrown away, and no test crashes the server.
`python -m devtools.postgres` runs one in the foreground and prints its URL.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import psycopg

from devtools.processes import Service, free_port, stop_requested

READY_TIMEOUT_S = 60.0
SUPERUSER = "mljob"
FALLBACK_USER = "mljob-pg"
PR_SET_PDEATHSIG = 1


def bin_dir() -> Path:
    """The newest installed server's bin directory (`make system-deps` installs one)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise RuntimeError(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: run"
            " `make system-deps` (apt-get install postgresql)"
        )
    return found[-1].parent


def _server_user() -> pwd.struct_passwd | None:
    """The user the cluster runs as when we are root (None: our own user)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_USER],
        check=True,
    )
    return pwd.getpwnam(FALLBACK_USER)


class PostgresCluster(Service):
    """`with PostgresCluster() as pg:`; `pg.url(db)` is a connection URL, `pg.create_database()`
    a fresh empty database."""

    def __init__(self) -> None:
        self.bin = bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="mljob-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = _server_user()
        self._proc: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def url(self, database: str = "postgres") -> str:
        """A URL over the unix socket (the form `postgresql:///db?host=/dir`)."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.root}&port={self.port}"

    def schema_url(self, schema: str, database: str = "postgres") -> str:
        """A URL whose tables live in `schema` (created if missing): one database, many
        independent stores."""
        self.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"', database)
        return f"{self.url(database)}&options=-csearch_path%3D{schema}"

    def tcp_url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run_as_server(self, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        user = self.user

        def become_server_user() -> None:
            if user is not None:
                os.setgroups([])
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

        with log.open("ab") as out:
            return subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=become_server_user,  # noqa: PLW1509 (no threads spawn children here)
                start_new_session=True,
                cwd=self.root,
            )

    def start(self) -> None:
        started = time.monotonic()
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        log = self.root / "postgres.log"
        initdb = self._run_as_server(
            [
                str(self.bin / "initdb"),
                f"--pgdata={self.data}",
                f"--username={SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            log,
        )
        if initdb.wait(timeout=READY_TIMEOUT_S) != 0:
            raise RuntimeError(f"initdb failed:\n{self.log_tail()}")
        self._serve()
        self.start_seconds = time.monotonic() - started

    def _serve(self) -> None:
        self._proc = self._run_as_server(
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.root}",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=64MB",
            ],
            self.root / "postgres.log",
        )
        self._wait_ready()

    def restart(self) -> None:
        """Stop the server (fast shutdown: every session is cut) and start it again on the
        same data, as a failover looks to a client."""
        self._shutdown()
        self._serve()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last_error = ""
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError as err:
                last_error = str(err)
            time.sleep(0.1)
        raise TimeoutError(f"postgres not ready after {READY_TIMEOUT_S}s ({last_error})")

    def create_database(self, prefix: str = "t") -> str:
        """A fresh empty database; its name."""
        name = f"{re.sub(r'[^a-z0-9_]', '_', prefix.lower())[:40]}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY')
        return name

    def execute(self, sql: str, database: str = "postgres") -> None:
        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(sql)

    def wait_sessions_gone(self, application_name: str, timeout_s: float = 30.0) -> None:
        """Returns once no session of that application is left: a killed client's last
        transaction may still be committing on the server until then."""
        deadline = time.monotonic() + timeout_s
        with psycopg.connect(self.url(), autocommit=True) as conn:
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    (application_name,),
                ).fetchone()
                if row is not None and row[0] == 0:
                    return
                time.sleep(0.05)
        raise TimeoutError(f"sessions of {application_name} still open after {timeout_s}s")

    def log_tail(self, lines: int = 40) -> str:
        path = self.root / "postgres.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        self._shutdown()
        shutil.rmtree(self.root, ignore_errors=True)

    def _shutdown(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown: open sessions are ended
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def main() -> None:
    stop = stop_requested()
    with PostgresCluster() as pg:
        print(f"export MLJOB_STORE_URL='{pg.url(pg.create_database('mljob'))}'", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
