"""CPU per event of the main process's path and of a worker's intake (issue 13).

Main process: datagrams waiting in a real loopback UDP socket are drained by
the `lwes-udp` listener's own drain, routed by the real router to a sink
runner in this process and to a worker link (the `RemoteTarget` of a
`WorkerProcess` that is not forked: its queue is emptied between rounds), so
the figure covers receive, RawEvent, route, queue and the link's encoding.
Worker intake: the frames that link produced, decoded back into RawEvents
and offered to a runner's queue, as the worker's reader thread does.

CPU time (time.process_time) per event over a fixed, varied workload (1000
hosts, distinct values), best of several rounds: the machine may be shared.

    .venv/bin/python benchmarks/bench_link.py [--events 4000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path

from mondemand.listeners.udp import LwesUdpListener

from mondemand import envelope, ipc
from mondemand.lwes import encode
from mondemand.messages import Metric, MetricType, StatsMsg
from mondemand.plugin_api import Backend, ServerContext
from mondemand.router import Route, Router
from mondemand.runner import BackendRunner
from mondemand.workers import BackendSpec, WorkerProcess, WorkerSettings


class _Null(Backend):
    type_name = "null"
    needs = "raw"

    def handle(self, batch: list) -> None:
        pass


def datagrams(n: int) -> list[bytes]:
    """`n` StatsMsgs from 1000 hosts, each different (counters increase, gauges vary)."""
    out = []
    for i in range(n):
        h = i % 1000
        metrics = [Metric(MetricType.COUNTER, f"requests_{k}", i * (k + 1)) for k in range(3)]
        metrics += [Metric(MetricType.GAUGE, "queue_depth", (h * 7 + i) % 500),
                    Metric(MetricType.GAUGE, "cpu_pct", (h * 31 + i) % 100)]
        msg = StatsMsg("bench_app", host=f"bench-host-{h:04d}", context={"cluster": f"cluster-{h % 4}"},
                       metrics=metrics, send_time=1_700_000_000_000 + i)
        [event] = msg.to_lwes()
        out.append(encode(event))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    data = datagrams(args.events)

    context = ServerContext(config_dir=Path.cwd())
    listener = LwesUdpListener("udp", {"address": "127.0.0.1", "port": 0}, context)
    rx = listener._open_socket()
    port = rx.getsockname()[1]
    senders = []
    for _ in range(64):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.connect(("127.0.0.1", port))
        senders.append(s)

    sink = BackendRunner("sink", lambda: _Null("sink", {}, context), queue_size=10**9, queue_bytes=1 << 40)
    sink.backend = sink.factory()
    worker = WorkerProcess("agg", [BackendSpec("agg", _Null, {})],
                           WorkerSettings("bench", Path.cwd(), {}), lambda raw: None, link_bytes=1 << 40)
    router = Router([Route("all", ("*",), ("sink", "agg"))], {"sink": sink, "agg": worker.target("agg")})
    deliver = router.dispatcher("udp")
    intake = BackendRunner("agg", lambda: _Null("agg", {}, context), queue_size=10**9, queue_bytes=1 << 40)

    best_main = best_worker = float("inf")
    burst = min(args.events, 4096)
    for _ in range(args.rounds):
        for i, d in enumerate(data[:burst]):
            senders[i % 64].send(d)
        time.sleep(0.01)
        t0 = time.process_time()
        before = listener.received
        while listener.received - before < burst:
            listener._drain(rx, deliver)
        t1 = time.process_time()
        best_main = min(best_main, (t1 - t0) / burst)
        frames = [frame[ipc.HEADER.size:] for frame, _mask, _count in worker._queue]
        worker._queue.clear()
        worker._queued_bytes = 0
        sink._queue.clear()
        sink._bytes = 0
        t0 = time.process_time()
        n = 0
        for payload in frames:
            events = ipc.decode_batch(payload)
            n += intake.offer_many(events)
        t1 = time.process_time()
        intake._queue.clear()
        intake._bytes = 0
        best_worker = min(best_worker, (t1 - t0) / max(n, 1))
    print(f"compiled hot path: {envelope.SPEEDUPS is not None}")
    print(f"main process, receive -> RawEvent -> route -> sink queue + link frame: {best_main * 1e6:.2f} µs/event")
    print(f"worker intake, frame -> RawEvents -> runner queue:                   {best_worker * 1e6:.2f} µs/event")
    rx.close()
    for s in senders:
        s.close()
    os._exit(0)


if __name__ == "__main__":
    main()
