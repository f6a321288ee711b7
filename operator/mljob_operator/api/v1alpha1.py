"""The MLJob API, version v1alpha1: the single source of the CRD schema.

`mljob_operator.crdgen` turns these models into the CRD in manifests/ and the chart, so a
field's `description` is what `kubectl explain` prints and its constraints are what the
apiserver enforces. Rules JSON Schema cannot say (a detector's fieldName depends on its
function; analysisConfig is immutable) are CEL `x-kubernetes-validations`, mirrored by
pydantic validators where they need no old object, so the operator rejects the same specs
the apiserver does.

Parse at the edge with `MLJob.model_validate(dict(body))` (or `MLJobSpec.model_validate`
on `body["spec"]`); write status with `status.to_json_dict()`, which uses the camelCase
wire names.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from mljob_operator.api.durations import (
    DURATION_PATTERN,
    MEMORY_LIMIT_PATTERN,
    POSITIVE_DURATION_RULE,
    check_duration,
    format_duration,
    parse_memory_limit,
)

GROUP = "ml.mljob.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "MLJob"
PLURAL = "mljobs"
SINGULAR = "mljob"
SHORT_NAMES = ("mlj",)
CATEGORIES = ("ml",)
CRD_NAME = f"{PLURAL}.{GROUP}"

FORCE_CLOSE_ANNOTATION = f"{GROUP}/force-close"
"""Any non-empty value asks the operator to force the close that `spec.state: closed`
asks for; the value acted on is recorded in `status.lastHandledForceClose`."""
FINALIZER = f"{GROUP}/close-and-cleanup"
"""Held while a job exists so deletion closes it and removes its results and snapshots."""

COUNT_FUNCTIONS = ("count", "high_count", "low_count", "non_zero_count")
"""Detector functions that count events and so take no fieldName."""

_K8S_NAME = 253
_FIELD_NAME = 256
_DESCRIPTION = 1024
_URL = 2048


MAX_SPAN = timedelta(days=7)
"""The most a bucket span, latency, query step, datafeed frequency or query delay may be."""
MAX_CLOSE_TIMEOUT = timedelta(days=30)
MAX_CHUNK_SPAN = timedelta(days=365)
MAX_RETENTION_DAYS = 36_500
"""A hundred years: any retention a user can mean, small enough to walk cheaply."""


def _bounded(maximum: timedelta, *, positive: bool) -> Any:
    def check(value: str | None) -> str | None:
        if value is None:
            return None
        return check_duration(value, maximum=maximum, positive=positive)

    return AfterValidator(check)


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields ignored (the
    apiserver prunes them before we see a body)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        protected_namespaces=(),
        extra="ignore",
    )

    def to_json_dict(self) -> dict[str, Any]:
        """The wire form: camelCase keys, JSON values, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _memory_limit(value: str) -> str:
    parse_memory_limit(value)
    return value


def _duration_field(
    default: str | None, description: str, *, positive: bool, maximum: timedelta
) -> Any:
    description += f" At most {format_duration(maximum)}."
    extra: dict[str, Any] = {}
    if positive:
        extra["x-kubernetes-validations"] = [
            {"rule": POSITIVE_DURATION_RULE, "message": "must be a positive duration"}
        ]
    return Field(
        default,
        description=description,
        pattern=DURATION_PATTERN,
        max_length=64,
        json_schema_extra=extra or None,
    )


# --------------------------------------------------------------------------- enums


class DesiredState(StrEnum):
    """The state a job is asked to be in."""

    OPENED = "opened"
    CLOSED = "closed"


class JobState(StrEnum):
    """The state a job is in."""

    OPENING = "opening"
    OPENED = "opened"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"


class DetectorFunction(StrEnum):
    """The analysis functions of the seed service's detectors."""

    COUNT = "count"
    HIGH_COUNT = "high_count"
    LOW_COUNT = "low_count"
    NON_ZERO_COUNT = "non_zero_count"
    DISTINCT_COUNT = "distinct_count"
    MEAN = "mean"
    HIGH_MEAN = "high_mean"
    LOW_MEAN = "low_mean"
    SUM = "sum"
    HIGH_SUM = "high_sum"
    LOW_SUM = "low_sum"
    MIN = "min"
    MAX = "max"
    MEDIAN = "median"

    @property
    def needs_field_name(self) -> bool:
        """Everything but the count family analyses a field's values."""
        return self.value not in COUNT_FUNCTIONS


