"""`lwes-http`: receive LWES events too large for UDP as HTTP POST bodies.

The Erlang mondemand client POSTs traces over 64 KB to `/tcp`; this listener
accepts `POST /tcp` and `POST /events`, one raw LWES event per request body.
A body that is not an event is logged at info, at most one line per 10 s.
Answers: 202 accepted, 400 for an empty body or an unreadable event name,
408 for a body slower than `body_timeout`, 413 for a body over `max_body`,
404 for any other path, 405 for any other method, 500 when the router refused
the event, 503 (with Retry-After) when `max_buffered` bytes of bodies are
already waiting to be read or routed or `max_connections` connections are open.
It is an aiohttp server on its own asyncio loop in one thread
(`mondemand.httpserve`), handing events to the router on one more thread; it
listens on loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from mondemand.listeners.httpsurface import SurfaceListener
from mondemand.listeners.udp import MalformedLog, plain_ip

from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.httplimits import limit_options
from mondemand.lwes import LwesDecodeError
from mondemand.messages.stats_fast import NAMES, PROG_ID
from mondemand.options import GIB, Option
from mondemand.plugin_api import ServerContext

if TYPE_CHECKING:
    from aiohttp import web
    from aiohttp.web_request import BaseRequest


#: Paths that accept events.
INGEST_PATHS = ("/tcp", "/events")
#: At most one logged error line per listener in this many seconds.
ERROR_LOG_INTERVAL = 10.0


class _TooLarge(Exception):
    """A body over `max_body` (413)."""


class LwesHttpListener(SurfaceListener):
    """Accept LWES events POSTed over HTTP to /tcp or /events, one event per body."""

    type_name = "lwes-http"
    #: Takes tenants' keys: without TLS off loopback, loading warns (docs/service.md).
    carries_keys = True
    options = (
        Option("address", "str", "127.0.0.1", help="address to listen on (loopback by default)"),
        Option("port", "port", 20603, help="TCP port; 0 picks a free one"),
        Option("max_body", "size", 16 << 20, minimum=1, maximum=GIB, help="largest body accepted; larger ones get 413"),
        Option("max_buffered", "size", 64 << 20, minimum=1 << 16, maximum=64 * GIB,
               help="bytes of bodies being read or waiting for the router (at least max_body); beyond it 503"),
        Option("anonymous", "bool", False,
               help="with [tenant:NAME] sections: also accept requests without a key (routed as no tenant)"),
        *limit_options(),
    )

    def __init__(self, name: str, config: Mapping[str, Any], context: ServerContext) -> None:
        super().__init__(name, config, context)
        settings = {opt.name: opt.default for opt in self.options} | self.config
        self._take_surface_settings(settings)
        self.max_buffered: int = max(int(settings["max_buffered"]), self.max_body)
        self.received = 0
        self.malformed = 0
        self.errors = 0
        self.bytes = 0
        self.too_large = 0
        self.unauthorized = 0
        self.over_quota = 0
        self.tenants = context.tenants
        self.anonymous = bool(settings["anonymous"])
        self._lock = threading.Lock()
        self._buffered = 0  # touched on the loop thread only
        self._last_error_log = -math.inf
        self._suppressed = 0
        #: Bodies that are not LWES events, logged at info (rate-limited).
        self.malformed_log = MalformedLog(self.log, name, what="body")

    # -- requests (on the surface's loop) -----------------------------------------

    async def _handle(self, request: BaseRequest) -> web.StreamResponse:
        from aiohttp import web

        from mondemand.httpserve import Busy

        path = request.path
        if request.method != "POST":
            if path in INGEST_PATHS:
                return web.json_response({"error": f"method {request.method} not allowed; use POST"}, status=405,
                                         headers={"Allow": "POST"})
            return web.json_response({"error": f"no such path {path!r}"}, status=404)
        if path not in INGEST_PATHS:
            return web.json_response(
                {"error": f"no such path {path!r}; POST events to {' or '.join(INGEST_PATHS)}"}, status=404)
        surface = self._surface
        assert surface is not None
        tenant = ""
        if self.tenants is not None:
            from mondemand.httpserve import request_key, unauthorized

            key = request_key(request)
            found = self.tenants.authenticate(key)
            if found is None and (key is not None or not self.anonymous):
                self._count(unauthorized=1)
                response = unauthorized()
                if not request.content.is_eof():
                    response.force_close()
                return response
            tenant = found or ""
        reserved = [0]

        def reserve(size: int) -> None:
            # Backpressure: bodies being read or waiting for the router take at most max_buffered bytes.
            if self._buffered + size > self.max_buffered:
                raise Busy(f"{self._buffered} bytes of events already waiting; retry")
            self._buffered += size
            reserved[0] += size

        def too_large(length: int | None) -> Exception:
            if length is not None:
                return _TooLarge(f"body of {length} bytes is over the limit of {self.max_body} bytes")
            return _TooLarge(f"body over the limit of {self.max_body} bytes")

        try:
            try:
                body = await surface.read_body(request, self.max_body, too_large, reserve)
            except _TooLarge as exc:
                self._count(too_large=1)
                response = web.json_response({"error": str(exc)}, status=413)
                response.force_close()
                return response
            peer = request.transport.get_extra_info("peername") if request.transport is not None else None
            ip, port = plain_ip(peer[0]) if peer else "", int(peer[1]) if peer else 0
            if not body:
                self._count(received=1, malformed=1)
                self.malformed_log.report(body, ip, port, "empty body")
                return web.json_response({"error": "empty body: expected one LWES event"}, status=400)
            try:
                raw = RawEvent(body, int(time.time() * 1000), ip, port, self.name)
            except LwesDecodeError as exc:
                self._count(received=1, malformed=1, bytes=len(body))
                self.malformed_log.report(body, ip, port, exc)
                return web.json_response({"error": f"unreadable LWES event: {exc}"}, status=400)
            if tenant:
                from mondemand.httpserve import over_quota

                raw.tenant = tenant
                wait = self.tenants.admit(tenant, 1, len(body), 1 if raw.name == "MonDemand::LogMsg" else 0)
                if not wait and raw.name == "MonDemand::StatsMsg" and self.tenants.specs[tenant].max_series:
                    try:
                        record = raw.stats
                    except (LwesDecodeError, ValueError):
                        record = None  # undecodable: the backends count it
                    if record is not None and not self.tenants.admit_series(
                            tenant, [(record[PROG_ID], name) for name in record[NAMES]]):
                        wait = 60.0
                    self._count(received=1, over_quota=1)
                    return over_quota(wait)
            self._count(received=1, bytes=len(body))
            try:
                assert self._deliver is not None and self._deliverer is not None
                await asyncio.get_running_loop().run_in_executor(self._deliverer, self._deliver, [raw])
            except Exception as exc:
                self._count(errors=1)
                self._log_error(f"delivering {raw!r} failed", exc)
                return web.json_response({"error": "the event could not be routed"}, status=500)
            return web.json_response({"accepted": raw.name, "bytes": len(body)}, status=202)
        finally:
            self._buffered -= reserved[0]

    def counters(self) -> dict[str, float]:
        """received (bodies read), malformed, errors, bytes, too_large (413); with tenants also
        unauthorized (401) and over_quota (429)."""
        with self._lock:
            counters = {"received": self.received, "malformed": self.malformed, "errors": self.errors,
                        "bytes": self.bytes, "too_large": self.too_large}
            if self.tenants is not None:
                counters.update(unauthorized=self.unauthorized, over_quota=self.over_quota)
            return counters

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
