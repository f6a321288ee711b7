"""The data and results API, an aiohttp app on kopf's own event loop.

Routes come from one table (`routes.ROUTES`, which `openapi.py` describes) and every
answer is a model of `api.results`, so the document and the wire cannot drift. Every job
route is authenticated and authorized before anything else
is looked at (so an unauthorized caller cannot probe which jobs exist), then the job must
be one this operator reconciles (404 otherwise). In leased mode a call for a job another
replica holds is forwarded there only then (`Forwarding`), a data post once its bytes
are reserved in the ingest budget. Data goes to the engine job this process
holds open; a job that exists but is not open answers 409 saying it is closed, while its
results and snapshots stay readable. Close and open go through the apiserver (`desired`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from mljob_operator import metrics
from mljob_operator.api import JobState
from mljob_operator.api import results as shapes
from mljob_operator.api.permissions import (
    FORCE_CLOSE,
    LIST_JOBS,
    OPEN_CLOSE,
    READ_RESULTS,
)
from mljob_operator.engine.errors import DataFormatError, JobClosedError
from mljob_operator.engine.job import JobNotClosedError
from mljob_operator.engine.persistence import (
    ActiveSnapshotError,
    NotFoundError,
    StoreError,
    WriteRefused,
)
from mljob_operator.http.auth import Authorizer, User
from mljob_operator.http.desired import StateRequests
from mljob_operator.http.errors import (
    ApiError,
    Conflict,
    Forbidden,
    JobNotOpen,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    errors_as_json,
)
from mljob_operator.http.explorer import add_ui_routes, job_list, list_denied
from mljob_operator.http.limits import IngestBudget, WaiterLimit
from mljob_operator.http.openapi import openapi_document
from mljob_operator.http.params import (
    BadRequest,
    list_page,
    model_plot_query,
    parse_bool,
    parse_time_ms,
    parse_wait,
    results_query,
    snapshots_query,
)
from mljob_operator.http.routes import ROUTES, Route
from mljob_operator.runtime import (
    RETRY_AFTER_S,
    JobNotOpenError,
    JobRuntime,
    StoreUnavailableError,
)
from mljob_operator.state_change import InvalidSelection, NoMatch, select_names

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_WAIT = timedelta(minutes=30)
CALLER = web.RequestKey("caller", User)
"""The authenticated caller of a guarded route."""


@dataclass(frozen=True)
class ApiLimits:
    ingest: IngestBudget
    waiters: WaiterLimit


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """mljob_http_requests by route template (never the raw path) and final status."""
    response = await handler(request)
    info = request.match_info
    route = info.route.resource.canonical if info.route.resource is not None else "unmatched"
    metrics.HTTP_REQUESTS.labels(route, str(response.status)).inc()
    return response


def answer(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        body=model.model_dump_json(by_alias=True), status=status, content_type="application/json"
    )


class JobDirectory(Protocol):
    """What the API asks the operator about the MLJobs it reconciles."""

    def exists(self, namespace: str, name: str) -> bool: ...

    def state(self, namespace: str, name: str) -> str | None:
        """The `status.state` the controller last wrote, if any."""

    def fed_by_datafeed(self, namespace: str, name: str) -> bool:
        """Whether the job takes its data from `spec.datafeed` (so not from the API)."""

    def wake(self, job_id: str) -> None:
        """Tell the job's controller that something changed (data, a revert)."""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Forwarding(Protocol):
    """Leased mode: where a call for a job held by another replica goes (`http.forward`)."""

    def target(self, request: web.Request) -> str | None:
        """For a call of a `holder` route: the holder's address, None to answer here;
        raises `Unavailable` when nobody holds the job right now."""

    async def forward(self, request: web.Request, target: str) -> web.StreamResponse: ...

    def held_here(self, namespace: str, name: str) -> bool: ...

    def moved(self, namespace: str, name: str) -> ApiError:
        """The answer for a job this replica stopped holding."""


