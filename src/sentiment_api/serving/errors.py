"""The one table from library errors to HTTP statuses, and the one shape of every error answer.

Routes raise :class:`~sentiment_api.core.errors.SentimentError` subclasses; the handlers here turn them
into ``{"detail": ..., "errors": [...]}`` with the status from :data:`HTTP_STATUS`. Anything else
becomes a 500 that names only the request id (the request-log middleware answers those): no stack
trace, no path, no exception text.
"""

from __future__ import annotations

import logging
import math

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

from sentiment_api.core.errors import (
    AdminDisabledError,
    AuthenticationError,
    DeadlineExceededError,
    InputError,
    MalformedBodyError,
    ModelUpdateError,
    NotReadyError,
    PackageNotAllowedError,
    PackageNotFoundError,
    PayloadTooLargeError,
    QueueFullError,
    RateLimitedError,
    RequestTimeoutError,
    RouteNotFoundError,
    SentimentError,
    UnknownModelError,
    UnsupportedMediaTypeError,
)

log = logging.getLogger("sentiment_api.serving")

HTTP_STATUS: dict[type[SentimentError], int] = {
    MalformedBodyError: 400,
    AuthenticationError: 401,
    AdminDisabledError: 403,
    PackageNotAllowedError: 403,
    PackageNotFoundError: 404,
    RouteNotFoundError: 404,
    UnknownModelError: 404,
    RequestTimeoutError: 408,
    ModelUpdateError: 409,
    PayloadTooLargeError: 413,
    UnsupportedMediaTypeError: 415,
    InputError: 422,
    QueueFullError: 429,
    RateLimitedError: 429,
    DeadlineExceededError: 503,
    NotReadyError: 503,
}
INTERNAL_ERROR = 500


def status_of(error: BaseException) -> int:
    """The HTTP status for ``error``: its nearest class in the table, else 500."""
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return INTERNAL_ERROR


def json_response(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialised with orjson."""
    return Response(orjson.dumps(payload), status, headers, media_type="application/json")


def error_response(error: BaseException, request_id: str | None = None) -> Response:
    """The answer for ``error``: its message if it is one of ours and expected, else a bare 500."""
    status = status_of(error)
    headers: dict[str, str] = {}
    if status == INTERNAL_ERROR:
        payload: dict[str, object] = {"detail": f"internal error (request id {request_id or 'unknown'})"}
    else:
        payload = {"detail": str(error), "errors": getattr(error, "errors", [])}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if isinstance(error, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, (RequestTimeoutError, PayloadTooLargeError)):
        headers["Connection"] = "close"  # the rest of the body is not worth reading
    return json_response(payload, status, headers)


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


async def _service_error(request: Request, error: Exception) -> Response:
    if status_of(error) == INTERNAL_ERROR:
        log.error("request %s failed", _request_id(request), exc_info=error)
    return error_response(error, _request_id(request))


def install_error_handlers(app: FastAPI) -> None:
    """Route every library error through the table (other exceptions: see ``RequestLogMiddleware``)."""
    app.add_exception_handler(SentimentError, _service_error)


def documented_errors(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses`` entries for these error statuses, all with the error body."""
    reasons = {
        400: "Body is not JSON (bad syntax or invalid UTF-8).",
        401: "API key missing or unknown.",
        403: "The admin API is off (no admin key, or no models directory, is configured), or the "
        "package named is outside the models directory.",
        404: "No model of that name (the message lists the ones this service holds), or no such "
        "package in the models directory.",
        409: "Update refused: the package failed a check (integrity, gate, warm-up), there is no "
        "earlier version to roll back to, or the service runs several worker processes.",
        408: "The body did not arrive within the read timeout.",
        413: "Body larger than the byte limit.",
        415: "Body not declared as application/json.",
        422: "Body is JSON but breaks the request schema; each error names the field and the limit.",
        429: "Queue full, client rate limit reached, or too many failed authentications from this "
        "address; see Retry-After.",
        500: "Unexpected failure; the body names only the request id.",
        503: "Model not ready, service draining, or the request deadline passed; see Retry-After.",
    }
    from sentiment_api.serving.schemas import ErrorResponse

    retry = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}}
    return {
        status: {"description": reasons[status], "model": ErrorResponse}
        | ({"headers": retry} if status in (429, 503) else {})
        for status in statuses
    }
