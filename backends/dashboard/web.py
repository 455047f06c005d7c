"""The dashboard's HTTP side: an aiohttp application on its own event loop in a background thread.

Routes (all GET):

- ``/`` the page, ``/static/...`` its script, styles and the vendored uPlot;
- ``/api/overview`` programs with their hosts and status, plus the programs
  that only have stored data;
- ``/api/series?prog_id=P`` live series of a program, and those only stored;
- ``/api/errors?after=N`` the kept error and warning lines numbered above N;
- ``/api/history?prog_id=&name=&host=&kind=&ctx=k=v...`` daily-against-week curves;
- ``/api/stream?prog_id=P`` server-sent events: ``live`` (the overview and
  P's series, when something changed and at least every few seconds) and
  ``log`` (each new error line, with its number as the event id, so a
  reconnecting browser resumes where it stopped).

`WebServer.start` returns once the port is bound (or raises `DashboardError`
saying why it could not be); `stop` ends open streams and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from .alerts_view import AlertsLink, AlertsViewError
from .history import History, HistoryError
from .state import LiveState, series_json, series_order

__all__ = ["STATIC_DIR", "DashboardError", "WebServer", "build_app"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: A stream sends the overview at least this often even when nothing changed (ages, statuses move on).
REFRESH_EVERY = 5.0
#: How long a listing of the RRD tree is reused before the directories are read again.
LISTING_TTL = 30.0

log = logging.getLogger("mondemand.dashboard")


class DashboardError(RuntimeError):
    """The dashboard's HTTP server could not start."""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=_dumps)


def _sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {_dumps(data)}\n\n".encode()


class Dashboard:
    """Request handlers over one `LiveState` and an optional `History`."""

    def __init__(self, state: LiveState, history: History | None, *, title: str, push_interval: float,
                 max_streams: int, counters: Callable[[], dict[str, float]], alerts: AlertsLink | None = None) -> None:
        self.state = state
        self.history = history
        self.alerts = alerts
        self.title = title
        self.push_interval = push_interval
        self.max_streams = max_streams
        self.counters = counters
        self.streams = 0
        self.requests = 0
        self.closing = asyncio.Event()
        self._listings: dict[str, tuple[float, Any]] = {}

    def _listing(self, key: str, read: Callable[[], Any]) -> Any:
        """`read()`, reused for LISTING_TTL seconds: pages ask every second, directories change slowly."""
        now = time.monotonic()
        cached = self._listings.get(key)
        if cached is None or now - cached[0] > LISTING_TTL:
            if len(self._listings) > 1000:
                self._listings.clear()
            cached = self._listings[key] = (now, read())
        return cached[1]

    def overview(self, now: float) -> dict[str, Any]:
        live = self.state.processes(now)
        known = {p["prog_id"] for p in live}
        history = self.history
        stored = self._listing("", history.programs) if history is not None else []
        return {
            "now": now, "title": self.title, "window": self.state.window, "stale_after": self.state.stale_after,
            "processes": live, "stored_programs": [p for p in stored if p not in known],
            "history": self.history is not None, "counters": self.counters(), "last_error": self.state.last_error_seq,
        }

    def series(self, prog_id: str, now: float) -> list[dict[str, Any]]:
        rows = self.state.series(prog_id, now)
        if self.history is not None:
            live_ids = {r["id"] for r in rows}
            history = self.history
            for key in self._listing(f"prog:{prog_id}", lambda: history.stored(prog_id)):
                row = series_json(key)
                if row["id"] not in live_ids:
                    row.update(value=None, average=None, rate=None, status="stored", age=None, received=None)
                    rows.append(row)
            rows.sort(key=series_order)
        return rows

    # -- handlers -------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def api_overview(self, request: web.Request) -> web.Response:
        self.requests += 1
        return _json(self.overview(time.time()))

    async def api_series(self, request: web.Request) -> web.Response:
        self.requests += 1
        prog_id = request.query.get("prog_id")
        if prog_id is None:
            return _json({"error": "prog_id is required"}, 400)
        now = time.time()
        rows = await asyncio.get_running_loop().run_in_executor(None, self.series, prog_id, now)
        return _json({"now": now, "prog_id": prog_id, "series": rows})

    async def api_errors(self, request: web.Request) -> web.Response:
        self.requests += 1
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            return _json({"error": "after must be an integer"}, 400)
        return _json({"errors": self.state.errors(after), "last": self.state.last_error_seq})

    async def api_history(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.history is None:
            return _json({"error": "history is off: set rrd_root in the dashboard's section"}, 404)
        q = request.query
        missing = [k for k in ("prog_id", "name", "host", "kind") if k not in q]
        if missing:
            return _json({"error": f"missing query parameter(s): {', '.join(missing)}"}, 400)
        context = []
        for pair in q.getall("ctx", []):
            k, sep, v = pair.partition("=")
            if not sep:
                return _json({"error": f"ctx must be key=value, got {pair!r}"}, 400)
            context.append((k, v))
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                None, self.history.curves, q["prog_id"], q["name"], q["host"], q["kind"], context, time.time(),
                q.get("range", "day"))
        except HistoryError as exc:
            return _json({"error": str(exc)}, 400)
        return _json(result)

    async def api_alerts(self, request: web.Request) -> web.Response:
        """The alerts backend's rules, series (with silences and acks) and recent transitions."""
        self.requests += 1
        if self.alerts is None:
            return _json({"error": "the alert view is off: set alerts_url in the dashboard's section"}, 404)
        try:
            return _json(await asyncio.get_running_loop().run_in_executor(None, self.alerts.document))
        except AlertsViewError as exc:
            return _json({"error": str(exc)}, exc.status)

    async def api_alerts_change(self, request: web.Request) -> web.Response:
        """POST /api/alerts/silence {rule, series|null, seconds} or /api/alerts/ack {rule, series}.

        Only JSON bodies from this page's own origin are taken, so another site
        open in the same browser cannot post here (a cross-origin JSON POST
        needs a preflight this server never answers).
        """
        self.requests += 1
        if self.alerts is None:
            return _json({"error": "the alert view is off: set alerts_url in the dashboard's section"}, 404)
        origin = request.headers.get("Origin")
        if request.content_type != "application/json" or (origin is not None and origin.split("://", 1)[-1]
                                                           != request.host):
            return _json({"error": "send application/json from the dashboard's own page"}, 403)
        try:
            body = await request.json()
        except ValueError:
            return _json({"error": "the body is not JSON"}, 400)
        if not isinstance(body, dict) or not isinstance(body.get("rule"), str):
            return _json({"error": "expected {rule, series, ...}"}, 400)
        series = body.get("series")
        if series is not None and not isinstance(series, str):
            return _json({"error": "series must be a series key or null"}, 400)
        action = request.match_info["action"]
        try:
            if action == "silence":
                seconds = body.get("seconds")
                if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                    return _json({"error": "seconds must be a number"}, 400)
                call = lambda: self.alerts.silence(body["rule"], series, float(seconds))  # noqa: E731
            elif series is None:
                return _json({"error": "an acknowledgement names one series"}, 400)
            else:
                call = lambda: self.alerts.acknowledge(body["rule"], series)  # noqa: E731
            entry = await asyncio.get_running_loop().run_in_executor(None, call)
        except AlertsViewError as exc:
            return _json({"error": str(exc)}, exc.status)
        except OSError as exc:
            return _json({"error": f"cannot write the silences file: {exc}"}, 500)
        return _json({"ok": True, action: entry})

    async def api_stream(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.streams >= self.max_streams:
            return _json({"error": f"too many open streams ({self.max_streams})"}, 503)
        prog_id = request.query.get("prog_id", "")
        try:
            after = int(request.headers.get("Last-Event-ID") or request.query.get("after", "0"))
        except ValueError:
            after = 0
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        self.streams += 1
        seen_version, sent_at = -1, 0.0
        try:
            await resp.write(b"retry: 2000\n\n")
            while not self.closing.is_set():
                for line in self.state.errors(after):
                    await resp.write(_sse("log", line, line["seq"]))
                    after = line["seq"]
                now = time.time()
                version = self.state.version
                if version != seen_version or now - sent_at >= REFRESH_EVERY:
                    payload = {"overview": self.overview(now)}
                    if prog_id:
                        payload["series"] = self.series(prog_id, now)
                        payload["prog_id"] = prog_id
                    await resp.write(_sse("live", payload))
                    seen_version, sent_at = version, now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closing.wait(), self.push_interval)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.streams -= 1
        return resp