class TimeFormat(StrEnum):
    """How the time field of input records is written."""

    EPOCH = "epoch"
    EPOCH_MS = "epoch_ms"
    ISO8601 = "iso8601"


class ConditionStatus(StrEnum):
    """metav1.ConditionStatus."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class MemoryStatus(StrEnum):
    """Whether the model fits its memory limit (the seed's `memory_status`)."""

    OK = "ok"
    SOFT_LIMIT = "soft_limit"
    HARD_LIMIT = "hard_limit"


class DatafeedState(StrEnum):
    """Whether the datafeed is pulling data."""

    STARTED = "started"
    STOPPED = "stopped"


# --------------------------------------------------------------------------- spec


class Detector(_Model):
    """One analysis function applied to the input (the seed's `detectors[]` item)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.function in "
                    + "["
                    + ", ".join(f"'{name}'" for name in COUNT_FUNCTIONS)
                    + "] || has(self.fieldName)",
                    "message": "fieldName is required for every detector function but "
                    + ", ".join(COUNT_FUNCTIONS),
                    "reason": "FieldValueRequired",
                    "fieldPath": ".fieldName",
                }
            ]
        }
    )

    function: DetectorFunction = Field(
        json_schema_extra={"maxLength": 32},
        description="The analysis function: count, high_count, low_count, non_zero_count, "
        "distinct_count, mean, high_mean, low_mean, sum, high_sum, low_sum, min, max or "
        "median. All but the count family need fieldName.",
    )
    field_name: str | None = Field(
        None,
        min_length=1,
        max_length=_FIELD_NAME,
        description="The input field the function analyses (required for every function "
        "but count, high_count, low_count and non_zero_count).",
    )
    by_field_name: str | None = Field(
        None,
        min_length=1,
        max_length=_FIELD_NAME,
        description="Split the analysis: one model per value of this field, each compared "
        "with the history of its own value.",
    )
    partition_field_name: str | None = Field(
        None,
        min_length=1,
        max_length=_FIELD_NAME,
        description="Segment the analysis: fully independent baselines per value of this field.",
    )
    detector_description: str | None = Field(
        None,
        max_length=_DESCRIPTION,
        description="A human-readable description of the detector; defaults to one "
        "derived from its function and fields.",
    )

    @model_validator(mode="after")
    def _field_name_when_needed(self) -> Self:
        if self.function.needs_field_name and not self.field_name:
            raise ValueError(f"fieldName is required for detector function {self.function}")
        return self

    def describe(self) -> str:
        """`detectorDescription`, or the seed's default like `mean(responsetime) by airline`."""
        if self.detector_description:
            return self.detector_description
        text = f"{self.function}({self.field_name or ''})"
        if self.by_field_name:
            text += f" by {self.by_field_name}"
        if self.partition_field_name:
            text += f" partitionfield={self.partition_field_name}"
        return text


class AnalysisConfig(_Model):
    """What the job analyses and at what granularity. Immutable after creation."""

    bucket_span: Annotated[str, _bounded(MAX_SPAN, positive=True)] = _duration_field(
        "5m",
        "The size of the intervals the analysis is aggregated into, as a positive duration "
        "(e.g. 5m, 1h, 90s, 1h30m; units ns, us, ms, s, m, h, d). Defaults to 5m.",
        positive=True,
        maximum=MAX_SPAN,
    )
    latency: Annotated[str, _bounded(MAX_SPAN, positive=False)] = _duration_field(
        "0s",
        "How long to wait for out-of-order data before a bucket is final, as a duration "
        "(e.g. 0s, 30s, 2m). Records older than the latest bucket minus latency are "
        "counted as out of order. Defaults to 0s.",
        positive=False,
        maximum=MAX_SPAN,
    )
    detectors: list[Detector] = Field(
        min_length=1,
        max_length=32,
        description="The analysis functions to apply; at least one.",
    )
    influencers: list[Annotated[str, Field(min_length=1, max_length=_FIELD_NAME)]] = Field(
        default_factory=list,
        max_length=32,
        description="Fields whose values are reported as likely contributors to anomalies "
        "(for example a host or user name).",
    )


class DataDescription(_Model):
    """How input records are laid out."""

    time_field: str = Field(
        "time",
        min_length=1,
        max_length=_FIELD_NAME,
        description="The name of the field holding each record's timestamp. Defaults to time.",
    )
    time_format: TimeFormat = Field(
        TimeFormat.EPOCH,
        description="How the time field is written: epoch (seconds since 1970, the "
        "default), epoch_ms (milliseconds since 1970) or iso8601.",
    )


class AnalysisLimits(_Model):
    """Resource limits of the job's model."""

    model_memory_limit: Annotated[str, AfterValidator(_memory_limit)] = Field(
        "1024mb",
        pattern=MEMORY_LIMIT_PATTERN,
        max_length=32,
        description="The most memory the model may use: a number with b, kb, mb, gb or tb "
        "(binary multiples, as the seed service), or Ki, Mi, Gi or Ti; a bare number is "
        "MiB. Defaults to 1024mb; at most 1Ti.",
    )

    @property
    def model_memory_limit_bytes(self) -> int:
        """`modelMemoryLimit` in bytes."""
        return parse_memory_limit(self.model_memory_limit)


class ModelPlotConfig(_Model):
    """Whether the job records what its model expected, for charts."""

    enabled: bool = Field(
        False,
        description="Record, per bucket and series, the actual value, the model's median "
        "and its 95% band (results/modelplot); at most 100 series a bucket. Takes effect "
        "at the next bucket of an open job, without a reopen. Defaults to false.",
    )


# --------------------------------------------------------------------------- datafeed client


_SECRET_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
_HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$"
_HEADER_VALUE_PATTERN = r"^[^\x00-\x08\x0A-\x1F\x7F]*$"
MAX_HEADERS = 16
MAX_HEADER_VALUE = 4096
RESERVED_HEADERS = (
    "authorization",
    "host",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-type",
    "content-encoding",
)
"""Header names a datafeed may not set: hop-by-hop headers, what the HTTP client sets
itself, and Authorization (use `authorization` or `basicAuth`, which read a Secret)."""
_RESERVED_HEADERS_RE = "(?i)^(" + "|".join(RESERVED_HEADERS) + ")$"
_HEADERS_MESSAGE = (
    "headers: names must be HTTP tokens of at most 128 characters, and may not be "
    "Authorization (use authorization or basicAuth), Host, or a hop-by-hop or body header ("
    + ", ".join(RESERVED_HEADERS)
    + ")"
)


class SecretKeySelector(_Model):
    """A key of a Secret in the MLJob's own namespace."""

    name: str = Field(
        min_length=1,
        max_length=_K8S_NAME,
        pattern=_SECRET_NAME_PATTERN,
        description="The Secret's name (in the MLJob's namespace).",
    )
    key: str = Field(
        min_length=1, max_length=_K8S_NAME, pattern=_KEY_PATTERN, description="The key to read."
    )


class ConfigMapKeySelector(_Model):
    """A key of a ConfigMap in the MLJob's own namespace."""

    name: str = Field(
        min_length=1,
        max_length=_K8S_NAME,
        pattern=_SECRET_NAME_PATTERN,
        description="The ConfigMap's name (in the MLJob's namespace).",
    )
    key: str = Field(
        min_length=1,
        max_length=_K8S_NAME,
        pattern=_KEY_PATTERN,
        description="The key to read (data or binaryData).",
    )


class SecretOrConfigMap(_Model):
    """Exactly one of a Secret key or a ConfigMap key."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.secret) != has(self.configMap)",
                    "message": "exactly one of secret and configMap must be set",
                }
            ]
        }
    )

    secret: SecretKeySelector | None = Field(None, description="A key of a Secret.")
    config_map: ConfigMapKeySelector | None = Field(None, description="A key of a ConfigMap.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.secret is None) == (self.config_map is None):
            raise ValueError("exactly one of secret and configMap must be set")
        return self


class SafeAuthorization(_Model):
    """The Authorization header `<type> <credentials>`, credentials read from a Secret
    (the Prometheus Operator's SafeAuthorization)."""

    type: str = Field(
        "Bearer",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
        description="The authentication scheme, e.g. Bearer (the default). Basic is not "
        "accepted here: use basicAuth.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!self.matches('(?i)^basic$')",
                    "message": "authorization.type Basic is not supported: use basicAuth",
                }
            ]
        },
    )
    credentials: SecretKeySelector = Field(
        description="The Secret key holding the credentials (e.g. a bearer token); "
        "surrounding whitespace is trimmed."
    )

    @model_validator(mode="after")
    def _not_basic(self) -> Self:
        if self.type.lower() == "basic":
            raise ValueError("authorization.type Basic is not supported: use basicAuth")
        return self


