"""End to end: the status port and lwes-http of a real mondemand-server under slowloris and fd exhaustion.

Slowloris: 600 connections per port dribble a header byte per second; while
they are open /status answers within 1 s and the server keeps few threads;
after `header_timeout` the server has closed them all and counted them.
Fd exhaustion: with RLIMIT_NOFILE 256, connections are opened until the ports
refuse; /status still answers and stats_file still opens new files.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mondemand.lwes import encode
from mondemand.messages import Metric, MetricType, StatsMsg
from tests.e2e.harness import BIN, ServerProcess, free_port, send_udp, wait_for

pytestmark = pytest.mark.reliability

SLOW = 600
HEADER_TIMEOUT = 5.0


def proc_status(pid: int) -> dict[str, int]:
    """Threads and VmRSS (KiB) of `pid` from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"threads": int(fields["Threads"]), "rss_kib": int(fields["VmRSS"].split()[0])}


def timed_status(port: int) -> tuple[float, dict[str, Any]]:
    start = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1) as resp:
        doc = json.load(resp)
    return time.monotonic() - start, doc


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@pytest.fixture
def own_fds():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_slowloris_on_both_ports_is_cut_off_while_status_answers(tmp_path, own_fds):
    ingest = free_port(socket.SOCK_STREAM)
    http = free_port(socket.SOCK_STREAM)
    server = ServerProcess(tmp_path, f"""
[listener:http]
type = lwes-http
port = {ingest}
header_timeout = {HEADER_TIMEOUT}s
max_connections = 1000

[backend:out]
type = sink

[route:all]
events = *
backends = out

[http]
address = 127.0.0.1
port = {http}
header_timeout = {HEADER_TIMEOUT}s
max_connections = 1000
""", http_port=http)
    socks: list[socket.socket] = []
    try:
        before = proc_status(server.proc.pid)
        # Each connection dribbles its own request line and headers, never finished.
        requests: dict[socket.socket, bytes] = {}
        for port, first in ((http, b"GET /status HTTP/1.1\r\n"), (ingest, b"POST /events HTTP/1.1\r\n")):
            for _ in range(SLOW):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.setblocking(False)
                s.send(first[:1])
                socks.append(s)
                requests[s] = first + b"Host: x\r\nX-Slow: " + b"a" * 100
        opened = time.monotonic()

        def all_accepted() -> bool:
            counters = timed_status(http)[1]["http"]
            return counters["listener:http"]["connections"] == SLOW and counters["status"]["connections"] > SLOW

        wait_for(all_accepted, timeout=3, what="the server to accept every slow connection")
        latencies, samples, closed_at = [], [], None
        step = 1
        while time.monotonic() - opened < HEADER_TIMEOUT + 4:
            if all(closed_by_peer(s) for s in socks):
                closed_at = time.monotonic() - opened
                break
            for s in socks:
                with contextlib.suppress(OSError):
                    s.send(requests[s][step:step + 1])
            step += 1
            if time.monotonic() - opened < HEADER_TIMEOUT - 1.5:  # all 1,200 still open
                latency, doc = timed_status(http)
                latencies.append(latency)
                samples.append(proc_status(server.proc.pid))
                assert doc["http"]["status"]["connections"] >= SLOW  # the slow ones plus this one
                assert doc["http"]["listener:http"]["connections"] == SLOW, doc["http"]
            time.sleep(0.5)
        assert latencies, "no /status sample while the slow connections were open"
        assert max(latencies) < 1.0, latencies
        assert max(s["threads"] for s in samples) < 50, samples
        assert closed_at is not None, "the server did not close the dribbling connections"
        assert closed_at < HEADER_TIMEOUT + 2
        _, doc = timed_status(http)
        assert doc["http"]["status"]["timeouts"] >= SLOW
        assert doc["http"]["listener:http"]["timeouts"] == SLOW
        assert doc["http"]["listener:http"]["connections"] == 0
        print(f"\nslowloris {2 * SLOW} connections: /status max {max(latencies) * 1000:.0f} ms, threads "
              f"{before['threads']} -> max {max(s['threads'] for s in samples)}, RSS {before['rss_kib'] // 1024} "
              f"-> max {max(s['rss_kib'] for s in samples) // 1024} MiB, all closed after {closed_at:.1f} s")
    finally:
        for s in socks:
            s.close()
        server.stop()


class LimitedServer(ServerProcess):
    """A ServerProcess started with RLIMIT_NOFILE `nofile` (soft and hard, so the server cannot raise it)."""

    def __init__(self, tmp: Path, config: str, http_port: int, nofile: int) -> None:
        self.http_port = http_port
        self.config_path = tmp / "routes.ini"
        self.config_path.write_text(config)
        self.log_path = tmp / "server.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [str(BIN / "mondemand-server"), "-c", str(self.config_path)],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)),
        )
        wait_for(self._ready, timeout=20, what="the server's /status")


def refused(sock: socket.socket) -> bool:
    """True when the server answers a fresh connection at once with 503 or closes it."""
    sock.settimeout(0.3)
    try:
        data = sock.recv(100)
    except TimeoutError:
        return False
    except OSError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 503")


def test_connection_flood_at_a_low_fd_limit_leaves_room_for_files_and_status(tmp_path, own_fds):
    ingest, udp = free_port(socket.SOCK_STREAM), free_port()
    http = free_port(socket.SOCK_STREAM)
    root = tmp_path / "stats"
    server = LimitedServer(tmp_path, f"""
[server]
workers = false

[listener:udp]
type = lwes-udp
address = 127.0.0.1
port = {udp}

[listener:http]
type = lwes-http
port = {ingest}

[backend:stats]
type = stats_file
root = {root}

[route:all]
events = *
backends = stats

[http]
address = 127.0.0.1
port = {http}
header_timeout = 20s
""", http_port=http, nofile=256)
    held: list[socket.socket] = []
    try:
        # Open connections on both ports until each refuses one (the limits were cut to fit 256 descriptors).
        for port in (ingest, http):
            for _attempt in range(300):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                if refused(s):
                    s.close()
                    break
                held.append(s)
            else:
                pytest.fail(f"port {port} took 300 connections at RLIMIT_NOFILE 256")
        latency_ok = False
        for _ in range(3):  # a slot on the status port frees only when a held one is closed: close one
            held.pop().close()
            time.sleep(0.3)
            latency, doc = timed_status(http)
            latency_ok = latency < 1.0
            if latency_ok:
                break
        assert latency_ok
        assert doc["http"]["listener:http"]["refused"] >= 1
        assert doc["http"]["status"]["refused"] >= 1
        limit = doc["http"]["listener:http"]["max_connections"] + doc["http"]["status"]["max_connections"]
        assert limit <= 128, doc["http"]  # half of what 256 leaves after the base reserve
        # While the other connections are held, stats_file opens a new file per program and writes it.
        for n in range(5):
            [event] = StatsMsg(f"app{n}", host="h1", metrics=[Metric(MetricType.GAUGE, "g", n)]).to_lwes()
            send_udp(encode(event), udp)
        wait_for(lambda: len([p for p in root.rglob("*") if p.is_file()]) >= 5, timeout=10,
                 what="five stats files")
        assert all(p.read_text().strip() for p in root.rglob("*") if p.is_file())
        assert "Too many open files" not in server.log()
    finally:
        for s in held:
            s.close()
        server.stop()
