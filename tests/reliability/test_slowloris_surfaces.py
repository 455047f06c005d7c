"""End to end: slowloris against the dashboard's port, the prometheus backend's and the statsd listener over TCP.

A real mondemand-server serves all three. For each port, SLOW connections
dribble a byte a second of a request (or statsd line) never finished: while
they are open a normal client is still answered, and after the deadline
(`header_timeout`, statsd's `line_timeout`) the server has closed every one
and counted it. Connections beyond `max_connections` are refused at once.
"""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.e2e.harness import ServerProcess, free_port, wait_for
from tests.reliability.test_http_abuse import closed_by_peer, own_fds, proc_status  # noqa: F401 (fixture)

pytestmark = pytest.mark.reliability

SLOW = 300
DEADLINE = 3.0


def backend(server: ServerProcess, name: str) -> dict[str, Any]:
    return server.status()["backends"][name]


def dribble(port: int, first: bytes, count: int) -> tuple[list[socket.socket], dict[socket.socket, bytes]]:
    socks, rest = [], {}
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setblocking(False)
        s.send(first[:1])
        socks.append(s)
        rest[s] = first + b"a" * 200
    return socks, rest


def answered(url: str) -> float:
    start = time.monotonic()
    with urllib.request.urlopen(url, timeout=2) as resp:
        resp.read()
    return time.monotonic() - start


def test_slowloris_on_dashboard_prometheus_and_statsd_tcp_is_cut_off(tmp_path, own_fds):  # noqa: F811
    dash, prom, statsd = (free_port(socket.SOCK_STREAM) for _ in range(3))
    server = ServerProcess(tmp_path, f"""
[listener:statsd]
type = statsd
protocol = tcp
address = 127.0.0.1
port = {statsd}
line_timeout = {DEADLINE}s
max_connections = {SLOW + 20}

[backend:dashboard]
type = dashboard
port = {dash}
header_timeout = {DEADLINE}s
max_connections = {SLOW + 20}

[backend:prom]
type = prometheus
port = {prom}
header_timeout = {DEADLINE}s
max_connections = {SLOW + 20}

[route:stats]
events = MonDemand::StatsMsg
backends = dashboard, prom
""")
    socks: list[socket.socket] = []
    try:
        rest: dict[socket.socket, bytes] = {}
        for port, first in ((dash, b"GET /api/overview HTTP/1.1\r\nHost: x\r\nX-Slow: "),
                            (prom, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "),
                            (statsd, b"slow.line:1")):
            more, dribbles = dribble(port, first, SLOW)
            socks += more
            rest.update(dribbles)
        opened = time.monotonic()
        wait_for(lambda: backend(server, "dashboard")["backend.http_connections"] >= SLOW
                 and backend(server, "prom")["backend.http_connections"] >= SLOW
                 and server.status()["listeners"]["statsd"]["open_connections"] == SLOW,
                 timeout=5, what="every slow connection to be accepted")
        latencies = []
        step, closed_at = 1, None
        while time.monotonic() - opened < DEADLINE + 5:
            if all(closed_by_peer(s) for s in socks):
                closed_at = time.monotonic() - opened
                break
            for s in socks:
                with contextlib.suppress(OSError):
                    s.send(rest[s][step:step + 1])
            step += 1
            if time.monotonic() - opened < DEADLINE - 1:
                latencies.append(max(answered(f"http://127.0.0.1:{dash}/api/overview"),
                                     answered(f"http://127.0.0.1:{prom}/metrics")))
            time.sleep(0.5)
        threads = proc_status(server.proc.pid)["threads"]
        assert latencies and max(latencies) < 1.0, latencies
        assert closed_at is not None, "the server did not close the dribbling connections"
        assert closed_at < DEADLINE + 2
        dashboard, prometheus = backend(server, "dashboard"), backend(server, "prom")
        statsd_counters = server.status()["listeners"]["statsd"]
        assert dashboard["backend.http_timeouts"] >= SLOW
        assert prometheus["backend.http_timeouts"] >= SLOW
        assert statsd_counters["tcp_timeouts"] == SLOW and statsd_counters["open_connections"] == 0
        print(f"\nslowloris {SLOW} per port: dashboard and /metrics answered in max {max(latencies) * 1000:.0f} ms, "
              f"all {3 * SLOW} closed after {closed_at:.1f} s (main process threads {threads})")
    finally:
        for s in socks:
            s.close()
        server.stop()


def test_connections_beyond_max_connections_are_refused_and_the_rest_still_served(tmp_path):
    dash, prom, statsd = (free_port(socket.SOCK_STREAM) for _ in range(3))
    server = ServerProcess(tmp_path, f"""
[listener:statsd]
type = statsd
protocol = tcp
address = 127.0.0.1
port = {statsd}
max_connections = 8

[backend:dashboard]
type = dashboard
port = {dash}
max_connections = 8

[backend:prom]
type = prometheus
port = {prom}
max_connections = 8

[route:stats]
events = MonDemand::StatsMsg
backends = dashboard, prom
""")
    socks: list[socket.socket] = []
    try:
        for port in (dash, prom, statsd):
            for _ in range(8):
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        wait_for(lambda: server.status()["listeners"]["statsd"]["open_connections"] == 8, timeout=5,
                 what="the statsd connections")
        for url in (f"http://127.0.0.1:{dash}/api/overview", f"http://127.0.0.1:{prom}/metrics"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(url, timeout=2)
            assert info.value.code == 503
        extra = socket.create_connection(("127.0.0.1", statsd), timeout=5)
        extra.settimeout(2)
        assert extra.recv(10) == b""  # closed at once
        extra.close()
        assert backend(server, "dashboard")["backend.http_refused"] >= 1
        assert backend(server, "prom")["backend.http_refused"] >= 1
        assert server.status()["listeners"]["statsd"]["tcp_refused"] == 1
        for s in socks:
            s.close()
        socks.clear()
        wait_for(lambda: _ok(f"http://127.0.0.1:{dash}/api/overview") and _ok(f"http://127.0.0.1:{prom}/metrics"),
                 timeout=5, what="the ports to serve again once the connections closed")
    finally:
        for s in socks:
            s.close()
        server.stop()


def _ok(url: str) -> bool:
    try:
        answered(url)
    except OSError:
        return False
    return True
