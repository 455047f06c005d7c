"""Throughput of the `agg` summariser and its memory per live series, for 100k series.

The load: 1000 hosts, each in its own `shard` context, each reporting 50
counters and 50 gauges in one StatsMsg per interval, so one interval holds
100 000 aggregate series (and 50 000 counter states). Figures, in one run:

1. samples/s through `AggBackend.add` (decoded messages: the summariser alone);
2. samples/s through `AggBackend.handle` from raw datagrams (the LWES and
   StatsMsg decode included, as in the server);
2b. µs per event through `AggBackend.handle` for the server's usual traffic:
   fresh `RawEvent`s of varied 383-byte datagrams (1000 hosts, 3 counters and
   2 gauges each, counters increasing, values and send_time changing), the
   decode included (`benchmarks/bench_stats_decode.py` has the decode alone);
3. bytes per live series (tracemalloc, after one interval, before the flush),
   without and with percentile sketches;
4. the flush: seconds to emit 100k series as StatsMsg events.

    python benchmarks/bench_agg.py [--hosts 1000] [--metrics 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from mondemand.backends.agg import AggBackend

from mondemand.envelope import RawEvent
from mondemand.lwes import encode
from mondemand.messages import Metric, MetricType, StatsMsg
from mondemand.options import parse_options
from mondemand.plugin_api import ServerContext

sys.path.insert(0, str(Path(__file__).parent))
from bench_stats_decode import cpu_per_event, decoded_batches, varied_datagrams


def make_agg(**options: str) -> tuple[AggBackend, list[RawEvent]]:
    values, problems = parse_options(AggBackend.options, {"max_series": "10000000", "checkpoint": "off", **options})
    assert not problems, problems
    emitted: list[RawEvent] = []
    agg = AggBackend("bench", values, ServerContext(inject=emitted.append))
    agg.start()
    return agg, emitted


def messages(hosts: int, metrics: int, round_: int, t: float) -> list[StatsMsg]:
    half = metrics // 2
    out = []
    for h in range(hosts):
        ms = [Metric(MetricType.COUNTER, f"requests_{i}", (round_ + 1) * (h + i + 1) * 10) for i in range(half)]
        ms += [Metric(MetricType.GAUGE, f"queue_{i}", h + i) for i in range(metrics - half)]
        out.append(StatsMsg("bench", f"host{h}", {"shard": str(h)}, ms, send_time=int(t * 1000)))
    return out


def bench_add(hosts: int, metrics: int, rounds: int) -> None:
    agg, _ = make_agg()
    base = time.time()
    total, elapsed = 0, 0.0
    for r in range(rounds):
        batch = messages(hosts, metrics, r, base)
        start = time.perf_counter()
        for msg in batch:
            agg.add(msg, base)
        elapsed += time.perf_counter() - start
        total += hosts * metrics
    print(f"add():    {total:,} samples in {elapsed:.2f} s = {total / elapsed:,.0f} samples/s "
          f"({agg.counters()['live_series']:,} live series)")  # fmt: skip


def bench_handle(hosts: int, metrics: int, rounds: int) -> None:
    agg, _ = make_agg()
    base = time.time()
    total, elapsed = 0, 0.0
    for r in range(rounds):
        datagrams = [encode(e) for msg in messages(hosts, metrics, r, base) for e in msg.to_lwes()]
        batch = [RawEvent(d, int(base * 1000), "10.0.0.1", 4000, "udp") for d in datagrams]
        start = time.perf_counter()
        for i in range(0, len(batch), 256):
            agg.handle(batch[i:i + 256])
        elapsed += time.perf_counter() - start
        total += hosts * metrics
    print(f"handle(): {total:,} samples in {elapsed:.2f} s = {total / elapsed:,.0f} samples/s (decode included)")


def bench_events(hosts: int, rounds: int, repeats: int = 5) -> dict[str, float]:
    """CPU µs per 5-metric event through handle(), decode excluded: the plain path and the per-shape plans.

    The load is the server's usual traffic: varied datagrams (1000 hosts,
    3 counters and 2 gauges each, counters increasing, values and send_time
    changing), 20 ms between a host's reports (50k events/s), decoded before
    the clock starts (a worker decodes once for all its backends).
    """
    now_ms = int(time.time() * 1000)
    datagrams = varied_datagrams(hosts, rounds + 1, t0=now_ms - (rounds + 1) * 20, step_ms=20)
    warm = decoded_batches(datagrams[:hosts], now_ms)  # the first round only creates the counter states
    timed = decoded_batches(datagrams[hosts:], now_ms)

    def variant(plans: bool) -> Callable[[], AggBackend]:
        def make() -> AggBackend:
            agg = make_agg()[0]
            agg.use_plans = plans
            return agg
        return make

    def check(agg: AggBackend) -> None:
        assert agg.stats["samples"] == 5 * len(datagrams), agg.stats

    results = {}
    for label, plans in (("plain path", False), ("per-shape plans", True)):
        results[label] = cpu_per_event(variant(plans), warm, timed, repeats, check)
    base = results["plain path"]
    for label, us in results.items():
        print(f"agg handle(), {label:16s} {us:6.2f} µs/event CPU ({base / us:4.2f}x the plain path; "
              f"{hosts} hosts x {rounds} reports, decode excluded)")
    return results


def bench_memory(hosts: int, metrics: int, stats: str) -> None:
    msgs = messages(hosts, metrics, 0, time.time())
    gc.collect()
    tracemalloc.start()
    agg, emitted = make_agg(stats=stats)
    before = tracemalloc.get_traced_memory()[0]
    now = time.time()
    for msg in msgs:
        agg.add(msg, now)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    live = agg.counters()["live_series"]
    summaries = sum(len(b) for b in agg.buckets.values())
    print(f"memory ({stats}): {used / 1e6:.1f} MB for {live:,} live series "
          f"({summaries:,} summaries + {len(agg.counter_state):,} counter states) = {used / live:,.0f} bytes/series")
    start = time.perf_counter()
    agg.close()
    took = time.perf_counter() - start
    print(f"flush ({stats}): {summaries:,} series into {len(emitted):,} events in {took:.2f} s "
          f"= {summaries / took:,.0f} series/s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--metrics", type=int, default=100, help="per host: half counters, half gauges")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events-only", action="store_true", help="only the µs per event figures")
    args = parser.parse_args()
    if args.events_only:
        bench_events(args.hosts, 20)
        return
    print(f"{args.hosts} hosts x {args.metrics} metrics = {args.hosts * args.metrics:,} aggregate series")
    bench_add(args.hosts, args.metrics, args.rounds)
    bench_handle(args.hosts, args.metrics, args.rounds)
    bench_events(args.hosts, 20)
    bench_memory(args.hosts, args.metrics, "count,sum,min,max")
    bench_memory(args.hosts, args.metrics, "count,sum,min,max,median,pctl_99")


if __name__ == "__main__":
    main()
