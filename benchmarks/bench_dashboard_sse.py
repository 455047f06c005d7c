"""CPU of the dashboard's server-sent events: 64 streams over 20,000 live series.

A real mondemand-server runs the `dashboard` backend in its worker process.
A sender keeps 20,000 series live (20 programs x 10 hosts x 100 gauges) and
every second updates a tenth of the (program, host) pairs (`--fraction`), so
2,000 series change per second. The figure is the CPU time (user + system, from /proc) of
the dashboard's worker over `--seconds`, first with no stream open, then with
`--streams` streams open (each following one of the programs, as a page with
a program selected does), each stream read and discarded by this process.
Issue 18 measured 91 % of a core for 64 streams.

    .venv/bin/python benchmarks/bench_dashboard_sse.py [--seconds 20] [--streams 64] [--fraction 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from mondemand.lwes import encode
from mondemand.messages import Metric, MetricType, StatsMsg

BIN = Path(sys.executable).parent
PROGRAMS, HOSTS, METRICS = 20, 10, 100
TICKS = os.sysconf("SC_CLK_TCK")


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def datagrams(round_no: int, pairs: list[tuple[int, int]]) -> list[bytes]:
    out = []
    for prog, host in pairs:
        metrics = [Metric(MetricType.GAUGE, f"metric_{m:03d}", round_no * 7 + m) for m in range(METRICS)]
        msg = StatsMsg(f"prog{prog:02d}", f"host{host:02d}", {}, metrics)
        out += [encode(e) for e in msg.to_lwes(max_metrics=METRICS)]
    return out


class Sender(threading.Thread):
    """All pairs once, then `fraction` of them each second."""

    def __init__(self, port: int, fraction: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.fraction = fraction
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.pairs = [(p, h) for p in range(PROGRAMS) for h in range(HOSTS)]

    def send(self, data: list[bytes]) -> None:
        for i, d in enumerate(data):
            self.sock.sendto(d, ("127.0.0.1", self.port))
            if i % 50 == 49:
                time.sleep(0.002)

    def run(self) -> None:
        round_no = 0
        while not self.stop.is_set():
            round_no += 1
            part = max(1, int(len(self.pairs) * self.fraction))
            start = (round_no * part) % len(self.pairs)
            self.send(datagrams(round_no, (self.pairs * 2)[start:start + part]))
            self.stop.wait(1.0)


class Streams(threading.Thread):
    """`count` event streams, read and thrown away; counts bytes."""

    def __init__(self, port: int, count: int) -> None:
        super().__init__(daemon=True)
        self.port, self.count = port, count
        self.bytes = 0
        self.stop = threading.Event()

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        socks = []
        for i in range(self.count):
            s = socket.create_connection(("127.0.0.1", self.port))
            s.sendall(f"GET /api/stream?prog_id=prog{i % PROGRAMS:02d} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            s.setblocking(False)
            selector.register(s, selectors.EVENT_READ)
            socks.append(s)
        while not self.stop.is_set():
            for key, _ in selector.select(0.2):
                try:
                    data = key.fileobj.recv(1 << 16)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                self.bytes += len(data)
        for s in socks:
            s.close()


def status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as resp:
        return json.load(resp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--fraction", type=float, default=0.1, help="of the (program, host) pairs updated per second")
    args = parser.parse_args()
    udp, http, dash = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "routes.ini"
        config.write_text(f"""
[listener:udp]
type = lwes-udp
address = 127.0.0.1
port = {udp}
receive_buffer = 64MiB

[backend:dashboard]
type = dashboard
port = {dash}
max_streams = {max(64, args.streams)}
series_per_sender = 0         ; one sender holds all 20,000 series here
new_series_per_minute = 0

[route:stats]
events = MonDemand::StatsMsg
backends = dashboard

[http]
port = {http}
""")
        server = subprocess.Popen([str(BIN / "mondemand-server"), "-c", str(config)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    doc = status(http)
                    break
                except OSError:
                    time.sleep(0.2)
            pid = int(doc["backends"]["dashboard"]["worker_pid"])
            sender = Sender(udp, args.fraction)
            sender.send(datagrams(0, sender.pairs))
            deadline = time.monotonic() + 60
            while status(http)["backends"]["dashboard"].get("backend.series", 0) < PROGRAMS * HOSTS * METRICS:
                if time.monotonic() > deadline:
                    raise SystemExit("the series did not all arrive")
                time.sleep(0.5)
            sender.start()
            time.sleep(2)
            figures = {}
            for label, count in (("no streams", 0), (f"{args.streams} streams", args.streams)):
                streams = Streams(dash, count) if count else None
                if streams is not None:
                    streams.start()
                    time.sleep(3)  # connected and past the first full frames
                before, start = cpu_seconds(pid), time.monotonic()
                bytes_before = streams.bytes if streams else 0
                time.sleep(args.seconds)
                used, wall = cpu_seconds(pid) - before, time.monotonic() - start
                sent = (streams.bytes - bytes_before) if streams else 0
                if streams is not None:
                    streams.stop.set()
                    streams.join()
                figures[label] = used
                print(f"{label:>12}: dashboard worker {used:6.2f} CPU s in {wall:.1f} s ({100 * used / wall:5.1f} %"
                      f" of a core), streams read {sent / wall / 1e6:.2f} MB/s")
            extra = figures[f"{args.streams} streams"] - figures["no streams"]
            print(f"streams cost {100 * extra / args.seconds:.1f} % of a core over the intake "
                  f"({1000 * extra / args.seconds / max(1, args.streams):.2f} ms CPU per stream-second)")
            sender.stop.set()
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
