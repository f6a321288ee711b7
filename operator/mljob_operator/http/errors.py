"""API errors and the middleware that answers every failure as JSON.

Handlers raise an `ApiError` subclass (or `params.BadRequest`); nothing below the HTTP
layer knows status codes. The body is always
`{"error": {"status": N, "reason": ..., "message": ...}}`, also for aiohttp's own 404,
405 and 413, so clients parse one shape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from mljob_operator.api.results import Error, ErrorDetail
from mljob_operator.http.params import BadRequest

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    status = 500
    reason = "InternalError"

    def __init__(self, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class Unauthorized(ApiError):
    status, reason = 401, "Unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, {"WWW-Authenticate": 'Bearer realm="mljob-operator"'})


class Forbidden(ApiError):
    status, reason = 403, "Forbidden"


class NotFound(ApiError):
    status, reason = 404, "NotFound"


class RequestTimeout(ApiError):
    status, reason = 408, "Timeout"


class Conflict(ApiError):
    status, reason = 409, "Conflict"


class JobNotOpen(Conflict):
    reason = "JobNotOpen"


class Gone(ApiError):
    """A `continue` token the apiserver no longer honours (its reason, as kubectl sees it)."""

    status, reason = 410, "Expired"


class PayloadTooLarge(ApiError):
    status, reason = 413, "RequestEntityTooLarge"


class Unavailable(ApiError):
    status, reason = 503, "ServiceUnavailable"


def error_body(status: int, reason: str, message: str) -> dict[str, Any]:
    detail = ErrorDetail(status=status, reason=reason, message=message)
    return Error(error=detail).model_dump(by_alias=True)


def json_error(
    status: int, reason: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(error_body(status, reason, message), status=status, headers=headers)


def errors_as_json(max_body_bytes: int) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as err:
            return json_error(err.status, err.reason, err.message, err.headers)
        except BadRequest as err:
            return json_error(400, "BadRequest", str(err))
        except web.HTTPRequestEntityTooLarge:
            return json_error(
                413, "RequestEntityTooLarge", f"body larger than {max_body_bytes} bytes"
            )
        except web.HTTPException as err:
            if err.status >= 400:
                reason = err.reason.replace(" ", "")
                allow = {k: v for k, v in err.headers.items() if k.lower() == "allow"}
                return json_error(err.status, reason, err.text or err.reason, allow)
            raise
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return json_error(500, "InternalError", "internal error; see the operator log")

    return middleware
