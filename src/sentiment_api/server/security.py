"""Request guards: API keys, a per-client rate limit, and the body size limit.

Keys come as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` and are compared in constant
time against every configured key. Neither keys nor their hashes are logged: a client is named in
the rate limiter by a hash of its key, or by its address when keys are off.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import AuthenticationError, PayloadTooLargeError, RateLimitedError, ServiceError
from .errors import error_response


class RateLimiter:
    """A token bucket per client: ``rate`` requests per second, up to ``burst`` at once."""

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check(self, client: str, now: float | None = None) -> None:
        """Take one token for ``client`` or raise :class:`RateLimitedError` saying when to retry."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            raise RateLimitedError(
                f"rate limit of {self.rate:g} requests/s exceeded; retry later",
                retry_after=(1.0 - tokens) / self.rate,
            )
        self._buckets[client] = (tokens - 1.0, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)  # forget the least recently seen client


def presented_key(scope: Scope) -> bytes | None:
    """The key a request carries, from ``Authorization: Bearer`` or ``X-API-Key``."""
    for name, value in scope["headers"]:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return bytes(value[7:].strip())
        if name == b"x-api-key":
            return bytes(value.strip())
    return None


class GuardMiddleware:
    """Refuses, before any route runs: unknown keys (401), clients over their rate (429), bodies over
    the byte limit (413). Only ``protected`` paths need a key and count against the rate."""

    def __init__(
        self,
        app: ASGIApp,
        keys: Sequence[str],
        rate_limiter: RateLimiter | None,
        max_body_bytes: int,
        protected: frozenset[str],
    ) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]
        self.rate_limiter = rate_limiter
        self.max_body_bytes = max_body_bytes
        self.protected = protected

    def _authenticate(self, scope: Scope) -> str:
        """The client's name for rate limiting; raises when keys are on and this one is not known."""
        if not self.keys:
            client = scope.get("client")
            return client[0] if client else "unknown"
        key = presented_key(scope)
        if key is None:
            raise AuthenticationError(
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'"
            )
        matched = False
        for known in self.keys:
            matched |= hmac.compare_digest(key, known)
        if not matched:
            raise AuthenticationError("the API key is not valid")
        return hashlib.sha256(key).hexdigest()[:16]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            if scope["path"] in self.protected:
                client = self._authenticate(scope)
                if self.rate_limiter is not None:
                    self.rate_limiter.check(client)
            length = _content_length(scope)
            if length is not None and length > self.max_body_bytes:
                raise PayloadTooLargeError(self._too_large(length))
        except ServiceError as error:
            response = error_response(error, scope.get("state", {}).get("request_id"))
            await response(scope, receive, send)
            return
        await self.app(scope, self._limited(receive), send)

    def _too_large(self, size: int | str) -> str:
        return f"body of {size} bytes is over the limit of {self.max_body_bytes} bytes"

    def _limited(self, receive: Receive) -> Receive:
        """``receive`` that raises once more than the limit has arrived (chunked bodies)."""
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise PayloadTooLargeError(self._too_large(f"more than {self.max_body_bytes}"))
            return message

        return limited


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
