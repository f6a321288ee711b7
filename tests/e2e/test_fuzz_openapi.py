"""schemathesis fuzzes every operation of `/openapi.json` against the real operator with
a valid mljob-admin token, with valid inputs and (for every operation that takes a body or
query parameters) hostile ones that break the schema: no 5xx, and every answer conforms to
the document (status codes, content type, JSON schema).

Path parameters are pinned to real jobs (random names would only ever reach the 404
branch); everything else is generated. `MLJOB_FUZZ_EXAMPLES` sets examples per operation.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess
from mljob_operator.http.openapi import openapi_document
from tests.e2e.jobs import event_series, mljob, ndjson, post, wait_state

EXAMPLES = int(os.environ.get("MLJOB_FUZZ_EXAMPLES", "30"))
SEEDED_UNTIL_MS = (event_series(60)[-1]["time"] + 3600) * 1000
"""The engine finalises every bucket between the last one and `advanceTime` one by one,
so a far-future time is O(gap) work (reported); the fuzzer's times are capped here."""


@dataclass
class Target:
    op: OperatorProcess
    namespace: str


@pytest.fixture(scope="module")
def target(mljob_crd: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    cp = mljob_crd
    ns = f"t-fuzz-{uuid.uuid4().hex[:6]}"
    cp.kubectl("create", "namespace", ns)
    tmp = tmp_path_factory.mktemp("fuzz")
    op = OperatorProcess(cp, tmp / "data", tmp / "operator.log").start(namespace=ns)
    try:
        for name in ("fuzz", "fuzz-close"):
            cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob(name))
        for name in ("fuzz", "fuzz-close"):
            wait_state(cp, ns, name, "opened")
        assert post(op, ns, "fuzz", ndjson(event_series(60, spike_at=40)))[0] == 202
        yield Target(op, ns)
    finally:
        op.stop()
        cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="module")
def api_schema(target: Target) -> Any:
    return schemathesis.openapi.from_url(
        f"{target.op.url}/openapi.json", verify=str(target.op.ca_file)
    )


DOCUMENT = openapi_document(0)
OPERATIONS = [(path, method) for path, methods in DOCUMENT["paths"].items() for method in methods]
HOSTILE = [
    (path, method)
    for path, method in OPERATIONS
    if DOCUMENT["paths"][path][method].get("requestBody")
    or any("$ref" not in p for p in DOCUMENT["paths"][path][method]["parameters"])
]
"""Operations with something to get wrong besides the path (which is pinned to real
jobs): a body or query parameters. Negative cases break their schema on purpose."""


def _cap_times(query: dict[str, Any]) -> None:
    for key in ("advanceTime", "skipTime"):
        value = str(query.get(key, ""))
        if value.isascii() and value.isdigit() and int(value) > SEEDED_UNTIL_MS:
            query[key] = str(SEEDED_UNTIL_MS)


@pytest.mark.parametrize(
    ("path", "method", "mode"),
    [(p, m, GenerationMode.POSITIVE) for p, m in OPERATIONS]
    + [(p, m, GenerationMode.NEGATIVE) for p, m in HOSTILE],
)
def test_api_conforms_and_never_fails(
    path: str, method: str, mode: GenerationMode, api_schema: Any, target: Target
) -> None:
    @given(case=api_schema[path][method].as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def fuzz(case: Any) -> None:
        call_and_check(case, target)

    fuzz()


def call_and_check(case: Any, target: Target) -> None:
    params = {"namespace": target.namespace}
    if "names" in (case.path_parameters or {}):
        params["names"] = "fuzz-close"
    elif case.path.endswith("/open"):
        params["name"] = "fuzz-close"
    elif "name" in (case.path_parameters or {}):
        params["name"] = "fuzz"
    if case.path_parameters:
        case.path_parameters = {**case.path_parameters, **params}
    if isinstance(case.query, dict):
        _cap_times(case.query)
    assert target.op.token is not None
    response = case.call(
        headers={"Authorization": f"Bearer {target.op.token}"},
        verify=str(target.op.ca_file),
        timeout=120,
    )
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)
    case.validate_response(
        response,
        checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
    )
