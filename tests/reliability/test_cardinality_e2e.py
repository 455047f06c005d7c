"""End to end: the two cardinality attacks of issue 18 against a real mondemand-server on loopback.

Amplification: one 60 KB datagram of 1,500 gauges made the rrd backend create
1,500 files (1.9 GB). With the defaults it creates `new_series_per_datagram`
(100) and the refusals show in /status under the sender; with the guards off
(the same server, limits 0) the same datagram still makes 1,500, so it is the
guard that bounds it. The files are small here (`rras = 1:1440`); with the
default archives the same run measured 131 MB against 1,972 MB.

Blinding: 21,000 harmless series from one sender filled an alert rule's table
(10,000) and the dashboard's (20,000). Here the flood comes from 127.0.0.2, a
real breach of another program from 127.0.0.3 and a new program from
127.0.0.4 (all of 127/8 is loopback): the breach fires, the new program shows
on the dashboard, the flooder's refusals are counted under its address.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mondemand.lwes import encode
from mondemand.messages import Metric, MetricType, StatsMsg
from tests.e2e.harness import ServerProcess, free_port, wait_for

pytestmark = pytest.mark.reliability


def send_from(source: str, port: int, datagrams: list[bytes]) -> None:
    """Send `datagrams` to 127.0.0.1:`port` from the loopback address `source`, a little paced."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        for i, data in enumerate(datagrams):
            s.sendto(data, ("127.0.0.1", port))
            if i % 5 == 4:  # paced: the kernel's receive buffer may be capped far below receive_buffer
                time.sleep(0.005)


def stats_datagrams(prog_id: str, host: str, metrics: list[Metric], per_datagram: int) -> list[bytes]:
    out = []
    for start in range(0, len(metrics), per_datagram):
        msg = StatsMsg(prog_id, host, {}, metrics[start:start + per_datagram])
        out += [encode(e) for e in msg.to_lwes(max_metrics=per_datagram)]
    return out


def backend(server: ServerProcess, name: str) -> dict[str, Any]:
    return server.status()["backends"][name]


def rrd_files(root: Path) -> int:
    return sum(1 for _ in root.rglob("*.rrd"))


@pytest.mark.parametrize("guarded", [True, False], ids=["defaults", "guards-off"])
def test_one_60kb_datagram_creates_at_most_100_rrd_files(tmp_path, guarded):
    port = free_port()
    off = "" if guarded else ("new_series_per_datagram = 0\nnew_series_per_minute = 0\n"
                              "series_per_sender = 0\nseries_per_prog_id = 0\n")
    server = ServerProcess(tmp_path, f"""
[listener:udp]
type = lwes-udp
address = 127.0.0.1
port = {port}

[backend:rrd]
type = rrd
root = {tmp_path / 'rrd'}
graphite = false
rras = 1:1440
{off}
[route:stats]
events = MonDemand::StatsMsg
backends = rrd
""")
    try:
        metrics = [Metric(MetricType.GAUGE, f"m{i:04d}", i) for i in range(1500)]
        [datagram] = stats_datagrams("amplify", "h1", metrics, 1500)
        assert 55_000 < len(datagram) <= 65_507
        send_from("127.0.0.2", port, [datagram])
        wait_for(lambda: backend(server, "rrd")["events_processed"] == 1, timeout=60, what="the datagram")
        files = rrd_files(tmp_path / "rrd")
        counters = backend(server, "rrd")
        size = sum(p.stat().st_blocks * 512 for p in (tmp_path / "rrd").rglob("*.rrd"))
        print(f"\n60 KB datagram ({len(datagram)} bytes, 1500 gauges), {'defaults' if guarded else 'guards off'}:"
              f" {files} rrd files, {size / 1e6:.0f} MB on disk")
        if guarded:
            assert files == 100
            assert counters["backend.cardinality_refused_datagram"] == 1400
            assert counters["backend.cardinality"] == 1400
            with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics", timeout=5) as resp:
                exposition = resp.read().decode()
            assert ('mondemand_backend_own_cardinality_refused_by_sender_total{backend="rrd",sender="127.0.0.2"} '
                    '1400.0') in exposition
            # A second sender is not hurt by the first one's refusals.
            send_from("127.0.0.3", port, stats_datagrams("other", "h2", metrics[:10], 10))
            wait_for(lambda: rrd_files(tmp_path / "rrd") == 110, timeout=30, what="the other sender's files")
        else:
            assert files == 1500
    finally:
        server.stop()


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def test_a_21000_series_flood_neither_silences_an_alert_nor_hides_a_new_program(tmp_path):
    port = free_port()
    dash = free_port(socket.SOCK_STREAM)
    fired = tmp_path / "fired.log"
    server = ServerProcess(tmp_path, f"""
[listener:udp]
type = lwes-udp
address = 127.0.0.1
port = {port}
receive_buffer = 64MiB

[backend:alerts]
type = alerts
flush_interval = 200ms

[alert:anything-high]
metric = *:*
above = 1000
notify = file

[notifier:file]
type = command
command = sh -c 'cat >> {fired}'

[backend:dashboard]
type = dashboard
port = {dash}

[route:stats]
events = MonDemand::StatsMsg
backends = alerts, dashboard
""")
    try:
        flood = [Metric(MetricType.GAUGE, f"harmless_{i:05d}", 1) for i in range(21_000)]
        datagrams = stats_datagrams("flood", "flooder", flood, 500)
        send_from("127.0.0.2", port, datagrams)
        wait_for(lambda: backend(server, "alerts")["events_processed"] == len(datagrams)
                 and backend(server, "dashboard")["events_processed"] == len(datagrams),
                 timeout=60, what="the flood to be processed")
        send_from("127.0.0.3", port, stats_datagrams("shop", "web01", [Metric(MetricType.GAUGE, "errors", 5000)], 1))
        send_from("127.0.0.4", port, stats_datagrams("newprog", "box9", [Metric(MetricType.GAUGE, "up", 1)], 1))
        wait_for(lambda: fired.exists() and "shop" in fired.read_text(), timeout=30, what="the shop alert to fire")
        alerts = backend(server, "alerts")
        assert alerts["backend.firing"] == 1
        assert alerts["backend.series"] < 10_000  # the flood did not fill the rule's table
        assert alerts["backend.cardinality_refused.sender.127.0.0.2"] >= 19_000
        programs = wait_for(lambda: {p["prog_id"] for p in http_json(f"http://127.0.0.1:{dash}/api/overview")
                                     ["processes"]} >= {"newprog", "shop"} and
                            http_json(f"http://127.0.0.1:{dash}/api/overview")["processes"],
                            timeout=15, what="the new program on the dashboard")
        assert any(p["prog_id"] == "flood" for p in programs)  # the flooder itself still shows
        rows = http_json(f"http://127.0.0.1:{dash}/api/series?prog_id=newprog")["series"]
        assert [r["name"] for r in rows] == ["up"]
        dashboard = backend(server, "dashboard")
        assert dashboard["backend.series"] < 20_000
        assert dashboard["backend.cardinality_refused.sender.127.0.0.2"] >= 16_000
        print(f"\n21,000-series flood: alert fired yes, new program visible yes; alert table "
              f"{alerts['backend.series']} series, {alerts['backend.cardinality_refused']:.0f} refused; dashboard "
              f"{dashboard['backend.series']} series, {dashboard['backend.cardinality_refused']:.0f} refused")
    finally:
        server.stop()
