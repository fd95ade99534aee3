"""Request guards: API keys, throttled failed authentications, a per-client rate limit, and limits
on the body (its size, and the time it may take to arrive).

Keys come as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` and are compared in constant
time against every configured key. Neither keys nor their hashes are logged: a client is named in
the rate limiter by a hash of its key, or by its address when keys are off; failed authentications
are counted and logged by address.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Mapping, Sequence

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sentiment_api.core.errors import (
    AuthenticationError,
    PayloadTooLargeError,
    RateLimitedError,
    RequestTimeoutError,
    ServiceError,
)
from sentiment_api.core.settings import Settings
from sentiment_api.serving.errors import error_response
from sentiment_api.serving.limits import AuthFailureThrottle, RateLimiter, TokenBuckets
from sentiment_api.serving.observability import Metrics

log = logging.getLogger("sentiment_api.security")
PROTECTED = frozenset(
    {"/predict", "/model", "/models", "/ui/table"}
)  # the routes that need a key and count against the rate
PROTECTED_PREFIXES = (
    "/models/",
    "/v2/models/",
)  # and those under these (a model's card, the v2 model routes)


def presented_key(scope: Scope) -> bytes | None:
    """The key a request carries, from ``Authorization: Bearer`` or ``X-API-Key``."""
    for name, value in scope["headers"]:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return bytes(value[7:].strip())
        if name == b"x-api-key":
            return bytes(value.strip())
    return None


class GuardMiddleware:
    """Refuses, before any route runs: addresses with too many failed authentications (429), unknown
    keys (401), clients over their rate (429), bodies over the byte limit (413); and a body that takes
    longer than ``read_timeout_s`` to arrive (408). Only ``protected`` paths need a key and count
    against the rate."""

    def __init__(
        self,
        app: ASGIApp,
        keys: Sequence[str],
        rate_limiter: RateLimiter | None,
        auth_throttle: AuthFailureThrottle | None,
        metrics: Metrics,
        max_body_bytes: int,
        read_timeout_s: float,
        protected: frozenset[str],
        body_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]
        self.rate_limiter = rate_limiter
        self.auth_throttle = auth_throttle
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.read_timeout_s = read_timeout_s
        self.protected = protected
        self.body_limits = body_limits or {}  # paths whose bodies have a limit of their own

    def _authenticate(self, scope: Scope, address: str) -> str:
        """The client's name for rate limiting; raises when keys are on and this one is not known."""
        if not self.keys:
            return address
        throttle = self.auth_throttle
        key = presented_key(scope)
        matched = False
        for known in self.keys:
            matched |= key is not None and hmac.compare_digest(key, known)
        try:
            # a wrong key takes a try (no key takes none); refused like a locked-out client when
            # another worker took the last one since the check
            exhausted = throttle is not None and throttle.attempt(address, matched, key is not None)
        except RateLimitedError:
            self.metrics.throttled.labels("auth_failures").inc()
            raise
        if matched:
            assert key is not None
            return hashlib.sha256(key).hexdigest()[:16]
        reason = "missing" if key is None else "unknown"
        self.metrics.auth_failures.labels(reason).inc()
        fields = {"client": address, "reason": reason, "route": scope["path"]}
        log.warning("authentication failed", extra={"fields": fields})
        if exhausted:
            log.warning("client throttled after repeated failed authentications", extra={"fields": fields})
        if key is None:
            raise AuthenticationError(
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'"
            )
        raise AuthenticationError("the API key is not valid")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.read_timeout_s
        try:
            path = scope["path"]
            if path in self.protected or path.startswith(PROTECTED_PREFIXES):
                client = scope.get("client")
                client_name = self._authenticate(scope, client[0] if client else "unknown")
                # the routes charge a costly request's extra runs to the same client
                scope.setdefault("state", {})["client"] = client_name
                if self.rate_limiter is not None:
                    try:
                        self.rate_limiter.check(client_name)
                    except ServiceError:
                        self.metrics.throttled.labels("rate").inc()
                        raise
            limit = self.body_limits.get(path, self.max_body_bytes)
            length = _content_length(scope)
            if length is not None and length > limit:
                raise PayloadTooLargeError(_too_large(length, limit))
        except ServiceError as error:
            response = error_response(error, scope.get("state", {}).get("request_id"))
            await response(scope, receive, send)
            return
        await self.app(scope, self._limited(receive, deadline, limit), send)

    def _limited(self, receive: Receive, deadline: float, limit: int) -> Receive:
        """``receive`` that raises once more than the byte limit has arrived (chunked bodies), or when
        the body is still incomplete at ``deadline``. Once the body is in, ``receive`` is only awaited
        to hear of a disconnect, which may take as long as the request does."""
        seen = 0
        complete = False

        async def limited() -> Message:
            nonlocal seen, complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeoutError(
                    f"the request body did not arrive within {self.read_timeout_s:g} s "
                    "(read_timeout_s); send it in one go"
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > limit:
                    raise PayloadTooLargeError(_too_large(f"more than {limit}", limit))
            return message

        return limited


def _too_large(size: int | str, limit: int) -> str:
    return f"body of {size} bytes is over the limit of {limit} bytes"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def protected_errors(settings: Settings) -> tuple[int, ...]:
    """What the guards may answer on a protected route, for its OpenAPI entry: 401 with API keys; 429
    with keys (failed authentications are throttled) or a rate limit."""
    keys = bool(settings.api_keys)
    return ((401,) if keys else ()) + ((429,) if settings.rate_limit_per_s or keys else ())


def install_guards(app: FastAPI, settings: Settings, metrics: Metrics, buckets: TokenBuckets) -> None:
    """The guards of :class:`GuardMiddleware` around ``app``'s routes, as the settings ask, their
    per-client state in ``buckets``."""
    keys = [key.get_secret_value() for key in settings.api_keys]
    limiter = (
        RateLimiter(buckets, settings.rate_limit_per_s, settings.rate_limit_burst)
        if settings.rate_limit_per_s
        else None
    )
    throttle = AuthFailureThrottle(buckets, settings.auth_failure_limit, settings.auth_failure_window_s)
    public_metrics = settings.metrics_port is None
    app.state.rate_limiter = limiter  # the routes charge a costly request's extra runs to it
    app.state.auth_throttle = throttle  # the admin API's keys take their tries from the same buckets
    app.add_middleware(
        GuardMiddleware,
        keys=keys,
        rate_limiter=limiter,
        auth_throttle=throttle if keys else None,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        read_timeout_s=settings.read_timeout_s,
        # with keys, metrics on the public port are for key holders only
        protected=PROTECTED | ({"/metrics"} if keys and public_metrics else set()),
        body_limits={"/ui/table": settings.ui_max_file_bytes},  # the page's file upload
    )


def charge(request: Request, runs: int, what: str) -> None:
    """Take ``runs`` more tokens of the client's rate for a request that costs that many more model
    runs (at most the burst, so that any request the limits admit can run once the bucket is full);
    a :class:`RateLimitedError` when the bucket does not hold them."""
    limiter: RateLimiter | None = request.app.state.rate_limiter
    client = getattr(request.state, "client", None)
    if limiter is None or client is None or runs <= 0:
        return
    try:
        limiter.check(client, cost=min(runs, limiter.burst), what=what)
    except ServiceError:
        request.app.state.metrics.throttled.labels("rate").inc()
        raise


def install_cors(app: FastAPI, origins: list[str]) -> None:
    """CORS for ``origins`` (none: no CORS middleware at all)."""
    if not origins:
        return
    from starlette.middleware.cors import CORSMiddleware

    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
        expose_headers=["X-Request-ID", "X-Queue-Time-Ms", "X-Inference-Time-Ms", "Retry-After"],
    )