class BasicAuth(_Model):
    """HTTP basic authentication, user name and password read from Secrets."""

    username: SecretKeySelector = Field(
        description="The Secret key holding the user name (surrounding whitespace trimmed)."
    )
    password: SecretKeySelector = Field(
        description="The Secret key holding the password (surrounding whitespace trimmed)."
    )


class SafeTLSConfig(_Model):
    """How the datafeed verifies the source's certificate and proves its own (the
    Prometheus Operator's SafeTLSConfig)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.cert) == has(self.keySecret)",
                    "message": "tlsConfig.cert and tlsConfig.keySecret go together",
                }
            ]
        }
    )

    ca: SecretOrConfigMap | None = Field(
        None,
        description="PEM certificates of the authorities to trust instead of the system's.",
    )
    cert: SecretOrConfigMap | None = Field(
        None, description="The PEM client certificate (chain) to present; needs keySecret."
    )
    key_secret: SecretKeySelector | None = Field(
        None, description="The Secret key holding the client certificate's PEM private key."
    )
    server_name: str | None = Field(
        None,
        min_length=1,
        max_length=_K8S_NAME,
        description="The name to verify the server's certificate against (and send as "
        "SNI), instead of the URL's host.",
    )
    insecure_skip_verify: bool = Field(
        False,
        description="Do not verify the server's certificate. For tests only: anyone on "
        "the path can then read the credentials.",
    )

    @model_validator(mode="after")
    def _cert_with_key(self) -> Self:
        if (self.cert is None) != (self.key_secret is None):
            raise ValueError("tlsConfig.cert and tlsConfig.keySecret go together")
        return self


HeaderValue = Annotated[str, Field(max_length=MAX_HEADER_VALUE, pattern=_HEADER_VALUE_PATTERN)]


def _check_headers(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    for name in value:
        if not re.fullmatch(_HEADER_NAME_PATTERN, name) or name.lower() in RESERVED_HEADERS:
            raise ValueError(f"{_HEADERS_MESSAGE}; got {name[:128]!r}")
    return value


_CLIENT_RULES: Any = [
    {
        "rule": "!has(self.authorization) || !has(self.basicAuth)",
        "message": "authorization and basicAuth are mutually exclusive",
    },
    {
        "rule": "!has(self.tlsConfig) || self.url.startsWith('https://')",
        "message": "tlsConfig needs an https:// url",
    },
]


class _HTTPClientConfig(_Model):
    """How the datafeed authenticates to its source (shared by both sources)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _CLIENT_RULES})

    authorization: SafeAuthorization | None = Field(
        None,
        description="Send Authorization: <type> <credentials>, the credentials read from a "
        "Secret. Not with basicAuth.",
    )
    basic_auth: BasicAuth | None = Field(
        None,
        description="HTTP basic authentication from Secret keys. Not with authorization.",
    )
    headers: Annotated[dict[str, HeaderValue] | None, AfterValidator(_check_headers)] = Field(
        None,
        max_length=MAX_HEADERS,
        description=f"Extra request headers, e.g. X-Scope-OrgID for a Mimir, Cortex or "
        f"Thanos tenant; at most {MAX_HEADERS}, values up to {MAX_HEADER_VALUE} characters. "
        "Authorization, Host and hop-by-hop headers are refused.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f'self.all(k, k.matches("{_HEADER_NAME_PATTERN}") && '
                    f'!k.matches("{_RESERVED_HEADERS_RE}"))',
                    "message": _HEADERS_MESSAGE,
                }
            ]
        },
    )
    tls_config: SafeTLSConfig | None = Field(
        None,
        description="TLS settings for an https:// url: the CA to trust, a client "
        "certificate, serverName, insecureSkipVerify.",
    )

    @model_validator(mode="after")
    def _client_rules(self) -> Self:
        if self.authorization is not None and self.basic_auth is not None:
            raise ValueError("authorization and basicAuth are mutually exclusive")
        url = getattr(self, "url", "")
        if self.tls_config is not None and not url.startswith("https://"):
            raise ValueError("tlsConfig needs an https:// url")
        return self


