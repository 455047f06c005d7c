"""`make run` as a newcomer meets it: examples/dev-server.sh on the shipped examples/routes.ini.

The script and config are copied into a temporary directory (their data lands
in its var/), so the test runs the files exactly as shipped on their own ports.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import ROOT
from tests.e2e.harness import emit, wait_for

BIN = Path(sys.executable).parent
PORTS = {"udp": 20402, "status": 20602, "ingest": 20603, "dashboard": 20604}


def port_free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:  # as the servers do: connections in TIME_WAIT do not hold the port
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def test_make_run_stores_summarises_journals_and_serves_history(tmp_path):
    taken = [name for name, port in PORTS.items()
             if not port_free(port, socket.SOCK_DGRAM if name == "udp" else socket.SOCK_STREAM)]
    assert not taken, f"the example's ports are in use ({taken}): stop the `make run` server first"
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    log = (tmp_path / "dev.log").open("w")
    proc = subprocess.Popen(["bash", str(tmp_path / "examples" / "dev-server.sh")], cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT, env={"BIN": str(BIN), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    var = tmp_path / "var"
    try:
        wait_for(lambda: _status_up(), timeout=30, what="the example server's /status")
        sent_at = int(time.time())
        for i in range(3):
            emit("stats", "--prog-id", "myapp", "--counter", f"requests={10 * (i + 1)}", "--gauge", "queue=3",
                 "-c", f"host=web0{i}")
        emit("--host", "239.5.1.1", "--interface", "127.0.0.1", "log", "--prog-id", "myapp", "--priority", "error",
             "--message", "disk full")
        status = wait_for(lambda: _processed(4), timeout=20, what="every backend to take the events")
        assert status["listeners"]["multicast"]["received"] == 1 and status["listeners"]["main"]["received"] == 3
        assert (var / "run" / "rrdcached.sock").is_socket()
        dashboard = get_json("http://127.0.0.1:20604/api/overview")
        assert "myapp" in json.dumps(dashboard)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "dev.log").read_text()
        log.close()
    output = (tmp_path / "dev.log").read_text()
    assert "ERROR" not in output, output
    assert not (var / "run" / "rrdcached.pid").exists()  # rrdcached was stopped after the server drained
    day = time.strftime("%Y/%m/%d", time.gmtime(sent_at))
    assert sorted(p.name for p in (var / "stats" / day / "myapp").iterdir()) == ["all", "web00", "web01", "web02"]
    assert "disk full" in next((var / "logs" / day / "myapp").iterdir()).read_text()
    assert list((var / "journal").glob("all_events.log.*.gz"))
    rrds = {p.name for p in (var / "rrd" / "myapp").rglob("*.rrd")}
    assert "myapp-gauge-queue-web01.rrd" in rrds and "myapp-count-queue-all-stat=gauge.rrd" in rrds
    assert not any("mondemand_server" in p.parts for p in (var / "rrd").rglob("*.rrd"))  # self-metrics kept out
    fetched = subprocess.run(["rrdtool", "lastupdate", str(var / "rrd/myapp/queue/myapp-gauge-queue-web01.rrd")],
                             capture_output=True, text=True, check=True).stdout
    assert fetched.split()[-1] == "3"  # written through rrdcached, flushed when it stopped


def _status_up() -> bool:
    try:
        get_json("http://127.0.0.1:20602/status")
    except OSError:
        return False
    return True


def _processed(events: int) -> dict | None:
    status = get_json("http://127.0.0.1:20602/status")
    backends = status["backends"]  # type: ignore[index]
    stats_backends = ("agg", "rrd", "stats_files", "dashboard", "alerts")
    done = (backends["console"]["events_processed"] >= events and backends["journal"]["events_processed"] >= events
            and all(backends[b]["events_processed"] >= events - 1 for b in stats_backends)
            and backends["log_files"]["events_processed"] >= 1)
    return status if done else None  # type: ignore[return-value]
