"""Every route of the data API, once: the aiohttp app is built from this table and so are the
paths of the OpenAPI document, so neither can list a route, a parameter or an answer the
other does not.

A route names its handler (a `DataApi` method), the permission it needs (checked with
SubjectAccessReview before anything else for guarded job routes), its query parameters,
request body and answers (models from `api.results`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from mljob_operator.api import DataCounts
from mljob_operator.api import results as shapes
from mljob_operator.api.listing import JobList
from mljob_operator.api.permissions import (
    FORCE_CLOSE,
    LIST_JOBS,
    OPEN_CLOSE,
    POST_DATA,
    READ_RESULTS,
    READ_SNAPSHOTS,
    Permission,
)
from mljob_operator.http.params import (
    BUCKET_SORT_NAMES,
    DEFAULT_LIST_LIMIT,
    INFLUENCER_SORT_NAMES,
    MAX_CONTINUE,
    MAX_LIST_LIMIT,
    MAX_OFFSET,
    MAX_PAGE_SIZE,
    MAX_SPLIT_VALUE,
    MODEL_PLOT_SORT_NAMES,
    RECORD_SORT_NAMES,
    SNAPSHOT_SORT_NAMES,
)

JOB = "/v1/namespaces/{namespace}/mljobs/{name}"
SNAPSHOT = JOB + "/modelsnapshots/{snapshotId}"
CLOSE = "/v1/namespaces/{namespace}/mljobs/{names}/close"

MANAGE_SNAPSHOTS = OPEN_CLOSE
"""Changing, reverting or deleting model snapshots manages the job's model, which the
roles tie to the right to open and close it (mljob-editor and mljob-admin)."""


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True)
class Route:
    method: Literal["GET", "POST", "DELETE"]
    path: str
    operation_id: str
    handler: str
    """The `DataApi` method that answers."""
    summary: str
    ok: tuple[int, type[BaseModel]]
    permission: Permission | None = None
    """None: answered without a token."""
    action: str = ""
    """What the caller may not do, in a 403 message ("may not <action>")."""
    guarded: bool = True
    """Authenticate, authorize and require the job before the handler; a route that
    checks several jobs itself (close) is not."""
    query: tuple[Param, ...] = ()
    body: Literal["records"] | type[BaseModel] | None = None
    holder: bool = False
    """Leased mode: answered by the replica holding the job, as it needs the job's engine;
    every other route is answered by any replica (results and snapshots from the shared
    store, open and close through the apiserver)."""
    errors: tuple[int, ...] = ()
    """Answers beyond 400, 401, 403 and 404, which every job route may give."""
    note: str = ""


class OpenApiDocument(BaseModel):
    """This API's own description."""

    model_config = ConfigDict(extra="allow")

    openapi: str
    paths: dict[str, Any]


TIME = {"type": "string", "description": "Epoch milliseconds or ISO 8601 with a zone"}
TIME_RANGE = (
    Param("start", TIME, "Only results at or after this time."),
    Param("end", TIME, "Only results before this time."),
)
PAGE = (
    Param("from", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}, "Skip this many."),
    Param(
        "size",
        {"type": "integer", "minimum": 0, "maximum": MAX_PAGE_SIZE},
        "Return at most this many.",
    ),
    Param("desc", {"type": "boolean"}, "Sort descending."),
)
WAIT = Param(
    "timeout",
    {"type": "string", "pattern": r"^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h|d))+)$"},
    "How long to wait for the state (a duration such as 30m or 90s, at most 24h); "
    "408 when it passes, while the operator goes on.",
)
SCORE = {"type": "number", "minimum": 0, "maximum": 100}


def _sort(names: dict[str, str]) -> Param:
    return Param("sort", {"type": "string", "enum": list(names)}, "Sort field.")


def _interim(what: str) -> Param:
    return Param("excludeInterim", {"type": "boolean"}, f"Leave out interim {what}.")