class PrometheusSource(_HTTPClientConfig):
    """Pull data from a Prometheus range query."""

    url: str = Field(
        pattern=r"^https?://",
        max_length=_URL,
        description="Base URL of the Prometheus server, e.g. http://prometheus:9090.",
    )
    query: str = Field(
        min_length=1,
        max_length=4096,
        description="The PromQL expression; each sample becomes one input record.",
    )
    step: Annotated[str | None, _bounded(MAX_SPAN, positive=True)] = _duration_field(
        None,
        "The query resolution step as a positive duration; defaults to the bucket span.",
        positive=True,
        maximum=MAX_SPAN,
    )
    value_field: str = Field(
        "value",
        min_length=1,
        max_length=_FIELD_NAME,
        description="The record field a sample's value is written to (series labels "
        "become fields too). Defaults to value.",
    )


class HTTPSource(_HTTPClientConfig):
    """Pull data from an HTTP endpoint answering NDJSON or a JSON array of records."""

    url: str = Field(
        pattern=r"^https?://",
        max_length=_URL,
        description="The URL to GET; the operator adds start and end (epoch ms) query "
        "parameters for the interval it pulls.",
    )


class Datafeed(_Model):
    """Where the operator pulls the job's data from, instead of clients pushing it."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.prometheus) != has(self.http)",
                    "message": "exactly one of datafeed.prometheus and datafeed.http must be set",
                },
                {
                    "rule": "!has(self.start) || !has(self.end) || self.end > self.start",
                    "message": "datafeed.end must be after datafeed.start",
                },
            ]
        }
    )

    prometheus: PrometheusSource | None = Field(
        None, description="Pull from a Prometheus range query."
    )
    http: HTTPSource | None = Field(None, description="Pull from an HTTP endpoint.")
    start: datetime | None = Field(
        None,
        description="The time (RFC 3339) to pull data from; defaults to when the job opens.",
    )
    end: datetime | None = Field(
        None,
        description="The time (RFC 3339) to pull data up to; when the datafeed reaches it, "
        "it closes the job by itself. Unset: pull in real time until closed.",
    )
    frequency: Annotated[str | None, _bounded(MAX_SPAN, positive=True)] = _duration_field(
        None,
        "How often to pull in real time, as a positive duration; defaults to the bucket span.",
        positive=True,
        maximum=MAX_SPAN,
    )
    query_delay: Annotated[str, _bounded(MAX_SPAN, positive=False)] = _duration_field(
        "1m",
        "How far behind the current time the datafeed stays, so the source has the data "
        "(a scrape interval, ingest lag): an interval is pulled once it ended this long "
        "ago. A duration like 1m or 30s. Defaults to 1m.",
        positive=False,
        maximum=MAX_SPAN,
    )
    chunk_span: Annotated[str | None, _bounded(MAX_CHUNK_SPAN, positive=True)] = _duration_field(
        None,
        "The longest interval pulled in one request while catching up on history, as a "
        "positive duration; defaults to 1000 steps for Prometheus (at most 10000, its "
        "per-series limit is 11000 points) and 100 bucket spans for HTTP.",
        positive=True,
        maximum=MAX_CHUNK_SPAN,
    )

    @model_validator(mode="after")
    def _one_source_and_ordered(self) -> Self:
        if (self.prometheus is None) == (self.http is None):
            raise ValueError("exactly one of datafeed.prometheus and datafeed.http must be set")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("datafeed.end must be after datafeed.start")
        return self


class MLJobSpec(_Model):
    """The desired state of an anomaly-detection job."""

    state: DesiredState = Field(
        DesiredState.OPENED,
        description="opened (the default) runs the job; closed makes the operator run "
        "close housekeeping (flush buffers, calculate final results, persist a model "
        "snapshot, prune model history) and stop taking data. Setting opened again "
        "reopens it from its latest model snapshot.",
    )
    close_timeout: Annotated[str, _bounded(MAX_CLOSE_TIMEOUT, positive=False)] = _duration_field(
        "30m",
        "How long a close may take before the job is reported as timed out (Closing "
        "condition with reason TimedOut and a Warning event); housekeeping goes on. "
        "A duration like 30m, 90s or 1h30m (units ns, us, ms, s, m, h, d). Defaults to "
        "30m.",
        positive=False,
        maximum=MAX_CLOSE_TIMEOUT,
    )
    analysis_config: AnalysisConfig = Field(
        description="What to analyse and how: bucket span, latency, detectors and "
        "influencers. Immutable after creation.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self == oldSelf",
                    "message": "analysisConfig is immutable after creation; create a new "
                    "MLJob to change it",
                }
            ]
        },
    )
    data_description: DataDescription = Field(
        default_factory=DataDescription,
        description="How input records are laid out (time field and format).",
        json_schema_extra={"default": {}},
    )
    analysis_limits: AnalysisLimits = Field(
        default_factory=AnalysisLimits,
        description="Resource limits of the job's model.",
        json_schema_extra={"default": {}},
    )
    model_snapshot_retention_days: int = Field(
        10,
        ge=0,
        le=MAX_RETENTION_DAYS,
        description="Model snapshots older than this many days (relative to the newest) "
        "are deleted when model history is pruned; the newest snapshot is always kept. "
        "Defaults to 10.",
    )
    daily_model_snapshot_retention_after_days: int = Field(
        1,
        ge=0,
        le=MAX_RETENTION_DAYS,
        description="Past this many days only the first snapshot of each day is kept; "
        "capped at modelSnapshotRetentionDays. Defaults to 1.",
    )
    results_retention_days: int | None = Field(
        None,
        ge=1,
        le=MAX_RETENTION_DAYS,
        description="Results older than this many days (relative to the latest result) "
        "are deleted at close; unset keeps them all.",
    )
    datafeed: Datafeed | None = Field(
        None,
        description="Pull data from Prometheus or an HTTP endpoint; unset means clients "
        "push data to the operator's data API.",
    )
    model_plot_config: ModelPlotConfig = Field(
        default_factory=ModelPlotConfig,
        description="Model plot results: the series with the model's expected band. May "
        "change while the job is open.",
        json_schema_extra={"default": {}},
    )

    @property
    def effective_daily_retention_after_days(self) -> int:
        """`dailyModelSnapshotRetentionAfterDays`, capped as its description says."""
        return min(
            self.daily_model_snapshot_retention_after_days, self.model_snapshot_retention_days
        )


# --------------------------------------------------------------------------- status


class Condition(_Model):
    """An observation of one aspect of the job, in metav1.Condition shape."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="The condition type: Ready, Opened, Closing, Closed or Failed.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        None,
        ge=0,
        description="The metadata.generation the condition was set from.",
    )
    last_transition_time: datetime = Field(
        description="When the status last changed from one value to another."
    )
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="A CamelCase reason for the last transition, e.g. Closing, TimedOut, "
        "ForceClosed.",
    )
    message: str = Field(
        max_length=32768, description="A human-readable explanation of the transition."
    )


