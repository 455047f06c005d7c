"""Storage backends in one worker process or one each: server -> agg + rrd (rrdcached) + stats_file at 50k/s.

The pipeline benchmark's target (d) (`bench_pipeline.py`: the same sender,
varied traffic from 1000 hosts, a real rrdcached, the server's own counters),
run with three groupings of its backends into worker processes, one after the
other, each paced at `--rate` events/s for `--seconds`:

- separate: every backend its own worker (the default);
- storage: rrd and stats_file share a worker (``process = storage``), agg its own;
- one: the three in one worker (``process = stats``).

Shared workers decode each event once for all their backends and receive it
once over the link; separate ones can use both cores. For each: loss, kernel
drops, the CPU of the server and its workers (cores, and µs per event), and
the sender's CPU.

On a machine shared with other work these runs say little (the workers run at
`worker_nice`, so any other process goes first). `--model` measures instead,
in this process, the CPU time per event of what a worker does (unpickling the
link's frame and building RawEvents, decoding, each backend's `handle`) and
adds them up for each grouping: the CPU the workers need per event, and the
busiest worker's share, which must stay under one core.

    .venv/bin/python benchmarks/bench_grouping.py [--rate 50000] [--seconds 20] [--groupings separate,storage,one]
    .venv/bin/python benchmarks/bench_grouping.py --model
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import bench_pipeline as bp

RRAS = "rras = 1:1440\nstatset_rras = 1:1440\nconsolidation = AVERAGE"
#: backend -> its `process` option, per grouping (None: the default, a worker of its own)
GROUPINGS = {
    "separate": {},
    "storage": {"rrd": "storage", "stats_file": "storage"},
    "one": {"agg": "stats", "rrd": "stats", "stats_file": "stats"},
}


def body(work: Path, daemon: str, processes: dict[str, str]) -> str:
    """`bench_pipeline.rrd_body` with a `process` line for each grouped backend."""
    text = bp.rrd_body(work, daemon, RRAS)
    for backend, process in processes.items():
        header = f"[backend:{backend}]\ntype = {backend}\n"
        assert header in text, header
        text = text.replace(header, f"{header}process = {process}\n")
    return text


def run(grouping: str, work: Path, monitor: bp.Monitor, senders: bp.Senders, rate: int, seconds: float,
        quiet: float) -> bp.Run:
    work_g = work / grouping
    work_g.mkdir()
    daemon = bp.Rrdcached(work_g, work_g / "rrd")
    try:
        target = bp.ServerTarget(monitor, quiet, grouping, f"{grouping}: agg + rrd + stats_file", work_g,
                                 body(work_g, daemon.address, GROUPINGS[grouping]), ["agg", "rrd", "stats_file"],
                                 storage=("rrd", "stats_file"))  # fmt: skip
        try:
            senders.connect(target.port)
            return bp.measure(target, senders, "paced", rate, int(rate * seconds), settle_cap=120)
        finally:
            target.close()
    finally:
        daemon.stop()


def model(rate: int, repeats: int = 3) -> None:
    """CPU µs per event of each part of a worker's work, and what each grouping adds up to."""
    import pickle
    import time

    import bench_files
    import bench_rrd
    from bench_stats_decode import decoded_batches, varied_datagrams
    from mondemand.backends.agg import AggBackend
    from mondemand.backends.files.stats_file import StatsFileBackend
    from mondemand.backends.rrd.backend import RrdBackend

    from mondemand.envelope import RawEvent
    from mondemand.ipc import batch_events, encode_batch
    from mondemand.options import parse_options
    from mondemand.plugin_api import ServerContext

    hosts, rounds, size = 1000, 20, 1000
    base_ms = int(time.time() * 1000) - 10_000  # in agg's open interval, not ahead of rrd's clock
    datagrams = varied_datagrams(hosts, rounds + 1, t0=base_ms, step_ms=20)
    warm, timed = datagrams[:hosts], datagrams[hosts:]
    n = len(timed)
    frames = [encode_batch("MonDemand::StatsMsg", [RawEvent(d, base_ms, "10.0.0.1", 4000, "main")
                                                   for d in timed[i:i + size]])
              for i in range(0, n, size)]  # fmt: skip

    def best(fn: Any) -> float:
        times = []
        for _ in range(repeats):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
        return min(times) / n * 1e6

    def link() -> None:
        for frame in frames:
            _kind, name, rows = pickle.loads(frame)
            batch_events(name, rows)

    def decode() -> None:
        for frame in frames:
            _kind, name, rows = pickle.loads(frame)
            for raw in batch_events(name, rows):
                raw.stats  # noqa: B018

    parts = {"link": best(link)}
    parts["decode"] = best(decode) - parts["link"]
    work = Path(tempfile.mkdtemp(prefix="mdmodel-"))
    daemon = bench_rrd.Daemon(work)
    runs = iter(range(1000))
    try:
        def agg() -> Any:
            values, _ = parse_options(AggBackend.options, {"checkpoint": "off"})
            backend = AggBackend("agg", values, ServerContext(inject=lambda raw: None))
            backend.start()
            return backend

        def rrd() -> Any:
            return bench_rrd.make(RrdBackend, {"root": str(work / f"rrd{next(runs)}"), "daemon": daemon.address,
                                              "rras": "1:1440", "statset_rras": "1:1440", "graphite": "false"})

        def stats_file() -> Any:
            return bench_files.make(StatsFileBackend, work / f"stats{next(runs)}", max_open_files="2000")

        for name, make in (("agg", agg), ("rrd", rrd), ("stats_file", stats_file)):
            times = []
            for _ in range(repeats):
                backend = make()
                for batch in decoded_batches(warm, base_ms, size):
                    backend.handle(batch)
                batches = decoded_batches(timed, base_ms, size)
                start = time.process_time()
                for batch in batches:
                    backend.handle(batch)
                backend.flush()
                times.append(time.process_time() - start)
                backend.close()
            parts[name] = min(times) / n * 1e6
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("CPU µs per event of a worker's parts: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    backends = ("agg", "rrd", "stats_file")
    print(f"\n| grouping | workers | CPU µs per event, all workers | busiest worker at {rate:,}/s |")
    print("|---|---|---|---|")
    for grouping, processes in GROUPINGS.items():
        groups: dict[str, list[str]] = {}
        for backend in backends:
            groups.setdefault(processes.get(backend, backend), []).append(backend)
        per_worker = [parts["link"] + parts["decode"] + sum(parts[b] for b in members) for members in groups.values()]
        print(f"| {grouping} | {len(groups)} | {sum(per_worker):.2f} | {max(per_worker) * rate / 1e6:.2f} cores |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--groupings", default="separate,storage,one")
    parser.add_argument("--model", action="store_true", help="CPU per event of a worker's parts, added up")
    args = parser.parse_args()
    if args.model:
        model(args.rate)
        return
    work = Path(tempfile.mkdtemp(prefix="mdgroup-"))
    monitor = bp.Monitor()
    monitor.start()
    senders = bp.Senders(1, args.hosts, 32)
    results = {}
    try:
        for line in bp.machine_report(set()):
            print(line)
        for grouping in args.groupings.split(","):
            results[grouping] = run(grouping, work, monitor, senders, args.rate, args.seconds, 3.0)
    finally:
        senders.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n| grouping | loss at {args.rate:,}/s | kernel drops | server CPU | µs per event | sender CPU |")
    print("|---|---|---|---|---|---|")
    for grouping, r in results.items():
        per_event = r.cores / max(r.throughput, 1e-9) * 1e6
        print(f"| {grouping} | {r.loss_pct:.1f} % ({r.loss:,}) | {r.kernel_drops:,} | {r.cores:.2f} cores | "
              f"{per_event:.1f} | {r.sender_cores:.2f} cores |")


if __name__ == "__main__":
    main()
