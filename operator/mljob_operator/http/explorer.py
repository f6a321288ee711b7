"""The anomaly explorer page (`GET /ui/`) and the jobs listing it starts from.

The page is static (HTML, one script, one stylesheet, all in the package under `http/ui/`;
no CDN) and loads without a token. Every data call it makes goes to this same API with the
user's bearer token, so it shows exactly what the TokenReview and SubjectAccessReview of
each route allow. The page keeps that token in sessionStorage, so it is served with a
strict Content-Security-Policy (script and style from this origin only, nothing inline):
a job name, label or error text the page shows can never run as script beside the token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from importlib import resources
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from mljob_operator.api import GROUP, PLURAL, MLJobStatus
from mljob_operator.api.listing import JobList, JobSummary
from mljob_operator.api.results import BucketPage
from mljob_operator.engine.persistence import NotFoundError, ResultsQuery
from mljob_operator.runtime import JobRuntime

ASSETS = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
TOP_BUCKET = ResultsQuery(sort="anomaly_score", desc=True, size=1)


def _asset(name: str) -> bytes:
    return resources.files("mljob_operator.http").joinpath("ui", name).read_bytes()


def add_ui_routes(app: web.Application) -> None:
    """`/ui/` (the page) and its two assets; `/ui` redirects so relative links resolve."""
    bodies = {name: _asset(name) for name in ASSETS}

    def serve(name: str) -> web.Response:
        return web.Response(
            body=bodies[name], content_type=ASSETS[name], charset="utf-8", headers=HEADERS
        )

    async def page(_: web.Request) -> web.Response:
        return serve("index.html")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["asset"]
        if name not in bodies:
            raise web.HTTPNotFound(text=f"no such asset: {name[:80]}")
        return serve(name)

    async def to_page(_: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect("/ui/")

    app.router.add_get("/ui", to_page)
    app.router.add_get("/ui/", page)
    app.router.add_get("/ui/{asset}", asset)


def list_denied(username: str, namespace: str) -> str:
    return (
        f'{username} cannot list MLJobs: needs "list" on "{PLURAL}" in API group '
        f'"{GROUP}" in namespace {namespace}'
    )


async def job_list(
    runtime: JobRuntime,
    listed: Iterable[Mapping[str, Any]],
    namespace: str,
    may_read: Callable[[str], Awaitable[bool]],
) -> JobList:
    """The MLJobs of `namespace` as the apiserver lists them (so every replica answers the
    same, whichever shards it holds), each with its highest bucket score from the store
    (read side by side) where the caller may read its results: `may_read("")` asks for the
    whole namespace at once, else each job is asked about."""
    held = sorted((_name_and_status(body) for body in listed), key=lambda job: job[0])
    names = [name for name, _ in held]
    if not await may_read(""):
        allowed = await asyncio.gather(*(may_read(name) for name in names))
        names = [name for name, ok in zip(names, allowed, strict=True) if ok]
    tops = await asyncio.gather(*(_top_bucket(runtime, f"{namespace}/{name}") for name in names))
    scores = dict(zip(names, tops, strict=True))
    jobs = [
        JobSummary(
            name=name,
            state=status.state,
            closed=status.closed,
            last_close=status.last_close,
            max_anomaly_score=_max_score(scores.get(name)),
            bucket_count=None if name not in scores else scores[name].count,
        )
        for name, status in held
    ]
    return JobList(count=len(jobs), jobs=jobs)


def _max_score(top: BucketPage | None) -> float | None:
    return top.buckets[0].anomaly_score if top is not None and top.buckets else None


def _name_and_status(body: Mapping[str, Any]) -> tuple[str, MLJobStatus]:
    name = str(body["metadata"]["name"])
    try:
        return name, MLJobStatus.model_validate(body.get("status") or {})
    except ValidationError:  # not written by this operator's version: no state to show
        return name, MLJobStatus()


async def _top_bucket(runtime: JobRuntime, job_id: str) -> BucketPage:
    try:
        return await runtime.buckets(job_id, TOP_BUCKET)
    except NotFoundError:  # not in the store yet (opening)
        return BucketPage(count=0, buckets=[])