class CloseRecord(_Model):
    """The latest close: when it was asked for, how it went, what housekeeping did.

    Each housekeeping step is recorded in `steps` once done, so an operator restarted
    mid-close resumes at the first step not recorded and never repeats one.
    """

    close_id: str | None = Field(
        None,
        max_length=_K8S_NAME,
        description="Identifies this close; the snapshot it persists is keyed by it, so "
        "a resumed close persists exactly one snapshot. Set while in progress and kept "
        "after.",
    )
    trigger: str | None = Field(
        None,
        max_length=64,
        description="What asked for the close: spec (spec.state: closed), datafeed (its "
        "end was reached), api (the close endpoint) or deletion.",
    )
    requested_at: datetime | None = Field(None, description="When the close was asked for.")
    started_at: datetime | None = Field(None, description="When housekeeping started.")
    completed_at: datetime | None = Field(
        None, description="When the job was closed; unset while the close is in progress."
    )
    forced: bool = Field(False, description="True when housekeeping was skipped by a forced close.")
    timed_out: bool = Field(
        False, description="True when the close took longer than spec.closeTimeout."
    )
    steps: dict[str, datetime] = Field(
        default_factory=dict,
        description="Housekeeping steps done, each with when it finished: flush, "
        "finalizeResults, persistSnapshot, pruneHistory (the seed's four housekeeping "
        "tasks, in that order).",
    )
    records_flushed: int | None = Field(
        None, ge=0, description="Buffered records analysed by the flush."
    )
    buckets_finalized: int | None = Field(
        None, ge=0, description="Buckets whose results were made final."
    )
    snapshot_id: str | None = Field(
        None, max_length=_K8S_NAME, description="The model snapshot persisted by the close."
    )
    snapshots_pruned: int | None = Field(
        None, ge=0, description="Model snapshots deleted by retention."
    )
    results_pruned: int | None = Field(
        None, ge=0, description="Result buckets deleted by resultsRetentionDays."
    )
    duration_seconds: float | None = Field(
        None, ge=0, description="How long the close took, from startedAt to completedAt."
    )
    message: str | None = Field(
        None, max_length=_DESCRIPTION, description="A human-readable outcome of the close."
    )


