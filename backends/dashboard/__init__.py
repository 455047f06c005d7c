"""`dashboard` backend: a live web page of the servers that report here.

Route StatsMsg and LogMsg events to it. It keeps a bounded live view in
memory (who reports and who stopped, each series' current value and
1-minute moving average, the last error and warning log lines) and serves a
page on its own HTTP port (loopback by default) that updates itself over
server-sent events. With `rrd_root` pointing at the `rrd` backend's root,
the page also plots today's curve of a metric over the same weekday last
week. See docs/dashboard.md.

`handle` only records into the live state under one lock; everything else
(averages, statuses, RRD reads) happens when a page asks, on the web thread.
"""

from __future__ import annotations

import dataclasses
import os
import time
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mondemand.cardinality import CardinalityGuard, CardinalityLimits, cardinality_options
from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.httplimits import Limits, limit_options
from mondemand.messages.log import Priority
from mondemand.options import DAY, HOUR, Option, OptionError
from mondemand.plugin_api import Backend
from mondemand.plugins import install_hint, missing_modules

from .history import History
from .state import LiveState

__all__ = ["DashboardBackend", "local_timezone"]

#: How often `flush` lets the live state forget what has been silent for `forget_after`.
PRUNE_EVERY = 60.0


def _check_timezone(name: str) -> None:
    if name:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {name!r}") from exc


def local_timezone(name: str = "") -> tzinfo:
    """The zone called `name`; when empty, $TZ's zone, else this machine's /etc/localtime, else UTC."""
    if name:
        return ZoneInfo(name)
    env = os.environ.get("TZ", "").lstrip(":")
    if env:
        try:
            return ZoneInfo(env)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        return UTC