def build_app(dashboard: Dashboard) -> web.Application:
    """The aiohttp application serving `dashboard`."""
    app = web.Application()
    app.router.add_get("/", dashboard.index)
    app.router.add_get("/api/overview", dashboard.api_overview)
    app.router.add_get("/api/series", dashboard.api_series)
    app.router.add_get("/api/errors", dashboard.api_errors)
    app.router.add_get("/api/history", dashboard.api_history)
    app.router.add_get("/api/stream", dashboard.api_stream)
    app.router.add_get("/api/alerts", dashboard.api_alerts)
    app.router.add_post("/api/alerts/{action:silence|ack}", dashboard.api_alerts_change)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    add_routes = getattr(dashboard, "add_routes", None)  # service mode: /login (backends/dashboard/auth.py)
    if add_routes is not None:
        add_routes(app)
    return app


class WebServer:
    """Runs the dashboard's aiohttp application on `address`:`port` in a thread of its own."""

    def __init__(self, make_dashboard: Callable[[], Dashboard], address: str, port: int,
                 name: str = "dashboard") -> None:
        self.make_dashboard = make_dashboard
        self.address = address
        self.port = port
        self.name = name
        self.dashboard: Dashboard | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/"

    def start(self, timeout: float = 15.0) -> None:
        """Bind and serve; raises DashboardError when the port cannot be had."""
        self._thread = threading.Thread(target=self._run, name=f"dashboard-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise DashboardError(f"dashboard HTTP server did not start within {timeout:g} s")
        if self._error is not None:
            raise DashboardError(f"cannot serve the dashboard on {self.address}:{self.port}: {self._error}")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        runner: web.AppRunner | None = None
        try:
            self.dashboard = self.make_dashboard()
            runner = web.AppRunner(build_app(self.dashboard), access_log=None, shutdown_timeout=2.0)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.address, self.port, reuse_address=True)
            loop.run_until_complete(site.start())
            if runner.addresses:
                self.port = runner.addresses[0][1]
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            if runner is not None:
                loop.run_until_complete(runner.cleanup())
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_until_complete(self.dashboard.closing.wait())
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        """End open streams, close the port and join the thread."""
        loop, dashboard = self._loop, self.dashboard
        if loop is not None and dashboard is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(dashboard.closing.set)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("dashboard HTTP thread did not end within %g s", timeout)
