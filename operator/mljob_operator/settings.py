"""Process-wide operator settings, read once from the environment.

Everything that differs between a laptop, CI and a cluster is an environment variable
(the Deployment sets them); nothing else reads `os.environ`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import urllib.parse
from dataclasses import dataclass, field, replace
from pathlib import Path

from mljob_operator.datafeed.destinations import DestinationPolicy

DEFAULT_HTTP_ADDR = "127.0.0.1:8080"
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
OFF_WORDS = {"off", "false", "0", "no"}
DEFAULT_SHARDS = 16
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


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
    (`MLJOB_FAULT_KILL_AT`, e.g. `after:persistSnapshot`). Never set in production."""
    fault_fail_at: str | None
    """Fault injection: make this engine action raise (`MLJOB_FAULT_FAIL_AT`, e.g.
    `flush`), to test failure handling. Never set in production."""
    step_delay_s: float
    """Fault injection: sleep this long before each housekeeping step, to make a close slow
    on purpose (`MLJOB_FAULT_STEP_DELAY`). Never set in production."""
    store_url: str | None = None
    """The PostgreSQL store (`MLJOB_STORE_URL`: `postgresql://user:pass@host:port/db` or
    `postgresql:///db?host=/socket/dir`), which several replicas can share; unset: SQLite
    under `data_dir`."""
    tls_enabled: bool = True
    """Serve the data API over HTTPS (default). `MLJOB_TLS=off` serves plain HTTP, for a
    local run behind something else that terminates TLS only."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    """PEM certificate and key (`MLJOB_TLS_CERT`, `MLJOB_TLS_KEY`, e.g. a mounted
    kubernetes.io/tls Secret). Without them a self-signed pair is generated under
    `<data dir>/tls/` at start and reused while valid."""
    tls_names: tuple[str, ...] = ()
    """Extra DNS names or IPs for a generated certificate (`MLJOB_TLS_SANS`, comma list,
    e.g. the Service's DNS name)."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest accepted request body (`MLJOB_HTTP_MAX_BODY`, bytes); larger ones get 413."""
    ingest_budget_bytes: int = 4 * DEFAULT_MAX_BODY_BYTES
    """Bytes of data bodies being read or analysed at once across all jobs
    (`MLJOB_INGEST_BUDGET`); past it a post gets 429 with Retry-After."""
    waiters_per_user: int = 16
    """Open/close requests one user may have waiting at once (`MLJOB_WAITERS_PER_USER`)."""
    sign_in_failures_per_minute: int = 30
    """Rejected tokens per client address and minute before it is refused without a
    TokenReview (`MLJOB_SIGNIN_FAILURES_PER_MINUTE`)."""
    metrics_addr: tuple[str, int] | None = None
    """Where Prometheus metrics are served, plain HTTP at /metrics (`MLJOB_METRICS_ADDR`,
    `host:port`; unset: not served)."""
    datafeed_allow: tuple[str, ...] = ()
    """Hosts, IPs or CIDRs a datafeed may reach although they are link-local or the
    apiserver (`MLJOB_DATAFEED_ALLOW`, comma list); see `datafeed/destinations.py`."""
    datafeed_policy: DestinationPolicy = field(default_factory=DestinationPolicy)
    """Built at startup from `datafeed_allow` and the apiserver's address."""
    replica_id: str = ""
    """This replica's identity, the holderIdentity of the shard Leases it holds
    (`MLJOB_REPLICA_ID`, default the host name, i.e. the pod name)."""
    namespace: str = "default"
    """Where the shard Leases live (`MLJOB_NAMESPACE`, default the pod's own namespace)."""
    shards: int = 0
    """Shards the jobs are spread over (`MLJOB_REPLICAS_SHARDS`, default 16 with the
    PostgreSQL store; 0 or `off`: one replica runs every job, no Leases). Leased mode
    needs the PostgreSQL store: SQLite is one process's file."""
    lease_duration_s: float = 15.0
    """How long a shard Lease lasts without renewal (`MLJOB_LEASE_DURATION`, seconds):
    a replica that stops renewing loses its shards within it."""
    advertise_addr: str = ""
    """`host:port` other replicas forward data API calls to (`MLJOB_ADVERTISE_ADDR`,
    default the pod IP from `MLJOB_POD_IP`, or the listen host, with the listen port)."""

    @property
    def leased(self) -> bool:
        return self.shards > 0

    def __post_init__(self) -> None:
        if self.leased and literal_address(self.advertise_addr) is None:
            raise ValueError(
                "MLJOB_ADVERTISE_ADDR (default MLJOB_POD_IP and the listen port) must be a"
                f" literal IP:port other replicas can reach, got {self.advertise_addr!r}"
            )

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
            fault_fail_at=values.get("MLJOB_FAULT_FAIL_AT") or None,
            step_delay_s=float(values.get("MLJOB_FAULT_STEP_DELAY", "0")),
            tls_enabled=values.get("MLJOB_TLS", "on").strip().lower() not in OFF_WORDS,
            tls_cert=_path(values.get("MLJOB_TLS_CERT")),
            tls_key=_path(values.get("MLJOB_TLS_KEY")),
            tls_names=_words(values.get("MLJOB_TLS_SANS", "")),
            max_body_bytes=int(values.get("MLJOB_HTTP_MAX_BODY", str(DEFAULT_MAX_BODY_BYTES))),
            ingest_budget_bytes=int(
                values.get("MLJOB_INGEST_BUDGET", str(4 * DEFAULT_MAX_BODY_BYTES))
            ),
            waiters_per_user=int(values.get("MLJOB_WAITERS_PER_USER", "16")),
            sign_in_failures_per_minute=int(values.get("MLJOB_SIGNIN_FAILURES_PER_MINUTE", "30")),
            datafeed_allow=_words(values.get("MLJOB_DATAFEED_ALLOW", "")),
            metrics_addr=_address("MLJOB_METRICS_ADDR", values.get("MLJOB_METRICS_ADDR", "")),
            store_url=(url := store_url(values.get("MLJOB_STORE_URL", ""))),
            replica_id=values.get("MLJOB_REPLICA_ID") or socket.gethostname(),
            namespace=values.get("MLJOB_NAMESPACE") or _own_namespace(),
            shards=_shards(values.get("MLJOB_REPLICAS_SHARDS", ""), url),
            lease_duration_s=_lease_duration(values.get("MLJOB_LEASE_DURATION", "15")),
            advertise_addr=values.get("MLJOB_ADVERTISE_ADDR")
            or f"{values.get('MLJOB_POD_IP') or _advertised_host(host)}:{port}",
        )

    def with_datafeed_policy(self, apiserver: tuple[tuple[str, int], ...]) -> OperatorSettings:
        """These settings with the datafeed policy for this apiserver (in-cluster, its
        Service address from KUBERNETES_SERVICE_HOST/PORT is refused too)."""
        policy = DestinationPolicy.build(apiserver, self.datafeed_allow)
        return replace(self, datafeed_policy=policy)


