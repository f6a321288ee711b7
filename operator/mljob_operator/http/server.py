"""The data and results API, an aiohttp app on kopf's own event loop.

Paths are fixed by the API (`/v1/namespaces/{ns}/mljobs/{name}/...`). Data goes to the
engine job this process holds open; a job that exists but is not open answers 409 with a
message saying so, and results of closed jobs stay readable. Every error is JSON:
`{"error": {"status": N, "reason": ..., "message": ...}}`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from mljob_operator.http.params import BadRequest, parse_bool, parse_time_ms, results_query
from mljob_operator.runtime import JobNotOpenError, JobRuntime
from mljob_operator.store.base import StoreError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024
JOB_PATH = "/v1/namespaces/{namespace}/mljobs/{name}"

JobExists = Callable[[str, str], bool]
"""(namespace, name) → whether the MLJob exists (the operator's registry knows)."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(status: int, reason: str, message: str) -> dict[str, Any]:
    return {"error": {"status": status, "reason": reason, "message": message}}


def json_error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response(error_body(status, reason, message), status=status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as err:
        return json_error(400, "BadRequest", str(err))
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, "RequestEntityTooLarge", f"body larger than {MAX_BODY_BYTES} bytes")
    except web.HTTPException as err:
        if err.status >= 400:
            return json_error(err.status, err.reason, err.text or err.reason)
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "InternalError", "internal error; see the operator log")


class DataApi:
    def __init__(self, runtime: JobRuntime, job_exists: JobExists, wake: Callable[[str], None]):
        self.runtime = runtime
        self.job_exists = job_exists
        self.wake = wake

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[errors_as_json])
        app.router.add_post(JOB_PATH + "/data", self.post_data)
        app.router.add_post(JOB_PATH + "/flush", self.flush)
        app.router.add_get(JOB_PATH + "/results/buckets", self.buckets)
        app.router.add_get(JOB_PATH + "/results/records", self.records)
        app.router.add_get(JOB_PATH + "/modelsnapshots", self.snapshots)
        app.router.add_get(JOB_PATH + "/stats", self.stats)
        app.router.add_get("/healthz", self.healthz)
        return app

    def _job(self, request: web.Request) -> str:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if not self.job_exists(namespace, name):
            raise web.HTTPNotFound(text=f"MLJob {namespace}/{name} not found")
        return f"{namespace}/{name}"

    def _not_open(self, job_id: str) -> web.Response:
        return json_error(
            409,
            "JobNotOpen",
            f"MLJob {job_id} is closed (or not yet open) and takes no data; set "
            "spec.state: opened to reopen it. Its results stay readable.",
        )

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def post_data(self, request: web.Request) -> web.Response:
        job_id = self._job(request)
        if not self.runtime.is_accepting(job_id):
            return self._not_open(job_id)
        body = await request.read()
        if not body.strip():
            raise BadRequest("empty body: send NDJSON or a JSON array of records")
        try:
            counts = await self.runtime.post_data(job_id, body)
        except JobNotOpenError:
            return self._not_open(job_id)
        self.wake(job_id)
        return web.json_response(counts, status=202)

    async def flush(self, request: web.Request) -> web.Response:
        job_id = self._job(request)
        q = request.query
        try:
            result = await self.runtime.flush(
                job_id,
                parse_bool(q, "calcInterim"),
                parse_time_ms(q, "advanceTime"),
                parse_time_ms(q, "skipTime"),
            )
        except JobNotOpenError:
            return self._not_open(job_id)
        self.wake(job_id)
        return web.json_response(result)

    async def buckets(self, request: web.Request) -> web.Response:
        job_id = self._job(request)
        query = results_query(request.query, "anomalyScore")
        count, items = await self._store(self.runtime.store.query_buckets, job_id, query)
        return web.json_response({"count": count, "buckets": [b.to_api() for b in items]})

    async def records(self, request: web.Request) -> web.Response:
        job_id = self._job(request)
        query = results_query(request.query, "recordScore")
        count, items = await self._store(self.runtime.store.query_records, job_id, query)
        return web.json_response({"count": count, "records": [r.to_api() for r in items]})

    async def snapshots(self, request: web.Request) -> web.Response:
        job_id = self._job(request)
        snaps = await self._store(self.runtime.store.all_snapshots, job_id)
        items = [s.to_api() for s in snaps]
        return web.json_response({"count": len(items), "modelSnapshots": items})

    async def stats(self, request: web.Request) -> web.Response:
        job_id = self._job(request)
        live = self.runtime.stats(job_id)
        if live is None:
            row = await self._store(self.runtime.store.get_job, job_id)
            live = (row.data_counts.to_api(), row.model_size_stats.to_api()) if row else ({}, {})
        counts, sizes = live
        return web.json_response(
            {
                "jobId": job_id,
                "open": self.runtime.is_accepting(job_id),
                "dataCounts": counts,
                "modelSizeStats": sizes,
            }
        )

    async def _store(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except StoreError as err:
            raise BadRequest(str(err)) from err


async def start_server(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("data API listening on http://%s:%d", host, port)
    return runner
