"""Connection-level guards that uvicorn lacks: a deadline and a size cap for request headers, and
a cap on open connections.

uvicorn starts a request only once its headers are complete and has no limit on how long that may
take or how large they may grow (with httptools), so slow or endless headers ("slowloris") would
hold connections and memory for ever. This subclass of uvicorn's httptools protocol:

- gives every request `header_timeout_s` from its first byte (or from the connection's opening)
  to complete its headers, else answers 408 and closes the connection;
- answers 431 and closes once a request's headers pass `max_header_bytes`;
- marks a request arriving while more than `max_connections` connections are open
  (`scope["vfnet.over_capacity"]`), and the app answers it 503 with Retry-After (JSON, counted in
  the metrics like every other answer).

A slow *body* is the app's to time out (`read_body`, 408), since only it reads the body.
Internet-facing deployments should still put a reverse proxy (nginx, Envoy) in front.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

OVER_CAPACITY = "vfnet.over_capacity"  # scope key: open connections when the request arrived
REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large"}


def guarded_protocol(
    header_timeout_s: float,
    max_header_bytes: int,
    max_connections: int,
    on_reject: Callable[[int, str], None] = lambda status, detail: None,
) -> type[HttpToolsProtocol]:
    """The protocol class to pass to uvicorn as `http=`. `on_reject(status, detail)` is told of each
    connection answered and closed here (for metrics and the log)."""

    class GuardedProtocol(HttpToolsProtocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._header_timer = None
            self._expect_headers()
            self._arm_header_timer()

        def connection_lost(self, exc) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._in_headers:  # count header bytes before the parser sees (and buffers) them
                seen = self._tail + data
                end = seen.find(b"\r\n\r\n")
                self._header_bytes += len(data) if end < 0 else max(0, end - len(self._tail))
                self._tail = seen[-3:]
                if self._header_bytes > max_header_bytes:
                    self._reject(431, f"request headers larger than {max_header_bytes:,} bytes")
                    return
            super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm_header_timer()  # also the next request of a keep-alive connection

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            self._in_headers = False
            if len(self.connections) > max_connections:
                self.scope[OVER_CAPACITY] = len(self.connections)
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._expect_headers()  # a keep-alive connection's next bytes are headers again

        def _expect_headers(self) -> None:
            self._in_headers, self._header_bytes, self._tail = True, 0, b""

        def _arm_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            self._reject(408, f"request headers not received within {header_timeout_s:g} s")

        def _reject(self, status: int, detail: str) -> None:
            """Answer `status` with a JSON body and close, unless a response is being written
            (a pipelined request behind a running one): then just close."""
            self._cancel_header_timer()
            if self.transport.is_closing():
                return
            if self.cycle is None or self.cycle.response_complete:
                body = json.dumps({"detail": detail}).encode()
                head = f"HTTP/1.1 {status} {REASONS[status]}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
                self.transport.write(head.encode("latin-1") + body)
            on_reject(status, detail)
            self.transport.close()

    return GuardedProtocol
