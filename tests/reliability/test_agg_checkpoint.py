"""agg across kill -9: the checkpoint keeps open intervals and counter states; no interval is emitted twice.

A real `mondemand-server` summarises a counter stream from three hosts into
4 s intervals stored by stats_file. It is killed with SIGKILL mid-stream
(while an interval is open and well after the last emission was written),
the stream goes on while it is down, and the server is started again on the
same config. The emitted counter sums must equal the true increase exactly:
the checkpointed counter states make the first report after the restart carry
the increase of every report lost since the checkpoint.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from mondemand.backends.agg import AggBackend

from mondemand.lwes import encode
from mondemand.messages import Metric, MetricType, StatsMsg
from mondemand.options import parse_options
from mondemand.plugin_api import ServerContext
from tests.e2e.harness import ServerProcess, free_port, send_udp
from tests.e2e.test_tiers import stat_lines

pytestmark = pytest.mark.reliability

INTERVAL = 4


def config(port: int, root: Path) -> str:
    return f"""
[listener:apps]
type = lwes-udp
address = 127.0.0.1
port = {port}

[backend:agg]
type = agg
interval = {INTERVAL}s
lateness = 0.5s
checkpoint_interval = 0.5s

[backend:files]
type = stats_file
root = {root}
context_delimiter = ,

[route:stats]
events = MonDemand::StatsMsg
backends = agg, files
"""


class Stream:
    """Three hosts reporting a growing counter every 50 ms; remembers the first and last value each sent."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.values = {f"host{n}": random.randint(1000, 5000) for n in range(3)}
        self.first: dict[str, int] = {}  # the first report's value: its delta is 0 by definition
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for host in self.values:
                self.values[host] += random.randint(1, 20)
                self.first.setdefault(host, self.values[host])
                msg = StatsMsg("relapp", host, {}, [Metric(MetricType.COUNTER, "hits", self.values[host])],
                               send_time=int(time.time() * 1000))
                send_udp(encode(msg.to_lwes()[0]), self.port)
                self.sent += 1
            time.sleep(0.05)

    @property
    def increase(self) -> int:
        return sum(self.values[h] - self.first[h] for h in self.values)


def sleep_until_phase(phase: float) -> None:
    """Sleep until the clock is `phase` seconds into an interval."""
    now = time.time()
    wait = (phase - now % INTERVAL) % INTERVAL
    time.sleep(wait)


def agg_rows(root: Path) -> list[tuple[str, str, str, int]]:
    return [(when, name, stat, int(value)) for when, host, prog, stat, name, value, _ctx in stat_lines(root)
            if host == "all" and prog == "relapp"]


def test_kill_9_and_restart_emit_the_true_counter_increase_once_per_interval(tmp_path):
    port, root = free_port(), tmp_path / "stats"
    stream = Stream(port)
    server = ServerProcess(tmp_path, config(port, root))
    try:
        stream.thread.start()
        time.sleep(INTERVAL * 1.5)
        # An interval is open; the one before was emitted at least 1.5 s ago (it is written, not in flight).
        sleep_until_phase(3.0)
        server.proc.kill()
        server.proc.wait()
        server._log.close()
        time.sleep(1.5)  # reports sent now are lost; their increase must reach the next delta
        server = ServerProcess(tmp_path, config(port, root))
        time.sleep(INTERVAL * 1.5)
        stream.stop.set()
        stream.thread.join()
        time.sleep(0.3)
    finally:
        stream.stop.set()
        assert server.stop() == 0, server.log()
    log = (tmp_path / "server.log").read_text()
    assert "restored" in log, log
    rows = agg_rows(root)
    twice = [key for key, n in Counter((w, n, s) for w, n, s, _v in rows).items() if n > 1]
    assert twice == [], f"intervals emitted twice: {twice}"
    emitted = sum(v for _w, name, stat, v in rows if name == "hits" and stat == "sum")
    print(f"agg across kill -9: emitted {emitted} of a true increase of {stream.increase} "
          f"({stream.sent} reports, {len({w for w, *_ in rows})} intervals)")
    assert emitted == stream.increase


def make(tmp_path: Path, **options: str) -> tuple[AggBackend, list]:
    emitted: list = []
    values, problems = parse_options(AggBackend.options, {"interval": "60s", "lateness": "3h", **options})
    assert problems == []
    backend = AggBackend("agg", values, ServerContext(inject=emitted.append, config_dir=tmp_path))
    backend.start()
    return backend, emitted


def counter(host: str, value: int, at: float) -> StatsMsg:
    return StatsMsg("app", host, {}, [Metric(MetricType.COUNTER, "hits", value),
                                      Metric(MetricType.GAUGE, "load", 7)], send_time=int(at * 1000))


def test_a_checkpoint_restores_open_intervals_and_counters_and_remembers_emitted_ones(tmp_path):
    now = time.time()
    minute = (int(now) // 60 - 3) * 60
    first, _ = make(tmp_path)
    first.add(counter("web1", 100, minute + 1), now)
    first.add(counter("web1", 150, minute + 2), now)
    first.add(counter("web1", 160, minute + 61), now)
    first.flush(now)  # lateness 3 h: both intervals open, saved
    assert (tmp_path / "agg.agg-checkpoint").exists()
    first.checkpoint.close()  # as kill -9 would: nothing emitted, the lock gone with the process

    second, emitted = make(tmp_path)
    assert second.stats["restored_series"] == 2 + 2 + 1  # two intervals x (hits, load), one counter state
    second.add(counter("web1", 200, minute + 62), now)  # a delta of 40 against the restored state
    second.flush(minute + 60 + 3 * 3600 + 1)  # the first interval closes
    assert len(emitted) == 1
    second.checkpoint.close()

    third, emitted3 = make(tmp_path)  # restarted after the first interval was emitted
    third.add(counter("web1", 210, minute + 3), now)  # an old report for the emitted interval: late, not re-emitted
    assert third.stats["late"] == 2  # its counter and its gauge
    third.close()
    sums = {(m.collect_time // 1000, x.name): x.value.sum for raw in emitted + emitted3 for m in [raw.message]
            for x in m.metrics if x.type is MetricType.STATSET}
    assert sums == {(minute, "hits"): 50, (minute, "load"): 14, (minute + 60, "hits"): 50, (minute + 60, "load"): 14}


def test_a_state_over_checkpoint_max_bytes_still_remembers_the_emitted_intervals(tmp_path):
    now = time.time()
    minute = (int(now) // 60 - 3) * 60
    first, _ = make(tmp_path, checkpoint_max_bytes="4096")
    for n in range(3000):  # far more than 4 KiB of state, even compressed
        first.add(counter(f"host{n}", n * 7919 % 100_003, minute + 1), now)
    first.flush(minute + 60 + 3 * 3600 + 1)  # emits the interval; the full state does not fit
    assert first.stats["checkpoint_errors"] >= 1
    first.checkpoint.close()
    second, _ = make(tmp_path, checkpoint_max_bytes="4096")
    second.add(counter("late", 5, minute + 2), now)
    assert second.stats["late"] == 2 and second.buckets == {}
