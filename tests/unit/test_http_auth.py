"""The authorizer's contract with the apiserver reviews: what it asks, what it caches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mljob_operator.api.permissions import FORCE_CLOSE, POST_DATA, READ_RESULTS
from mljob_operator.http.auth import Authorizer, User, bearer_token
from mljob_operator.http.errors import Forbidden, Unauthorized, Unavailable
from mljob_operator.kube import KubeError

ALICE = {"username": "alice", "uid": "u1", "groups": ["devs"], "extra": {"scopes": ["a"]}}


class Reviews:
    """Answers like the apiserver would, counting the calls."""

    def __init__(self, allowed: set[tuple[str, str, str]] | None = None) -> None:
        self.allowed = allowed or set()
        self.token_reviews: list[str] = []
        self.access_reviews: list[dict[str, Any]] = []
        self.fail = False

    async def review_token(self, token: str) -> dict[str, Any]:
        self.token_reviews.append(token)
        if self.fail:
            raise KubeError(500, "etcd is down")
        if token == "good":
            return {"authenticated": True, "user": ALICE}
        return {"authenticated": False, "error": "invalid bearer token"}

    async def review_access(self, spec: dict[str, Any]) -> bool:
        self.access_reviews.append(spec)
        attrs = spec["resourceAttributes"]
        return (spec["user"], attrs["subresource"], attrs["verb"]) in self.allowed


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing bearer token"),
        ("", "missing bearer token"),
        ("Basic abc", "must be 'Bearer <token>'"),
        ("Bearer ", "must be 'Bearer <token>'"),
    ],
)
def test_malformed_headers_are_401(header: str | None, message: str) -> None:
    with pytest.raises(Unauthorized, match=message) as err:
        bearer_token(header)
    assert err.value.headers["WWW-Authenticate"].startswith("Bearer")


def test_scheme_is_case_insensitive() -> None:
    assert bearer_token("bearer  tok ") == "tok"


def test_token_review_is_cached_for_its_ttl_and_rejections_too() -> None:
    reviews, clock = Reviews(), Clock()
    auth = Authorizer(reviews, allowed_ttl=10, denied_ttl=2, clock=clock)
    user = run(auth.authenticate("Bearer good"))
    assert user == User("alice", "u1", ("devs",), (("scopes", ("a",)),))
    run(auth.authenticate("Bearer good"))
    assert reviews.token_reviews == ["good"]
    with pytest.raises(Unauthorized, match="rejected"):
        run(auth.authenticate("Bearer bad"))
    with pytest.raises(Unauthorized):
        run(auth.authenticate("Bearer bad"))
    assert reviews.token_reviews == ["good", "bad"]
    clock.now = 3
    with pytest.raises(Unauthorized):
        run(auth.authenticate("Bearer bad"))
    run(auth.authenticate("Bearer good"))
    assert reviews.token_reviews == ["good", "bad", "bad"]
    clock.now = 11
    run(auth.authenticate("Bearer good"))
    assert reviews.token_reviews == ["good", "bad", "bad", "good"]


def test_access_review_names_the_object_and_subresource() -> None:
    reviews = Reviews({("alice", "data", "create")})
    auth = Authorizer(reviews)
    user = User.from_review(ALICE)
    run(auth.require(user, POST_DATA, "ns", "web-1", "post data"))
    assert reviews.access_reviews == [
        {
            "user": "alice",
            "uid": "u1",
            "groups": ["devs"],
            "extra": {"scopes": ["a"]},
            "resourceAttributes": {
                "namespace": "ns",
                "name": "web-1",
                "group": "ml.mljob.dev",
                "resource": "mljobs",
                "subresource": "data",
                "verb": "create",
            },
        }
    ]


def test_denial_names_the_missing_permission_and_is_cached_briefly() -> None:
    reviews, clock = Reviews(), Clock()
    auth = Authorizer(reviews, allowed_ttl=10, denied_ttl=2, clock=clock)
    user = User("bob")
    with pytest.raises(Forbidden) as err:
        run(auth.require(user, FORCE_CLOSE, "ns", "web-1", "force-close the job"))
    assert err.value.message == (
        'bob cannot force-close the job: needs "create" on "mljobs/forceclose" in API group '
        '"ml.mljob.dev" for ns/web-1'
    )
    assert not run(auth.allowed(user, FORCE_CLOSE, "ns", "web-1"))
    assert len(reviews.access_reviews) == 1
    reviews.allowed.add(("bob", "forceclose", "create"))
    clock.now = 2.5
    assert run(auth.allowed(user, FORCE_CLOSE, "ns", "web-1"))
    assert len(reviews.access_reviews) == 2


def test_decisions_are_per_object() -> None:
    reviews = Reviews({("alice", "results", "get")})
    auth = Authorizer(reviews)
    user = User("alice")
    for name in ("a", "b", "a"):
        assert run(auth.allowed(user, READ_RESULTS, "ns", name))
    assert [r["resourceAttributes"]["name"] for r in reviews.access_reviews] == ["a", "b"]


def test_cache_is_bounded() -> None:
    reviews = Reviews({("alice", "results", "get")})
    auth = Authorizer(reviews, maxsize=2)
    user = User("alice")
    for name in ("a", "b", "c", "a"):
        run(auth.allowed(user, READ_RESULTS, "ns", name))
    assert len(reviews.access_reviews) == 4


def test_apiserver_failure_is_503_not_a_denial() -> None:
    reviews = Reviews()
    reviews.fail = True
    with pytest.raises(Unavailable, match="etcd is down"):
        run(Authorizer(reviews).authenticate("Bearer good"))


def test_concurrent_requests_with_one_token_share_one_review() -> None:
    class SlowReviews:
        def __init__(self) -> None:
            self.token_reviews = 0
            self.access_reviews = 0
            self.release = asyncio.Event()

        async def review_token(self, token: str) -> dict[str, Any]:
            self.token_reviews += 1
            await self.release.wait()
            return {"authenticated": True, "user": {"username": "pipeline"}}

        async def review_access(self, spec: dict[str, Any]) -> bool:
            self.access_reviews += 1
            await self.release.wait()
            return True

    async def test() -> None:
        reviews = SlowReviews()
        auth = Authorizer(reviews)
        users = asyncio.gather(*(auth.authenticate("Bearer t") for _ in range(50)))
        await asyncio.sleep(0.01)
        reviews.release.set()
        signed_in = await users
        assert {u.username for u in signed_in} == {"pipeline"}
        assert reviews.token_reviews == 1, "one TokenReview for fifty requests"
        reviews.release.clear()
        asks = asyncio.gather(
            *(auth.allowed(signed_in[0], POST_DATA, "ns", "j") for _ in range(50))
        )
        await asyncio.sleep(0.01)
        reviews.release.set()
        assert all(await asks)
        assert reviews.access_reviews == 1

    asyncio.run(test())
