"""The optional finalizer MutatingAdmissionPolicy (manifests/admission/finalizer-policy.yaml,
the chart's `admission.finalizerPolicy`) on the real apiserver: a job carries the
operator's finalizer from its create request on (a user's own finalizers kept), and the
operator then opens, closes and deletes it without a write of the object itself, where
without the policy kopf adds the finalizer by a patch.

The policy is cluster-wide, so each test installs it and removes it again: the other
tests in this cluster create jobs with no operator running and delete them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from devtools.controlplane import ControlPlane
from devtools.operatorproc import (
    FINALIZER_POLICY,
    OperatorProcess,
    install_finalizer_policy,
    remove_finalizer_policy,
)
from mljob_operator.api import FINALIZER
from tests.e2e.jobs import event_series, mljob, ndjson, post, set_state, wait_for, wait_state

CHART = FINALIZER_POLICY.parents[2] / "charts" / "mljob-operator"


@pytest.fixture
def finalizer_policy(mljob_crd: ControlPlane) -> Iterator[Callable[[], None]]:
    yield lambda: install_finalizer_policy(mljob_crd)
    remove_finalizer_policy(mljob_crd)


def _create(cp: ControlPlane, ns: str, name: str, finalizers: list[str] | None = None) -> Any:
    job = json.loads(mljob(name))
    if finalizers is not None:
        job["metadata"]["finalizers"] = finalizers
    created = cp.kubectl("create", "-n", ns, "-o", "json", "-f", "-", input=json.dumps(job))
    return json.loads(created.stdout)


def _with_managers(cp: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    out = cp.kubectl("get", "mljob", name, "-n", ns, "-o", "json", "--show-managed-fields")
    obj: dict[str, Any] = json.loads(out.stdout)
    return obj


def _operator_wrote_the_object(obj: dict[str, Any]) -> bool:
    """Whether kopf (field manager `kopf`, from its user agent) wrote the object itself;
    the operator's status writes go to the status subresource with another client."""
    return any(
        m["manager"].startswith("kopf") and not m.get("subresource")
        for m in obj["metadata"]["managedFields"]
    )


def test_the_policy_matches_the_operators_finalizer() -> None:
    policy = next(yaml.safe_load_all(FINALIZER_POLICY.read_text()))
    assert policy["kind"] == "MutatingAdmissionPolicy"
    assert f"'{FINALIZER}'" in policy["spec"]["matchConditions"][0]["expression"]
    assert f"['{FINALIZER}']" in policy["spec"]["mutations"][0]["applyConfiguration"]["expression"]


def test_the_chart_renders_the_same_policy_only_when_asked_and_served(
    control_plane: ControlPlane,
) -> None:
    served = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy"
    chart = str(CHART)

    def policies(*args: str) -> list[dict[str, Any]]:
        out = control_plane.helm("template", "mljob-operator", chart, *args).stdout
        return [d for d in yaml.safe_load_all(out) if d and "AdmissionPolicy" in d["kind"]]

    asked = ("--set", "admission.finalizerPolicy=true")
    rendered = {d["kind"]: d for d in policies(*asked, "--api-versions", served)}
    plain = {d["kind"]: d for d in yaml.safe_load_all(FINALIZER_POLICY.read_text())}
    for kind in ("MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"):
        assert rendered[kind]["spec"] == plain[kind]["spec"], kind
    assert not [d for d in policies("--api-versions", served) if "Mutating" in d["kind"]]
    assert not [d for d in policies(*asked) if "Mutating" in d["kind"]], "needs Kubernetes 1.36"


def test_a_created_job_has_the_finalizer_and_keeps_its_own(
    control_plane: ControlPlane, namespace: str, finalizer_policy: Callable[[], None]
) -> None:
    cp, ns = control_plane, namespace
    finalizer_policy()
    plain = _create(cp, ns, "plain")
    own = _create(cp, ns, "own", finalizers=["example.com/keep"])
    assert plain["metadata"]["finalizers"] == [FINALIZER]
    assert own["metadata"]["finalizers"] == ["example.com/keep", FINALIZER]
    for name in ("plain", "own"):  # no operator runs here to remove them
        cp.kubectl(
            "patch",
            "mljob",
            name,
            "-n",
            ns,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
        )
        cp.kubectl("delete", "mljob", name, "-n", ns, "--wait=true", "--timeout=30s")


def test_the_operator_writes_no_finalizer_of_its_own_and_still_deletes(
    control_plane: ControlPlane,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    finalizer_policy: Callable[[], None],
) -> None:
    cp, ns = control_plane, namespace
    op = operator_factory()
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob("before"))
    wait_state(cp, ns, "before", "opened")

    def kopf_patched() -> dict[str, Any] | None:
        obj = _with_managers(cp, ns, "before")
        return obj if _operator_wrote_the_object(obj) else None

    before = wait_for(kopf_patched, "kopf's own finalizer patch (no policy yet)")
    assert before["metadata"]["finalizers"] == [FINALIZER]

    finalizer_policy()
    cp.kubectl("apply", "-n", ns, "-f", "-", input=mljob("after"))
    wait_state(cp, ns, "after", "opened")
    assert post(op, ns, "after", ndjson(event_series(30)))[0] == 202
    set_state(cp, ns, "after", "closed")
    closed = wait_state(cp, ns, "after", "closed")
    assert closed["lastClose"]["snapshotId"]
    after = _with_managers(cp, ns, "after")
    assert after["metadata"]["finalizers"] == [FINALIZER]
    assert not _operator_wrote_the_object(after), after["metadata"]["managedFields"]

    for name in ("before", "after"):  # the finalizer still works: closed, cleaned, gone
        cp.kubectl("delete", "mljob", name, "-n", ns, "--wait=true", "--timeout=60s")
