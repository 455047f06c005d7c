"""A dashboard scenario shared by the browser test and docs/make_screenshot.py.

It starts the real `mondemand-server` with an `rrd` and a `dashboard`
backend, sends StatsMsg events over UDP for the same weekday last week and
for earlier today (so the RRD files hold both curves), and drives Debian's
headless Chromium through Selenium.
"""

from __future__ import annotations

import math
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

from mondemand.client.partials import PARTIAL_CONTEXT_KEY, Partial

from mondemand.lwes import encode
from mondemand.messages.stats import Metric, MetricType, Statset, StatsMsg
from tests.e2e.harness import ServerProcess, free_port, send_udp, wait_for

PROG = "dashtest"
HOSTS = ("web01", "web02")
#: Minutes of samples around the current time of day, last week and today.
WEEK_MINUTES = (-240, 120)
TODAY_MINUTES = (-240, -3)
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def noon_timezone(now: float) -> str:
    """An ``Etc/GMT±N`` zone in which `now` falls around noon, so today has hours of data behind it."""
    offset = 12 - datetime.fromtimestamp(now, UTC).hour  # local = UTC + offset, in -11..12
    if offset == 0:
        return "UTC"
    return f"Etc/GMT-{offset}" if offset > 0 else f"Etc/GMT+{-offset}"


def config(listen_port: int, dashboard_port: int, rrd_root: Path, timezone: str) -> str:
    """routes.ini text: UDP listener, rrd backend and dashboard backend reading the rrd tree."""
    return f"""
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {listen_port}

[backend:rrd]
type = rrd
root = {rrd_root}

[backend:dashboard]
type = dashboard
address = 127.0.0.1
port = {dashboard_port}
rrd_root = {rrd_root}
timezone = {timezone}
push_interval = 200ms

[route:stats]
events = MonDemand::StatsMsg
backends = rrd, dashboard

[route:logs]
events = MonDemand::LogMsg
backends = dashboard
"""


def gauge_value(minute: int, week: bool) -> int:
    """The queue gauge of the scenario: a slow wave, a little higher last week."""
    return round(45 + 12 * math.sin(minute / 25) + (10 if week else 0))


def history_messages(now: float) -> list[StatsMsg]:
    """Per-minute samples of the same weekday last week, then of earlier today, in time order."""
    base = int(now) // 60 * 60
    messages = []
    for week, (first, last) in ((True, WEEK_MINUTES), (False, TODAY_MINUTES)):
        for minute in range(first, last + 1):
            ts = base + minute * 60 - (7 * 86400 if week else 0)
            value = gauge_value(minute, week)
            for i, host in enumerate(HOSTS):
                stats = Statset(count=10 + i, sum=value * 10, min=value - 5, max=value + 9, avg=value)
                metrics = [Metric(MetricType.GAUGE, "queue", value + i), Metric(MetricType.STATSET, "latency", stats)]
                messages.append(StatsMsg(PROG, host=host, metrics=metrics, send_time=ts * 1000,
                                         collect_time=ts * 1000))
            # A DaTtSs process on web01: one partial a minute (the rrd backend rolls them up per minute).
            samples = [value - 6 + (j * 7) % 20 for j in range(20)]
            messages.append(StatsMsg(PROG, host="web01", context={PARTIAL_CONTEXT_KEY: "60000"},
                                     metrics=Partial.from_samples(samples).to_metrics("query"),
                                     send_time=ts * 1000 + 60_000, collect_time=ts * 1000))
            agg = Statset(count=21, sum=value * 20, min=value - 5, max=value + 10)
            messages.append(StatsMsg(PROG, host="all", context={"stat": "gauge"},
                                     metrics=[Metric(MetricType.STATSET, "latency", agg)],
                                     send_time=ts * 1000, collect_time=ts * 1000))
    return messages


def send_history(server: ServerProcess, listen_port: int, now: float) -> int:
    """Send `history_messages` over UDP and wait until the rrd backend has processed them all."""
    messages = history_messages(now)
    for msg in messages:
        for event in msg.to_lwes():
            send_udp(encode(event), listen_port)
    count = len(messages)
    wait_for(lambda: server.status()["backends"]["rrd"]["events_processed"] >= count, timeout=30,
             what=f"the rrd backend to store {count} events")
    return count


def start(tmp: Path) -> tuple[ServerProcess, int, int, float]:
    """The real server on free ports: (server, UDP port, dashboard port, the scenario's now)."""
    listen_port, dashboard_port = free_port(), free_port(socket.SOCK_STREAM)
    now = time.time()
    server = ServerProcess(tmp, config(listen_port, dashboard_port, tmp / "rrd", noon_timezone(now)))
    return server, listen_port, dashboard_port, now


def chromium(width: int = 1600, height: int = 1300):
    """Debian's headless Chromium driven by Selenium through Debian's chromedriver (nothing downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--force-device-scale-factor=1", "--lang=en-US"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
