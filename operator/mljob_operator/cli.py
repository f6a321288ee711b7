"""`mljob` (also `kubectl mljob`): the seed service's job commands, the Kubernetes way.

Lifecycle commands (close, open, status) act on MLJob objects through the kubeconfig as
the user themselves, so their RBAC and the force-close admission policy apply exactly as
for `kubectl patch`; they then follow `status` and show each job's housekeeping steps live
(on stderr, so stdout stays the seed's `{"closed": true}`). Data commands (post, flush,
results, plot, snapshots) go to the operator's HTTP API (`--server`/`MLJOB_SERVER`) with the
kubeconfig user's bearer token or `--token`/`MLJOB_TOKEN`. Built on click (already a
dependency through kopf) and rich.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn

import click
import kubernetes
from rich.console import Console
from rich.live import Live
from rich.table import Table

from mljob_operator import terminal_plot
from mljob_operator.api import GROUP, PLURAL, VERSION, CloseStep, JobState, parse_duration
from mljob_operator.state_change import (
    ALL,
    InvalidSelection,
    NoMatch,
    Progress,
    StateChange,
    generation_of,
    select_names,
)

STEPS = [s.value for s in CloseStep]
err_console = Console(stderr=True)


def fail(message: str) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    sys.exit(1)


def emit(payload: Any) -> None:
    click.echo(json.dumps(payload))


def _api_message(err: kubernetes.client.ApiException) -> str:
    try:
        return str(json.loads(err.body or "{}").get("message") or err.reason)
    except ValueError:
        return str(err.reason)


@dataclass
class Ctx:
    kubeconfig: str | None
    context: str | None
    namespace_flag: str | None
    server: str | None
    token_flag: str | None
    ssl: ssl.SSLContext | None

    @cached_property
    def _kube(self) -> tuple[Any, str, str | None]:
        """Loaded on first use, so `mljob CMD --help` needs no kubeconfig."""
        return _kube(self.kubeconfig, self.context)

    @property
    def namespace(self) -> str:
        return self.namespace_flag or self._kube[1]

    @property
    def token(self) -> str | None:
        return self.token_flag or self._kube[2]

    @property
    def custom(self) -> Any:
        return kubernetes.client.CustomObjectsApi(self._kube[0])

    # -- Kubernetes --------------------------------------------------------------------

    def jobs(self, selector: str | None = None) -> list[dict[str, Any]]:
        try:
            listing = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, label_selector=selector or ""
            )
        except kubernetes.client.ApiException as err:
            fail(f"cannot list MLJobs in {self.namespace}: {_api_message(err)}")
        items: list[dict[str, Any]] = listing.get("items", [])
        return items

    def get(self, name: str) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except kubernetes.client.ApiException as err:
            fail(f"cannot read MLJob {self.namespace}/{name}: {_api_message(err)}")
        return obj

    def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                patch,
                _content_type="application/merge-patch+json",
            )
        except kubernetes.client.ApiException as err:
            fail(f"cannot update MLJob {self.namespace}/{name}: {_api_message(err)}")
        return obj

    def watch(self, timeout_s: int) -> Iterator[dict[str, Any]]:
        """The namespace's MLJobs as they are now, then as they change, for `timeout_s`."""
        stream = kubernetes.watch.Watch().stream(  # type: ignore[no-untyped-call]
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            timeout_seconds=timeout_s,
        )
        try:
            for event in stream:
                if event.get("type") != "ERROR":
                    yield event["object"]
        except kubernetes.client.ApiException as err:
            fail(f"cannot watch MLJobs in {self.namespace}: {_api_message(err)}")

    def may(self, verb: str, subresource: str, name: str) -> bool:
        """SelfSubjectAccessReview: a clear message up front; the apiserver (RBAC and the
        force-close admission policy) still decides."""
        k = kubernetes.client
        review = k.V1SelfSubjectAccessReview(
            spec=k.V1SelfSubjectAccessReviewSpec(
                resource_attributes=k.V1ResourceAttributes(
                    namespace=self.namespace,
                    name=name,
                    group=GROUP,
                    resource=PLURAL,
                    subresource=subresource,
                    verb=verb,
                )
            )
        )
        authz = kubernetes.client.AuthorizationV1Api(self._kube[0])
        try:
            result = authz.create_self_subject_access_review(review)
        except kubernetes.client.ApiException as err:
            fail(f"cannot check access: {_api_message(err)}")
        return bool(result.status and result.status.allowed)

    # -- the operator's HTTP API -------------------------------------------------------

    def call(
        self, method: str, path: str, query: dict[str, Any] | None = None, body: bytes | None = None
    ) -> Any:
        if not self.server:
            fail("the operator's API address is needed: --server URL or MLJOB_SERVER")
        if not self.token:
            fail("a bearer token is needed: a kubeconfig user with a token, --token or MLJOB_TOKEN")
        params = {k: _qs(v) for k, v in (query or {}).items() if v is not None}
        url = f"{self.server.rstrip('/')}/v1/namespaces/{self.namespace}/mljobs/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        req = urllib.request.Request(url, data=body, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if body is not None:
            req.add_header("Content-Type", "application/x-ndjson")
        try:
            with urllib.request.urlopen(req, timeout=300, context=self.ssl) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            try:
                message = json.loads(err.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = err.reason
            fail(f"{err.code}: {message}")
        except urllib.error.URLError as err:
            fail(f"cannot reach {self.server}: {err.reason}")


def _qs(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _ssl(ca: str | None, insecure: bool) -> ssl.SSLContext:
    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=ca)


def _kube(kubeconfig: str | None, context: str | None) -> tuple[Any, str, str | None]:
    """ApiClient, the context's namespace, and the user's bearer token if it has one."""
    config: Any = kubernetes.config
    try:
        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError) as err:
        fail(f"cannot load the kubeconfig: {err}")
    if context:
        active = next((c for c in contexts if c["name"] == context), active)
    namespace = (active or {}).get("context", {}).get("namespace") or "default"
    cfg = api_client.configuration
    if cfg.refresh_api_key_hook is not None:
        cfg.refresh_api_key_hook(cfg)  # exec plugins and expiring tokens
    auth = cfg.api_key.get("BearerToken") or cfg.api_key.get("authorization") or ""
    token = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else None
    return api_client, namespace, token


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig file.")
@click.option("--context", help="Kubeconfig context.")
@click.option("-n", "--namespace", help="Namespace (default: the context's).")
@click.option("--server", envvar="MLJOB_SERVER", help="The operator's API URL (https://...).")
@click.option("--token", envvar="MLJOB_TOKEN", help="Bearer token (default: the kubeconfig's).")
@click.option("--certificate-authority", envvar="MLJOB_CA", help="CA file for the operator's API.")
@click.option("--insecure-skip-tls-verify", is_flag=True, help="Do not verify the API's cert.")
@click.pass_context
def main(  # noqa: PLR0917 (click passes one parameter per option)
    ctx: click.Context,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    server: str | None,
    token: str | None,
    certificate_authority: str | None,
    insecure_skip_tls_verify: bool,
) -> None:
    """Close, open and inspect MLJobs (ml.mljob.dev); post data and read results."""
    if kubeconfig and os.pathsep in kubeconfig:
        kubeconfig = None  # a KUBECONFIG list: the client merges it from the environment
    ctx.obj = Ctx(
        kubeconfig,
        context,
        namespace,
        server,
        token,
        _ssl(certificate_authority, insecure_skip_tls_verify),
    )


