"""Datafeeds: the operator pulls a job's data from Prometheus or an HTTP endpoint.

`planner` plans the intervals to pull (pure), `prometheus_source` and `http_source` fetch
one interval and turn it into the NDJSON the engine takes, and `runner` is the loop that
drives them.
Nothing here knows Kubernetes or the API models: the controller builds a `FeedConfig`
from the spec and gives the runner callables that post to the engine.
"""

from mljob_operator.datafeed.credentials import (
    ClientConfig,
    CredentialsInvalid,
    CredentialsNotFound,
    KeyRef,
)
from mljob_operator.datafeed.destinations import DestinationPolicy
from mljob_operator.datafeed.planner import (
    FeedConfig,
    HttpQuery,
    Plan,
    PrometheusQuery,
    Window,
    plan,
    resume_point,
    retry_delay_s,
)
from mljob_operator.datafeed.sources import FeedError, SourceAccess

__all__ = [
    "ClientConfig",
    "CredentialsInvalid",
    "CredentialsNotFound",
    "DestinationPolicy",
    "FeedConfig",
    "FeedError",
    "HttpQuery",
    "KeyRef",
    "Plan",
    "PrometheusQuery",
    "SourceAccess",
    "Window",
    "plan",
    "resume_point",
    "retry_delay_s",
]
