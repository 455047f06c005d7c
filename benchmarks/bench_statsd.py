"""statsd lines/s: mondemand-server's `statsd` listener beside Etsy statsd, blasted with the same datagrams.

Setup installs Etsy statsd (`statsd` from the npm registry) into a temporary
directory and runs it on loopback with no backend and a flush interval longer
than the run, so that its own counters (`statsd.packets_received`,
`statsd.metrics_received`, read through its admin port) hold everything it
took. mondemand-server runs the `statsd` listener with a `sink` backend; its
/status has `lines`. A sender process blasts the same datagrams at each in
turn for `--seconds`; each receiver's rate is what it counted divided by the
time from the first datagram to when its count stopped growing.

    .venv/bin/python benchmarks/bench_statsd.py [--seconds 3] [--lines-per-datagram 1,20]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent
ETSY_STATSD = "statsd@0.9"


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_lines(n_series: int = 1000) -> list[str]:
    """A mix of what applications send: counters (some sampled), timers, gauges with deltas, sets, tags."""
    rng = random.Random(7)
    lines = []
    for i in range(n_series * 4):
        app, metric = f"app{i % 10}", f"m{i % n_series}"
        kind = i % 6
        if kind == 0:
            lines.append(f"{app}.{metric}.hits:1|c")
        elif kind == 1:
            lines.append(f"{app}.{metric}.hits:1|c|@0.5")
        elif kind == 2:
            lines.append(f"{app}.{metric}.latency:{rng.uniform(1, 500):.2f}|ms")
        elif kind == 3:
            lines.append(f"{app}.{metric}.queue:{rng.randint(0, 100)}|g")
        elif kind == 4:
            lines.append(f"{app}.{metric}.users:u{rng.randint(0, 50)}|s")
        else:
            lines.append(f"{app}.{metric}.req:1|c|#env:prod,zone:z{i % 3}")
    return lines


def datagrams(lines: list[str], per: int) -> list[bytes]:
    return ["\n".join(lines[i:i + per]).encode() for i in range(0, len(lines) - per + 1, per)]


def blast(port: int, payloads: list[bytes], seconds: float, result: multiprocessing.Queue) -> None:
    """Send `payloads` round and round to 127.0.0.1:port for `seconds`; put the number sent in `result`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    send = sock.send
    sent = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for data in payloads:
            try:  # noqa: SIM105 (a context manager per datagram would slow the sender)
                send(data)
            except OSError:  # ENOBUFS or a refused port: the datagram is lost, as on the wire
                pass
        sent += len(payloads)
    result.put(sent)


def measure(port: int, payloads: list[bytes], seconds: float, count: Callable[[], tuple[int, int]]) -> dict:
    """Blast, then poll `count` (lines, datagrams) until it stops growing."""
    base_lines, base_datagrams = count()
    result: multiprocessing.Queue = multiprocessing.Queue()
    sender = multiprocessing.Process(target=blast, args=(port, payloads, seconds, result))
    start = time.perf_counter()
    sender.start()
    sent = result.get()
    sender.join()
    last, last_change = count(), time.perf_counter()
    while time.perf_counter() - last_change < 1.0:
        time.sleep(0.1)
        now = count()
        if now != last:
            last, last_change = now, time.perf_counter()
    elapsed = last_change - start
    lines, dgrams = last[0] - base_lines, last[1] - base_datagrams
    per = payloads[0].count(b"\n") + 1
    return {"sent": sent, "datagrams": dgrams, "lines": lines, "seconds": elapsed,
            "lines_per_s": lines / elapsed, "datagrams_per_s": dgrams / elapsed,
            "loss": 1 - dgrams / sent if sent else 0.0, "per": per}


