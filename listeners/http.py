"""`lwes-http`: receive LWES events too large for UDP as HTTP POST bodies.

The Erlang mondemand client POSTs traces over 64 KB to `/tcp`; this listener
accepts `POST /tcp` and `POST /events`, one raw LWES event per request body.
A body that is not an event is logged at info, at most one line per 10 s.
Answers: 202 accepted, 400 for an empty body or an unreadable event name,
413 for a body over `max_body`, 404 for any other path, 405 for any other
method, 500 when the router refused the event. The standard library's
`ThreadingHTTPServer` runs on its own thread with one daemon thread per
connection; it listens on loopback unless told otherwise.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mondemand.listeners.errors import ListenerError
from mondemand.listeners.udp import MalformedLog, plain_ip

from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.lwes import LwesDecodeError
from mondemand.options import Option
from mondemand.plugin_api import Listener, ServerContext

#: Paths that accept events.
INGEST_PATHS = ("/tcp", "/events")
#: Seconds a connection may sit idle before its thread gives up on it.
REQUEST_TIMEOUT = 30.0
#: At most one logged error line per listener in this many seconds.
ERROR_LOG_INTERVAL = 10.0
#: After refusing a body, read and drop at most this much of it for at most this long before closing.
LINGER_BYTES = 64 << 20
LINGER_SECONDS = 2.0


class _BadRequest(Exception):
    """A request body that cannot be read: (status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    listener: LwesHttpListener
    deliver: Callable[[list[RawEvent]], None]
    deliver_lock: threading.Lock


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT
    protocol_version = "HTTP/1.1"
    server_version = "mondemand-lwes-http"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no line per request."""

    def do_POST(self) -> None:
        listener = self.server.listener
        path = self.path.split("?", 1)[0]
        if path not in INGEST_PATHS:
            self._discard_body()
            self._reply(404, {"error": f"no such path {path!r}; POST events to {' or '.join(INGEST_PATHS)}"})
            if self.close_connection:
                self._linger()
            return
        try:
            body = self._read_body(listener.max_body)
        except _BadRequest as exc:
            if exc.status == 413:
                listener._count(too_large=1)
            self.close_connection = True
            self._reply(exc.status, {"error": exc.message})
            self._linger()
            return
        ip, port = plain_ip(self.client_address[0]), self.client_address[1]
        if not body:
            listener._count(received=1, malformed=1)
            listener.malformed_log.report(body, ip, port, "empty body")
            self._reply(400, {"error": "empty body: expected one LWES event"})
            return
        try:
            raw = RawEvent(body, int(time.time() * 1000), ip, port, listener.name)
        except LwesDecodeError as exc:
            listener._count(received=1, malformed=1, bytes=len(body))
            listener.malformed_log.report(body, ip, port, exc)
            self._reply(400, {"error": f"unreadable LWES event: {exc}"})
            return
        listener._count(received=1, bytes=len(body))
        try:
            with self.server.deliver_lock:  # deliver is called from one thread at a time
                self.server.deliver([raw])
        except Exception as exc:
            listener._count(errors=1)
            listener._log_error(f"delivering {raw!r} failed", exc)
            self._reply(500, {"error": "the event could not be routed"})
            return
        self._reply(202, {"accepted": raw.name, "bytes": len(body)})

    def _not_allowed(self) -> None:
        self._discard_body()
        path = self.path.split("?", 1)[0]
        if path in INGEST_PATHS:
            self._reply(405, {"error": f"method {self.command} not allowed; use POST"}, {"Allow": "POST"})
        else:
            self._reply(404, {"error": f"no such path {path!r}"})
        if self.close_connection:
            self._linger()

    do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    # -- bodies -------------------------------------------------------------------

    def _read_body(self, limit: int) -> bytes:
        """The request body, Content-Length or chunked; _BadRequest when it is too big or cut short."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        text = self.headers.get("Content-Length")
        if text is None:
            return b""
        try:
            length = int(text)
            if length < 0:
                raise ValueError
        except ValueError:
            raise _BadRequest(400, f"bad Content-Length {text!r}") from None
        if length > limit:
            raise _BadRequest(413, f"body of {length} bytes is over the limit of {limit} bytes")
        body = self.rfile.read(length)
        if len(body) != length:
            raise _BadRequest(400, f"body cut short: {len(body)} of {length} bytes")
        return body

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(400, "bad chunk size") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                raise _BadRequest(413, f"body over the limit of {limit} bytes")
            chunk = self.rfile.read(size)
            if len(chunk) != size:
                raise _BadRequest(400, "body cut short")
            parts.append(chunk)
            self.rfile.readline(1024)  # the CRLF after the chunk

    def _discard_body(self) -> None:
        """Read a small unwanted body so that the connection stays usable; close it otherwise."""
        text = self.headers.get("Content-Length")
        if text is None and "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return
        try:
            length = int(text) if text is not None else -1
        except ValueError:
            length = -1
        if 0 <= length <= 65536:
            self.rfile.read(length)
        else:
            self.close_connection = True

    def _linger(self) -> None:
        """Half-close, then read and drop what the client still sends (bounded), so that closing with
        unread data does not reset the connection before the client has read the answer."""
        deadline = time.monotonic() + LINGER_SECONDS
        budget = LINGER_BYTES
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            while budget > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.connection.settimeout(left)
                chunk = self.rfile.read1(min(budget, 1 << 16))  # type: ignore[attr-defined]
                if not chunk:
                    break
                budget -= len(chunk)
        except OSError:
            pass

    def _reply(self, status: int, document: Any, headers: Mapping[str, str] | None = None) -> None:
        payload = (json.dumps(document) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class LwesHttpListener(Listener):
    """Accept LWES events POSTed over HTTP to /tcp or /events, one event per body."""

    type_name = "lwes-http"
    options = (
        Option("address", "str", "127.0.0.1", help="address to listen on (loopback by default)"),
        Option("port", "port", 20603, help="TCP port; 0 picks a free one"),
        Option("max_body", "size", 16 << 20, minimum=1, help="largest body accepted; larger ones get 413"),
    )

    def __init__(self, name: str, config: Mapping[str, Any], context: ServerContext) -> None:
        super().__init__(name, config, context)
        settings = {opt.name: opt.default for opt in self.options} | self.config
        self.address: str = str(settings["address"]).strip("[]")
        self.port: int = int(settings["port"])
        self.max_body: int = int(settings["max_body"])
        self.received = 0
        self.malformed = 0
        self.errors = 0
        self.bytes = 0
        self.too_large = 0
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._bound: tuple[str, int] | None = None
        self._last_error_log = -math.inf
        self._suppressed = 0
        #: Bodies that are not LWES events, logged at info (rate-limited).
        self.malformed_log = MalformedLog(self.log, name, what="body")

    def start(self, deliver: Callable[[list[RawEvent]], None]) -> None:
        """Bind the port and serve on a background thread; ListenerError when the port cannot be bound."""
        if self._thread is not None:
            raise RuntimeError(f"listener {self.name!r} is already started")
        cls = _Server6 if ":" in self.address else _Server
        try:
            server = cls((self.address, self.port), _Handler)
        except OSError as exc:
            raise ListenerError(self.name, self.describe(), f"cannot listen: {exc.strerror or exc}") from None
        server.listener = self
        server.deliver = deliver
        server.deliver_lock = threading.Lock()
        self._server = server
        self._bound = tuple(server.socket.getsockname()[:2])  # type: ignore[assignment]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name=f"listener-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, close the port and wait for the serving thread."""
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(5.0)

    @property
    def bound_address(self) -> tuple[str, int]:
        """(host, port) the server listens on: the real port after `start`, the configured one before."""
        return self._bound if self._bound is not None else (self.address, self.port)

    def describe(self) -> str:
        """http://host:port"""
        host, port = self.bound_address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def counters(self) -> dict[str, float]:
        """received (bodies read), malformed, errors, bytes and too_large (413 answers)."""
        with self._lock:
            return {"received": self.received, "malformed": self.malformed, "errors": self.errors,
                    "bytes": self.bytes, "too_large": self.too_large}

    def _count(self, **increments: int) -> None:
        with self._lock:
            for key, value in increments.items():
                setattr(self, key, getattr(self, key) + value)

    def _log_error(self, what: str, exc: BaseException) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last_error_log < ERROR_LOG_INTERVAL:
                self._suppressed += 1
                return
            more = f" ({self._suppressed} more errors not logged)" if self._suppressed else ""
            self._last_error_log = now
            self._suppressed = 0
        self.log.error("listener %s: %s: %r%s", self.name, what, exc, more, exc_info=exc)


@hookimpl
def register_listener_types(register: Callable[[str, type], None]) -> None:
    """Register the `lwes-http` listener type."""
    register("lwes-http", LwesHttpListener)
