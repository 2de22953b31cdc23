"""The HTTP server's own bounds, enforced below the application, for every route.

uvicorn's httptools protocol keeps every header byte a client sends (httptools joins a
header's pieces until it ends: ten 50 MiB headers took the process from 273 to 772 MiB)
and waits for a request head or body as long as the client likes. This protocol refuses,
before the application sees anything and whatever the route or key:

- a request line plus headers over ``max_header_bytes``, or more than ``max_headers``
  headers: **431**;
- a head not complete within ``header_timeout_seconds`` of the connection opening (or of
  its first byte after a keep-alive pause), and a body not complete within
  ``body_timeout_seconds`` of its head: **408**, and the connection is closed;
- a connection beyond ``max_connections`` open at once: **503**, closed at once.

Every refusal is JSON ``{"detail": ...}`` naming what was too large or too slow, like the
application's own errors, and closes the connection. Nothing is logged per refusal: a
flood must not become a flood of log lines.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from streamrec.settings import Settings, get_settings

LINGER_SECONDS = 1.0


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a request that is refused."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounds on heads, bodies, time and connections."""

    # The settings of the process (``streamrec api`` passes this class to uvicorn, which
    # builds one instance per connection).
    settings: Settings | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = self.settings or get_settings()
        self.max_header_bytes = limits.max_header_bytes
        self.max_headers = limits.max_headers
        self.max_connections = limits.max_connections
        self.header_timeout = limits.header_timeout_seconds
        self.body_timeout = limits.body_timeout_seconds
        self._head_done = False
        self._head_received = 0  # raw bytes since the head began: httptools buffers them
        self._head_size = 0  # request line and header bytes, as parsed
        self._header_count = 0
        self._refusal: _Refused | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._lingering = False

    # Connection
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(_Refused(503, f"connections: more than {self.max_connections} open "
                                       "at once (max_connections); retry"))
            return
        self._arm(self.header_timeout, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering or self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        if not self._head_done:
            self._head_received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(self._refusal)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        if not self._head_done and self._head_received > self.max_header_bytes:
            # httptools has not finished the head and holds what came of it so far.
            self._refuse(self._too_large())

    # Parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = self._header_count = 0
        if self._deadline is None:  # a keep-alive connection's next request starts now
            self._arm(self.header_timeout, self._head_too_slow)

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > self.max_header_bytes:
            self._stop(self._too_large())
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        self._header_count += 1
        if self._header_count > self.max_headers:
            self._stop(_Refused(431, f"headers: more than {self.max_headers} "
                                     "(max_headers)"))
        if self._head_size > self.max_header_bytes:
            self._stop(self._too_large())
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_done = True
        self._arm(self.body_timeout, self._body_too_slow)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._head_done = False
        self._head_received = 0
        super().on_message_complete()

    # Refusals
    def _too_large(self) -> _Refused:
        return _Refused(431, f"headers: the request line and headers are larger than "
                             f"{self.max_header_bytes} bytes (max_header_bytes)")

    def _stop(self, refusal: _Refused) -> None:
        self._refusal = refusal
        raise refusal  # httptools stops parsing and raises HttpParserCallbackError

    def _head_too_slow(self) -> None:
        self._deadline = None
        if self._head_received == 0 and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()  # an idle connection: nothing to answer
            return
        self._refuse(_Refused(408, f"headers: not received within {self.header_timeout:g} "
                                   "s (header_timeout_seconds)"))

    def _body_too_slow(self) -> None:
        self._deadline = None
        if self.cycle is not None and self.cycle.response_complete:
            self.transport.close()  # answered already (a 401, say): drop the rest of the body
            return
        self._refuse(_Refused(408, f"body: not received within {self.body_timeout:g} s of "
                                   "the headers (body_timeout_seconds)"))

    def _refuse(self, refusal: _Refused) -> None:
        """Answer ``refusal`` unless a response is under way already, and close."""
        self._disarm()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # half a response is out: closing is all we can do
                self.transport.close()
                return
            cycle.disconnected = True  # the application's receive() ends, its answer is dropped
            cycle.message_event.set()
        body = orjson.dumps({"detail": refusal.detail})
        head = [STATUS_LINE[refusal.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\n",
                 b"content-length: ", str(len(body)).encode(), b"\r\n",
                 b"connection: close\r\n\r\n", body]
        if not self.transport.is_closing():
            self.transport.write(b"".join(head))
            self._linger()

    def _linger(self) -> None:
        """Close after the answer, reading and dropping what the client still sends for a
        moment: closing with unread bytes would reset the connection, and the client
        could lose the answer before it read it."""
        self._lingering = True
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _arm(self, seconds: float, then) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, then)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
