"""HTTP connections with bounds: a deadline for a request's head, an idle limit on its body, and a connection cap.

uvicorn (on h11) closes an idle keep-alive connection after ``timeout_keep_alive`` seconds, but waits
forever for a client that connects and sends nothing, or half a request: a thousand such sockets
starve every other client before any authentication. :func:`bounded_protocol` makes uvicorn's h11
protocol class with three more rules:

* **header deadline**: a request's line and headers must arrive within ``header_timeout`` seconds of
  the connection (or of the previous response on a kept-alive connection), however slowly they trickle
  in; otherwise ``408`` and the connection is closed;
* **body limits**: while a request body arrives, a pause longer than ``body_timeout`` seconds, or a
  body still incomplete ``body_deadline`` seconds after its headers (10 MiB at 85 KB/s), closes the
  connection (the request then ends as a client that went away: nothing is stored);
* **connection cap**: a connection beyond ``max_connections`` open ones is answered ``503`` at once
  (with ``Retry-After``) and closed, instead of waiting in a queue nobody serves.

Responses, including endless ones (the live stream, the events), are not limited here.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

RETRY_AFTER = 2  # seconds, sent with a 503
LINGER = 1.0  # seconds a refused connection is read (and ignored) before it is closed, so the client sees the answer


@dataclass(frozen=True)
class ConnectionLimits:
    """The bounds :func:`bounded_protocol` puts on every connection (seconds, and a count)."""

    header_timeout: float = 10.0
    body_timeout: float = 15.0
    body_deadline: float = 120.0
    max_connections: int = 256


def raw_response(status: int, reason: str, message: str, retry_after: int | None = None) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response with ``{"error": message}``, for a request never parsed."""
    body = json.dumps({"error": message}).encode()
    retry = f"retry-after: {retry_after}\r\n" if retry_after is not None else ""
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"cache-control: no-store\r\n{retry}connection: close\r\n\r\n").encode() + body


def bounded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol class with the module's three rules (pass it as ``uvicorn.Config(http=...)``)."""
    header_timeout, body_timeout, body_deadline = limits.header_timeout, limits.body_timeout, limits.body_deadline
    max_connections = limits.max_connections
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class BoundedH11Protocol(H11Protocol):
        """uvicorn's H11Protocol with a header deadline, a body idle limit and a connection cap (see the module)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._deadline: asyncio.TimerHandle | None = None
            self._body_due: float | None = None  # (loop time) when the body being received must be complete
            self._refused = False

        def _arm(self, seconds: float, expired: Any) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _refuse(self, status: int, reason: str, message: str, retry_after: int | None = None) -> None:
            """Answer and close; what the client still sends meanwhile is read and ignored (closing a socket with
            unread data would reset it, and the client could lose the answer)."""
            self._disarm()
            if not self.transport.is_closing():
                self._refused = True
                self.transport.write(raw_response(status, reason, message, retry_after))
                if self.transport.can_write_eof():
                    self.transport.write_eof()
                self.loop.call_later(LINGER, self.transport.close)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self._refuse(503, "Service Unavailable", f"the server has {max_connections} connections open; retry in a moment",
                             RETRY_AFTER)
                return
            self._arm(header_timeout, self._head_late)

        def _head_late(self) -> None:
            self._deadline = None
            if self.conn.their_state is h11.IDLE:  # still no complete request line and headers
                self._refuse(408, "Request Timeout", f"the request's headers did not arrive within {header_timeout:g} s")

        def _body_stalled(self) -> None:
            self._deadline = None
            if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
                self.transport.close()  # the app sees the client go away: nothing of the request is stored

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            super().data_received(data)
            if self.transport.is_closing():
                self._disarm()
            elif self.conn.their_state is h11.SEND_BODY:
                if self._body_due is None:
                    self._body_due = self.loop.time() + body_deadline
                # each chunk restarts the idle limit, never beyond the body's deadline
                self._arm(max(0.0, min(body_timeout, self._body_due - self.loop.time())), self._body_stalled)
            elif self.conn.their_state is not h11.IDLE:
                self._body_due = None
                self._disarm()  # the whole request is in: the response may take as long as it takes

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm(header_timeout, self._head_late)  # the next request on this connection has the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return BoundedH11Protocol