def _split(name: str, field: str) -> Param:
    return Param(
        name,
        {"type": "string"},
        f"Only the series with this {field} value (at most {MAX_SPLIT_VALUE} characters).",
    )


def _results(
    kind: str,
    operation_id: str,
    summary: str,
    page: type[BaseModel],
    sorts: dict[str, str],
    *filters: Param,
    handler: str = "",
) -> Route:
    """A results listing: a time range, its own filters, a sort field and a page."""
    return Route(
        "GET",
        f"{JOB}/results/{kind}",
        operation_id,
        handler or kind,
        summary,
        (200, page),
        READ_RESULTS,
        "read results",
        query=(*TIME_RANGE, *filters, _sort(sorts), *PAGE),
    )


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", "healthz", "healthz", "Liveness.", (200, shapes.Health)),
    Route("GET", "/openapi.json", "openapi", "openapi", "This document.", (200, OpenApiDocument)),
    Route(
        "GET",
        "/v1/namespaces/{namespace}/mljobs",
        "listJobs",
        "list_jobs",
        "The MLJobs this operator holds in the namespace: state, last close, max score.",
        (200, JobList),
        LIST_JOBS,
        "list MLJobs",
        guarded=False,
        query=(
            Param(
                "limit",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_LIST_LIMIT,
                    "default": DEFAULT_LIST_LIMIT,
                },
                f"Jobs a page holds, at most {MAX_LIST_LIMIT} (400 past it).",
            ),
            Param(
                "continue",
                {"type": "string"},
                "The `continue` of the previous page (sent with the same `limit`), as "
                f"`kubectl get --chunk-size` does; at most {MAX_CONTINUE} characters.",
            ),
        ),
        errors=(410, 503),
        note="Paged as the apiserver pages lists; a page may hold fewer than `limit` jobs "
        "(those another operator reconciles are left out) and still have a `continue`. "
        "410 when the `continue` token has expired (list again without it).",
    ),
    Route(
        "POST",
        JOB + "/data",
        "postData",
        "post_data",
        "Send data to an open job; answers the job's data counts.",
        (202, DataCounts),
        POST_DATA,
        "post data",
        body="records",
        errors=(409, 413, 503),
        note="409 when the job is closed (or not open yet); 503 with Retry-After when the "
        "store refused the write (nothing of the body was stored).",
        holder=True,
    ),
    Route(
        "POST",
        JOB + "/flush",
        "flush",
        "flush",
        "Finalise buffered buckets, optionally interim results or a time jump.",
        (200, shapes.Flushed),
        POST_DATA,
        "flush",
        query=(
            Param("calcInterim", {"type": "boolean"}, "Also compute interim results."),
            Param("advanceTime", TIME, "Finalise buckets up to this time."),
            Param("skipTime", TIME, "Skip to this time without results."),
        ),
        errors=(409, 503),
        holder=True,
    ),
    Route(
        "POST",
        JOB + "/open",
        "openJob",
        "open",
        "Set spec.state: opened and wait until the job is open.",
        (200, shapes.Opened),
        OPEN_CLOSE,
        "open the job",
        query=(WAIT,),
        errors=(408, 409, 503),
    ),
    Route(
        "POST",
        CLOSE,
        "closeJobs",
        "close",
        "Set spec.state: closed on the named jobs and wait until all are closed.",
        (200, shapes.Closed),
        OPEN_CLOSE,
        "close the job",
        guarded=False,
        query=(
            Param(
                "force",
                {"type": "boolean"},
                "Skip housekeeping (sets the ml.mljob.dev/force-close annotation). "
                f"Needs `{FORCE_CLOSE.verb}` on `mljobs/{FORCE_CLOSE.subresource}` too.",
            ),
            WAIT,
            Param(
                "allowNoMatch",
                {"type": "boolean", "default": True},
                "When false, a pattern or _all that matches no job is a 404.",
            ),
        ),
        errors=(408, 409, 503),
        note="Each matched job is checked separately. Closing a closed job succeeds. "
        "A failed job closes only with force (409 otherwise).",
    ),
    _results(
        "buckets",
        "getBuckets",
        "Bucket results.",
        shapes.BucketPage,
        BUCKET_SORT_NAMES,
        Param("anomalyScore", SCORE, "Only buckets scoring at least this."),
        _interim("buckets"),
    ),
    _results(
        "records",
        "getRecords",
        "Record results.",
        shapes.RecordPage,
        RECORD_SORT_NAMES,
        Param("recordScore", SCORE, "Only records scoring at least this."),
        _interim("records"),
    ),
    _results(
        "modelplot",
        "getModelPlot",
        "Model plot: per bucket and series the actual value, the model's median and its 95% "
        "band (recorded while spec.modelPlotConfig.enabled is true).",
        shapes.ModelPlotPage,
        MODEL_PLOT_SORT_NAMES,
        _interim("points"),
        _split("partitionFieldValue", "partition-field"),
        _split("byFieldValue", "by-field"),
        handler="model_plot",
    ),
    _results(
        "influencers",
        "getInfluencers",
        "Influencer results: each influencer value of a bucket's anomalous records.",
        shapes.InfluencerPage,
        INFLUENCER_SORT_NAMES,
        Param("influencerScore", SCORE, "Only influencers scoring at least this."),
        _interim("results"),
    ),
    Route(
        "GET",
        JOB + "/stats",
        "getStats",
        "stats",
        "Data counts, model size stats and state.",
        (200, shapes.JobStats),
        READ_RESULTS,
        "read stats",
        holder=True,
    ),
    Route(
        "GET",
        JOB + "/modelsnapshots",
        "getModelSnapshots",
        "snapshots",
        "Model snapshots.",
        (200, shapes.ModelSnapshotPage),
        READ_SNAPSHOTS,
        "list model snapshots",
        query=(*TIME_RANGE, _sort(SNAPSHOT_SORT_NAMES), *PAGE),
    ),
    Route(
        "GET",
        SNAPSHOT,
        "getModelSnapshot",
        "snapshot",
        "One model snapshot.",
        (200, shapes.SnapshotAnswer),
        READ_SNAPSHOTS,
        "read a model snapshot",
    ),
    Route(
        "POST",
        SNAPSHOT + "/_update",
        "updateModelSnapshot",
        "update_snapshot",
        "Set whether a snapshot is retained through pruning.",
        (200, shapes.SnapshotUpdated),
        MANAGE_SNAPSHOTS,
        "update a model snapshot",
        body=shapes.SnapshotUpdate,
        errors=(413, 503),
        holder=True,
    ),
    Route(
        "POST",
        SNAPSHOT + "/_revert",
        "revertModelSnapshot",
        "revert_snapshot",
        "Make a snapshot the active model of a closed job.",
        (200, shapes.SnapshotAnswer),
        MANAGE_SNAPSHOTS,
        "revert to a model snapshot",
        query=(
            Param(
                "deleteInterveningResults",
                {"type": "boolean"},
                "Delete results after the snapshot's latest result.",
            ),
        ),
        errors=(409, 503),
        note="Only for closed jobs (409 otherwise); the next open restores this model.",
        holder=True,
    ),
    Route(
        "DELETE",
        SNAPSHOT,
        "deleteModelSnapshot",
        "delete_snapshot",
        "Delete a model snapshot.",
        (200, shapes.Acknowledged),
        MANAGE_SNAPSHOTS,
        "delete a model snapshot",
        errors=(409, 503),
        note="The active snapshot cannot be deleted (409).",
        holder=True,
    ),
)

PATH_PARAMS = {
    "namespace": "The MLJob's namespace.",
    "name": "The MLJob's name.",
    "names": "MLJob names: a comma list of names and `*` patterns, or `_all`.",
    "snapshotId": "A model snapshot id.",
}