class CloseStep(StrEnum):
    """Keys of `status.lastClose.steps`, in the order housekeeping runs them."""

    FLUSH = "flush"
    FINALIZE_RESULTS = "finalizeResults"
    PERSIST_SNAPSHOT = "persistSnapshot"
    PRUNE_HISTORY = "pruneHistory"
    """Model snapshot retention and results retention, in one transaction."""


class OpenRecord(_Model):
    """The latest open (or reopen) of the job."""

    started_at: datetime | None = Field(None, description="When opening started.")
    completed_at: datetime | None = Field(None, description="When the job was open and took data.")
    restored_snapshot_id: str | None = Field(
        None,
        max_length=_K8S_NAME,
        description="The model snapshot the model was restored from; unset for a new model.",
    )


class DataCounts(_Model):
    """What the job has received, in the seed's `data_counts` meanings."""

    input_record_count: int = Field(0, ge=0, description="Records received.")
    processed_record_count: int = Field(
        0, ge=0, description="Records analysed (received minus those skipped)."
    )
    input_bytes: int = Field(0, ge=0, description="Bytes of input received.")
    invalid_date_count: int = Field(
        0, ge=0, description="Records skipped because the time field could not be parsed."
    )
    missing_field_count: int = Field(
        0, ge=0, description="Records missing a field a detector analyses."
    )
    out_of_order_timestamp_count: int = Field(
        0,
        ge=0,
        description="Records skipped because they were older than the latest bucket minus latency.",
    )
    bucket_count: int = Field(0, ge=0, description="Buckets analysed.")
    empty_bucket_count: int = Field(0, ge=0, description="Buckets that held no records.")
    earliest_record_timestamp: int | None = Field(
        None, description="Timestamp (epoch ms) of the earliest record analysed."
    )
    latest_record_timestamp: int | None = Field(
        None, description="Timestamp (epoch ms) of the latest record analysed."
    )
    last_data_time: int | None = Field(None, description="When (epoch ms) data was last received.")


