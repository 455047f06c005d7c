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
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from mondemand.config import ServerConfig
from mondemand.envelope import SPEEDUPS, SPEEDUPS_MISSING, STALE_BUILD, RawEvent
from mondemand.fdlimit import plan_connections, raise_soft_limit
from mondemand.httplimits import Limits
from mondemand.kernelstats import KernelDrops
from mondemand.lwes import LwesDecodeError, encode
from mondemand.plugin_api import Backend, Listener, ServerContext
from mondemand.plugins import PluginHost
from mondemand.router import Router
from mondemand.runner import BackendRunner
from mondemand.selfstats import stats_events
from mondemand.tenancy import TenantRouting, expand, http_access, tenant_context
from mondemand.tenants import Tenants
from mondemand.workers import BackendSpec, WorkerProcess, WorkerSettings, WorkerStartError

if TYPE_CHECKING:
    from mondemand.httpserve import Surface

log = logging.getLogger("mondemand.server")
#: Threads of the status port's pool for /status, /metrics and plugin handlers (which may block).
HTTP_POOL_SIZE = 8


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
        #: Service mode (mondemand/tenants.py): None without `[tenant:NAME]` sections.
        self.tenants = Tenants(config.tenants) if config.tenants else None
        self.context.tenants = self.tenants
        backend_sections, tenant_routes = expand(config)
        #: Backends running in this process.
        self.runners: dict[str, BackendRunner] = {}
        #: Worker processes by name, each running one or more backends.
        self.workers: dict[str, WorkerProcess] = {}
        targets: dict[str, Any] = {}
        groups: dict[str, list[BackendSpec]] = {}
        for name, section in backend_sections.items():
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
                                  float(config.server["drain_timeout"]), int(config.server.get("worker_nice", 5)),
                                  self.tenants)
        for process, specs in groups.items():
            worker = WorkerProcess(process, specs, settings, self.inject,
                                   link_bytes=int(config.server.get("worker_queue_bytes", 16 << 20)),
                                   on_decode_errors=self._count_remote_decode_errors)
            self.workers[process] = worker
            for spec in specs:
                targets[spec.name] = worker.target(spec.name)
        self.router = Router(config.routes, targets)
        self.tenant_routing = TenantRouting(self.router, tenant_routes, targets)
        self.listeners: dict[str, Listener] = {
            name: section.cls(name, section.options, self.context) for name, section in config.listeners.items()
        }
        self._inject = self.tenant_routing.dispatcher("internal")
        self._decode_lock = threading.Lock()
        self._inject_lock = threading.Lock()
        self._stop = threading.Event()
        self._stats_thread: threading.Thread | None = None
        self._stats_socket: socket.socket | None = None
        self.http: Surface | None = None
        #: Limits of the status port (`[http]` options; max_connections may be cut by `plan_connections`).
        self.http_limits = Limits.from_options(config.http or {})
        self.kernel = KernelDrops()

    def _backend_factory(self, cls: type[Backend], name: str, options: dict[str, Any]):
        context = tenant_context(name, self.context)
        return lambda: cls(name, options, context)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start worker processes and backends, then listeners, then the HTTP port.

        Raises ServerStartError naming what failed. Workers are forked first,
        before this process has started any thread.
        """
        if SPEEDUPS_MISSING == STALE_BUILD:
            log.warning("the compiled hot path is not used: %s; the pure-Python path runs", SPEEDUPS_MISSING)
        started: list[BackendRunner] = []
        forked: list[WorkerProcess] = []
        raise_soft_limit()  # before forking: the workers inherit it
        self._plan_connections()
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
            for name, listener in self.listeners.items():
                try:
                    listener.start(self.tenant_routing.dispatcher(name))
                except Exception as exc:
                    raise ServerStartError(f"[listener:{name}] failed to start: {exc}") from exc
                log.info("listening on %s", listener.describe())
            if self.config.http is not None:
                # Last: a /status that answers means every listener is bound (a readiness probe).
                self._start_http()
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
                self.http.stop()
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
            self.http.stop()
        if self._stats_socket is not None:
            self._stats_socket.close()

    def _plan_connections(self) -> None:
        """Fit every HTTP surface's max_connections into the open-file limit's reserve (mondemand.fdlimit)."""
        wanted: dict[str, int] = {}
        if self.config.http is not None:
            wanted["[http]"] = self.http_limits.max_connections
        for name, listener in self.listeners.items():
            if isinstance(getattr(listener, "max_connections", None), int):
                wanted[f"[listener:{name}]"] = listener.max_connections  # type: ignore[attr-defined]
        granted = plan_connections(wanted)
        if "[http]" in granted:
            self.http_limits = replace(self.http_limits, max_connections=granted["[http]"])
        for name, listener in self.listeners.items():
            if f"[listener:{name}]" in granted:
                listener.max_connections = granted[f"[listener:{name}]"]  # type: ignore[attr-defined]

    def _stop_listeners(self) -> None:
        for name, listener in self.listeners.items():
            try:
                listener.stop()
            except Exception as exc:
                log.error("listener %s failed to stop: %r", name, exc)

    def reopen(self) -> None:
        """SIGHUP: every backend reopens its files; tenants' keys files and the HTTP ports' certificates are
        read again."""
        if self.tenants is not None:
            for problem in self.tenants.reload():
                log.error("keys not reloaded (the old keys stay): %s", problem)
        reloads = [self.http.reload_tls] if self.http is not None else []
        reloads += [r for r in (getattr(lst, "reload_tls", None) for lst in self.listeners.values()) if callable(r)]
        for reload_tls in reloads:  # certificates: new connections get the new pair
            problem = reload_tls()
            if problem is not None:
                log.error("%s", problem)
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
        router = self.tenant_routing.totals()
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
            "hot_path": "python" if SPEEDUPS is None else "compiled",
            "http": self.http_counters(),
            "plugin_problems": [str(p) for p in self.host.problems],
            **({"tenants": self.tenants.status()} if self.tenants is not None else {}),
        }

    def http_counters(self) -> dict[str, dict[str, int]]:
        """Connection counters of each HTTP surface: `status` (the [http] port) and each lwes-http listener."""
        surfaces: dict[str, dict[str, int]] = {}
        if self.http is not None:
            surfaces["status"] = self.http.counters()
        for name, listener in self.listeners.items():
            counters = getattr(listener, "surface_counters", None)
            if callable(counters):
                surfaces[f"listener:{name}"] = counters()
        return surfaces

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
        """Serve /status, /metrics and the plugin routes on the `[http]` port (`mondemand.httpserve`)."""
        assert self.config.http is not None
        from mondemand.httpserve import Surface

        surface = Surface("status", self.http_limits, self._handle_http, pool_size=HTTP_POOL_SIZE)
        address, port = self.config.http["address"], self.config.http["port"]
        try:
            host, bound = surface.bind(address, port)
        except OSError as exc:
            raise ServerStartError(f"[http] cannot listen on {address}:{port}: {exc}") from exc
        self.http = surface  # before start: its handler uses it as soon as a request arrives
        surface.start()
        log.info("status on %s://%s:%s/status", surface.scheme, host, bound)

    async def _handle_http(self, request: Any) -> Any:
        """One GET on the status port; everything that may block runs on the surface's bounded pool."""
        from aiohttp import web

        from mondemand.httpserve import Busy

        assert self.http is not None
        if self.tenants is not None:
            denied = http_access(self.tenants, request)
            if denied is not None:
                return denied
        path = request.path
        query = dict(parse_qsl(request.query_string))
        if path in ("/status", "/status/"):
            return _json(200, await self.http.run_blocking(self.status))
        if path == "/metrics":  # the same counters for Prometheus (mondemand/promexport.py)
            from mondemand.promexport import CONTENT_TYPE_LATEST, render

            data = await self.http.run_blocking(render, self)
            return web.Response(status=200, body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})
        for prefix, handler in self.http_routes().items():
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                try:
                    status, body = await self.http.run_blocking(handler, path, query)
                except Busy:
                    raise
                except Exception as exc:
                    log.exception("HTTP handler for %s failed", path)
                    status, body = 500, {"error": repr(exc)}
                return _json(status, body)
        return _json(404, {"error": f"no resource at {path}"})


def _json(status: int, body: Any) -> Any:
    """The status port's JSON answer: indented, sorted keys, anything else as str."""
    from aiohttp import web

    return web.Response(status=status, body=json.dumps(body, indent=1, sort_keys=True, default=str).encode(),
                        headers={"Content-Type": "application/json"})