class DataApi:
    def __init__(
        self,
        runtime: JobRuntime,
        auth: Authorizer,
        desired: StateRequests,
        jobs: JobDirectory,
        max_body_bytes: int,
        limits: ApiLimits | None = None,
        *,
        forwarder: Forwarding | None = None,
    ) -> None:
        self.limits = limits or ApiLimits(IngestBudget(4 * max_body_bytes), WaiterLimit(16))
        self.runtime = runtime
        self.auth = auth
        self.desired = desired
        self.jobs = jobs
        self.max_body_bytes = max_body_bytes
        self.forwarder = forwarder
        self._openapi = orjson.dumps(openapi_document(max_body_bytes))

    def app(self) -> web.Application:
        """The app of `routes.ROUTES`: guarded routes authenticate, authorize and find the
        job before their handler runs."""
        app = web.Application(
            client_max_size=self.max_body_bytes,
            middlewares=[count_requests, errors_as_json(self.max_body_bytes)],
        )
        for route in ROUTES:
            handler: Handler = getattr(self, route.handler)
            if route.guarded and route.permission is not None:
                handler = self._guard(route, handler)
            app.router.add_route(route.method, route.path, handler)
        add_ui_routes(app)
        return app

    # -- plumbing ------------------------------------------------------------------

    def _guard(self, route: Route, handler: Handler) -> Handler:
        assert route.permission is not None
        permission, action, data = route.permission, route.action, route.body == "records"
        forwarder = self.forwarder if route.holder else None

        async def guarded(request: web.Request) -> web.StreamResponse:
            user = await self._caller(request)
            namespace, name = request.match_info["namespace"], request.match_info["name"]
            await self.auth.require(user, permission, namespace, name, action)
            if not self.jobs.exists(namespace, name):
                raise NotFound(f"MLJob {namespace}/{name} not found")
            request[CALLER] = user
            target = None if forwarder is None else forwarder.target(request)
            if target is not None:
                return await self._forward(request, target, data)
            return await handler(request)

        return guarded

    async def _forward(self, request: web.Request, target: str, data: bool) -> web.StreamResponse:
        """An authorized call sent on to the job's holder, its body streamed; a data post
        holds its share of the ingest budget meanwhile, as when answered here."""
        assert self.forwarder is not None
        size = self._declared_size(request)
        if not data:
            return await self.forwarder.forward(request, target)
        with self.limits.ingest.reserve(size if size is not None else self.max_body_bytes):
            return await self.forwarder.forward(request, target)

    async def _caller(self, request: web.Request) -> User:
        return await self.auth.authenticate(
            request.headers.get("Authorization"), request.remote or ""
        )

    @staticmethod
    def _job(request: web.Request) -> str:
        return f"{request.match_info['namespace']}/{request.match_info['name']}"

    def _not_open(self, job_id: str) -> ApiError:
        """409 for a job that is closed; in leased mode a 503 instead when the job is
        not this replica's any more (it is open on its new holder)."""
        namespace, name = job_id.split("/", 1)
        if self.forwarder is not None and not self.forwarder.held_here(namespace, name):
            return self.forwarder.moved(namespace, name)
        return JobNotOpen(
            f"MLJob {job_id} is closed (or not yet open) and takes no data; set "
            "spec.state: opened (or POST .../open) to reopen it. Its results stay readable."
        )

    @staticmethod
    def _store_unavailable(job_id: str, err: StoreUnavailableError) -> Unavailable:
        return Unavailable(
            f"MLJob {job_id}: nothing of this request was stored ({err}); the job was "
            f"reloaded from what it had acknowledged. Retry in {RETRY_AFTER_S}s.",
            {"Retry-After": str(RETRY_AFTER_S)},
        )

    def _refuse_if_fed_by_datafeed(self, job_id: str) -> None:
        """Data and time of a datafeed job come from its datafeed alone: a post or a flush
        from outside would interleave with its pulls."""
        if self.jobs.fed_by_datafeed(*job_id.split("/", 1)):
            raise Conflict(
                f"MLJob {job_id} takes its data from its datafeed (spec.datafeed); remove "
                "the datafeed to post data to it or flush it"
            )

    async def _translated(self, work: Awaitable[T]) -> T:
        """Store errors as API errors: 404, 409 for the active snapshot, 503 with
        Retry-After for a write refused for now (a shard lost to another replica, as data
        and flush answer it), else 400."""
        try:
            return await work
        except NotFoundError as err:
            raise NotFound(str(err).strip("'\"")) from err
        except ActiveSnapshotError as err:
            raise Conflict(f"{err}; it cannot be deleted (revert to another one first)") from err
        except WriteRefused as err:
            raise Unavailable(
                f"nothing was written ({err}); retry in {RETRY_AFTER_S}s",
                {"Retry-After": str(RETRY_AFTER_S)},
            ) from err
        except StoreError as err:
            raise BadRequest(str(err)) from err

    def _declared_size(self, request: web.Request) -> int | None:
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            raise PayloadTooLarge(f"body of {length} bytes is over the {self.max_body_bytes} limit")
        return length

    async def _body(self, request: web.Request) -> bytes:
        self._declared_size(request)
        return await request.read()

    # -- unauthenticated -------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return answer(shapes.Health(status="ok"))

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

    async def list_jobs(self, request: web.Request) -> web.Response:
        user = await self._caller(request)
        namespace = request.match_info["namespace"]
        if not await self.auth.allowed(user, LIST_JOBS, namespace, ""):
            raise Forbidden(list_denied(user.username, namespace))
        page = await self.desired.page(namespace, *list_page(request.query))

        async def may_read(name: str) -> bool:
            return await self.auth.allowed(user, READ_RESULTS, namespace, name)

        async def may_read_each(names: Sequence[str]) -> list[bool]:
            return await self.auth.allowed_each(user, READ_RESULTS, namespace, names)

        def held(name: str) -> bool:
            return self.jobs.exists(namespace, name)

        listing = job_list(self.runtime, page, held, namespace, may_read, may_read_each)
        return answer(await listing)

    # -- data ------------------------------------------------------------------------

    async def post_data(self, request: web.Request) -> web.Response:
        job_id = self._job(request)
        self._refuse_if_fed_by_datafeed(job_id)
        if not self.runtime.is_accepting(job_id):
            raise self._not_open(job_id)
        size = request.content_length
        with self.limits.ingest.reserve(size if size is not None else self.max_body_bytes):
            body = await self._body(request)
            if not body.strip():
                raise BadRequest("empty body: send NDJSON or a JSON array of records")
            try:
                counts = await self.runtime.post_data(job_id, body)
            except (JobNotOpenError, JobClosedError):
                raise self._not_open(job_id) from None
            except StoreUnavailableError as err:
                raise self._store_unavailable(job_id, err) from err
            except DataFormatError as err:
                raise BadRequest(f"malformed body: {err}") from err
        self.jobs.wake(job_id)
        return answer(counts, status=202)

    async def flush(self, request: web.Request) -> web.Response:
        job_id = self._job(request)
        self._refuse_if_fed_by_datafeed(job_id)
        q = request.query
        calc_interim = parse_bool(q, "calcInterim")
        advance, skip = parse_time_ms(q, "advanceTime"), parse_time_ms(q, "skipTime")
        try:
            result = await self.runtime.flush(job_id, calc_interim, advance, skip)
        except (JobNotOpenError, JobClosedError):
            raise self._not_open(job_id) from None
        except StoreUnavailableError as err:
            raise self._store_unavailable(job_id, err) from err
        except DataFormatError as err:
            raise BadRequest(str(err)) from err
        self.jobs.wake(job_id)
        return answer(result)

    # -- desired state ---------------------------------------------------------------

    async def open(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        timeout = parse_wait(request.query, "timeout", DEFAULT_WAIT)
        with self.limits.waiters.hold(request[CALLER].username):
            await self.desired.apply(namespace, [name], JobState.OPENED, timeout)
        return answer(shapes.Opened(opened=True))

    async def close(self, request: web.Request) -> web.Response:
        user = await self._caller(request)
        namespace, expression = request.match_info["namespace"], request.match_info["names"]
        q = request.query
        force = parse_bool(q, "force")
        allow_no_match = parse_bool(q, "allowNoMatch", default=True)
        timeout = parse_wait(q, "timeout", DEFAULT_WAIT)
        names = await self._select(user, namespace, expression, allow_no_match)
        for name in names:
            await self.auth.require(user, OPEN_CLOSE, namespace, name, "close the job")
            if force:
                await self.auth.require(user, FORCE_CLOSE, namespace, name, "force-close the job")
        if names:
            with self.limits.waiters.hold(user.username):
                await self.desired.apply(namespace, names, JobState.CLOSED, timeout, force=force)
        return answer(shapes.Closed(closed=True))

    async def _select(
        self, user: User, namespace: str, expression: str, allow_no_match: bool
    ) -> list[str]:
        """Resolve the names; a caller who may not close a plainly named job learns 403
        before whether it exists."""
        plain = [p.strip() for p in expression.split(",") if p.strip() and "*" not in p]
        for name in plain:
            if name != "_all":
                await self.auth.require(user, OPEN_CLOSE, namespace, name, "close the job")
        existing = [
            n for n in await self.desired.names(namespace) if self.jobs.exists(namespace, n)
        ]
        try:
            return select_names(expression, existing, allow_no_match)
        except NoMatch as err:
            raise NotFound(f"{err} in namespace {namespace}") from err
        except InvalidSelection as err:
            raise BadRequest(str(err)) from err

    # -- results ---------------------------------------------------------------------

    async def buckets(self, request: web.Request) -> web.Response:
        query = results_query(request.query, "anomalyScore")
        return answer(await self._translated(self.runtime.buckets(self._job(request), query)))

    async def records(self, request: web.Request) -> web.Response:
        query = results_query(request.query, "recordScore")
        return answer(await self._translated(self.runtime.records(self._job(request), query)))

    async def model_plot(self, request: web.Request) -> web.Response:
        query = model_plot_query(request.query)
        return answer(await self._translated(self.runtime.model_plot(self._job(request), query)))

    async def influencers(self, request: web.Request) -> web.Response:
        query = results_query(request.query, "influencerScore")
        return answer(await self._translated(self.runtime.influencers(self._job(request), query)))

    async def stats(self, request: web.Request) -> web.Response:
        job_id = self._job(request)
        counts, sizes, active = await self._translated(self.runtime.recorded_stats(job_id))
        state = self.jobs.state(request.match_info["namespace"], request.match_info["name"])
        return answer(
            shapes.JobStats(
                job_id=job_id,
                state=None if state is None else JobState(state),
                open=self.runtime.is_accepting(job_id),
                model_snapshot_id=active,
                data_counts=counts,
                model_size_stats=sizes,
            )
        )

    # -- model snapshots -------------------------------------------------------------

    async def snapshots(self, request: web.Request) -> web.Response:
        query = snapshots_query(request.query)
        return answer(await self._translated(self.runtime.snapshots(self._job(request), query)))

    async def _snapshot(self, request: web.Request) -> shapes.ModelSnapshot:
        job_id, snapshot_id = self._job(request), request.match_info["snapshotId"]
        snap = await self._translated(self.runtime.snapshot(job_id, snapshot_id))
        if snap is None:
            raise NotFound(f"no model snapshot {snapshot_id!r} for MLJob {job_id}")
        return snap

    async def snapshot(self, request: web.Request) -> web.Response:
        return answer(shapes.SnapshotAnswer(model=await self._snapshot(request)))

    async def update_snapshot(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        try:
            update = shapes.SnapshotUpdate.model_validate_json(body, strict=True)
        except ValidationError:
            raise BadRequest('the body must be {"retain": true|false}') from None
        job_id, snapshot_id = self._job(request), request.match_info["snapshotId"]
        snap = await self._translated(
            self.runtime.retain_snapshot(job_id, snapshot_id, update.retain)
        )
        return answer(shapes.SnapshotUpdated(acknowledged=True, model=snap))

    async def revert_snapshot(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        job_id, snapshot_id = self._job(request), request.match_info["snapshotId"]
        delete_results = parse_bool(request.query, "deleteInterveningResults")
        await self._snapshot(request)
        state = self.jobs.state(namespace, name)
        if state != JobState.CLOSED or self.runtime.is_loaded(job_id):
            raise Conflict(
                f"MLJob {job_id} is {state or 'not closed'}; close it before reverting its model"
            )
        try:
            snap = await self._translated(self.runtime.revert(job_id, snapshot_id, delete_results))
        except JobNotClosedError as err:
            raise Conflict(str(err)) from err
        self.jobs.wake(job_id)
        return answer(shapes.SnapshotAnswer(model=snap))

    async def delete_snapshot(self, request: web.Request) -> web.Response:
        job_id, snapshot_id = self._job(request), request.match_info["snapshotId"]
        await self._translated(self.runtime.delete_snapshot(job_id, snapshot_id))
        return answer(shapes.Acknowledged(acknowledged=True))


async def start_server(
    app: web.Application, host: str, port: int, ssl_context: Any = None, what: str = "data API"
) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    scheme = "https" if ssl_context is not None else "http"
    log.info("%s listening on %s://%s:%d", what, scheme, host, port)
    return runner
