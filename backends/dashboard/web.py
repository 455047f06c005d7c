"""The dashboard's HTTP side: an aiohttp application on its own event loop in a background thread.

Routes (all GET):

- ``/`` the page, ``/static/...`` its script, styles and the vendored uPlot;
- ``/api/overview`` programs with their hosts and status, plus the programs
  that only have stored data;
- ``/api/series?prog_id=P`` live series of a program, and those only stored;
- ``/api/errors?after=N`` the kept error and warning lines numbered above N;
- ``/api/history?prog_id=&name=&host=&kind=&ctx=k=v...`` daily-against-week curves;
- ``/api/stream?prog_id=P`` server-sent events: ``live`` (the overview and
  P's series, when something changed and at least every few seconds, as
  deltas: `Publisher`) and ``log`` (each new error line, with its number as
  the event id, so a reconnecting browser resumes where it stopped).

`WebServer.start` returns once the port is bound (or raises `DashboardError`
saying why it could not be); `stop` ends open streams and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from mondemand.httplimits import Limits
from mondemand.httpserve import Surface

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


def _no_age(row: dict[str, Any]) -> dict[str, Any]:
    """`row` without the ages the page works out itself from `now` (they change every tick, the rest rarely)."""
    row.pop("age", None)
    for host in row.get("hosts", ()):
        host.pop("age", None)
    return row


class _Rows:
    """One table the stream keeps in step (the programs, or one program's series): rows as JSON by key."""

    __slots__ = ("delta", "full", "gen", "key", "order", "rows")

    def __init__(self, key: str) -> None:
        self.key = key
        self.rows: dict[str, str] = {}
        self.order: list[str] = []
        self.gen = -1
        #: JSON of the change from generation gen - 1 to gen (None: not known, send `full`), and of all rows
        self.delta: str | None = None
        self.full = ""

    def update(self, rows: list[dict[str, Any]], gen: int) -> None:
        """Take the table as it is now; work out what changed since the last `update` (one JSON text per row)."""
        known = self.gen == gen - 1
        new = {str(row[self.key]): _dumps(_no_age(row)) for row in rows}
        order = list(new)
        old = self.rows
        upsert = [text for k, text in new.items() if old.get(k) != text]
        removed = [k for k in old if k not in new]
        changed_order = order != self.order
        self.delta = (f'{{"upsert":[{",".join(upsert)}],"remove":{_dumps(removed)},'
                      f'"order":{_dumps(order) if changed_order else "null"}}}') if known else None
        self.full = f'{{"full":true,"upsert":[{",".join(new.values())}],"remove":[],"order":{_dumps(order)}}}'
        self.rows, self.order, self.gen = new, order, gen

    def patch(self, rows: list[dict[str, Any]], gen: int) -> bool:
        """Take the rows that may have changed (the others stay); False, nothing taken, when one is new."""
        old = self.rows
        texts = [(str(row[self.key]), _dumps(_no_age(row))) for row in rows]
        if self.gen != gen - 1 or any(k not in old for k, _ in texts):
            return False
        upsert = []
        for k, text in texts:
            if old[k] != text:
                old[k] = text
                upsert.append(text)
        self.delta = f'{{"upsert":[{",".join(upsert)}],"remove":[],"order":null}}'
        self.full = f'{{"full":true,"upsert":[{",".join(old[k] for k in self.order)}],"remove":[],"order":' \
                    f'{_dumps(self.order)}}}'
        self.gen = gen
        return True


class Publisher:
    """Works out the `live` frames once per push for every stream, as deltas.

    Why (issue 18): each stream used to build the whole overview and its
    program's series every second, so 64 streams over 20,000 series cost 91 %
    of a core. Now one task builds the programs table and the series of each
    program some stream follows once per push, compares each row's JSON with
    the last push's, and every stream gets only the rows that changed
    (``upsert``), the keys that went (``remove``) and the new order when it
    changed, the same text for all streams on the same program. A stream that
    missed a generation (it connected, or it was too slow to take one) gets
    the whole tables (``full``) instead. Ages are not sent: the page works
    them out from ``now``, so an idle row costs nothing after its first frame.
    """

    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        self.gen = 0
        self.version = -1
        self.refreshed = 0.0
        self.processes = _Rows("prog_id")
        self.series: dict[str, _Rows] = {}
        #: streams per followed program ("" for none)
        self.followers: dict[str, int] = {}
        self.header = "{}"
        self.now = 0.0
        self._forgotten = 0
        self.tick = asyncio.Event()
        self._frames: dict[tuple[str, bool], bytes] = {}
        self._task: asyncio.Task[None] | None = None

    def follow(self, prog_id: str) -> None:
        self.followers[prog_id] = self.followers.get(prog_id, 0) + 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def unfollow(self, prog_id: str) -> None:
        left = self.followers.get(prog_id, 1) - 1
        if left:
            self.followers[prog_id] = left
        else:
            self.followers.pop(prog_id, None)
            self.series.pop(prog_id, None)

    async def _run(self) -> None:
        dashboard = self.dashboard
        while self.followers and not dashboard.closing.is_set():
            self.publish(time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dashboard.closing.wait(), dashboard.push_interval)
        self.tick.set()  # streams waiting for the next generation look at `closing`

    def publish(self, now: float, force: bool = False) -> None:
        """A new generation when something changed (or every REFRESH_EVERY s: statuses and averages age)."""
        state = self.dashboard.state
        version = state.version
        refresh = force or now - self.refreshed >= REFRESH_EVERY
        if not refresh and version == self.version:
            return
        # Between refreshes only the series that took a sample are looked at (the cost follows the changes);
        # a refresh looks at all of them, for what ages without samples (status, averages) and forgotten rows.
        since = None if refresh or state.counts["forgotten_series"] != self._forgotten else self.version
        overview = self.dashboard.overview(now)  # first: should it raise, no generation is left half made
        self.gen += 1
        self.version, self.now = version, now
        if since is None:
            self.refreshed, self._forgotten = now, state.counts["forgotten_series"]
        self.processes.update(overview.pop("processes"), self.gen)
        self.header = _dumps(overview)
        for prog_id in self.followers:
            if prog_id:
                rows = self._series_rows(prog_id)
                if since is None or not rows.patch(state.series(prog_id, now, changed_since=since), self.gen):
                    rows.update(self.dashboard.series(prog_id, now), self.gen)
        self._frames.clear()
        self.tick.set()
        self.tick = asyncio.Event()

    def _series_rows(self, prog_id: str) -> _Rows:
        rows = self.series.get(prog_id)
        if rows is None:
            rows = self.series[prog_id] = _Rows("id")
        return rows

    def frame(self, prog_id: str, seen: int) -> bytes | None:
        """The `live` event for a stream on `prog_id` that has generation `seen`; None when it is up to date."""
        if self.gen == 0:
            self.publish(time.time(), force=True)
        if seen == self.gen:
            return None
        series = self.series.get(prog_id) if prog_id else None
        if prog_id and (series is None or series.gen != self.gen):  # a program nobody followed until now
            series = self._series_rows(prog_id)
            series.update(self.dashboard.series(prog_id, self.now), self.gen)
            series.delta = None
        full = seen != self.gen - 1 or self.processes.delta is None or (series is not None and series.delta is None)
        cached = self._frames.get((prog_id, full))
        if cached is None:
            text = f'{{"gen":{self.gen},"now":{self.now!r},"overview":{self.header},"processes":' + (
                self.processes.full if full else self.processes.delta)
            if series is not None:
                text += f',"prog_id":{_dumps(prog_id)},"series":' + (series.full if full else series.delta)  # type: ignore[operator]
            cached = self._frames[(prog_id, full)] = f"event: live\ndata: {text}}}\n\n".encode()
        return cached


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
        self.publisher = Publisher(self)
        #: seconds a stream may wait for its client to take a frame (the surface's idle_timeout)
        self.write_timeout = 30.0
        #: streams ended because their client read nothing for write_timeout
        self.stalled = 0

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
        publisher = self.publisher
        publisher.follow(prog_id)
        seen = -1
        try:
            await resp.write(b"retry: 2000\n\n")
            while not self.closing.is_set():
                if self.state.last_error_seq > after:
                    for line in self.state.errors(after):
                        await resp.write(_sse("log", line, line["seq"]))
                        after = line["seq"]
                frame = publisher.frame(prog_id, seen)
                if frame is not None:
                    seen = publisher.gen
                    # Waits while the client does not read (it then misses deltas); one that reads nothing for
                    # write_timeout is ended, so that it cannot hold a stream and its buffers for ever.
                    async with asyncio.timeout(self.write_timeout):
                        await resp.write(frame)
                tick = publisher.tick
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(tick.wait(), REFRESH_EVERY)
        except TimeoutError:
            self.stalled += 1
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.streams -= 1
            publisher.unfollow(prog_id)
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
    """Serves the dashboard's aiohttp application on `address`:`port` as a `mondemand.httpserve.Surface`.

    The surface bounds what clients can take (issue 18): headers within
    `header_timeout`, bodies within `body_timeout`, kept-alive connections
    without a request closed after `idle_timeout`, at most `max_connections`
    open (more get a 503 and are closed). An open event stream is a request in
    flight; `max_streams` bounds those, and a stream whose client does not
    read a frame within `idle_timeout` is ended.
    """

    def __init__(self, make_dashboard: Callable[[], Dashboard], address: str, port: int,
                 name: str = "dashboard", limits: Limits | None = None) -> None:
        self.make_dashboard = make_dashboard
        self.address = address
        self.port = port
        self.name = name
        self.limits = limits or Limits()
        self.dashboard: Dashboard | None = None
        self.surface: Surface | None = None

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        scheme = "https" if self.limits.tls_certificate else "http"
        return f"{scheme}://{host}:{self.port}/"

    def start(self, timeout: float = 15.0) -> None:
        """Bind and serve; raises DashboardError when the port cannot be had."""
        self.dashboard = self.make_dashboard()
        self.dashboard.write_timeout = self.limits.idle_timeout
        surface = Surface(f"dashboard-{self.name}", self.limits, app=build_app(self.dashboard))
        try:
            self.port = surface.bind(self.address, self.port)[1]
            surface.start()
        except Exception as exc:
            surface.stop()
            raise DashboardError(f"cannot serve the dashboard on {self.address}:{self.port}: {exc}") from exc
        self.surface = surface

    def counters(self) -> dict[str, int]:
        """The port's connection counters (`Surface.counters`)."""
        return self.surface.counters() if self.surface is not None else {}

    def stop(self, timeout: float = 10.0) -> None:
        """End open streams, close the port and every connection."""
        surface, dashboard = self.surface, self.dashboard
        if surface is None:
            return
        if dashboard is not None:
            surface.call_soon(dashboard.closing.set)
            deadline = time.monotonic() + min(timeout, 2.0)
            while dashboard.streams and time.monotonic() < deadline:  # let the streams end their responses
                time.sleep(0.02)
        surface.stop(timeout)
        self.surface = None
