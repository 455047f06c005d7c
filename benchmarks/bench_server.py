"""End-to-end receive rate of mondemand-server against a bare socket loop, in one run.

A sender process blasts StatsMsg events (5 metrics, 2 contexts) over UDP on
loopback at (1) a bare blocking recv loop in its own process and (2) a real
`mondemand-server` routing every event to a `sink` and a second counting
sink. Then a paced run at 50k events/s checks for loss.

    python benchmarks/bench_server.py [--events 300000] [--paced-rate 50000] [--paced-seconds 4]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mondemand.messages import Metric, MetricType, StatsMsg

BIN = Path(sys.executable).parent
RCVBUF = 16 << 20


def payload() -> bytes:
    from mondemand.lwes import encode

    metrics = [Metric(MetricType.COUNTER, f"requests_{i}", 1000 + i) for i in range(3)]
    metrics += [Metric(MetricType.GAUGE, f"queue_{i}", 7 + i) for i in range(2)]
    msg = StatsMsg("bench_app", host="bench-host-01", context={"cluster": "colo1"}, metrics=metrics,
                   send_time=int(time.time() * 1000))
    [event] = msg.to_lwes()
    return encode(event)


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sender(port: int, count: int, rate: float, data: bytes, result: mp.Queue) -> None:
    """Send `count` datagrams, paced to `rate`/s when rate > 0; report (sent, seconds)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.connect(("127.0.0.1", port))
    send = s.send
    sent = 0
    start = time.perf_counter()
    if rate <= 0:
        for _ in range(count):
            try:
                send(data)
                sent += 1
            except OSError:
                pass
    else:
        burst = max(1, int(rate / 1000))  # one burst per millisecond
        while sent < count:
            target = start + sent / rate
            while time.perf_counter() < target:
                pass
            for _ in range(min(burst, count - sent)):
                try:
                    send(data)
                except OSError:
                    continue
                sent += 1
    result.put((sent, time.perf_counter() - start))


def bare_receiver(port_q: mp.Queue, result: mp.Queue, idle: float) -> None:
    """A plain blocking recv loop: the ceiling for one Python process."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), RCVBUF)  # 33: Linux value
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    s.bind(("127.0.0.1", 0))
    port_q.put(s.getsockname()[1])
    s.settimeout(30)
    recv = s.recv
    n = 0
    recv(65535)
    first = time.perf_counter()
    n = 1
    s.settimeout(idle)
    last = first
    try:
        while True:
            recv(65535)
            n += 1
            last = time.perf_counter()
    except TimeoutError:
        pass
    result.put((n, last - first))


def run_bare(count: int, data: bytes) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    port_q, result, sent_q = ctx.Queue(), ctx.Queue(), ctx.Queue()
    rx = ctx.Process(target=bare_receiver, args=(port_q, result, 1.0))
    rx.start()
    port = port_q.get(timeout=10)
    tx = ctx.Process(target=sender, args=(port, count, 0, data, sent_q))
    tx.start()
    sent, send_s = sent_q.get(timeout=300)
    received, recv_s = result.get(timeout=300)
    tx.join()
    rx.join()
    return {"sent": sent, "received": received, "send_rate": sent / send_s, "rate": received / max(recv_s, send_s)}


class Server:
    def __init__(self, tmp: Path) -> None:
        self.udp = free_port(socket.SOCK_DGRAM)
        self.http = free_port(socket.SOCK_STREAM)
        config = tmp / "bench.ini"
        config.write_text(f"""
[server]
log_level = warning
stats_interval = 3600

[http]
port = {self.http}

[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {self.udp}

[backend:sink]
type = sink

[backend:counter]
type = sink

[route:all]
events = *
backends = sink, counter
""")
        self.proc = subprocess.Popen([str(BIN / "mondemand-server"), "-c", str(config)])
        deadline = time.monotonic() + 20
        while True:
            try:
                self.status()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/status", timeout=5) as resp:
            return json.load(resp)

    def processed(self) -> tuple[int, int, int]:
        st = self.status()
        return (st["router"]["events_received"], st["backends"]["sink"]["events_processed"],
                st["backends"]["counter"]["events_processed"])

    def settle(self) -> tuple[int, int, int, float]:
        """Poll until the counts stop moving; returns the counts and when they last moved."""
        last, moved = self.processed(), time.perf_counter()
        while time.perf_counter() - moved < 1.0:
            time.sleep(0.05)
            now = self.processed()
            if now != last:
                last, moved = now, time.perf_counter()
        return (*last, moved)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def run_server(server: Server, count: int, rate: float, data: bytes) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    before = server.processed()
    sent_q = ctx.Queue()
    tx = ctx.Process(target=sender, args=(server.udp, count, rate, data, sent_q))
    start = time.perf_counter()
    tx.start()
    sent, send_s = sent_q.get(timeout=300)
    tx.join()
    received, sink, counter, moved = server.settle()
    received -= before[0]
    elapsed = max(moved - start, send_s)
    return {"sent": sent, "received": received, "sink": sink - before[1], "counter": counter - before[2],
            "send_rate": sent / send_s, "rate": received / elapsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000, help="datagrams per blast")
    parser.add_argument("--paced-rate", type=float, default=50_000)
    parser.add_argument("--paced-seconds", type=float, default=4)
    args = parser.parse_args(argv)
    data = payload()
    print(f"payload: MonDemand::StatsMsg, 5 metrics, 2 contexts, {len(data)} bytes; cores: {os.cpu_count()}")

    bare = run_bare(args.events, data)
    print(f"bare recv loop      sent {bare['sent']:>8,}  received {bare['received']:>8,} "
          f"({bare['received'] / bare['sent']:.1%})  {bare['rate']:>9,.0f} events/s  "
          f"(sender {bare['send_rate']:,.0f}/s)")
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        try:
            blast = run_server(server, args.events, 0, data)
            print(f"mondemand-server    sent {blast['sent']:>8,}  received {blast['received']:>8,} "
                  f"({blast['received'] / blast['sent']:.1%})  {blast['rate']:>9,.0f} events/s  "
                  f"(sink {blast['sink']:,}, counter {blast['counter']:,}; sender {blast['send_rate']:,.0f}/s)")
            paced_n = int(args.paced_rate * args.paced_seconds)
            paced = run_server(server, paced_n, args.paced_rate, data)
            lost = paced["sent"] - paced["counter"]
            print(f"paced {args.paced_rate:,.0f}/s      sent {paced['sent']:>8,}  received {paced['received']:>8,}  "
                  f"processed by both sinks {min(paced['sink'], paced['counter']):,}  lost {lost:,}  "
                  f"(sender {paced['send_rate']:,.0f}/s)")
        finally:
            server.stop()
    ratio = blast["rate"] / bare["rate"]
    print(f"end-to-end / bare = {ratio:.2f} (target >= 0.5); paced loss = {lost} (target 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
