"""Series updated per minute by the `rrd` backend, directly and through rrdcached, and by whisper, in one run.

The load is N series (default 10,000: 1,000 hosts x 5 counters + 5 gauges,
one StatsMsg per host per minute), fed to the real backends minute after
minute, with timestamps in the past so no waiting is involved. Events are
decoded before the clock starts (the server decodes once for all backends),
so the figures are the backends' own cost.

1. create: the first minute, which creates every file and writes its first sample (direct librrd);
2. direct: `minutes` more minutes written with librrd on the same files;
3. rrdcached: `minutes` more minutes through a real rrdcached on a unix socket
   (started here with -w 3600, as the reference's scripts do); "calls" is the
   backend's time, "incl. flush" adds FLUSHALL until the daemon's queue is empty;
4. whisper: the same load with the `whisper` backend type, when the package
   `mondemand_backend_whisper` is installed.

5. µs per event (CPU time of `handle`, best of several, decode excluded) for
   the server's usual traffic at 50k events/s: 1000 hosts of 3 counters and 2
   gauges (`bench_stats_decode.varied_datagrams`), a report per host every
   20 ms, through a real rrdcached, so that one sample per series and second
   is kept and the rest are rejected; the plain path against the per-shape
   plans, in the same run (`--events-only` runs this alone).

    python benchmarks/bench_rrd.py [--series 10000] [--minutes 3] [--small] [--keep DIR] [--events-only]

The reference file layout (3 CFs x 3 archives, about 1.3 MB a file) takes
about 13 GB for 10,000 series; --small uses a 1-day archive per CF instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mondemand.backends.rrd.backend import RrdBackend
from mondemand.backends.rrd.rrdcached import RrdcachedClient, RrdcachedError

from mondemand.envelope import RawEvent
from mondemand.lwes import encode
from mondemand.messages.stats import Metric, MetricType, StatsMsg
from mondemand.options import parse_options
from mondemand.plugin_api import Backend, ServerContext

sys.path.insert(0, str(Path(__file__).parent))
from bench_stats_decode import cpu_per_event, decoded_batches, varied_datagrams

METRICS_PER_HOST = 10
BATCH = 1000  # the runner's default batch size


#: Every host sends from 127.0.0.1 here: the per-sender limits on new files would hold most of them back
#: (docs/configuration.md, "Cardinality").
UNGUARDED = {"new_series_per_minute": "0", "series_per_sender": "0"}


def minute_events(hosts: int, minute: int, base: int) -> list[RawEvent]:
    """One decoded StatsMsg per host for `minute`: 5 counters growing 600 a minute, 5 gauges."""
    events = []
    for h in range(hosts):
        metrics = [Metric(MetricType.COUNTER, f"requests_{i}", 600 * minute + i) for i in range(5)]
        metrics += [Metric(MetricType.GAUGE, f"queue_{i}", (h + minute + i) % 50) for i in range(5)]
        msg = StatsMsg("bench_app", host=f"bench-host-{h:05d}", context={"cluster": "colo1"}, metrics=metrics,
                       send_time=(base + 60 * minute) * 1000)
        [event] = msg.to_lwes()
        raw = RawEvent(encode(event), int(time.time() * 1000), "127.0.0.1", 40000)
        raw.message  # noqa: B018 - decode now, outside the timing
        events.append(raw)
    return events


def make(cls: type[Backend], options: dict[str, str]) -> Backend:
    values, problems = parse_options(cls.options, options)
    if problems:
        raise ValueError(f"{cls.__name__}: bad options: {'; '.join(map(str, problems))}")
    backend = cls("bench", values, ServerContext())
    backend.start()
    return backend


def feed(backend: Backend, events: list[RawEvent]) -> float:
    start = time.perf_counter()
    for i in range(0, len(events), BATCH):
        backend.handle(events[i:i + BATCH])
    backend.flush()
    return time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(label: str, updates: int, seconds: float, extra: str = "") -> None:
    print(f"{label:<28} {updates:>9} updates in {seconds:7.2f} s = {updates / seconds * 60:>12,.0f} series/min"
          f"  ({updates / seconds:,.0f}/s){extra}", flush=True)


class Daemon:
    def __init__(self, work: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rrdcb"))
        self.address = f"unix:{self.dir / 'sock'}"
        (self.dir / "journal").mkdir()
        self.proc = subprocess.Popen(
            ["rrdcached", "-g", "-l", self.address, "-p", str(self.dir / "pid"), "-j", str(self.dir / "journal"),
             "-b", str(work), "-B", "-F", "-w", "3600", "-f", "7200", "-z", "1", "-t", "4"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with RrdcachedClient(self.address, timeout=1) as client:
                    client.ping()
                    return
            except RrdcachedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def flush_all(self) -> float:
        start = time.perf_counter()
        with RrdcachedClient(self.address, timeout=600) as client:
            client.flush_all()
            while client.stats().get("QueueLength", 0) > 0:
                time.sleep(0.05)
        return time.perf_counter() - start

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        shutil.rmtree(self.dir, ignore_errors=True)


def bench_rrd(work: Path, hosts: int, minutes: int, base: int, rra_options: dict[str, str]) -> None:
    root = work / "rrd"
    series = hosts * METRICS_PER_HOST
    print(f"rrd: {series} series, {minutes} minute(s) per mode, files under {root}", flush=True)
    direct = make(RrdBackend, {"root": str(root), **UNGUARDED, **rra_options})
    events = minute_events(hosts, 0, base)
    seconds = feed(direct, events)
    assert direct.counters()["created"] == series, direct.counters()
    report("create + first sample", series, seconds)

    total = 0.0
    for minute in range(1, minutes + 1):
        total += feed(direct, minute_events(hosts, minute, base))
    counts = direct.counters()
    assert counts["written"] == series * (minutes + 1) and counts["errors"] == 0, counts
    report("direct (librrd)", series * minutes, total)
    direct.close()

    daemon = Daemon(work)
    try:
        cached = make(RrdBackend, {"root": str(root), "daemon": daemon.address, **UNGUARDED, **rra_options})
        cpu_before = cpu_seconds(daemon.proc.pid)
        total = 0.0
        for minute in range(minutes + 1, 2 * minutes + 1):
            total += feed(cached, minute_events(hosts, minute, base))
        counts = cached.counters()
        assert counts["written"] == series * minutes and counts["errors"] == 0 and counts["rejected"] == 0, counts
        daemon_cpu = cpu_seconds(daemon.proc.pid) - cpu_before
        report("rrdcached (calls)", series * minutes, total, f"; daemon CPU {daemon_cpu:.2f} s")
        flush = daemon.flush_all()
        report("rrdcached incl. flush", series * minutes, total + flush, f"; flush {flush:.2f} s")
        cached.close()
    finally:
        daemon.stop()


def bench_events(work: Path, hosts: int = 1000, rounds: int = 20, repeats: int = 3) -> dict[str, float]:
    """CPU µs per 5-metric event of `RrdBackend.handle` through rrdcached: plain path and per-shape plans."""
    base_ms = ((int(time.time()) // 3600) * 3600 - 86400) * 1000  # a day ago: nothing is ahead of the clock
    datagrams = varied_datagrams(hosts, rounds + 1, t0=base_ms, step_ms=20)
    warm = decoded_batches(datagrams[:hosts], base_ms, BATCH)  # creates every file
    timed = decoded_batches(datagrams[hosts:], base_ms, BATCH)
    daemon = Daemon(work)
    runs = iter(range(1_000_000))
    results: dict[str, float] = {}

    def variant(plans: bool) -> Any:
        def make_one() -> Backend:
            root = work / f"events-{next(runs)}"
            backend = make(RrdBackend, {"root": str(root), "daemon": daemon.address, "rras": "1:1440",
                                        "statset_rras": "1:1440", "graphite": "false"})
            backend.use_plans = plans  # type: ignore[attr-defined]
            return backend
        return make_one

    def finish(backend: Backend) -> None:
        counts = backend.counters()
        assert counts["errors"] == 0 and counts["written"] + counts["rejected"] == 5 * len(datagrams), counts
        results.setdefault("written", counts["written"])
        backend.close()

    try:
        for label, plans in (("plain path", False), ("per-shape plans", True)):
            results[label] = cpu_per_event(variant(plans), warm, timed, repeats, finish)
    finally:
        daemon.stop()
    base = results["plain path"]
    print(f"rrd events: {hosts} hosts x {rounds} reports 20 ms apart, {results['written']:,.0f} of "
          f"{5 * len(datagrams):,} samples kept (one per series and second)")
    for label in ("plain path", "per-shape plans"):
        us = results[label]
        print(f"rrd handle() via rrdcached, {label:16s} {us:6.2f} µs/event CPU ({base / us:4.2f}x the plain path; "
              f"decode excluded)")
    return results


def whisper_type() -> type[Backend] | None:
    if importlib.util.find_spec("mondemand_backend_whisper") is None:
        return None
    from mondemand.plugins import PluginHost

    return PluginHost.discover().backend_types.get("whisper")


def bench_whisper(cls: type[Backend], work: Path, hosts: int, minutes: int, base: int) -> None:
    root = work / "whisper"
    series = hosts * METRICS_PER_HOST
    print(f"whisper: {series} series, {minutes} minute(s), files under {root}", flush=True)
    try:
        backend = make(cls, {"root": str(root), **UNGUARDED})
    except ValueError as exc:
        print(f"whisper: skipped, {exc}")
        return
    report("create + first sample", series, feed(backend, minute_events(hosts, 0, base)))
    total = sum(feed(backend, minute_events(hosts, minute, base)) for minute in range(1, minutes + 1))
    report("whisper", series * minutes, total)
    print(f"  counters: {backend.counters()}")
    backend.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=10_000, help="series (a multiple of 10)")
    parser.add_argument("--minutes", type=int, default=3, help="minutes of updates per mode")
    parser.add_argument("--small", action="store_true", help="small archives (1 day per CF) to save disk")
    parser.add_argument("--keep", type=Path, default=None, help="work in this directory and keep the files")
    parser.add_argument("--events-only", action="store_true", help="only the µs per event figures")
    args = parser.parse_args(argv)
    hosts = max(1, args.series // METRICS_PER_HOST)
    base = (int(time.time()) // 3600) * 3600 - 86400  # a day ago: every minute written lies in the past
    rra_options: dict[str, Any] = {"rras": "1:1440", "statset_rras": "1:1440"} if args.small else {}
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-rrd-", dir=os.environ.get("BENCH_DIR")))
    work.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, layout: "
          f"{'small (1:1440 per CF)' if args.small else 'reference (1:44640 15:9600 1440:400 per CF)'}")
    try:
        bench_events(work)
        if args.events_only:
            return
        bench_rrd(work, hosts, args.minutes, base, rra_options)
        cls = whisper_type()
        if cls is None:
            print("whisper: mondemand_backend_whisper is not installed (or registers no 'whisper' type); skipped")
        else:
            bench_whisper(cls, work, hosts, args.minutes, base)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
