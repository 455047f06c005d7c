"""`Surface`: one HTTP port served by aiohttp's low-level server on its own asyncio loop in one thread.

Why: the status port and `lwes-http` were thread-per-connection servers
without read timeouts, so slow clients (slowloris) held a thread and a
descriptor each until the process ran out of both. A surface holds every
connection on one loop and bounds what a client can take:

- `header_timeout`: a request's headers must be complete this long after the
  connection opened (or, on a kept-alive connection, after the request's first
  byte); otherwise the connection is closed and counted in `timeouts`;
- `body_timeout`: handlers that read a body give up after this long
  (`read_body`), also counted in `timeouts`;
- `idle_timeout`: a kept-alive connection with no request in flight is closed
  after this long (also a client that does not read its answer);
- `max_connections`: connections beyond it are answered 503 and closed at once
  (`refused`), so that the port never takes the descriptors file backends need;
- `tls_certificate`: the port speaks HTTPS (`httplimits.tls_context`); a TLS handshake must end within
  `header_timeout`, and until it has the connection counts against `max_connections`;
- blocking work (plugin handlers, worker proxies, `/status`) runs in a thread
  pool of `pool_size` threads with a bounded backlog (`run_blocking`), never on
  the loop; a full backlog is answered 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server as _AioServer

from mondemand.httplimits import Limits, tls_context

log = logging.getLogger("mondemand.http")

#: How often the loop looks for connections past their deadline.
SWEEP_INTERVAL = 0.25
#: Blocking calls waiting for a pool thread, per thread, before new ones are answered 503.
BACKLOG_PER_THREAD = 4
#: At most one log line about refused connections per surface in this many seconds.
REFUSE_LOG_INTERVAL = 10.0
#: Seconds past header_timeout after which a connection whose TLS handshake never ended is forgotten
#: (asyncio aborts the handshake at header_timeout but does not tell the protocol).
HANDSHAKE_GRACE = 1.0
#: Seconds aiohttp keeps reading (and dropping) an unread request body before it closes.
LINGERING_TIME = 2.0


class Busy(Exception):
    """The surface cannot take this work now: answer 503 with Retry-After."""


class BodyTimeout(Exception):
    """The request body did not arrive within `body_timeout`."""


Handler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


class _Refuse(asyncio.Protocol):
    """A connection over `max_connections`: one 503 and close."""

    BODY = b'{"error": "too many connections"}\n'
    ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
              b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.ANSWER)
        transport.close()


class _Connection(RequestHandler):
    """aiohttp's connection protocol with the surface's deadlines."""

    def __init__(self, surface: Surface, manager: _AioServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.surface = surface
        self.busy = False
        #: Loop time at which the connection is closed unless a request is in flight.
        self.deadline = self._loop.time() + surface.limits.header_timeout
        #: The deadline is the idle one (between requests), not the one for a request's headers.
        self.deadline_is_idle = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self not in self.surface._connections:  # a handshake that ended after the sweeper gave up on it
            self.surface._connections.add(self)
            self.surface._active += 1
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self in self.surface._connections:
            self.surface._connections.discard(self)
            self.surface._active -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.busy and self.deadline_is_idle:
            # The first byte of the next request on a kept-alive connection: its headers have header_timeout.
            self.deadline = self._loop.time() + self.surface.limits.header_timeout
            self.deadline_is_idle = False
        super().data_received(data)


class _GuardedServer(_AioServer):
    """aiohttp's server whose connections are `_Connection`s, refused beyond `max_connections`."""

    def __init__(self, surface: Surface, handler: Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.surface = surface

    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]
        surface = self.surface
        if surface._active >= surface.limits.max_connections:
            surface._refused()
            return _Refuse()
        surface._active += 1
        surface.accepted += 1
        conn = _Connection(surface, self, loop=self._loop, **self._kwargs)
        # Tracked from now: over TLS, connection_made comes only after the handshake (if ever).
        surface._connections.add(conn)
        return conn


