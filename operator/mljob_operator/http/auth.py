"""Who is calling, and may they: bearer tokens checked by the apiserver, not by us.

The data API is served by the operator, so the apiserver never sees its requests; instead
each token goes through a TokenReview and each action through a SubjectAccessReview on
`mljobs/<subresource>` (see `api.permissions`), exactly as an aggregated API server does.
Both answers are cached for a few seconds (denials and rejected tokens for less), keyed by
a hash of the token and by the full (user, permission, namespace, name) tuple, so a busy
data pipeline costs the apiserver a couple of reviews per TTL rather than one per post.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from cachetools import TLRUCache

from mljob_operator.api import GROUP, PLURAL
from mljob_operator.api.permissions import Permission
from mljob_operator.http.errors import Forbidden, Unauthorized, Unavailable
from mljob_operator.http.limits import SignInFailures
from mljob_operator.kube import KubeError

T = TypeVar("T")
ALLOWED_TTL_S = 10.0
DENIED_TTL_S = 2.0
CACHE_SIZE = 4096
MANY_REVIEWS = 2
"""SubjectAccessReviews in flight at once for questions about many jobs (the jobs listing
of a caller without namespace-wide rights), over all callers: half the review threads
(`kube.REVIEW_THREADS`), so sign-ins and single-job checks always find one free."""


class Reviewer(Protocol):
    """The two apiserver calls this module needs (`kube.KubeClient` implements them)."""

    async def review_token(self, token: str) -> dict[str, Any]: ...

    async def review_access(self, spec: dict[str, Any]) -> bool: ...


@dataclass(frozen=True)
class User:
    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_review(cls, user: dict[str, Any]) -> User:
        extra = user.get("extra") or {}
        return cls(
            username=str(user.get("username", "")),
            uid=str(user.get("uid") or ""),
            groups=tuple(user.get("groups") or ()),
            extra=tuple(sorted((k, tuple(v or ())) for k, v in extra.items())),
        )


def bearer_token(header: str | None) -> str:
    if not header:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def _ttl(allowed_ttl: float, denied_ttl: float) -> Callable[[Any, Any, float], float]:
    def ttu(_key: Any, value: Any, now: float) -> float:
        return now + (allowed_ttl if value else denied_ttl)

    return ttu


class Authorizer:
    def __init__(
        self,
        reviewer: Reviewer,
        allowed_ttl: float = ALLOWED_TTL_S,
        denied_ttl: float = DENIED_TTL_S,
        maxsize: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        sign_in_failures: SignInFailures | None = None,
        *,
        many_reviews: int = MANY_REVIEWS,
    ) -> None:
        self.reviewer = reviewer
        self.sign_in_failures = sign_in_failures
        ttu = _ttl(allowed_ttl, denied_ttl)
        self._users: TLRUCache[str, User | None] = TLRUCache(maxsize, ttu=ttu, timer=clock)
        self._decisions: TLRUCache[tuple[Any, ...], bool] = TLRUCache(maxsize, ttu=ttu, timer=clock)
        self._reviewing: dict[Any, asyncio.Future[Any]] = {}
        self._asking: dict[Any, asyncio.Future[Any]] = {}
        self._many = asyncio.Semaphore(many_reviews)

    async def authenticate(self, header: str | None, client: str = "") -> User:
        """The caller; a `client` (address) whose tokens keep being rejected is refused
        (429) without asking the apiserver again."""
        limit = self.sign_in_failures
        token = bearer_token(header)
        key = hashlib.sha256(token.encode()).hexdigest()
        if key in self._users:
            user = self._users[key]
        else:
            if limit is not None:
                limit.check(client)
            user = await self._single_flight(self._reviewing, key, self._review(token))
            self._users[key] = user
        if user is None:
            if limit is not None:
                limit.failed(client)
            raise Unauthorized("the bearer token was rejected by the apiserver (TokenReview)")
        return user

    async def _review(self, token: str) -> User | None:
        try:
            review = await self.reviewer.review_token(token)
        except KubeError as err:
            raise Unavailable(f"cannot review the token with the apiserver: {err}") from err
        ok = bool(review.get("authenticated")) and bool(review.get("user"))
        return User.from_review(review["user"]) if ok else None

    @staticmethod
    async def _single_flight(
        pending: dict[Any, asyncio.Future[Any]], key: Any, work: Coroutine[Any, Any, T]
    ) -> T:
        """One review per key at a time: concurrent requests with the same token (or the
        same question) share it instead of each asking the apiserver."""
        if key in pending:
            work.close()
            return cast(T, await asyncio.shield(pending[key]))
        future: asyncio.Future[Any] = asyncio.ensure_future(work)
        pending[key] = future
        try:
            return cast(T, await asyncio.shield(future))
        finally:
            if future.done():
                pending.pop(key, None)
            else:
                future.add_done_callback(lambda _: pending.pop(key, None))

    async def allowed(self, user: User, permission: Permission, namespace: str, name: str) -> bool:
        key = (user, permission, namespace, name)
        if key in self._decisions:
            return self._decisions[key]
        spec = {
            "user": user.username,
            "uid": user.uid,
            "groups": list(user.groups),
            "extra": {k: list(v) for k, v in user.extra},
            "resourceAttributes": {
                "namespace": namespace,
                "name": name,
                "group": GROUP,
                "resource": PLURAL,
                "subresource": permission.subresource,
                "verb": permission.verb,
            },
        }
        decision = await self._single_flight(self._asking, key, self._ask(spec))
        self._decisions[key] = decision
        return decision

    async def allowed_each(
        self, user: User, permission: Permission, namespace: str, names: Sequence[str]
    ) -> list[bool]:
        """`allowed` for each of `names`, in order: cached decisions at once, the others
        asked at most `many_reviews` at a time over every caller, so one listing of many
        jobs queues behind itself and never takes every review thread."""

        async def one(name: str) -> bool:
            if (user, permission, namespace, name) in self._decisions:
                return await self.allowed(user, permission, namespace, name)
            async with self._many:
                return await self.allowed(user, permission, namespace, name)

        return list(await asyncio.gather(*(one(name) for name in names)))

    async def _ask(self, spec: dict[str, Any]) -> bool:
        try:
            return await self.reviewer.review_access(spec)
        except KubeError as err:
            raise Unavailable(f"cannot check access with the apiserver: {err}") from err

    async def require(
        self, user: User, permission: Permission, namespace: str, name: str, action: str
    ) -> None:
        if not await self.allowed(user, permission, namespace, name):
            raise Forbidden(describe_denial(user, permission, namespace, name, action))


def describe_denial(
    user: User, permission: Permission, namespace: str, name: str, action: str
) -> str:
    return (
        f'{user.username} cannot {action}: needs "{permission.verb}" on '
        f'"{PLURAL}/{permission.subresource}" in API group "{GROUP}" for '
        f"{namespace}/{name}"
    )
