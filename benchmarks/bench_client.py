"""Calls per second of the client's recording methods, and the cost of a flush.

Prints calls/s for `increment`, `add_sample`, `set_gauge`, `log` (collapsed) and
DaTtSs `agg`, in one thread and shared by several, then the time to flush
10 000 counters. Everything is sent to a UDP port nobody reads (loopback).

    python benchmarks/bench_client.py [--calls 200000] [--threads 8]
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable

from mondemand.client import Client, process

DESTINATION = "udp://127.0.0.1:9"


def rate(call: Callable[[int], None], calls: int, threads: int) -> float:
    """Calls per second of `call(i)` made `calls` times in total, split over `threads` threads."""
    per_thread = calls // threads
    start_line = threading.Barrier(threads + 1)

    def work() -> None:
        start_line.wait()
        for i in range(per_thread):
            call(i)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start_line.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    return per_thread * threads / (time.perf_counter() - began)


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    client = Client("bench", transports=[DESTINATION], flush_interval=3600)
    api = process("bench_api", transports=[DESTINATION], interval=3600)
    cases: dict[str, Callable[[int], None]] = {
        "increment": lambda i: client.increment("hits"),
        "add_sample": lambda i: client.add_sample("latency", i & 1023),
        "set_gauge": lambda i: client.set_gauge("depth", i),
        "log (collapsed)": lambda i: client.log("error", "same message", file="x.py", line=1),
        "agg '153ms'": lambda i: api.agg("query", "153ms"),
    }
    print(f"{'call':<18}{'1 thread':>14}{f'{args.threads} threads':>14}   (calls/s)")
    for name, call in cases.items():
        one = rate(call, args.calls, 1)
        many = rate(call, args.calls, args.threads)
        print(f"{name:<18}{one:>14,.0f}{many:>14,.0f}")
        client.flush()
        api.flush()
    for i in range(10_000):
        client.increment(f"counter_{i}")
    began = time.perf_counter()
    sent = client.flush()
    print(f"flush of 10 000 more counters: {(time.perf_counter() - began) * 1000:.1f} ms, {sent} datagrams")
    client.close()
    api.close()


if __name__ == "__main__":
    main()