# -- close / open ----------------------------------------------------------------------


def _select(
    c: Ctx, names: tuple[str, ...], selector: str | None, all_: bool, allow: bool
) -> list[str]:
    if not names and not all_ and not selector:
        fail("name the jobs (names or 'web-*' patterns), or use --all or -l SELECTOR")
    existing = [str(j["metadata"]["name"]) for j in c.jobs(selector)]
    expression = ",".join(names) if names else ALL
    try:
        return select_names(expression, existing, allow)
    except (NoMatch, InvalidSelection) as err:
        where = f" with labels {selector!r}" if selector else ""
        fail(f"{err} in namespace {c.namespace}{where}")


def _progress(c: Ctx, states: dict[str, dict[str, Any]], started: float) -> Table:
    table = Table(title=f"MLJobs in {c.namespace}", title_justify="left")
    table.add_column("job")
    table.add_column("state")
    table.add_column("housekeeping")
    table.add_column("elapsed", justify="right")
    for name, st in states.items():
        done = (st.get("lastClose") or {}).get("steps") or {}
        steps = " ".join(
            f"[green]✓ {s}[/green]" if s in done else f"[dim]· {s}[/dim]" for s in STEPS
        )
        if (st.get("lastClose") or {}).get("forced"):
            steps = "[yellow]forced: skipped[/yellow]"
        table.add_row(
            name, st.get("state") or "pending", steps, f"{time.monotonic() - started:.0f}s"
        )
    return table


