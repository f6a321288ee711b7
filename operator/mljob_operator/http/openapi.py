"""The OpenAPI 3.1 description of the data API, served unauthenticated at `/openapi.json`.

Generated, never written by hand: the paths from the route table (`routes.ROUTES`, which
also builds the aiohttp app) and the components from the pydantic models the handlers
answer with (`api.results`). Clients, docs and the schemathesis fuzz test read it.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from mljob_operator.api import GROUP, PLURAL
from mljob_operator.api.permissions import Permission
from mljob_operator.api.results import Error
from mljob_operator.http.routes import PATH_PARAMS, ROUTES, Route

REF = "#/components/schemas/{model}"
MESSAGES = {
    400: "Malformed parameters or body.",
    401: "No bearer token, or the apiserver rejected it (TokenReview).",
    403: "The caller lacks the permission named in the message (SubjectAccessReview).",
    404: "No such MLJob (or snapshot) reconciled by this operator.",
    408: "The job did not reach the state in time; the operator goes on.",
    409: "The job is not in a state that allows this.",
    410: "The `continue` token has expired; list again without it.",
    413: "The body is over the size limit.",
    503: "The apiserver or the store could not be reached or refused the operator, or"
    " the job is moving to another replica; retry after `Retry-After` seconds when given.",
}
JOB_ERRORS = (400, 401, 403, 404)


def _models() -> dict[type[BaseModel], JsonSchemaMode]:
    """Every model the API answers with (as serialised) or takes (as validated)."""
    found: dict[type[BaseModel], JsonSchemaMode] = {Error: "serialization"}
    for route in ROUTES:
        found[route.ok[1]] = "serialization"
        if isinstance(route.body, type):
            found[route.body] = "validation"
    return found


def _schemas() -> dict[str, Any]:
    _, top = models_json_schema(list(_models().items()), ref_template=REF)
    return dict(sorted(top.get("$defs", {}).items()))


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _permission(p: Permission) -> str:
    resource = f"{PLURAL}/{p.subresource}" if p.subresource else PLURAL
    return f"Needs `{p.verb}` on `{resource}` in API group `{GROUP}`."


def _body(route: Route, max_body_bytes: int) -> dict[str, Any] | None:
    if route.body == "records":
        return {
            "required": True,
            "description": f"NDJSON or a JSON array of records, at most {max_body_bytes} "
            "bytes. Records the engine cannot use are counted in dataCounts, not refused.",
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            },
        }
    if route.body is None:
        return None
    return {"required": True, "content": {"application/json": {"schema": _ref(route.body)}}}


def _operation(route: Route, max_body_bytes: int) -> dict[str, Any]:
    code, model = route.ok
    responses = {str(code): _json(_ref(model), route.summary)}
    if route.permission is not None:
        for error in (*JOB_ERRORS, *route.errors):
            responses[str(error)] = _json(_ref(Error), MESSAGES[error])
    path_params = [
        {"$ref": f"#/components/parameters/{name}"} for name in re.findall(r"{(\w+)}", route.path)
    ]
    query = [
        {
            "name": p.name,
            "in": "query",
            "required": False,
            "schema": p.schema,
            "description": p.description,
        }
        for p in route.query
    ]
    permission = _permission(route.permission) if route.permission is not None else ""
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "description": " ".join(filter(None, [permission, route.note])),
        "parameters": [*path_params, *query],
        "responses": responses,
        "security": [{"bearer": []}] if route.permission is not None else [],
    }
    body = _body(route, max_body_bytes)
    if body is not None:
        op["requestBody"] = body
    return op


def openapi_document(max_body_bytes: int) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, max_body_bytes)
    return {
        "openapi": "3.1.0",
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
            "parameters": {
                name: {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1},
                    "description": description,
                }
                for name, description in PATH_PARAMS.items()
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Kubernetes token (e.g. `kubectl create token`).",
                }
            },
        },
    }
