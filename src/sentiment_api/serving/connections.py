"""Limits on connections that uvicorn lacks or answers badly: a deadline for a request's headers,
their size, and the connection limit's 503 (uvicorn's is bare; ours names the limit, says when to
retry and is counted).

uvicorn closes idle keep-alive connections, but a new connection that sends nothing, or trickles its
headers a byte at a time, stays open for ever, and the headers it sends are never capped: a few
hundred such clients hold file descriptors and memory without end. :class:`GuardedHttpProtocol` is
uvicorn's own HTTP protocol (httptools) with a timer from the connection (or from a request's first
byte) to the end of its headers, and a byte count over the request line and headers. The body has
its own deadline in the app (``security.GuardMiddleware``), where the answer can be an ordinary error.

The limits come from the app's settings, through the state its lifespan hands to uvicorn
(:data:`STATE_KEY`), so every worker process reads the same ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("sentiment_api.connections")
STATE_KEY = "sentiment_connection_limits"


@dataclass(frozen=True)
class ConnectionLimits:
    """What :class:`GuardedHttpProtocol` enforces, and whom it tells when it drops a connection."""

    read_timeout_s: float
    max_header_bytes: int
    on_drop: Callable[[str], None] = lambda reason: None


DEFAULT_LIMITS = ConnectionLimits(read_timeout_s=10.0, max_header_bytes=16_384)


def _plain_response(status: str, message: str, extra_headers: str = "") -> bytes:
    body = message.encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n{extra_headers}"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class CoalescingTransport:
    """A transport that holds writes until the response is complete (or, failing that, until the
    event loop's next turn), then writes them as one.

    uvicorn writes a response's status line and headers, then its body, in two ``send`` calls, and
    between the two the thread may wait for the GIL while inference runs. A worker killed in that gap
    leaves the client (or NGINX, which has already passed the headers on and so cannot retry) with
    headers and no body. One write per response closes the gap, and saves a system call.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        """Write what is pending now."""
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a header deadline, a header size limit, and a response's
    writes coalesced into one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = self.app_state.get(STATE_KEY, DEFAULT_LIMITS)
        self.limits: ConnectionLimits = limits if isinstance(limits, ConnectionLimits) else DEFAULT_LIMITS
        # uvicorn's own check of limit_concurrency answers a bare 503; this one says which limit and
        # when to retry, and counts the refusal
        self.max_connections: int | None = self.limit_concurrency
        self.limit_concurrency = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._in_headers = False
        self._refused = False

    # --- the deadline: armed on connecting and at a request's first byte, off once its headers are in
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport: CoalescingTransport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._in_headers = True
        if self._header_timer is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        if self._count(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._count(len(name) + len(value) + 4):
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        limit = self.max_connections
        if limit is not None and not self._refused and max(len(self.connections), len(self.tasks)) >= limit:
            message = (
                f"the server holds {limit} connections or requests, its limit (max_connections); "
                "retry shortly"
            )
            self._refuse("503 Service Unavailable", message, "max_connections", "retry-after: 1\r\n")
        if not self._refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        self.transport.flush()  # the whole response, in one write, now
        super().on_response_complete()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.limits.read_timeout_s, self._headers_timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _busy(self) -> bool:
        """An earlier request on this connection (pipelined) is still being answered."""
        return self.cycle is not None and not self.cycle.response_complete

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._busy():
            self._arm()  # the next pipelined request's deadline starts once this answer is out
            return
        if self._in_headers:
            message = (
                f"the request's headers did not arrive within {self.limits.read_timeout_s:g} s "
                "(read_timeout_s)"
            )
            self._refuse("408 Request Timeout", message, "read_timeout")
        else:  # connected and sent nothing: nobody is waiting for an answer
            self._drop("idle", "connected but sent no request")

    def _count(self, size: int) -> bool:
        """Add ``size`` header bytes; refuse the request (431) once past the limit."""
        if self._refused:
            return False
        self._header_bytes += size
        if self._header_bytes <= self.limits.max_header_bytes:
            return True
        message = (
            f"request line and headers are over the limit of {self.limits.max_header_bytes} bytes "
            "(max_header_bytes)"
        )
        self._refuse("431 Request Header Fields Too Large", message, "headers_too_large")
        return False

    def _refuse(self, status: str, message: str, reason: str, extra_headers: str = "") -> None:
        self._refused = True
        if not self._busy():
            self.transport.write(_plain_response(status, message, extra_headers))
        self._drop(reason, message)

    def _drop(self, reason: str, message: str) -> None:
        self._refused = True
        self._disarm()
        self.limits.on_drop(reason)
        client = self.client[0] if self.client else "unknown"
        fields = {"client": client, "reason": reason, "detail": message}
        # an idle connection is often a client's spare one (browsers open them ahead): not a warning
        log.log(
            logging.DEBUG if reason == "idle" else logging.WARNING,
            "connection closed",
            extra={"fields": fields},
        )
        self.transport.close()