def _wait(c: Ctx, generations: dict[str, int], change: StateChange, timeout_s: float) -> None:
    """Follow the jobs on one watch of the namespace (no request per job and tick) until
    all reach the state, one is refused, or the time is up."""
    started = time.monotonic()
    deadline = started + timeout_s
    target = change.target.value
    states: dict[str, dict[str, Any]] = {n: {} for n in generations}
    pending = set(generations)
    with Live(_progress(c, states, started), console=err_console, transient=False) as live:
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                fail(
                    f"timed out after {timeout_s:.0f}s waiting for {', '.join(sorted(pending))} "
                    f"to be {target}; the operator goes on (see `mljob status`)"
                )
            for obj in c.watch(max(1, math.ceil(remaining))):
                name = obj["metadata"]["name"]
                if name not in generations:
                    continue
                states[name] = obj.get("status") or {}
                progress, detail = change.progress(states[name], generations[name])
                live.update(_progress(c, states, started))
                if progress == Progress.REFUSED:
                    fail(f"{name} cannot be {target}: {detail}")
                if progress == Progress.REACHED:
                    pending.discard(name)
                if not pending:
                    return


def _request(c: Ctx, names: list[str], change: StateChange) -> dict[str, int]:
    """Patch every job; the generation each patch produced, to wait on."""
    generations = {}
    for name in names:
        current = c.get(name).get("status") if change.needs_current_status else None
        generations[name] = generation_of(c.patch(name, change.patch(current)))
    return generations


