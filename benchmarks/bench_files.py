"""Throughput of the file backends in-process: stats_file lines, journal records per gzip level, journal reading.

Each backend is driven the way its worker drives it (batches of RawEvents,
`handle` then periodic `flush`), writing real files into a temporary directory.

    python benchmarks/bench_files.py [--events 200000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mondemand.backends.journal import JournalBackend
from mondemand.backends.stats_file import StatsFileBackend

from mondemand.envelope import RawEvent
from mondemand.journal import JournalReader
from mondemand.lwes import encode
from mondemand.messages import Metric, MetricType, Statset, StatsMsg
from mondemand.options import parse_options
from mondemand.plugin_api import Backend, ServerContext


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
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