class Etsy:
    """Etsy statsd under node, installed from the npm registry into a temporary directory."""

    def __init__(self, where: Path) -> None:
        npm, node = shutil.which("npm"), shutil.which("node") or shutil.which("nodejs")
        if not npm or not node:
            raise SystemExit("node and npm are needed (make setup installs them)")
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--prefix", str(where), "--no-audit", "--no-fund", "--omit=optional",
                        "--silent", ETSY_STATSD], check=True, timeout=600)
        self.port, self.admin = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
        config = where / "config.js"
        config.write_text("(" + json.dumps({
            "address": "127.0.0.1", "port": self.port, "mgmt_address": "127.0.0.1", "mgmt_port": self.admin,
            "backends": [], "flushInterval": 3_600_000, "deleteIdleStats": True,
        }) + ")\n")  # fmt: skip
        self.proc = subprocess.Popen([node, str(where / "node_modules" / "statsd" / "stats.js"), str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.count()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("Etsy statsd did not start") from None
                time.sleep(0.2)

    def count(self) -> tuple[int, int]:
        with socket.create_connection(("127.0.0.1", self.admin), timeout=5) as s:
            s.sendall(b"counters\n")
            data = b""
            while not data.rstrip().endswith(b"END"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        text = data.decode()

        def get(name: str) -> int:
            found = re.search(rf"'statsd\.{name}': (\d+)", text)
            return int(found.group(1)) if found else 0

        return get("metrics_received"), get("packets_received")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Ours:
    """mondemand-server with a `statsd` listener and a `sink` backend."""

    def __init__(self, where: Path) -> None:
        self.port, self.http = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
        config = where / "routes.ini"
        config.write_text(f"""
[listener:statsd]
type = statsd
address = 127.0.0.1
port = {self.port}

[backend:sink]
type = sink

[route:all]
events = *
backends = sink

[http]
address = 127.0.0.1
port = {self.http}
""")
        self.proc = subprocess.Popen([str(BIN / "mondemand-server"), "-c", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.count()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("mondemand-server did not start") from None
                time.sleep(0.2)

    def count(self) -> tuple[int, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/status", timeout=5) as resp:
            counters = json.load(resp)["listeners"]["statsd"]
        return int(counters["lines"]), int(counters["received"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def hot_path(lines: list[str], per: int, seconds: float = 2.0) -> float:
    """Lines/s of the listener's parse-and-aggregate path alone, in this process (no sockets)."""
    from mondemand.listeners.statsd import StatsdAggregator

    agg = StatsdAggregator()
    texts = ["\n".join(lines[i:i + per]) for i in range(0, len(lines) - per + 1, per)]
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for text in texts:
            agg.feed(text, "127.0.0.1")
        done += len(texts) * per
    elapsed = time.perf_counter() - start
    agg.flush()
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--lines-per-datagram", default="1,20")
    args = parser.parse_args()
    lines = make_lines()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-statsd-") as tmp:
        etsy = Etsy(Path(tmp) / "etsy")
        ours = Ours(Path(tmp))
        try:
            for per in (int(p) for p in args.lines_per_datagram.split(",")):
                payloads = datagrams(lines, per)
                rows.append(("mondemand statsd listener", measure(ours.port, payloads, args.seconds, ours.count)))
                rows.append(("Etsy statsd 0.9 (node)", measure(etsy.port, payloads, args.seconds, etsy.count)))
        finally:
            etsy.stop()
            ours.stop()
    for per in (int(p) for p in args.lines_per_datagram.split(",")):
        print(f"parse + aggregate alone (StatsdAggregator.feed), {per} lines per datagram: "
              f"{hot_path(lines, per):,.0f} lines/s")
    print(f"{'receiver':28} {'lines/dgram':>11} {'sent dgrams':>12} {'received':>10} {'loss':>6} "
          f"{'datagrams/s':>12} {'lines/s':>10}")
    for name, r in rows:
        print(f"{name:28} {r['per']:>11} {r['sent']:>12,} {r['datagrams']:>10,} {r['loss']:>6.1%} "
              f"{r['datagrams_per_s']:>12,.0f} {r['lines_per_s']:>10,.0f}")


if __name__ == "__main__":
    main()
