"""The OpenAPI 3 description of the data API, served unauthenticated at `/openapi.json`.

It is the single description clients, docs and the schemathesis fuzz test read, so it
lists every route `server.DataApi.app` registers with every parameter, body and response;
a unit test checks the two route tables agree. Names and shapes follow the seed service
in camelCase.
"""

from __future__ import annotations

from typing import Any

from mljob_operator.api import GROUP, PLURAL
from mljob_operator.api.permissions import (
    FORCE_CLOSE,
    OPEN_CLOSE,
    POST_DATA,
    READ_RESULTS,
    READ_SNAPSHOTS,
    Permission,
)
from mljob_operator.http.params import BUCKET_SORT_NAMES, RECORD_SORT_NAMES, SNAPSHOT_SORT_NAMES

JOB = "/v1/namespaces/{namespace}/mljobs/{name}"
SNAPSHOT = JOB + "/modelsnapshots/{snapshotId}"
BUCKET_SORTS = list(BUCKET_SORT_NAMES)
RECORD_SORTS = list(RECORD_SORT_NAMES)
SNAPSHOT_SORTS = list(SNAPSHOT_SORT_NAMES)
ERRORS = {
    "400": "Malformed parameters or body.",
    "401": "No bearer token, or the apiserver rejected it (TokenReview).",
    "403": "The caller lacks the permission named in the message (SubjectAccessReview).",
    "404": "No such MLJob (or snapshot) reconciled by this operator.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _int(description: str, nullable: bool = False) -> dict[str, Any]:
    return {"type": "integer", "format": "int64", "description": description, "nullable": nullable}


def _num(description: str) -> dict[str, Any]:
    return {"type": "number", "description": description}


def _str(description: str, nullable: bool = False) -> dict[str, Any]:
    return {"type": "string", "description": description, "nullable": nullable}


def _bool(description: str) -> dict[str, Any]:
    return {"type": "boolean", "description": description}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str, description: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if pattern:
        schema["pattern"] = pattern
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


TIME = {"type": "string", "description": "Epoch milliseconds or ISO 8601 with a zone"}
TIME_PARAMS = [
    _query("start", TIME, "Only results at or after this time."),
    _query("end", TIME, "Only results before this time."),
]
PAGE_PARAMS = [
    _query("from", {"type": "integer", "minimum": 0, "maximum": 1_000_000_000}, "Skip this many."),
    _query(
        "size", {"type": "integer", "minimum": 0, "maximum": 10_000}, "Return at most this many."
    ),
    _query("desc", {"type": "boolean"}, "Sort descending."),
]
WAIT = _query(
    "timeout",
    {"type": "string", "pattern": r"^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h|d))+)$"},
    "How long to wait for the state (a duration such as 30m or 90s, at most 24h); "
    "408 when it passes, while the operator goes on.",
)
PARAMETERS = {
    "namespace": _path("namespace", "The MLJob's namespace."),
    "name": _path("name", "The MLJob's name."),
    "names": _path(
        "names",
        "MLJob names: a comma list of names and `*` patterns, or `_all`.",
    ),
    "snapshotId": _path("snapshotId", "A model snapshot id."),
}


def _schemas() -> dict[str, Any]:
    data_counts = _object(
        {
            "inputRecordCount": _int("Records received."),
            "processedRecordCount": _int("Records analysed."),
            "inputBytes": _int("Bytes received."),
            "invalidDateCount": _int("Records without a parseable time."),
            "missingFieldCount": _int("Records missing an analysed field."),
            "outOfOrderTimestampCount": _int("Records older than the latency allows."),
            "bucketCount": _int("Buckets analysed."),
            "emptyBucketCount": _int("Buckets without records."),
            "earliestRecordTimestamp": _int("Earliest record time (epoch ms).", True),
            "latestRecordTimestamp": _int("Latest record time (epoch ms).", True),
            "lastDataTime": _int("When data last arrived (epoch ms).", True),
        }
    )
    model_size_stats = _object(
        {
            "modelBytes": _int("Current model size."),
            "peakModelBytes": _int("Largest model size seen."),
            "totalByFieldCount": _int("By-field values modelled."),
            "totalPartitionFieldCount": _int("Partition-field values modelled."),
            "totalOverFieldCount": _int("Over-field values modelled."),
            "bucketAllocationFailuresCount": _int("Buckets that hit the memory limit."),
            "memoryStatus": {"type": "string", "enum": ["ok", "soft_limit", "hard_limit"]},
            "modelBytesMemoryLimit": _int("The memory limit in bytes.", True),
        }
    )
    bucket = _object(
        {
            "timestamp": _int("Bucket start (epoch ms)."),
            "bucketSpan": _int("Bucket length in seconds."),
            "anomalyScore": _num("0 to 100, renormalised."),
            "initialAnomalyScore": _num("0 to 100, when the bucket was first final."),
            "isInterim": _bool("Not final yet."),
            "eventCount": _int("Records in the bucket."),
        }
    )
    influence = _object(
        {
            "influencerFieldName": _str("Influencer field."),
            "influencerFieldValues": {"type": "array", "items": {"type": "string"}},
        }
    )
    numbers = {"type": "array", "items": {"type": "number"}}
    record = _object(
        {
            "timestamp": _int("Bucket start (epoch ms)."),
            "bucketSpan": _int("Bucket length in seconds."),
            "detectorIndex": _int("Index of the detector."),
            "recordScore": _num("0 to 100, renormalised."),
            "initialRecordScore": _num("0 to 100, when first final."),
            "probability": _num("Probability of the actual value."),
            "function": _str("Detector function."),
            "fieldName": _str("Analysed field.", True),
            "byFieldName": _str("By field.", True),
            "byFieldValue": _str("By-field value.", True),
            "partitionFieldName": _str("Partition field.", True),
            "partitionFieldValue": _str("Partition-field value.", True),
            "actual": numbers,
            "typical": numbers,
            "isInterim": _bool("Not final yet."),
            "influencers": {"type": "array", "items": _ref("Influence")},
        }
    )
    snapshot = _object(
        {
            "snapshotId": _str("Snapshot id."),
            "timestamp": _int("When it was taken (epoch ms)."),
            "description": _str("Why it was taken."),
            "latestRecordTimeStamp": _int("Latest record it covers (epoch ms).", True),
            "latestResultTimeStamp": _int("Latest result it covers (epoch ms).", True),
            "snapshotDocCount": _int("Stored documents."),
            "sizeBytes": _int("Stored size."),
            "retain": _bool("Kept by retention pruning."),
            "modelSizeStats": _ref("ModelSizeStats"),
        }
    )
    error = _object(
        {
            "error": _object(
                {
                    "status": {"type": "integer"},
                    "reason": {"type": "string"},
                    "message": {"type": "string"},
                }
            )
        }
    )
    return {
        "Error": error,
        "DataCounts": data_counts,
        "ModelSizeStats": model_size_stats,
        "Bucket": bucket,
        "Influence": influence,
        "Record": record,
        "ModelSnapshot": snapshot,
        "Buckets": _object(
            {
                "count": _int("Matching buckets."),
                "buckets": {"type": "array", "items": _ref("Bucket")},
            }
        ),
        "Records": _object(
            {
                "count": _int("Matching records."),
                "records": {"type": "array", "items": _ref("Record")},
            }
        ),
        "ModelSnapshots": _object(
            {
                "count": _int("Matching snapshots."),
                "modelSnapshots": {"type": "array", "items": _ref("ModelSnapshot")},
            }
        ),
        "Model": _object({"model": _ref("ModelSnapshot")}),
        "Acknowledged": _object(
            {"acknowledged": _bool("Done."), "model": _ref("ModelSnapshot")}, ["acknowledged"]
        ),
        "Flushed": _object(
            {
                "flushed": _bool("Always true."),
                "lastFinalizedBucketEnd": _int("End of the last final bucket (epoch ms).", True),
            }
        ),
        "Stats": _object(
            {
                "jobId": _str("namespace/name."),
                "state": {
                    "type": "string",
                    "nullable": True,
                    "enum": ["opening", "opened", "closing", "closed", "failed", None],
                },
                "open": _bool("Takes data now."),
                "modelSnapshotId": _str("The active model snapshot.", True),
                "dataCounts": {
                    "oneOf": [_ref("DataCounts"), {"type": "object", "maxProperties": 0}]
                },
                "modelSizeStats": {
                    "oneOf": [_ref("ModelSizeStats"), {"type": "object", "maxProperties": 0}]
                },
            }
        ),
        "Closed": _object({"closed": {"type": "boolean", "enum": [True]}}),
        "Opened": _object({"opened": {"type": "boolean", "enum": [True]}}),
        "SnapshotUpdate": {
            "type": "object",
            "properties": {"retain": _bool("Keep this snapshot through retention pruning.")},
            "required": ["retain"],
            "additionalProperties": False,
        },
    }


def _responses(ok: str, schema: str, description: str, *extra: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        ok: {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}
    }
    messages = {
        **ERRORS,
        "408": "The job did not reach the state in time; the operator goes on.",
        "409": "The job is not in a state that allows this.",
        "413": "The body is over the size limit.",
        "503": "The apiserver could not be reached or refused the operator.",
    }
    for code in (*ERRORS, *extra):
        out[code] = {
            "description": messages[code],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    return out


def _permission(p: Permission) -> str:
    return f"Needs `{p.verb}` on `{PLURAL}/{p.subresource}` in API group `{GROUP}`."


def _op(  # noqa: PLR0917 (replaced by the generated document)
    op_id: str,
    summary: str,
    permission: Permission,
    responses: dict[str, Any],
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    note: str = "",
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "description": " ".join(filter(None, [_permission(permission), note])),
        "parameters": parameters or [],
        "responses": responses,
        "security": [{"bearer": []}],
    }
    if body is not None:
        op["requestBody"] = body
    return op


def _job_params(*extra: str) -> list[dict[str, Any]]:
    return [{"$ref": f"#/components/parameters/{p}"} for p in ("namespace", "name", *extra)]


def openapi_document(max_body_bytes: int) -> dict[str, Any]:
    data_body = {
        "required": True,
        "description": f"NDJSON or a JSON array of records, at most {max_body_bytes} bytes. "
        "Records the engine cannot use are counted in dataCounts, not refused.",
        "content": {
            "application/x-ndjson": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
        },
    }
    sort = {"type": "string"}
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness.",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The server is up.",
                        "content": {
                            "application/json": {"schema": _object({"status": {"type": "string"}})}
                        },
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        JOB + "/data": {
            "post": _op(
                "postData",
                "Send data to an open job; answers the job's data counts.",
                POST_DATA,
                _responses("202", "DataCounts", "Accepted and analysed.", "409", "413"),
                _job_params(),
                data_body,
                "409 when the job is closed (or not open yet).",
            )
        },
        JOB + "/flush": {
            "post": _op(
                "flush",
                "Finalise buffered buckets, optionally interim results or a time jump.",
                POST_DATA,
                _responses("200", "Flushed", "Flushed.", "409"),
                [
                    *_job_params(),
                    _query("calcInterim", {"type": "boolean"}, "Also compute interim results."),
                    _query("advanceTime", TIME, "Finalise buckets up to this time."),
                    _query("skipTime", TIME, "Skip to this time without results."),
                ],
            )
        },
        JOB + "/open": {
            "post": _op(
                "openJob",
                "Set spec.state: opened and wait until the job is open.",
                OPEN_CLOSE,
                _responses("200", "Opened", "The job is open.", "408", "409", "503"),
                [*_job_params(), WAIT],
            )
        },
        "/v1/namespaces/{namespace}/mljobs/{names}/close": {
            "post": _op(
                "closeJobs",
                "Set spec.state: closed on the named jobs and wait until all are closed.",
                OPEN_CLOSE,
                _responses("200", "Closed", "All matching jobs are closed.", "408", "409", "503"),
                [
                    {"$ref": "#/components/parameters/namespace"},
                    {"$ref": "#/components/parameters/names"},
                    _query(
                        "force",
                        {"type": "boolean"},
                        "Skip housekeeping (sets the ml.mljob.dev/force-close annotation). "
                        + _permission(FORCE_CLOSE),
                    ),
                    WAIT,
                    _query(
                        "allowNoMatch",
                        {"type": "boolean", "default": True},
                        "When false, a pattern or _all that matches no job is a 404.",
                    ),
                ],
                note="Each matched job is checked separately. Closing a closed job succeeds. "
                "A failed job closes only with force (409 otherwise).",
            )
        },
        JOB + "/results/buckets": {
            "get": _op(
                "getBuckets",
                "Bucket results.",
                READ_RESULTS,
                _responses("200", "Buckets", "A page of buckets."),
                [
                    *_job_params(),
                    *TIME_PARAMS,
                    _query(
                        "anomalyScore", {"type": "number", "minimum": 0, "maximum": 100}, "Min."
                    ),
                    _query("excludeInterim", {"type": "boolean"}, "Leave out interim buckets."),
                    _query("sort", {**sort, "enum": BUCKET_SORTS}, "Sort field."),
                    *PAGE_PARAMS,
                ],
            )
        },
        JOB + "/results/records": {
            "get": _op(
                "getRecords",
                "Record results.",
                READ_RESULTS,
                _responses("200", "Records", "A page of records."),
                [
                    *_job_params(),
                    *TIME_PARAMS,
                    _query("recordScore", {"type": "number", "minimum": 0, "maximum": 100}, "Min."),
                    _query("excludeInterim", {"type": "boolean"}, "Leave out interim records."),
                    _query("sort", {**sort, "enum": RECORD_SORTS}, "Sort field."),
                    *PAGE_PARAMS,
                ],
            )
        },
        JOB + "/stats": {
            "get": _op(
                "getStats",
                "Data counts, model size stats and state.",
                READ_RESULTS,
                _responses("200", "Stats", "The job's stats."),
                _job_params(),
            )
        },
        JOB + "/modelsnapshots": {
            "get": _op(
                "getModelSnapshots",
                "Model snapshots.",
                READ_SNAPSHOTS,
                _responses("200", "ModelSnapshots", "A page of snapshots."),
                [
                    *_job_params(),
                    *TIME_PARAMS,
                    _query("sort", {**sort, "enum": SNAPSHOT_SORTS}, "Sort field."),
                    *PAGE_PARAMS,
                ],
            )
        },
        SNAPSHOT: {
            "get": _op(
                "getModelSnapshot",
                "One model snapshot.",
                READ_SNAPSHOTS,
                _responses("200", "Model", "The snapshot."),
                _job_params("snapshotId"),
            ),
            "delete": _op(
                "deleteModelSnapshot",
                "Delete a model snapshot.",
                OPEN_CLOSE,
                _responses("200", "Acknowledged", "Deleted.", "409"),
                _job_params("snapshotId"),
                note="The active snapshot cannot be deleted (409).",
            ),
        },
        SNAPSHOT + "/_update": {
            "post": _op(
                "updateModelSnapshot",
                "Set whether a snapshot is retained through pruning.",
                OPEN_CLOSE,
                _responses("200", "Acknowledged", "Updated.", "413"),
                _job_params("snapshotId"),
                {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("SnapshotUpdate")}},
                },
            )
        },
        SNAPSHOT + "/_revert": {
            "post": _op(
                "revertModelSnapshot",
                "Make a snapshot the active model of a closed job.",
                OPEN_CLOSE,
                _responses("200", "Model", "Reverted.", "409"),
                [
                    *_job_params("snapshotId"),
                    _query(
                        "deleteInterveningResults",
                        {"type": "boolean"},
                        "Delete results after the snapshot's latest result.",
                    ),
                ],
                note="Only for closed jobs (409 otherwise); the next open restores this model.",
            )
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "mljob-operator data API",
            "version": "v1",
            "description": "Data intake, results, model snapshots, open and close of MLJobs "
            f"({GROUP}). Every job operation takes a Kubernetes bearer token; the operator "
            "checks it with TokenReview and the action with SubjectAccessReview on "
            f"{PLURAL}/<subresource>. Errors are JSON: "
            '{"error": {"status", "reason", "message"}}.',
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "parameters": PARAMETERS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Kubernetes token (e.g. `kubectl create token`).",
                }
            },
        },
    }
