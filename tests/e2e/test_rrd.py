"""End to end: mondemand-server with an `rrd` backend, fed over UDP, read back with librrd after it stops."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import rrdtool
from mondemand.backends.series import SeriesKey, file_path, tree_path

from mondemand.lwes import encode
from tests.backends.rrd.rrd_helpers import BASE, Rrdcached, stats_msg
from tests.e2e.harness import ServerProcess, emit, free_port, send_udp, wait_for


def _config(port: int, root: Path, daemon: str | None) -> str:
    daemon_line = f"daemon = {daemon}\n" if daemon else ""
    return f"""
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {port}

[backend:rrd]
type = rrd
root = {root}
blacklist = ignored_*
{daemon_line}
[route:stats]
events = MonDemand::StatsMsg
backends = rrd
"""


def _values(path: Path, start: int, end: int) -> dict[int, float | None]:
    (first, _last, step), _names, rows = rrdtool.fetch(str(path), "AVERAGE", "--start", str(start),
                                                      "--end", str(end))
    return {first + step * (i + 1): row[0] for i, row in enumerate(rows)}


@pytest.mark.parametrize("via", ["direct", "rrdcached"])
def test_server_stores_stats_in_rrd_files(tmp_path: Path, via: str) -> None:
    port = free_port()
    root = tmp_path / "rrd"
    daemon = Rrdcached(tmp_path) if via == "rrdcached" else None
    server = ServerProcess(tmp_path, _config(port, root, daemon.address if daemon else None))
    try:
        # Ten minutes of history, sent now with their own timestamps: counter +600 a minute, gauge as given.
        for i in range(10):
            msg = stats_msg("shop", "web7", counters={"orders": 600 * i}, gauges={"carts": 30 + i},
                            send_time=BASE + 60 * i)
            send_udp(encode(msg.to_lwes()[0]), port)
        send_udp(encode(stats_msg("ignored_app", gauges={"g": 1}, send_time=BASE).to_lwes()[0]), port)
        emit("-p", str(port), "stats", "--prog-id", "shop", "--host-name", "web7", "--gauge", "live=5")
        wait_for(lambda: server.status()["backends"]["rrd"]["events_processed"] == 12, what="12 events stored")
        counters = server.status()["backends"]["rrd"]
        assert counters["backend.written"] == 21 and counters["backend.filtered"] == 1
        assert server.stop() == 0
        if daemon is not None:
            daemon.stop()  # rrdcached -F writes everything out when it stops
            daemon = None
    finally:
        server.stop()
        if daemon is not None:
            daemon.stop()

    orders = root / file_path(SeriesKey.make("shop", "counter", "orders", "web7"))
    carts = root / file_path(SeriesKey.make("shop", "gauge", "carts", "web7"))
    assert [_values(orders, BASE, BASE + 600)[BASE + 60 * i] for i in range(1, 10)] == [10.0] * 9
    assert [_values(carts, BASE - 60, BASE + 600)[BASE + 60 * i] for i in range(10)] == [30.0 + i for i in range(10)]
    live = root / file_path(SeriesKey.make("shop", "gauge", "live", "web7"))
    now = int(time.time())
    assert 5.0 in _values(live, now - 300, now + 120).values()
    assert (Path(f"{root}g") / tree_path(SeriesKey.make("shop", "gauge", "carts", "web7"))).resolve() == carts
    assert not (root / "ignored_app").exists()
