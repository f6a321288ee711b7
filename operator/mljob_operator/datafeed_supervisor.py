"""A job's datafeed supervised beside its controller: the spec turned into a runner config,
started, restarted and stopped as the
lifecycle says, its progress folded into status.

The controller calls `sync()` on every turn of its loop with whether the feed should run
(`lifecycle.datafeed_runs`); a changed `spec.datafeed` restarts the feed from its current
progress. Progress starts from the status the controller recorded, and engine refusals
are translated here: a job that stopped taking data ends the feed, anything else is a
pull error retried with backoff. Pull errors become one Warning event per distinct error
(again after `ERROR_EVENT_REPEAT_S`), never one per retry.

The Secret and ConfigMap keys a source's authentication names are read with `key_reader`,
bound to the job's own namespace: GET of the one object (the operator may not list or
watch them), a missing object or key, or one the operator may not read, is a
CredentialsNotFound pull error, retried like any other, so creating it heals the feed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Protocol, cast

from mljob_operator.api import (
    ConfigMapKeySelector,
    DatafeedState,
    DatafeedStatus,
    HTTPSource,
    MLJobSpec,
    PrometheusSource,
    SecretKeySelector,
    SecretOrConfigMap,
    parse_duration,
)
from mljob_operator.datafeed import (
    FeedConfig,
    FeedError,
    HttpQuery,
    PrometheusQuery,
    SourceAccess,
)
from mljob_operator.datafeed.credentials import (
    CONFIG_MAP,
    SECRET,
    ClientConfig,
    CredentialsNotFound,
    KeyReader,
    KeyRef,
)
from mljob_operator.datafeed.runner import FeedRunner, JobStopped, Progress
from mljob_operator.engine.errors import JobClosedError
from mljob_operator.faults import FaultInjector
from mljob_operator.kube import KubeError
from mljob_operator.runtime import JobNotOpenError, JobRuntime

log = logging.getLogger(__name__)

PROMETHEUS_CHUNK_STEPS = 1000
PROMETHEUS_MAX_CHUNK_STEPS = 10_000
HTTP_CHUNK_BUCKETS = 100
ERROR_EVENT_REPEAT_S = 600.0


def _ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def _duration_ms(text: str) -> int:
    return int(parse_duration(text).total_seconds() * 1000)


def _ref(selector: SecretKeySelector | ConfigMapKeySelector) -> KeyRef:
    kind = SECRET if isinstance(selector, SecretKeySelector) else CONFIG_MAP
    return KeyRef(kind, selector.name, selector.key)


def _either(source: SecretOrConfigMap | None) -> KeyRef | None:
    if source is None:
        return None
    selector = source.secret or source.config_map
    assert selector is not None
    return _ref(selector)


def client_config(source: PrometheusSource | HTTPSource) -> ClientConfig:
    """The source's authentication and TLS settings as the datafeed takes them."""
    auth, basic, tls = source.authorization, source.basic_auth, source.tls_config
    return ClientConfig(
        authorization=(auth.type, _ref(auth.credentials)) if auth else None,
        basic_auth=(_ref(basic.username), _ref(basic.password)) if basic else None,
        headers=tuple(sorted((source.headers or {}).items())),
        ca=_either(tls.ca) if tls else None,
        cert=_either(tls.cert) if tls else None,
        key=_ref(tls.key_secret) if tls and tls.key_secret else None,
        server_name=tls.server_name if tls else None,
        insecure_skip_verify=tls.insecure_skip_verify if tls else False,
    )


class ObjectReader(Protocol):
    async def read_data(self, kind: str, namespace: str, name: str) -> Mapping[str, bytes]:
        """The data of a Secret or ConfigMap; raises KubeError (404 when missing)."""


def object_reader(client: object) -> ObjectReader | None:
    """`client` if it can read Secrets and ConfigMaps, else None (an attribute check: a
    runtime Protocol check costs as much as the rest of building a job's controller)."""
    return cast(ObjectReader, client) if callable(getattr(client, "read_data", None)) else None


def key_reader(objects: ObjectReader, namespace: str) -> KeyReader:
    """Reads keys of Secrets and ConfigMaps in `namespace` only, errors worded for users."""

    async def read(ref: KeyRef) -> bytes:
        where = f"{ref.kind} {namespace}/{ref.name}"
        try:
            data = await objects.read_data(ref.kind, namespace, ref.name)
        except KubeError as err:
            if err.status == 404:
                raise CredentialsNotFound(f"{where} not found") from None
            if err.status == 403:
                raise CredentialsNotFound(
                    f"{where}: the operator may not read it (RBAC: get {ref.kind.lower()}s); "
                    f"bind the ClusterRole mljob-operator-datafeed-credentials to the "
                    f"operator's ServiceAccount in {namespace}"
                ) from None
            raise FeedError(f"{where} could not be read: HTTP {err.status}") from None
        if ref.key not in data:
            raise CredentialsNotFound(f"{where} has no key {ref.key!r}")
        return data[ref.key]

    return read


