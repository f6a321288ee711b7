"""The anomaly explorer page (`GET /ui/`) and the jobs listing it starts from.

The page is static (HTML, one script, one stylesheet, all in the package under `http/ui/`;
no CDN) and loads without a token. Every data call it makes goes to this same API with the
user's bearer token, so it shows exactly what the TokenReview and SubjectAccessReview of
each route allow. The page keeps that token in sessionStorage, so it is served with a
strict Content-Security-Policy (script and style from this origin only, nothing inline):
a job name, label or error text the page shows can never run as script beside the token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from mljob_operator.api import GROUP, PLURAL, MLJobStatus
from mljob_operator.api.listing import JobList, JobSummary
from mljob_operator.engine.persistence import BucketSummary
from mljob_operator.http.desired import JobsPage
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
NO_BUCKETS = BucketSummary(count=0, max_score=None)


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
    page: JobsPage,
    held: Callable[[str], bool],
    namespace: str,
    may_read: Callable[[str], Awaitable[bool]],
    may_read_each: Callable[[Sequence[str]], Awaitable[list[bool]]],
) -> JobList:
    """A page of the namespace's MLJobs as the apiserver lists them (so every replica
    answers the same, whichever shards it holds), those `held` by this operator, each with
    its bucket count and highest bucket score where the caller may read its results.

    What one call costs is bounded by the page: `may_read("")` asks once for the whole
    namespace, and only if that is denied `may_read_each` asks about each job of the page
    (the authorizer bounds those reviews); the figures of every readable job come from
    one grouped store query."""
    jobs = sorted(
        (_name_and_status(body) for body in page.items if held(_name(body))),
        key=lambda job: job[0],
    )
    names = [name for name, _ in jobs]
    if not await may_read(""):
        allowed = await may_read_each(names)
        names = [name for name, ok in zip(names, allowed, strict=True) if ok]
    readable = set(names)
    figures = await runtime.bucket_summaries([f"{namespace}/{name}" for name in names])
    summaries = []
    for name, status in jobs:
        figure = figures.get(f"{namespace}/{name}", NO_BUCKETS)
        summaries.append(
            JobSummary(
                name=name,
                state=status.state,
                closed=status.closed,
                last_close=status.last_close,
                max_anomaly_score=figure.max_score if name in readable else None,
                bucket_count=figure.count if name in readable else None,
            )
        )
    return JobList(
        count=len(summaries),
        jobs=summaries,
        continue_=page.continue_,
        remaining_item_count=page.remaining,
    )


def _name(body: Mapping[str, Any]) -> str:
    return str(body["metadata"]["name"])


def _name_and_status(body: Mapping[str, Any]) -> tuple[str, MLJobStatus]:
    try:
        return _name(body), MLJobStatus.model_validate(body.get("status") or {})
    except ValidationError:  # not written by this operator's version: no state to show
        return _name(body), MLJobStatus()