class DashboardBackend(Backend):
    """Keep a live view of StatsMsg and LogMsg traffic and serve it as a web page."""

    type_name = "dashboard"
    #: Takes tenants' keys: without TLS off loopback, loading warns (docs/service.md).
    carries_keys = True
    needs = "message"
    requires_modules = ("aiohttp",)  # the `web` extra
    options = (
        Option("address", "str", "127.0.0.1", help="address the page is served on (loopback by default)"),
        Option("port", "port", 20604, help="HTTP port of the page; 0 picks a free one"),
        Option("rrd_root", "str", "", help="root of the rrd backend's tree, for daily-against-week plots; "
                                           "empty: no plots"),
        Option("rrd_daemon", "str", "", help="rrdcached address the rrd backend writes through, so reads are current"),
        Option("timezone", "str", "", check=_check_timezone,
               help="time zone whose midnight starts a day in the plots (IANA name); empty: the machine's"),
        Option("window", "duration", 60.0, minimum=1, maximum=DAY,
               help="span of the moving average (and counter rate)"),
        Option("stale_after", "duration", 180.0, minimum=1,
               help="a host or series silent this long is shown as stopped reporting"),
        Option("forget_after", "duration", 86400.0, minimum=1, maximum=400 * DAY,
               help="a host or series silent this long is dropped"),
        Option("max_series", "int", 20_000, minimum=1, help="most series kept live; more are counted and skipped"),
        Option("max_hosts", "int", 5_000, minimum=1, help="most (prog_id, host) pairs kept"),
        Option("errors", "int", 100, minimum=1, help="how many error and warning lines the stream keeps"),
        Option("log_priority", "str", "warning", choices=tuple(p.label for p in Priority),
               help="least severe log priority shown in the error stream"),
        Option("push_interval", "duration", 1.0, minimum=0.05, maximum=HOUR,
               help="how often open pages are brought up to date"),
        Option("max_streams", "int", 64, minimum=1, help="most pages open at once"),
        *limit_options(max_connections=256),
        *cardinality_options(per_sender=5_000, per_prog_id=10_000, per_datagram=1000, per_minute=5000),
        Option("title", "str", "mondemand", help="shown in the page's heading"),
        Option("alerts_url", "str", "", help="the alerts backend's state document (the server's http://HOST:PORT"
                                             "/alerts), for the alert view; empty: no alert view"),
        Option("alerts_state_file", "str", "", help="the alerts backend's state_file (relative: to the config "
                                                    "directory); silences and acks go beside it"),
    )

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[OptionError]:
        """The plots read RRD files: `rrd_root` needs rrdtool (the `rrd` extra)."""
        if options.get("rrd_root") and missing_modules(("rrdtool",)):
            return [OptionError("rrd_root", f"the plots need the rrdtool module: {install_hint('rrdtool')}")]
        return []

    def start(self) -> None:
        from .web import Dashboard, WebServer  # aiohttp: the `web` extra

        cfg = self.config
        self._pruned = time.monotonic()
        links: dict[str, Any] = {}
        #: One LiveState (and history) per tenant in service mode ("" = events without a tenant).
        self.states: dict[str, LiveState] = {}
        self.histories: dict[str, History | None] = {}

        def dashboard_of(tenant: str) -> Dashboard:
            return Dashboard(self._state(tenant), self.histories[tenant], title=cfg["title"],
                             push_interval=float(cfg["push_interval"]), max_streams=int(cfg["max_streams"]),
                             counters=self.counters, alerts=self._alerts_link(tenant, links))

        self.state = self._state("")
        self.history = self.histories[""]
        if self.context.tenants is None:
            make: Any = lambda: dashboard_of("")  # noqa: E731
        else:
            from .auth import TenantDashboards

            for tenant in self.context.tenants.names:
                self._state(tenant)
            make = lambda: TenantDashboards(self.context.tenants, dashboard_of, cfg["title"])  # noqa: E731
        self.web = WebServer(make, cfg["address"], int(cfg["port"]), self.name, Limits.from_options(cfg))
        self.web.start()
        self.log.info("dashboard at %s", self.web.url)

    def _alerts_link(self, tenant: str, links: dict[str, Any]) -> Any:
        """The tenant's AlertsLink ("" = the original alerts backend), None without `alerts_url`.

        In service mode a tenant's alerts copy serves its document under `/tenant/TENANT` on the status port,
        keeps its silences beside its own state file (mondemand/tenancy.py), and the status port wants a key:
        the link presents the server's internal one, so no user's key is kept or sent by the dashboard."""
        cfg = self.config
        if not cfg["alerts_url"]:
            return None
        if tenant not in links:
            from mondemand.tenancy import tenant_options

            from .alerts_view import AlertsLink

            url = cfg["alerts_url"]
            state_file = cfg["alerts_state_file"]
            if tenant:
                parts = urllib.parse.urlsplit(url)
                url = urllib.parse.urlunsplit(parts._replace(path=f"/tenant/{tenant}{parts.path or '/alerts'}"))
                state_file = tenant_options({"state_file": state_file}, tenant)["state_file"]
            tenants = self.context.tenants
            links[tenant] = AlertsLink(url, (self.context.config_dir / state_file) if state_file else None,
                                       key=tenants.internal_key() if tenants is not None else None,
                                       cafile=cfg["tls_certificate"] or None)
        return links[tenant]

    def _state(self, tenant: str) -> LiveState:
        """The tenant's LiveState and history, made on first use."""
        state = self.states.get(tenant)
        if state is None:
            cfg = self.config
            limits = CardinalityLimits.from_options(cfg)
            state = self.states[tenant] = LiveState(
                window=float(cfg["window"]), stale_after=float(cfg["stale_after"]),
                forget_after=float(cfg["forget_after"]), max_series=int(cfg["max_series"]),
                max_hosts=int(cfg["max_hosts"]), max_errors=int(cfg["errors"]),
                max_priority=Priority[str(cfg["log_priority"]).upper()],
                guard=CardinalityGuard(f"dashboard {self.name}{' ' + tenant if tenant else ''}: series", limits,
                                       self.log),
                host_guard=CardinalityGuard(f"dashboard {self.name}{' ' + tenant if tenant else ''}: hosts",
                                            host_limits(limits, int(cfg["max_hosts"])), self.log),
            )
            root = Path(cfg["rrd_root"]) / tenant if tenant else Path(cfg["rrd_root"])
            self.histories[tenant] = (History(root.absolute(), local_timezone(cfg["timezone"]), cfg["rrd_daemon"])
                                      if cfg["rrd_root"] else None)
        return state

    def handle(self, batch: list[RawEvent]) -> None:
        if self.context.tenants is None:
            self.state.record([(raw.message, raw.receipt_ms / 1000, raw) for raw in batch],
                              lambda index, exc: self.reject(batch[index], exc))
            return
        groups: dict[str, list[RawEvent]] = {}
        for raw in batch:
            groups.setdefault(raw.tenant, []).append(raw)
        for tenant, events in groups.items():
            if tenant and tenant not in self.states:
                continue  # a tenant that is not configured (cannot happen: listeners only know configured ones)
            self._state(tenant).record([(raw.message, raw.receipt_ms / 1000, raw) for raw in events],
                                       lambda index, exc, events=events: self.reject(events[index], exc))

    def flush(self) -> None:
        if time.monotonic() - self._pruned >= PRUNE_EVERY:
            self._pruned = time.monotonic()
            for state in list(self.states.values()):
                state.prune(time.time())

    def reopen(self) -> None:
        """SIGHUP: the page's port reads its certificate again."""
        surface = self.web.surface if hasattr(self, "web") else None
        problem = surface.reload_tls() if surface is not None else None
        if problem is not None:
            self.log.error("%s", problem)

    def close(self) -> None:
        self.web.stop()

    def counters(self) -> dict[str, float]:
        if not hasattr(self, "states"):
            return {}
        values: dict[str, float] = {}
        for state in list(self.states.values()):  # one state, or one per tenant in service mode
            for key, count in state.counts.items():
                values[key] = values.get(key, 0) + count
            sizes = state.sizes()
            for key, size in (("series", sizes["series"]), ("hosts", sizes["hosts"]), ("kept_errors", sizes["errors"])):
                values[key] = values.get(key, 0) + size
            for prefix, guard in (("", state.guard), ("hosts_", state.host_guard)):
                if guard is not None:
                    for key, value in guard.counters().items():
                        values[prefix + key] = values.get(prefix + key, 0) + value
        dashboard = self.web.dashboard if hasattr(self, "web") else None
        if dashboard is not None:
            values["requests"] = dashboard.requests
            values["streams"] = dashboard.streams
            values["stalled_streams"] = dashboard.stalled
            values.update((f"http_{k}", v) for k, v in self.web.counters().items())
        return values


def host_limits(limits: CardinalityLimits, max_hosts: int) -> CardinalityLimits:
    """The hosts table's guard: a sender may hold a fifth of `max_hosts`, a prog_id half (docs/dashboard.md)."""
    return dataclasses.replace(limits, per_sender=max(1, max_hosts // 5), per_prog_id=max(1, max_hosts // 2))


@hookimpl
def register_backend_types(register) -> None:
    register("dashboard", DashboardBackend)
