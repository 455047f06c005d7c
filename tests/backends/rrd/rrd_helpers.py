"""Shared helpers for the RRD tests: a real rrdcached, and StatsMsg events as the server would receive them."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from mondemand.backends.rrd.rrdcached import RrdcachedClient, RrdcachedError

from mondemand.envelope import RawEvent
from mondemand.lwes import encode
from mondemand.messages.stats import Metric, MetricType, Statset, StatsMsg

#: A minute boundary two hours ago: samples written from here on are "in the past", no waiting needed.
BASE = (int(time.time()) // 3600) * 3600 - 7200


class Rrdcached:
    """A real rrdcached on a Unix socket, in a short temporary directory (socket paths are limited to 107 bytes).

    `base` restricts the files the daemon may touch (``-B``); it writes only
    when flushed (``-w 3600``), so tests see values through FLUSH/fetch.
    """

    def __init__(self, base: Path, tcp: bool = False, socket_path: Path | None = None) -> None:
        self.base = base
        self.dir = Path(tempfile.mkdtemp(prefix="rrdc"))
        self.socket = socket_path or self.dir / "sock"
        self.address = f"127.0.0.1:{_free_tcp_port()}" if tcp else f"unix:{self.socket}"
        journal = self.dir / "journal"
        journal.mkdir()
        self.proc = subprocess.Popen(
            ["rrdcached", "-g", "-l", self.address, "-p", str(self.dir / "pid"), "-j", str(journal),
             "-b", str(base), "-B", "-F", "-w", "3600", "-f", "7200", "-z", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with RrdcachedClient(self.address, timeout=1) as client:
                    if client.ping():
                        break
            except RrdcachedError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"rrdcached exited: {self.proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                raise RuntimeError("rrdcached did not answer PING within 10 s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stats_msg(prog_id: str = "app", host: str = "web1", *, counters: dict[str, int] | None = None,
              gauges: dict[str, int] | None = None, statsets: dict[str, Statset] | None = None,
              context: dict[str, str] | None = None, send_time: int | None = None,
              collect_time: int | None = None) -> StatsMsg:
    """A StatsMsg; times are in seconds here (the message holds milliseconds)."""
    metrics = [Metric(MetricType.COUNTER, k, v) for k, v in (counters or {}).items()]
    metrics += [Metric(MetricType.GAUGE, k, v) for k, v in (gauges or {}).items()]
    metrics += [Metric(MetricType.STATSET, k, v) for k, v in (statsets or {}).items()]
    return StatsMsg(prog_id, host=host, context=context or {}, metrics=metrics,
                    send_time=None if send_time is None else send_time * 1000,
                    collect_time=None if collect_time is None else collect_time * 1000)


def raw_events(*messages: StatsMsg) -> list[RawEvent]:
    """The messages encoded as the listener would hand them over."""
    now = int(time.time() * 1000)
    return [RawEvent(encode(event), now, "127.0.0.1", 40000) for msg in messages for event in msg.to_lwes()]