def _address(name: str, value: str) -> tuple[str, int] | None:
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{name} must be host:port, got {value!r}")
    return host.strip("[]"), int(port)


STORE_URL_FORMS = "postgresql://user:pass@host:port/db or postgresql:///db?host=/socket/dir"


def store_url(value: str) -> str | None:
    """`MLJOB_STORE_URL` checked for its form (never echoed: it may hold a password)."""
    value = value.strip()
    if not value:
        return None
    try:
        parts = urllib.parse.urlsplit(value)
        _ = parts.port
    except ValueError as err:
        raise ValueError(f"MLJOB_STORE_URL is not a URL ({err}); use {STORE_URL_FORMS}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(
            f"MLJOB_STORE_URL must be a PostgreSQL URL ({STORE_URL_FORMS}), or unset for"
            f" SQLite under MLJOB_DATA_DIR; its scheme is {parts.scheme or 'missing'!r}"
        )
    query = urllib.parse.parse_qs(parts.query)
    if not parts.path.strip("/") and not query.get("dbname"):
        raise ValueError(f"MLJOB_STORE_URL names no database; use {STORE_URL_FORMS}")
    return value


def _shards(value: str, url: str | None) -> int:
    value = value.strip().lower()
    if value in OFF_WORDS:
        return 0
    try:
        shards = int(value) if value else DEFAULT_SHARDS
    except ValueError:
        raise ValueError(
            f"MLJOB_REPLICAS_SHARDS must be a whole number of shards, or off; got {value!r}"
        ) from None
    if url is None:
        if value:
            raise ValueError(
                "MLJOB_REPLICAS_SHARDS needs the PostgreSQL store (MLJOB_STORE_URL): several"
                " replicas cannot share a SQLite file"
            )
        return 0
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"MLJOB_REPLICAS_SHARDS must be 1 to {MAX_SHARDS} (or off), got {value!r}")
    return shards


MAX_SHARDS = 256
"""Each shard is a Lease every replica lists and one holder renews every third of the
lease duration: more shards than this only add apiserver writes."""
MIN_LEASE_S = 3.0
MAX_LEASE_S = 300.0
"""A job whose replica dies waits up to a lease duration for its new holder."""


def _lease_duration(value: str) -> float:
    """Seconds, MIN_LEASE_S to MAX_LEASE_S (renewals come every third of it, and a
    replica stops acting on a shard a fifth of it before anyone may take it)."""
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"MLJOB_LEASE_DURATION must be seconds, got {value!r}") from None
    if not MIN_LEASE_S <= seconds <= MAX_LEASE_S:  # also refuses nan
        raise ValueError(
            f"MLJOB_LEASE_DURATION must be {MIN_LEASE_S:g} to {MAX_LEASE_S:g} seconds,"
            f" got {value!r}"
        )
    return seconds


def literal_address(value: str) -> str | None:
    """`value` as `IP:port` (`[IPv6]:port`) if it is a literal address (no host name,
    user info or path), else None."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        return None
    if (ip.version == 6) != bracketed:
        return None
    return f"[{ip}]:{int(port)}" if bracketed else f"{ip}:{int(port)}"


def _own_namespace() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def _advertised_host(listen_host: str) -> str:
    host = listen_host.strip("[]")
    if host in ("0.0.0.0", "::", ""):
        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def _words(value: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in value.split(",") if w.strip())


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None
