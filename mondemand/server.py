"""`Server`: listeners, router and backend workers assembled from a `ServerConfig`."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from mondemand.config import ServerConfig
from mondemand.envelope import RawEvent
from mondemand.lwes import LwesDecodeError, encode
from mondemand.plugin_api import Backend, Listener, ServerContext
from mondemand.plugins import PluginHost
from mondemand.router import Router
from mondemand.runner import BackendRunner
from mondemand.selfstats import stats_events

log = logging.getLogger("mondemand.server")


class ServerStartError(Exception):
    """A listener or backend could not start; the message names it."""


class Server:
    """One running router process (the CLI adds signals around it)."""

    def __init__(self, config: ServerConfig, host: PluginHost) -> None:
        self.config = config
        self.host = host
        self.started_at = time.time()
        self.context = ServerContext(
            inject=self.inject, hostname=config.server["hostname"], config_dir=config.path.parent.resolve(),
            sections=config.sections,
        )
        self.runners: dict[str, BackendRunner] = {}
        for name, section in config.backends.items():
            self.runners[name] = BackendRunner(
                name,
                self._backend_factory(section.cls, name, section.options),
                on_decode_error=self._count_decode_error,
                **section.runner,
            )
        self.router = Router(config.routes, self.runners)
        self.listeners: dict[str, Listener] = {
            name: section.cls(name, section.options, self.context) for name, section in config.listeners.items()
        }
        self._inject = self.router.dispatcher("internal")
        self._decode_lock = threading.Lock()
        self._inject_lock = threading.Lock()
        self._stop = threading.Event()
        self._stats_thread: threading.Thread | None = None
        self._stats_socket: socket.socket | None = None
        self.http: ThreadingHTTPServer | None = None

    def _backend_factory(self, cls: type[Backend], name: str, options: dict[str, Any]):
        return lambda: cls(name, options, self.context)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start backends, then the HTTP port, then listeners; raises ServerStartError naming what failed."""
        started: list[BackendRunner] = []
        try:
            for name, runner in self.runners.items():
                try:
                    runner.start()
                except Exception as exc:
                    raise ServerStartError(f"[backend:{name}] failed to start: {exc}") from exc
                started.append(runner)
            if self.config.http is not None:
                self._start_http()
            for name, listener in self.listeners.items():
                try:
                    listener.start(self.router.dispatcher(name))
                except Exception as exc:
                    raise ServerStartError(f"[listener:{name}] failed to start: {exc}") from exc
                log.info("listening on %s", listener.describe())
        except ServerStartError:
            self._stop_listeners()
            for runner in started:
                runner.stop(timeout=5)
            if self.http is not None:
                self.http.shutdown()
            raise
        if self.config.server["stats_channel"] is not None:
            self._stats_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._stats_thread = threading.Thread(target=self._stats_loop, name="self-metrics", daemon=True)
        self._stats_thread.start()
        self.host.notify("server_started", server=self)

    def stop(self) -> None:
        """Stop listening, drain every queue, flush and close every backend."""
        self.host.notify("server_stopping", server=self)
        self._stop.set()
        self._stop_listeners()
        if self._stats_thread is not None:
            self._stats_thread.join(5)
        timeout = self.config.server["drain_timeout"]
        # Backends that inject (the summariser's last intervals) stop first, while the others still run.
        ordered = sorted(self.runners.values(), key=lambda r: not getattr(r.backend, "injects", False))
        for runner in ordered:
            runner.stop(timeout=timeout)
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
        if self._stats_socket is not None:
            self._stats_socket.close()

    def _stop_listeners(self) -> None:
        for name, listener in self.listeners.items():
            try:
                listener.stop()
            except Exception as exc:
                log.error("listener %s failed to stop: %r", name, exc)

    def reopen(self) -> None:
        """SIGHUP: every backend reopens its files."""
        for runner in self.runners.values():
            runner.request_reopen()

    def inject(self, raw: RawEvent) -> None:
        """Route an event produced inside the server (self-metrics, aggregates)."""
        with self._inject_lock:  # several backends may inject concurrently; one set of counters
            self._inject([raw])

    def _count_decode_error(self, raw: RawEvent, exc: LwesDecodeError) -> None:
        # Several backends may meet the same undecodable datagram: count it once.
        with self._decode_lock:
            if not getattr(exc, "counted", False):
                exc.counted = True  # type: ignore[attr-defined]
                self.router.decode_errors += 1
                log.debug("undecodable %s from %s:%s: %s", raw.name, raw.sender_ip, raw.sender_port, exc)

    # -- self-metrics --------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Counters of the router, every listener and every backend (the /status document)."""
        listeners = {name: dict(listener.counters()) for name, listener in self.listeners.items()}
        router = self.router.totals()
        malformed = sum(int(c.get("malformed", 0)) for c in listeners.values())
        router["events_received"] += malformed
        router["dispatcher_errors"] += malformed
        router["malformed"] = malformed
        return {
            "hostname": self.config.server["hostname"],
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "router": router,
            "listeners": listeners,
            "listener_addresses": {name: listener.describe() for name, listener in self.listeners.items()},
            "backends": {name: runner.counters() for name, runner in self.runners.items()},
            "plugin_problems": [str(p) for p in self.host.problems],
        }

    def emit_stats(self) -> int:
        """Send one round of self-metrics into the routes (and the stats channel); returns events sent."""
        events = stats_events(
            self.status(), prog_id=self.config.server["stats_prog_id"], hostname=self.config.server["hostname"]
        )
        channel = self.config.server["stats_channel"]
        for event in events:
            self.inject(RawEvent.from_event(event))
            if channel is not None and self._stats_socket is not None:
                try:
                    self._stats_socket.sendto(encode(event), channel)
                except OSError as exc:
                    log.warning("cannot send self-metrics to %s:%s: %s", *channel, exc)
        return len(events)

    def _stats_loop(self) -> None:
        interval = self.config.server["stats_interval"]
        while not self._stop.wait(interval):
            try:
                self.emit_stats()
            except Exception:
                log.exception("self-metrics failed")

    # -- HTTP ------------------------------------------------------------------

    def _start_http(self) -> None:
        assert self.config.http is not None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = dict(parse_qsl(parts.query))
                if parts.path in ("/status", "/status/"):
                    self._json(200, server.status())
                    return
                for prefix, handler in server.context.http_routes.items():
                    if parts.path == prefix or parts.path.startswith(prefix.rstrip("/") + "/"):
                        try:
                            status, body = handler(parts.path, query)
                        except Exception as exc:
                            log.exception("HTTP handler for %s failed", parts.path)
                            status, body = 500, {"error": repr(exc)}
                        self._json(status, body)
                        return
                self._json(404, {"error": f"no resource at {parts.path}"})

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body, indent=1, sort_keys=True, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http: " + format, *args)

        address = (self.config.http["address"], self.config.http["port"])
        try:
            self.http = ThreadingHTTPServer(address, Handler)
        except OSError as exc:
            raise ServerStartError(f"[http] cannot listen on {address[0]}:{address[1]}: {exc}") from exc
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, name="http", daemon=True).start()
        log.info("status on http://%s:%s/status", *self.http.server_address[:2])