def feed_config(spec: MLJobSpec) -> FeedConfig | None:
    df = spec.datafeed
    if df is None:
        return None
    bucket_ms = _duration_ms(spec.analysis_config.bucket_span)
    frequency_ms = _duration_ms(df.frequency) if df.frequency else bucket_ms
    source: PrometheusQuery | HttpQuery
    if df.prometheus is not None:
        prom = df.prometheus
        step_ms = max(_duration_ms(prom.step), 1) if prom.step else bucket_ms
        source = PrometheusQuery(
            prom.url, prom.query, step_ms, prom.value_field, client_config(prom)
        )
        chunk_ms = min(
            _duration_ms(df.chunk_span) if df.chunk_span else PROMETHEUS_CHUNK_STEPS * step_ms,
            PROMETHEUS_MAX_CHUNK_STEPS * step_ms,
        )
    else:
        assert isinstance(df.http, HTTPSource)
        source = HttpQuery(df.http.url, client_config(df.http))
        chunk_ms = _duration_ms(df.chunk_span) if df.chunk_span else HTTP_CHUNK_BUCKETS * bucket_ms
    return FeedConfig(
        source=source,
        start_ms=_ms(df.start),
        end_ms=_ms(df.end),
        frequency_ms=max(frequency_ms, 1),
        query_delay_ms=_duration_ms(df.query_delay),
        chunk_ms=max(chunk_ms, 1),
        time_field=spec.data_description.time_field,
        time_format=spec.data_description.time_format.value,
    )


def _from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


class DatafeedSupervisor:
    def __init__(
        self,
        job_id: str,
        runtime: JobRuntime,
        faults: FaultInjector,
        *,
        clock: Callable[[], datetime],
        on_change: Callable[[], None],
        on_error: Callable[[str, str], None],
        access: SourceAccess,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job_id, self.runtime, self.faults, self.clock = job_id, runtime, faults, clock
        self._on_change, self._on_error, self._access = on_change, on_error, access
        self._monotonic = monotonic
        self.progress: Progress | None = None
        self._feed: FeedRunner | None = None
        self._posts = 0
        self._last_error_event: tuple[str, float] | None = None

    @property
    def running(self) -> bool:
        return self._feed is not None and self._feed.running

    def status(self, recorded: DatafeedStatus | None) -> DatafeedStatus | None:
        """`recorded` updated with this process's progress (end_reached is the lifecycle's)."""
        p = self.progress
        if p is None:
            return recorded
        base = recorded or DatafeedStatus()
        return base.model_copy(
            update={
                "state": DatafeedState.STARTED if p.running else DatafeedState.STOPPED,
                "searched_until": p.searched_until,
                "last_pull_time": _from_ms(p.last_pull_ms) or base.last_pull_time,
                "last_error": p.last_error,
                "last_error_reason": p.last_error_reason if p.last_error else None,
                "last_error_time": _from_ms(p.last_error_ms) or base.last_error_time,
            }
        )

    async def sync(self, spec: MLJobSpec, run: bool, recorded: DatafeedStatus | None) -> None:
        config = feed_config(spec)
        if config is None:
            await self.stop()
            self.progress = None
            return
        if self._feed is not None and (not run or self._feed.config != config):
            await self.stop()
        if not run or self.running:
            return
        if self.progress is None:
            self.progress = Progress(
                searched_until=recorded.searched_until if recorded else None,
                last_pull_ms=_ms(recorded.last_pull_time) if recorded else None,
            )
        self._feed = FeedRunner(
            self.job_id,
            config,
            self.progress,
            target=self,
            clock_ms=lambda: _ms(self.clock()) or 0,
            on_change=self._on_change,
            on_error=self._error,
            access=self._access,
        )
        self._feed.start()
        log.info("%s: datafeed started at %s", self.job_id, self.progress.searched_until)

    async def stop(self) -> None:
        feed, self._feed = self._feed, None
        if feed is not None:
            await feed.stop()

    async def post(self, body: bytes) -> None:
        try:
            await self.runtime.post_data(self.job_id, body)
        except (JobNotOpenError, JobClosedError):
            raise JobStopped from None
        except Exception as err:
            raise FeedError(f"the job refused the data: {err}") from err
        self._posts += 1
        self.faults.checkpoint(f"after:datafeedPost:{self._posts}")

    async def advance(self, end_ms: int) -> None:
        try:
            await self.runtime.flush(self.job_id, False, end_ms, None)
        except (JobNotOpenError, JobClosedError):
            raise JobStopped from None
        except Exception as err:
            raise FeedError(f"the job could not advance to {end_ms}: {err}") from err

    def analysed_until_ms(self) -> int | None:
        return self.runtime.analysed_until(self.job_id)

    def _error(self, message: str) -> None:
        """One Warning event per distinct error (its reason is the progress's)."""
        now = self._monotonic()
        last = self._last_error_event
        if last is None or last[0] != message or now - last[1] >= ERROR_EVENT_REPEAT_S:
            self._last_error_event = (message, now)
            reason = self.progress.last_error_reason if self.progress else None
            self._on_error(reason or FeedError.reason, message)