class Surface:
    """One HTTP port: bind with `bind` (in the caller, so errors surface there), then `start`, `stop`.

    `handler` answers every request; or give `app`, an aiohttp `web.Application` (routes, middlewares,
    static files, streaming responses), which is set up with its `AppRunner` and served under the same
    limits (the dashboard).
    """

    def __init__(self, name: str, limits: Limits, handler: Handler | None = None, *, pool_size: int = 8,
                 app: web.Application | None = None) -> None:
        if (handler is None) == (app is None):
            raise ValueError("give a handler or an app")
        self.name = name
        self.limits = limits
        self._handler = handler
        self._app = app
        self.pool_size = pool_size
        self.accepted = 0
        self.refused = 0
        self.timeouts = 0
        self.idle_closed = 0
        self.busy = 0
        self._active = 0
        self._connections: set[_Connection] = set()
        self._backlog = 0
        self._last_refuse_log = -math.inf
        self._refused_unlogged = 0
        self._sock: socket.socket | None = None
        self._tls: ssl.SSLContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._stopped: asyncio.Event | None = None

    # -- lifecycle ------------------------------------------------------------

    def bind(self, address: str, port: int) -> tuple[str, int]:
        """Bind and listen (IPv6 when the address has a colon); returns (host, port). Raises OSError, also for
        a TLS certificate or key that cannot be loaded."""
        if self.limits.tls_certificate:
            self._tls = tls_context(self.limits.tls_certificate, self.limits.tls_key)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(min(socket.SOMAXCONN, 1024))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        return tuple(sock.getsockname()[:2])  # type: ignore[return-value]

    def start(self) -> None:
        """Serve the bound socket on a new thread; returns once the loop accepts connections."""
        assert self._sock is not None, "bind first"
        ready = threading.Event()
        failure: list[BaseException] = []
        self._pool = concurrent.futures.ThreadPoolExecutor(self.pool_size, thread_name_prefix=f"http-{self.name}")
        self._thread = threading.Thread(target=self._run, args=(ready, failure), name=f"http-{self.name}",
                                        daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Run `fn()` on the surface's loop (from any thread); nothing when the loop is not running."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(fn)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the port and every connection, then stop the loop and its pool."""
        loop, thread = self._loop, self._thread
        if loop is not None and self._stopped is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(self._stopped.set)
            thread.join(timeout)
        self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.set_exception_handler(self._loop_error)
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as exc:  # reported to start() when it happens before ready
            failure.append(exc)
            ready.set()
            if not isinstance(exc, Exception):
                raise
            log.exception("http surface %s failed", self.name)
        finally:
            loop.close()

    async def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        runner = None
        extra: dict[str, Any] = {}
        if self._app is not None:
            # The app's own runner makes its request handler and factory (routing, middlewares, signals); the
            # connections are ours, with the surface's limits.
            runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
            await runner.setup()
            assert runner.server is not None
            self._handler = runner.server.request_handler
            extra["request_factory"] = runner.server.request_factory
        server = _GuardedServer(self, self._handle, loop=loop, keepalive_timeout=self.limits.idle_timeout,
                                lingering_time=min(LINGERING_TIME, self.limits.body_timeout), access_log=None,
                                handler_cancellation=True, **extra)
        assert self._sock is not None
        tls: dict[str, Any] = {}
        if self._tls is not None:
            tls = {"ssl": self._tls, "ssl_handshake_timeout": self.limits.header_timeout}
        listening = await loop.create_server(server, sock=self._sock, backlog=min(socket.SOMAXCONN, 1024), **tls)
        sweeper = asyncio.ensure_future(self._sweep())
        ready.set()
        try:
            await self._stopped.wait()
        finally:
            sweeper.cancel()
            listening.close()
            for conn in list(self._connections):
                if conn.transport is not None:
                    conn.transport.abort()
            await server.shutdown(1.0)
            if runner is not None:
                await runner.cleanup()
            self._sock = None  # closed with the asyncio server

    async def _sweep(self) -> None:
        """Close connections past their deadline: slow headers (timeouts), idle keep-alive (idle_closed)."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = asyncio.get_running_loop().time()
            for conn in list(self._connections):
                if conn.transport is None:  # a TLS handshake in progress, or one that failed unseen
                    if now >= conn.deadline + HANDSHAKE_GRACE:
                        self._connections.discard(conn)
                        self._active -= 1
                    continue
                if conn.busy or now < conn.deadline:
                    continue
                if conn.deadline_is_idle:
                    self.idle_closed += 1
                else:
                    self.timeouts += 1
                conn.transport.abort()
                self._connections.discard(conn)
                self._active -= 1

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # accept() failing with EMFILE lands here (asyncio retries a second later): one warning, not a traceback.
        exc = context.get("exception")
        if isinstance(exc, OSError):
            log.warning("http %s: %s: %s", self.name, context.get("message"), exc)
        else:
            loop.default_exception_handler(context)

    def _refused(self) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._last_refuse_log >= REFUSE_LOG_INTERVAL:
            more = f" ({self._refused_unlogged} more since the last line)" if self._refused_unlogged else ""
            log.warning("http %s: %d connections open, the limit (max_connections); refusing new ones%s",
                        self.name, self.limits.max_connections, more)
            self._last_refuse_log = now
            self._refused_unlogged = 0
        else:
            self._refused_unlogged += 1

    def reload_tls(self) -> str | None:
        """Read `tls_certificate` and `tls_key` again (SIGHUP): new connections get the new pair. A pair that
        does not load is not taken (the old one stays) and its problem is returned."""
        if self._tls is None:
            return None
        try:
            tls_context(self.limits.tls_certificate, self.limits.tls_key)  # the whole pair first: all or nothing
            self._tls.load_cert_chain(self.limits.tls_certificate, self.limits.tls_key or None)
        except (OSError, ValueError) as exc:
            return f"http {self.name}: certificate not reloaded (the old one stays): {exc}"
        return None

    @property
    def scheme(self) -> str:
        """`https` when the port serves TLS, else `http` (for log lines and links)."""
        return "https" if self.limits.tls_certificate else "http"

    # -- requests -------------------------------------------------------------

    async def _handle(self, request: BaseRequest) -> web.StreamResponse:
        conn = request.protocol
        if isinstance(conn, _Connection):
            conn.busy = True
        try:
            try:
                return await self._handler(request)  # type: ignore[misc]
            except Busy as exc:
                self.busy += 1
                response = web.json_response({"error": str(exc)}, status=503, headers={"Retry-After": "1"})
                if not request.content.is_eof():
                    response.force_close()  # the rest of the body is not read
                return response
            except BodyTimeout as exc:
                self.timeouts += 1
                response = web.json_response({"error": str(exc)}, status=408)
                response.force_close()
                return response
        finally:
            if isinstance(conn, _Connection):
                conn.busy = False
                conn.deadline_is_idle = True
                conn.deadline = asyncio.get_running_loop().time() + self.limits.idle_timeout

    async def run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on the pool; Busy when the pool already has its bounded backlog."""
        if self._backlog >= self.pool_size * (1 + BACKLOG_PER_THREAD):
            raise Busy(f"{self._backlog} requests already waiting; retry")
        self._backlog += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._backlog -= 1

    async def read_body(self, request: BaseRequest, limit: int, too_large: Callable[[int | None], Exception],
                        reserve: Callable[[int], None] | None = None) -> bytes:
        """The whole body (Content-Length or chunked) within body_timeout; raises `too_large(length)` past
        `limit`. `reserve(n)` is called before n more bytes are kept and may raise Busy (backpressure)."""
        length = request.content_length
        if length is not None and length > limit:
            raise too_large(length)
        parts: list[bytes] = []
        total = 0
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                while True:
                    chunk = await request.content.readany()
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > limit:
                        raise too_large(None)
                    if reserve is not None:
                        reserve(len(chunk))
                    parts.append(chunk)
        except TimeoutError:
            raise BodyTimeout(f"body not complete within {self.limits.body_timeout:g} s") from None
        return b"".join(parts)

    # -- counters -------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """connections (open now), accepted, refused (over max_connections), timeouts (slow headers or
        body), idle_closed (kept-alive connections without a request), busy (503 for a full backlog)."""
        return {"connections": self._active, "accepted": self.accepted, "refused": self.refused,
                "timeouts": self.timeouts, "idle_closed": self.idle_closed, "busy": self.busy,
                "max_connections": self.limits.max_connections}


# -- keys (service mode, docs/service.md) ---------------------------------------


def request_key(request: BaseRequest) -> str | None:
    """The key a request presents: `Authorization: Bearer KEY`, else the `auth` query parameter (DaTtSs)."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.query.get("auth") or None


def unauthorized(what: str = "a valid key") -> web.Response:
    """401 naming what is needed (never the key that was sent)."""
    return web.json_response({"error": f"{what} is required (Authorization: Bearer KEY or ?auth=KEY)"}, status=401,
                             headers={"WWW-Authenticate": 'Bearer realm="mondemand"'})


def over_quota(wait: float) -> web.Response:
    """429 with Retry-After in whole seconds (at least 1)."""
    return web.json_response({"error": "over this tenant's quota; retry later"}, status=429,
                             headers={"Retry-After": str(max(1, math.ceil(wait)))})