def _timeout(text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


@main.command()
@click.argument("jobs", nargs=-1)
@click.option("-l", "--selector", help="Label selector.")
@click.option("--all", "all_", is_flag=True, help="Every MLJob in the namespace.")
@click.option("--force", is_flag=True, help="Skip housekeeping (needs mljobs/forceclose).")
@click.option("--timeout", default="30m", show_default=True, help="How long to wait.")
@click.option("--allow-no-match/--no-allow-no-match", default=True, show_default=True)
@click.option("--no-wait", is_flag=True, help="Set spec.state and return.")
@click.pass_obj
def close(  # noqa: PLR0917 (click passes one parameter per option)
    c: Ctx,
    jobs: tuple[str, ...],
    selector: str | None,
    all_: bool,
    force: bool,
    timeout: str,
    allow_no_match: bool,
    no_wait: bool,
) -> None:
    """Close JOBS (names, 'web-*' patterns or _all): housekeeping, then closed."""
    timeout_s = _timeout(timeout)
    names = _select(c, jobs, selector, all_, allow_no_match)
    for name in names if force else []:
        if not c.may("create", "forceclose", name):
            fail(
                f'force-closing {c.namespace}/{name} needs "create" on "{PLURAL}/forceclose" '
                f'in API group "{GROUP}" (ClusterRole mljob-admin)'
            )
    change = StateChange(JobState.CLOSED, force)
    generations = _request(c, names, change)
    if no_wait:
        emit({"closed": False, "requested": names})
        return
    _wait(c, generations, change, timeout_s)
    emit({"closed": True})


@main.command("open")
@click.argument("jobs", nargs=-1, required=True)
@click.option("--timeout", default="30m", show_default=True, help="How long to wait.")
@click.option("--no-wait", is_flag=True, help="Set spec.state and return.")
@click.pass_obj
def open_(c: Ctx, jobs: tuple[str, ...], timeout: str, no_wait: bool) -> None:
    """Open JOBS: the model is restored from the latest snapshot."""
    timeout_s = _timeout(timeout)
    names = _select(c, jobs, None, False, True)
    change = StateChange(JobState.OPENED)
    generations = _request(c, names, change)
    if not no_wait:
        _wait(c, generations, change, timeout_s)
    emit({"opened": not no_wait})


# -- status ----------------------------------------------------------------------------


@main.command()
@click.argument("jobs", nargs=-1)
@click.option("-l", "--selector", help="Label selector.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def status(c: Ctx, jobs: tuple[str, ...], selector: str | None, output: str) -> None:
    """State, data counts and last close of MLJobs."""
    items = [j for j in c.jobs(selector) if not jobs or j["metadata"]["name"] in jobs]
    if output == "json":
        emit({j["metadata"]["name"]: j.get("status") or {} for j in items})
        return
    table = Table()
    for col in ("job", "desired", "state", "processed", "buckets", "snapshot", "last close"):
        table.add_column(col)
    for j in items:
        st = j.get("status") or {}
        counts = st.get("dataCounts") or {}
        last = st.get("lastClose") or {}
        closed_at = last.get("completedAt") or ""
        forced = " (forced)" if last.get("forced") else ""
        table.add_row(
            j["metadata"]["name"],
            (j.get("spec") or {}).get("state", "opened"),
            st.get("state") or "pending",
            str(counts.get("processedRecordCount", 0)),
            str(counts.get("bucketCount", 0)),
            st.get("modelSnapshotId") or "",
            f"{closed_at}{forced}",
        )
    Console().print(table)


# -- data and results --------------------------------------------------------------------


@main.command()
@click.argument("job")
@click.argument("file", type=click.File("rb"))
@click.pass_obj
def post(c: Ctx, job: str, file: Any) -> None:
    """Post NDJSON or a JSON array from FILE (- for stdin) to JOB; prints data counts."""
    emit(c.call("POST", f"{job}/data", body=file.read()))


@main.command()
@click.argument("job")
@click.option("--calc-interim", is_flag=True, help="Also compute interim results.")
@click.option("--advance-time", help="Finalise buckets up to this time (epoch ms or ISO 8601).")
@click.option("--skip-time", help="Skip to this time (epoch ms or ISO 8601).")
@click.pass_obj
def flush(
    c: Ctx, job: str, calc_interim: bool, advance_time: str | None, skip_time: str | None
) -> None:
    """Finalise JOB's buffered buckets."""
    query = {"calcInterim": calc_interim, "advanceTime": advance_time, "skipTime": skip_time}
    emit(c.call("POST", f"{job}/flush", query))


def _time(ms: Any) -> str:
    return datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="seconds")


@main.command()
@click.argument("job")
@click.option("--records", is_flag=True, help="Record results instead of buckets.")
@click.option("--start", help="From this time (epoch ms or ISO 8601).")
@click.option("--end", help="Before this time.")
@click.option("--min-score", type=float, help="Minimum anomaly (or record) score.")
@click.option("--exclude-interim", is_flag=True)
@click.option("--sort", help="Sort field (e.g. anomalyScore).")
@click.option("--desc", is_flag=True)
@click.option("--from", "from_", type=int, default=0)
@click.option("--size", type=int, default=100)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def results(  # noqa: PLR0913, PLR0917 (click passes one parameter per option)
    c: Ctx,
    job: str,
    records: bool,
    start: str | None,
    end: str | None,
    min_score: float | None,
    exclude_interim: bool,
    sort: str | None,
    desc: bool,
    from_: int,
    size: int,
    output: str,
) -> None:
    """Bucket (or record) results of JOB."""
    kind = "records" if records else "buckets"
    query = {
        "start": start,
        "end": end,
        "recordScore" if records else "anomalyScore": min_score,
        "excludeInterim": exclude_interim or None,
        "sort": sort,
        "desc": desc or None,
        "from": from_,
        "size": size,
    }
    page = c.call("GET", f"{job}/results/{kind}", query)
    if output == "json":
        emit(page)
        return
    table = Table(title=f"{job}: {page['count']} {kind}", title_justify="left")
    if records:
        for col in ("time", "score", "probability", "function", "field", "by", "actual", "typical"):
            table.add_column(col)
        for r in page["records"]:
            table.add_row(
                _time(r["timestamp"]),
                f"{r['recordScore']:.1f}",
                f"{r['probability']:.3g}",
                r["function"],
                r.get("fieldName") or "",
                r.get("byFieldValue") or r.get("partitionFieldValue") or "",
                ", ".join(f"{v:.4g}" for v in r["actual"]),
                ", ".join(f"{v:.4g}" for v in r["typical"]),
            )
    else:
        for col in ("time", "score", "initial", "events", "interim"):
            table.add_column(col, justify="right")
        for b in page["buckets"]:
            table.add_row(
                _time(b["timestamp"]),
                f"{b['anomalyScore']:.1f}",
                f"{b['initialAnomalyScore']:.1f}",
                str(b["eventCount"]),
                "yes" if b["isInterim"] else "",
            )
    Console().print(table)


PAGE = 10_000
ENABLE_HINT = (
    "model plot is off for {job} (no model plot results in this range), so only its "
    "anomalies are drawn; to see the series and its expected band: kubectl patch mljob {job} "
    '--type merge -p \'{{"spec":{{"modelPlotConfig":{{"enabled":true}}}}}}\''
)


def _series_key(item: dict[str, Any]) -> tuple[str | None, str | None]:
    return item.get("partitionFieldValue"), item.get("byFieldValue")


def _series_name(key: tuple[str | None, str | None], first: dict[str, Any]) -> str:
    """`host=web-1 method=GET`: the split fields' names (as a record or point names them)
    and the series' values."""
    names = (first.get("partitionFieldName") or "partition", first.get("byFieldName") or "by")
    return " ".join(f"{n}={v}" for n, v in zip(names, key, strict=True) if v is not None)


@main.command()
@click.argument("job")
@click.option("--start", help="From this time (epoch ms or ISO 8601).")
@click.option("--end", help="Before this time.")
@click.option("--partition", "partition_value", help="The partition-field value to draw.")
@click.option("--by", "by_value", help="The by-field value to draw.")
@click.option("--detector", type=int, default=0, show_default=True, help="Detector index.")
@click.option("--width", type=int, help="Chart width (default: the terminal's).")
@click.option("--height", type=int, help="Chart height (default: the terminal's).")
@click.option("--color/--no-color", "colour", default=None, help="Default: when a terminal.")
@click.pass_obj
def plot(  # noqa: PLR0913, PLR0917 (click passes one parameter per option)
    c: Ctx,
    job: str,
    start: str | None,
    end: str | None,
    partition_value: str | None,
    by_value: str | None,
    detector: int,
    width: int | None,
    height: int | None,
    colour: bool | None,
) -> None:
    """Draw JOB's single-metric view: the actual series, the model's band, anomalies."""
    window = {"start": start, "end": end, "size": PAGE, "sort": "timestamp"}
    page = c.call(
        "GET",
        f"{job}/results/modelplot",
        {**window, "partitionFieldValue": partition_value, "byFieldValue": by_value},
    )
    points = [p for p in page["modelPlot"] if p["detectorIndex"] == detector]
    records = [
        r
        for r in c.call("GET", f"{job}/results/records", window)["records"]
        if r["detectorIndex"] == detector
        and (partition_value is None or r.get("partitionFieldValue") == partition_value)
        and (by_value is None or r.get("byFieldValue") == by_value)
    ]
    shown = points or records
    if not points:
        err_console.print(ENABLE_HINT.format(job=job), highlight=False, markup=False)
    elif page["count"] > PAGE:
        err_console.print(f"the first {PAGE} of {page['count']} points; narrow with --start/--end")
    keys = list(dict.fromkeys(_series_key(x) for x in shown))
    title = f"{c.namespace}/{job} detector {detector}"
    if keys:
        key = keys[0]
        first = next(x for x in shown if _series_key(x) == key)
        name = _series_name(key, first)
        title += f" {name}" if name else ""
        if len(keys) > 1:
            err_console.print(
                f"{len(keys)} series; showing {name}; choose one with --partition/--by",
                highlight=False,
            )
        points = [p for p in points if _series_key(p) == key]
        records = [r for r in records if _series_key(r) == key]
    cols, lines = shutil.get_terminal_size((100, 30))
    click.echo(
        terminal_plot.render(
            points,
            terminal_plot.anomalies_of(records),
            title=title,
            width=width or min(cols, 160),
            height=height or max(12, min(lines - 8, 30)),
            colour=sys.stdout.isatty() if colour is None else colour,
        ),
        nl=False,
    )


@main.command()
@click.argument("job")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def snapshots(c: Ctx, job: str, output: str) -> None:
    """Model snapshots of JOB."""
    page = c.call("GET", f"{job}/modelsnapshots", {"size": 10_000})
    if output == "json":
        emit(page)
        return
    table = Table(title=f"{job}: {page['count']} model snapshots", title_justify="left")
    for col in ("snapshot", "time", "latest record", "bytes", "retain", "description"):
        table.add_column(col)
    for s in page["modelSnapshots"]:
        latest = s.get("latestRecordTimeStamp")
        table.add_row(
            s["snapshotId"],
            _time(s["timestamp"]),
            _time(latest) if latest is not None else "",
            str(s["sizeBytes"]),
            "yes" if s["retain"] else "",
            s["description"],
        )
    Console().print(table)


if __name__ == "__main__":
    main(prog_name=Path(sys.argv[0]).name)
