"""rrdcached killed and restarted while the rrd backend writes: every sample is written or counted.

A real rrdcached on a Unix socket (with its journal) and the rrd backend behind a real `BackendRunner`,
fed 6,000 samples (60 series x 100 minutes) over about 5 s. The daemon is
killed after the first 30 minutes were sent and restarted 2 s later; the
backend buffers in order, backs off, reconnects and replays. Every one of the
6,000 values must then be in the files (read back with rrdtool fetch through
the daemon), with 0 dropped and 0 restarts.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import rrdtool
from mondemand.backends.rrd.backend import RrdBackend
from mondemand.backends.rrd.rrdcached import RrdcachedClient, RrdcachedError
from mondemand.backends.series import SeriesKey, file_path

from mondemand.options import parse_options
from mondemand.plugin_api import ServerContext
from mondemand.runner import BackendRunner
from tests.backends.rrd.rrd_helpers import BASE, raw_events, stats_msg
from tests.e2e.harness import wait_for

pytestmark = pytest.mark.reliability

SERIES, MINUTES = 60, 100
#: SIGTERM: rrdcached stops taking updates at once and writes what it holds (-F). Under SIGKILL it also loses the
#: updates it had acknowledged but not yet journaled (MD_RRDCACHED_SIGNAL=KILL measures that; see docs/rrd.md).
STOP_SIGNAL = getattr(signal, "SIG" + os.environ.get("MD_RRDCACHED_SIGNAL", "TERM"))


def start_daemon(work: Path, base: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["rrdcached", "-g", "-l", f"unix:{work / 'sock'}", "-p", str(work / "pid"), "-j", str(work / "journal"),
         "-b", str(base), "-B", "-F", "-w", "3600", "-f", "7200", "-z", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        try:
            with RrdcachedClient(f"unix:{work / 'sock'}", timeout=1) as client:
                return client.ping()
        except RrdcachedError:
            return False

    wait_for(answers, timeout=10, what="rrdcached's PONG")
    return proc


def test_a_short_rrdcached_outage_loses_nothing(tmp_path: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="rrdo"))  # a short path: Unix socket paths are limited to 107 bytes
    (work / "journal").mkdir()
    root = tmp_path / "rrd"
    root.mkdir()
    daemon = start_daemon(work, tmp_path)
    values, problems = parse_options(RrdBackend.options, {"root": str(root), "daemon": f"unix:{work / 'sock'}",
                                                          "graphite": "false", "timeout": "1s"})
    assert problems == []
    runner = BackendRunner("rrd", lambda: RrdBackend("rrd", values, ServerContext()), flush_interval=0.2,
                           linger=0.001)
    runner.start()
    down = 0.0
    try:
        for minute in range(MINUTES):
            gauges = {f"g{n}": minute * 1000 + n for n in range(SERIES)}
            runner.offer_many(raw_events(stats_msg(gauges=gauges, send_time=BASE + 60 * minute)))
            time.sleep(0.05)
            if minute == 30:
                wait_for(lambda: runner.depth == 0, what="the first minutes handled")
                daemon.send_signal(STOP_SIGNAL)
                daemon.wait()
                down = time.monotonic()
            if minute == 70:
                daemon = start_daemon(work, tmp_path)
                down = time.monotonic() - down
        def accounted() -> bool:
            c = runner.counters()
            return sum(c[f"backend.{k}"] for k in ("written", "dropped", "rejected", "errors")) >= SERIES * MINUTES

        wait_for(accounted, timeout=40, what="every sample written or counted")
        counts = runner.counters()
        runner.stop()
        stored = 0
        for n in range(SERIES):
            path = root / file_path(SeriesKey.make("app", "gauge", f"g{n}", "web1", {}))
            (first, _last, step), _names, rows = rrdtool.fetch(  # through the daemon: it flushes the file first
                str(path), "AVERAGE", "--daemon", f"unix:{work / 'sock'}", "--start", str(BASE - 60),
                "--end", str(BASE + 60 * MINUTES))
            got = {first + step * (i + 1): row[0] for i, row in enumerate(rows) if row[0] is not None}
            expected = {BASE + 60 * m: float(m * 1000 + n) for m in range(1, MINUTES)}  # the first: RRD's start
            assert {t: got.get(t) for t in expected} == expected, path
            stored += len(expected) + 1
    finally:
        runner.stop()
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(work, ignore_errors=True)
    total = SERIES * MINUTES
    print(f"rrdcached down {down:.1f} s: {counts['backend.written']} of {total} samples written, "
          f"{counts['backend.dropped']} dropped, outage {counts['backend.outage_seconds']} s, "
          f"{counts['restarts']} restarts; {stored} read back")
    assert (counts["backend.written"], counts["backend.dropped"], counts["backend.errors"],
            counts["backend.rejected"], counts["restarts"]) == (total, 0, 0, 0, 0)
    assert counts["backend.outages"] >= 1 and counts["backend.outage_seconds"] >= 1.5
