"""`Server`: listeners, router and backend workers assembled from a `ServerConfig`.

The main process receives and routes; backends run in worker processes
(`mondemand.workers`) unless their `process` is `main` or `[server] workers`
is off. docs/architecture.md has the picture.
"""

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
from mondemand.fdlimit import raise_soft_limit
from mondemand.kernelstats import KernelDrops
from mondemand.lwes import LwesDecodeError, encode
from mondemand.plugin_api import Backend, Listener, ServerContext
from mondemand.plugins import PluginHost
from mondemand.router import Router
from mondemand.runner import BackendRunner
from mondemand.selfstats import stats_events
from mondemand.workers import BackendSpec, WorkerProcess, WorkerSettings, WorkerStartError

log = logging.getLogger("mondemand.server")


class ServerStartError(Exception):
    """A listener or backend could not start; the message names it."""


class Server:
    """One running router process (the CLI adds signals around it)."""

    def __init__(self, config: ServerConfig, host: PluginHost, *, workers: bool | None = None) -> None:
        """`workers=False` keeps every backend in this process whatever the config says (tools, tests)."""
        self.config = config
        self.host = host
        self.started_at = time.time()
        self.context = ServerContext(
            inject=self.inject, hostname=config.server["hostname"], config_dir=config.path.parent.resolve(),
            sections=config.sections,
        )
        use_workers = config.server.get("workers", True) if workers is None else workers
        #: Backends running in this process.
        self.runners: dict[str, BackendRunner] = {}
        #: Worker processes by name, each running one or more backends.
        self.workers: dict[str, WorkerProcess] = {}
        targets: dict[str, Any] = {}
        groups: dict[str, list[BackendSpec]] = {}
        for name, section in config.backends.items():
            runner_options = dict(section.runner)
            process = runner_options.pop("process", None) or getattr(section.cls, "default_process", None) or name
            if not use_workers or process == "main":
                runner = BackendRunner(
                    name,
                    self._backend_factory(section.cls, name, section.options),
                    on_decode_error=self._count_decode_error,
                    **runner_options,
                )
                self.runners[name] = targets[name] = runner
            else:
                groups.setdefault(process, []).append(BackendSpec(name, section.cls, section.options, runner_options))
        settings = WorkerSettings(config.server["hostname"], self.context.config_dir, config.sections,
                                  float(config.server["drain_timeout"]), int(config.server.get("worker_nice", 5)))
        for process, specs in groups.items():
            worker = WorkerProcess(process, specs, settings, self.inject,
                                   link_bytes=int(config.server.get("worker_queue_bytes", 16 << 20)),
                                   on_decode_errors=self._count_remote_decode_errors)
            self.workers[process] = worker
            for spec in specs:
                targets[spec.name] = worker.target(spec.name)
        self.router = Router(config.routes, targets)
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
        self.kernel = KernelDrops()

    def _backend_factory(self, cls: type[Backend], name: str, options: dict[str, Any]):
        return lambda: cls(name, options, self.context)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start worker processes and backends, then the HTTP port, then listeners.

        Raises ServerStartError naming what failed. Workers are forked first,
        before this process has started any thread.
        """
        started: list[BackendRunner] = []
        forked: list[WorkerProcess] = []
        raise_soft_limit()  # before forking: the workers inherit it
        try:
            for worker in self.workers.values():
                try:
                    worker.fork()
                except OSError as exc:
                    raise ServerStartError(f"cannot start worker process {worker.name}: {exc}") from exc
                forked.append(worker)
            for worker in forked:
                try:
                    worker.wait_ready()
                except WorkerStartError as exc:
                    raise ServerStartError(str(exc)) from exc
            for worker in forked:
                worker.start_threads()
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
            for worker in forked:
                if worker.started:
                    worker.stop(timeout=5)
                else:
                    worker.kill()
            if self.http is not None:
                self.http.shutdown()
            raise
        self.kernel.watch(self.listeners)
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
        units: list[tuple[bool, Any]] = [(bool(getattr(r.backend, "injects", False)), r) for r in self.runners.values()]
        units += [(w.injects, w) for w in self.workers.values()]
        for _injects, unit in sorted(units, key=lambda u: not u[0]):
            unit.stop(timeout=timeout)
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
        for worker in self.workers.values():
            worker.reopen()

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

    def _count_remote_decode_errors(self, count: int) -> None:
        with self._decode_lock:
            self.router.decode_errors += count

    # -- self-metrics --------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Counters of the router, every listener and every backend (the /status document)."""
        listeners = {name: dict(listener.counters()) for name, listener in self.listeners.items()}
        router = self.router.totals()
        malformed = sum(int(c.get("malformed", 0)) for c in listeners.values())
        router["events_received"] += malformed
        router["dispatcher_errors"] += malformed
        router["malformed"] = malformed
        kernel = self.kernel.read()
        router["kernel_drops"] = kernel["rcvbuf_errors"]
        for name, drops in kernel["listeners"].items():
            listeners[name]["kernel_drops"] = drops
        backends = {name: runner.counters() for name, runner in self.runners.items()}
        polls = [(worker, worker.poll_counters()) for worker in self.workers.values() if worker.running]
        deadline = time.monotonic() + 1.0
        for worker, seq in polls:
            worker.wait_counters(seq, max(0.0, deadline - time.monotonic()))
        for worker in self.workers.values():
            for spec in worker.specs:
                backends[spec.name] = worker.counters(spec.name)
        return {
            "hostname": self.config.server["hostname"],
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "router": router,
            "listeners": listeners,
            "listener_addresses": {name: listener.describe() for name, listener in self.listeners.items()},
            "backends": backends,
            "workers": {name: {"pid": w.pid, "backends": [s.name for s in w.specs], "queued_bytes": w.queued_bytes,
                               "running": w.running} for name, w in self.workers.items()},
            "kernel": kernel,
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

    def http_routes(self) -> dict[str, Any]:
        """GET handlers by path prefix: this process's plugins' and, proxied, the workers' backends'."""
        routes: dict[str, Any] = {}
        for worker in self.workers.values():
            for prefix in worker.http_prefixes:
                routes[prefix] = worker.http_get
        routes.update(self.context.http_routes)
        return routes

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
                if parts.path == "/metrics":  # the same counters for Prometheus (mondemand/promexport.py)
                    from mondemand.promexport import CONTENT_TYPE_LATEST, render

                    self._send(200, render(server), CONTENT_TYPE_LATEST)
                    return
                for prefix, handler in server.http_routes().items():
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
                self._send(status, json.dumps(body, indent=1, sort_keys=True, default=str).encode(),
                           "application/json")

            def _send(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
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