class ModelSizeStats(_Model):
    """The size of the job's model, in the seed's `model_size_stats` meanings."""

    model_bytes: int = Field(0, ge=0, description="Bytes of memory the model uses.")
    peak_model_bytes: int = Field(0, ge=0, description="The most bytes the model has used.")
    model_bytes_memory_limit: int | None = Field(
        None, ge=0, description="analysisLimits.modelMemoryLimit in bytes."
    )
    total_by_field_count: int = Field(0, ge=0, description="By-field values modelled.")
    total_partition_field_count: int = Field(
        0, ge=0, description="Partition-field values modelled."
    )
    bucket_allocation_failures_count: int = Field(
        0,
        ge=0,
        description="Buckets in which new entities were not modelled because the model "
        "hit its memory limit.",
    )
    memory_status: MemoryStatus = Field(
        MemoryStatus.OK,
        description="ok, soft_limit (older models are pruned to make room) or hard_limit "
        "(new entities are not modelled).",
    )


class DatafeedStatus(_Model):
    """Progress of the datafeed, so a restarted operator resumes where it stopped."""

    state: DatafeedState = Field(
        DatafeedState.STOPPED, description="started while pulling, stopped otherwise."
    )
    searched_until: int | None = Field(
        None,
        description="End (epoch ms, exclusive) of the data pulled so far: the datafeed "
        "resumes here (or just after the latest record the job analysed, if later).",
    )
    last_pull_time: datetime | None = Field(None, description="When data was last pulled.")
    end_reached: bool = Field(
        False,
        description="True once searchedUntil reached spec.datafeed.end: the job then "
        "closes by itself. A later spec.datafeed.end (or no datafeed) makes it false "
        "again and the job reopens.",
    )
    last_error: str | None = Field(
        None,
        max_length=_DESCRIPTION,
        description="The last pull error while it lasts (retried with backoff); cleared "
        "by the next successful pull.",
    )
    last_error_reason: str | None = Field(
        None,
        max_length=128,
        description="Why lastError happened: DatafeedError (the source or its answer), "
        "CredentialsNotFound (a Secret, ConfigMap or key the datafeed's authentication "
        "names is missing or the operator may not read it) or CredentialsInvalid (one "
        "that cannot be used); the Ready condition and the Warning event carry it.",
    )
    last_error_time: datetime | None = Field(None, description="When lastError last happened.")


