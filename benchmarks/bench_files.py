"""Throughput of the file backends in-process: stats_file lines, journal records per gzip level, journal reading.

Each backend is driven the way its worker drives it (batches of RawEvents,
`handle` then periodic `flush`), writing real files into a temporary directory.

Also, first: CPU µs per event of `StatsFileBackend.handle` for the server's
usual traffic (`bench_stats_decode.varied_datagrams`: 1000 hosts, 3 counters
and 2 gauges, a report per host every 20 ms, i.e. 50k events/s), decoded
before the clock starts, the plain path against the per-shape plans.

    python benchmarks/bench_files.py [--events 200000] [--batch 1000] [--events-only]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mondemand.backends.files.stats_file import StatsFileBackend
from mondemand.backends.journal import JournalBackend

from mondemand.envelope import RawEvent
from mondemand.journal import JournalReader
from mondemand.lwes import encode
from mondemand.messages import Metric, MetricType, Statset, StatsMsg
from mondemand.options import parse_options
from mondemand.plugin_api import Backend, ServerContext

sys.path.insert(0, str(Path(__file__).parent))
from bench_stats_decode import cpu_per_event, decoded_batches, varied_datagrams


def events(n: int, hosts: int = 50) -> list[RawEvent]:
    """n StatsMsg datagrams (3 counters, 1 gauge, 1 statset of 5 fields) from `hosts` hosts."""
    now = int(time.time() * 1000)
    out = []
    for i in range(n):
        metrics = [Metric(MetricType.COUNTER, f"requests_{k}", 1000 + i) for k in range(3)]
        metrics.append(Metric(MetricType.GAUGE, "queue", i % 17))
        metrics.append(Metric(MetricType.STATSET, "latency", Statset(count=10, sum=i, min=1, max=9, avg=5)))
        msg = StatsMsg("bench_app", host=f"host-{i % hosts:03d}", context={"cluster": "colo1"}, metrics=metrics,
                       send_time=now + i, collect_time=now + i)
        [event] = msg.to_lwes()
        out.append(RawEvent(encode(event), now + i, "10.0.0.1", 4000, "main"))
    return out


def make(cls: type[Backend], root: Path, **options: str) -> Backend:
    values, problems = parse_options(cls.options, {"root": str(root), **options})
    assert not problems, problems
    backend = cls("bench", values, ServerContext())
    backend.start()
    return backend


def drive(backend: Backend, batch: list[RawEvent], size: int) -> float:
    """Seconds to handle everything in batches of `size`, flush and close."""
    start = time.perf_counter()
    for i in range(0, len(batch), size):
        backend.handle(batch[i : i + size])
    backend.flush()
    backend.close()
    return time.perf_counter() - start


def bench_events(hosts: int = 1000, rounds: int = 20, batch: int = 1000, repeats: int = 5) -> dict[str, float]:
    """CPU µs per 5-metric event through `StatsFileBackend.handle` and a final flush, same run.

    The baseline is the plain path writing at the end of every batch (write_interval 0), as before the
    per-shape plans; then the plans alone; then the plans with the default write_interval.
    """
    now_ms = int(time.time() * 1000)
    datagrams = varied_datagrams(hosts, rounds + 1, t0=now_ms - (rounds + 1) * 20, step_ms=20)
    warm = decoded_batches(datagrams[:hosts], now_ms, batch)  # opens every file
    timed = decoded_batches(datagrams[hosts:], now_ms, batch)
    tmp = Path(tempfile.mkdtemp(prefix="bench-files-"))

    def variant(plans: bool, write_interval: str) -> Callable[[], Backend]:
        def make_one() -> Backend:
            shutil.rmtree(tmp / "stats", ignore_errors=True)
            backend = make(StatsFileBackend, tmp / "stats", max_open_files=str(2 * hosts),
                           write_interval=write_interval)
            backend.use_plans = plans  # type: ignore[attr-defined]
            return backend
        return make_one

    def finish(backend: Backend) -> None:
        backend.close()
        assert backend.counters()["lines_written"] == 5 * len(datagrams), backend.counters()

    results = {}
    try:
        for label, plans, interval in (("plain path", False, "0"), ("plans", True, "0"),
                                       ("plans + 1 s writes", True, "1s")):
            results[label] = cpu_per_event(variant(plans, interval), warm, timed, repeats, finish,
                                           end=lambda backend: backend.flush())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = results["plain path"]
    for label, us in results.items():
        print(f"stats_file handle(), {label:18s} {us:6.2f} µs/event CPU ({base / us:4.2f}x the plain path; "
              f"{hosts} hosts x {rounds} reports, batches of {batch}, decode excluded)")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--events-only", action="store_true", help="only the µs per event figures")
    args = parser.parse_args()
    bench_events(batch=args.batch)
    if args.events_only:
        return
    batch = events(args.events)
    for raw in batch:
        raw.message  # noqa: B018 - decode up front: the runner shares one decode between backends
    nbytes = sum(len(r.data) for r in batch)
    print(f"{args.events} StatsMsg events, {nbytes / args.events:.0f} bytes each, batches of {args.batch}")

    with tempfile.TemporaryDirectory() as tmp:
        backend = make(StatsFileBackend, Path(tmp) / "stats")
        seconds = drive(backend, batch, args.batch)
        lines = backend.counters()["lines_written"]
        print(f"stats_file: {args.events / seconds:,.0f} events/s, {lines / seconds:,.0f} lines/s "
              f"({lines} lines into {backend.files.opens} files)")

    for level in ("1", "6"):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            backend = make(JournalBackend, root, level=level)
            seconds = drive(backend, batch, args.batch)
            [path] = root.iterdir()
            size = path.stat().st_size
            print(f"journal level {level}: {args.events / seconds:,.0f} records/s, {nbytes / seconds / 1e6:.1f} MB/s "
                  f"of events, file {size / 1e6:.2f} MB ({nbytes / size:.1f}x smaller than the events)")
            start = time.perf_counter()
            count = sum(1 for _ in JournalReader(path))
            seconds = time.perf_counter() - start
            print(f"  reading it back: {count / seconds:,.0f} records/s")


if __name__ == "__main__":
    main()
