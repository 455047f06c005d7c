"""µs per StatsMsg datagram: generic decode, the typed StatsMsg, and `decode_stats` (shape hit and miss).

The load is varied as a server sees it: 1000 hosts (context ``cluster=colo1``
plus ``host``), each sending 3 counters and 2 gauges, counters increasing and
gauges changing from report to report, send_time advancing. Every candidate
decodes the same list of distinct datagrams, round-robin, and the best round
is reported (shared machines drift).

- generic: `mondemand.lwes.decode` (an `Event`);
- typed: ``StatsMsg.from_lwes(decode(...))``, what `RawEvent.message` costs;
- fast hit: `decode_stats` with the shapes known (the steady state);
- fast miss: `decode_stats` with the shapes forgotten before each datagram
  (a sender never seen), strings still cached; a shape is remembered each time;
- fast cold: every cache cleared before each datagram (hostile variety);
- fast parse (statsets): datagrams carrying statset strings, which are never
  remembered as shapes (their text changes every report).

    python benchmarks/bench_stats_decode.py [--hosts 1000] [--rounds 5] [--check]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from mondemand.envelope import RawEvent
from mondemand.lwes import decode, encode
from mondemand.messages import Metric, MetricType, Statset, StatsMsg
from mondemand.messages.stats_fast import clear_caches, decode_stats, record_from_msg

T0 = 1_700_000_000_000


def varied_datagrams(hosts: int = 1000, rounds: int = 3, statsets: bool = False, t0: int = T0,
                     step_ms: int = 60_000) -> list[bytes]:
    """`rounds` reports of every host, in arrival order (round by round), the first sent at `t0` ms."""
    out = []
    for r in range(rounds):
        for h in range(hosts):
            metrics = [
                Metric(MetricType.COUNTER, "requests_served", 1000 * (r + 1) + h * 7),
                Metric(MetricType.COUNTER, "errors_total", r * 3 + h % 5),
                Metric(MetricType.COUNTER, "bytes_sent", 123_456_789 * (r + 1) + h),
                Metric(MetricType.GAUGE, "open_connections", (h * 31 + r * 17) % 500),
                Metric(MetricType.GAUGE, "queue_depth", (h + r) % 13),
            ]
            if statsets:
                metrics[3] = Metric(MetricType.STATSET, "latency_ms",
                                    Statset(100 + r, 5000 + h, 1, 400 + h % 50, 50, 45, 60, 80, 95, 120, 150 + r))
            msg = StatsMsg("frontend_api", f"web{h:04d}.colo1.example.com", {"cluster": "colo1"}, metrics,
                           send_time=t0 + r * step_ms + h)
            out.extend(encode(e) for e in msg.to_lwes())
    return out


def decoded_batches(datagrams: Sequence[bytes], receipt_ms: int, size: int = 256) -> list[list[RawEvent]]:
    """`datagrams` as RawEvent batches of `size`, each decoded already (a worker decodes once for all backends)."""
    batches = []
    for i in range(0, len(datagrams), size):
        batch = [RawEvent(d, receipt_ms, "10.0.0.1", 4000, "udp") for d in datagrams[i:i + size]]
        for raw in batch:
            raw.stats  # noqa: B018 - decode now, outside the timing
        batches.append(batch)
    return batches


def cpu_per_event(make: Callable[[], Any], warm: list[list[RawEvent]], timed: list[list[RawEvent]],
                  repeats: int = 5, finish: Callable[[Any], None] | None = None,
                  end: Callable[[Any], None] | None = None) -> float:
    """Best CPU µs per event of `handle()` over the `timed` batches, each repeat with a fresh backend.

    `make()` builds and starts a backend; the `warm` batches go through it
    first, untimed (they create the series); `end(backend)` is timed after
    the batches (a flush that writes what the batches left pending);
    `finish(backend)`, untimed, runs after each repeat (checks, close). CPU
    time, not wall time: the machine is shared.
    """
    events = sum(len(b) for b in timed)
    best = float("inf")
    for _ in range(repeats):
        backend = make()
        for batch in warm:
            backend.handle(batch)
        start = time.process_time()
        for batch in timed:
            backend.handle(batch)
        if end is not None:
            end(backend)
        best = min(best, (time.process_time() - start) / events * 1e6)
        if finish is not None:
            finish(backend)
    return best


def per_call(candidates: dict[str, tuple[Callable[[bytes], object], list[bytes]]],
             rounds: int) -> dict[str, float]:
    """Best µs per datagram of each candidate over `rounds` interleaved rounds."""
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(rounds):
        for label, (fn, data) in candidates.items():
            start = time.perf_counter()
            for d in data:
                fn(d)
            best[label] = min(best[label], (time.perf_counter() - start) / len(data) * 1e6)
    return best


def typed(d: bytes) -> StatsMsg:
    return StatsMsg.from_lwes(decode(d))


def miss(d: bytes) -> object:
    clear_caches(strings=False)
    return decode_stats(d)


def cold(d: bytes) -> object:
    clear_caches()
    return decode_stats(d)


def clear_shapes(d: bytes) -> None:
    clear_caches(strings=False)


def clear_all(d: bytes) -> None:
    clear_caches()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="also check decode_stats against the typed path")
    args = parser.parse_args()
    data = varied_datagrams(args.hosts)
    with_statsets = varied_datagrams(args.hosts, statsets=True)
    print(f"{len(data):,} distinct datagrams of {min(map(len, data))}..{max(map(len, data))} bytes "
          f"from {args.hosts} hosts")  # fmt: skip
    if args.check:
        for d in data + with_statsets:
            clear_caches()
            first = decode_stats(d)
            assert first == decode_stats(d) == record_from_msg(typed(d)), d
        print("decode_stats == typed path for every datagram, missed and hit")
    for d in data:  # the steady state: every shape known
        decode_stats(d)
    results = per_call({
        "generic decode()": (decode, data),
        "typed StatsMsg.from_lwes(decode())": (typed, data),
        "decode_stats, shape hit": (decode_stats, data),
        "decode_stats, shape miss": (miss, data),
        "decode_stats, cold (every cache empty)": (cold, data),
        "clear shapes": (clear_shapes, data),
        "clear all": (clear_all, data),
        "decode_stats, statsets (fast parse)": (decode_stats, with_statsets),
        "typed, statsets": (typed, with_statsets),
    }, args.rounds)  # fmt: skip
    # The clearing itself is not decoding: subtract it.
    results["decode_stats, shape miss"] -= results.pop("clear shapes")
    results["decode_stats, cold (every cache empty)"] -= results.pop("clear all")
    for label, us in results.items():
        print(f"{label:40s} {us:7.2f} µs/event")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