class MLJobStatus(_Model):
    """The observed state of the job, written by the operator only."""

    state: JobState | None = Field(None, description="opening, opened, closing, closed or failed.")
    closed: bool = Field(
        False, description='True once the job is closed (the seed\'s {"closed": true}).'
    )
    observed_generation: int | None = Field(
        None, ge=0, description="The metadata.generation this status reflects."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Opened, Closing, Closed and Failed conditions.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    last_close: CloseRecord | None = Field(
        None, description="The latest close and what its housekeeping did."
    )
    last_open: OpenRecord | None = Field(None, description="The latest open or reopen.")
    last_handled_force_close: str | None = Field(
        None,
        max_length=_DESCRIPTION,
        description="The value of the ml.mljob.dev/force-close annotation last acted on; "
        "the same value is never acted on twice.",
    )
    data_counts: DataCounts = Field(
        default_factory=DataCounts, description="What the job has received and analysed."
    )
    model_size_stats: ModelSizeStats = Field(
        default_factory=ModelSizeStats, description="The size of the job's model."
    )
    model_snapshot_id: str | None = Field(
        None, max_length=_K8S_NAME, description="The latest model snapshot."
    )
    datafeed: DatafeedStatus | None = Field(
        None, description="Datafeed progress; unset without spec.datafeed."
    )

    def condition(self, type_: str) -> Condition | None:
        """The condition of this type, if set."""
        return next((c for c in self.conditions if c.type == type_), None)


# --------------------------------------------------------------------------- object


class ObjectMeta(_Model):
    """The parts of metav1.ObjectMeta the operator reads."""

    name: str = Field("", description="The object's name.")
    namespace: str | None = Field(None, description="The object's namespace.")
    uid: str | None = Field(None, description="The object's UID.")
    generation: int | None = Field(None, description="The spec's generation.")
    resource_version: str | None = Field(None, description="The object's resourceVersion.")
    creation_timestamp: datetime | None = Field(None, description="When it was created.")
    deletion_timestamp: datetime | None = Field(None, description="When deletion was requested.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")
    finalizers: list[str] = Field(default_factory=list, description="Finalizers.")


class MLJob(_Model):
    """An anomaly-detection job run by mljob-operator."""

    api_version: Literal["ml.mljob.dev/v1alpha1"] = Field(
        "ml.mljob.dev/v1alpha1", description="ml.mljob.dev/v1alpha1."
    )
    kind: Literal["MLJob"] = Field("MLJob", description="MLJob.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard metadata.")
    spec: MLJobSpec = Field(description="The desired state of the job.")
    status: MLJobStatus = Field(
        default_factory=MLJobStatus, description="The observed state of the job."
    )

    @property
    def force_close_value(self) -> str | None:
        """The force-close annotation's value, if set and non-empty."""
        return self.metadata.annotations.get(FORCE_CLOSE_ANNOTATION) or None
