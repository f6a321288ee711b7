"""Prometheus metrics through the real operator, scraped by a REAL Prometheus during a
datafeed run: the job's records-processed counter and its newest bucket's anomaly score
are found, with the close counted; the metrics port is plain HTTP and needs no token."""

from __future__ import annotations

from collections.abc import Callable

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess
from devtools.processes import free_port
from devtools.prometheus import Prometheus, openmetrics
from tests.e2e.jobs import status, wait_for
from tests.e2e.test_datafeed_prometheus import METRIC, RECORDS, feed_job, traffic, wait_closed


def found(value: float | None) -> tuple[float] | None:
    """A value that may be 0, for `wait_for` (which waits for a truthy answer)."""
    return None if value is None else (value,)


def test_a_real_prometheus_scrapes_the_jobs_figures(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    cp, ns, name = control_plane, namespace, "scraped-feed"
    metrics_addr = f"127.0.0.1:{free_port()}"
    with Prometheus(openmetrics(METRIC, traffic(), "Requests."), scrape=(metrics_addr,)) as prom:
        operator_factory(MLJOB_METRICS_ADDR=metrics_addr)
        cp.kubectl("apply", "-n", ns, "-f", "-", input=feed_job(name, prom.url))
        wait_closed(cp, ns, name)
        assert status(cp, ns, name)["dataCounts"]["processedRecordCount"] == RECORDS
        labels = f'namespace="{ns}",job="{name}"'

        def scraped(promql: str) -> float | None:
            result = prom.query(promql)
            return float(result[0]["value"][1]) if result else None  # type: ignore[index]

        processed = wait_for(
            lambda: scraped(f"mljob_records_processed_total{{{labels}}}") or None,
            "Prometheus to scrape the records-processed counter",
        )
        assert processed == RECORDS
        (score,) = wait_for(
            lambda: found(scraped(f"mljob_bucket_anomaly_score{{{labels}}}")),
            "Prometheus to scrape the newest bucket's anomaly score",
        )
        assert 0 <= score <= 100
        closed = scraped('mljob_closes_total{outcome="closed"}')
        assert closed is not None
        assert closed >= 1
        assert scraped('mljob_jobs{state="closed"}') == 1
        assert scraped("up") == 1, "the metrics port answers without a token"
