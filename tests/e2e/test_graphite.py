"""The graphite backend end to end: mondemand-server -> carbon-c-relay (carbon_ch) -> two carbon-caches.

Every series (md and agg) must land in exactly one cache's whisper files with
the right values; and a carbon outage shorter than the buffer loses nothing.
"""

from __future__ import annotations

import socket
import time

import pytest

from mondemand.lwes import encode
from mondemand.messages import Metric, MetricType, StatsMsg
from tests.e2e.carbon import CarbonCache, CarbonRelay
from tests.e2e.harness import ServerProcess, free_port, send_udp, wait_for

N = 30

CONFIG = """
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {udp}

[backend:graphite]
type = graphite
host = 127.0.0.1
port = {port}
protocol = {protocol}
counters = delta
batch_points = 50
reconnect_min = 0.2s
reconnect_max = 1s
{extra}

[route:stats]
events = MonDemand::StatsMsg
backends = {backends}
"""

AGG = """
[backend:agg]
type = agg
interval = 1s
lateness = 8s
"""


def send(udp: int, prog: str, host: str, metrics: list[Metric], when: float) -> None:
    msg = StatsMsg(prog, host, {}, metrics, send_time=int(when * 1000))
    for event in msg.to_lwes():
        send_udp(encode(event), udp)


def stored(*caches: CarbonCache) -> list[dict[str, list[tuple[int, float]]]]:
    return [cache.series() for cache in caches]


@pytest.fixture
def caches(tmp_path):
    started: list[CarbonCache] = []

    def make(name: str) -> CarbonCache:
        cache = CarbonCache(tmp_path / f"cache-{name}", name)
        cache.start()
        started.append(cache)
        return cache

    yield make
    for cache in started:
        cache.stop()


def test_every_series_in_exactly_one_cache_behind_carbon_c_relay(tmp_path, caches):
    a, b = caches("a"), caches("b")
    relay = CarbonRelay(tmp_path / "relay", [a, b])
    udp = free_port(socket.SOCK_DGRAM)
    server = ServerProcess(tmp_path, CONFIG.format(udp=udp, port=relay.port, protocol="plaintext", extra=AGG,
                                                   backends="agg, graphite"))
    try:
        now = time.time()
        expected: dict[str, float] = {}
        for i in range(N):
            for h in range(2):
                send(udp, "gtest", f"h{h}.example.com", [Metric(MetricType.GAUGE, f"g{i}", i * 10 + h)], now)
                expected[f"gtest.md.g{i}.host.h{h}.gauge"] = i * 10 + h
            expected[f"gtest.agg.g{i}.host.all.sum"] = 20 * i + 1  # agg: the two hosts summed
            expected[f"gtest.agg.g{i}.host.all.count"] = 2
            for k, total in enumerate((0, 10 * i, 30 * i)):  # cumulative counter, sent as deltas: 10i then 20i
                send(udp, "gtest", "h1", [Metric(MetricType.COUNTER, f"c{i}", total)], now - 120 + 60 * k)
            if i:
                expected[f"gtest.md.c{i}.host.h1.counter"] = 30 * i

        def sums() -> dict[str, float]:
            merged: dict[str, float] = {}
            for cache in stored(a, b):
                for name, points in cache.items():
                    merged[name] = merged.get(name, 0.0) + sum(v for _, v in points)
            return merged

        def complete() -> bool:
            got = sums()
            return all(got.get(name) == total for name, total in expected.items())

        try:
            wait_for(complete, timeout=60, what="every series in the caches with its sum")
        except AssertionError:
            got = sums()
            wrong = {name: (total, got.get(name)) for name, total in expected.items() if got.get(name) != total}
            raise AssertionError(f"series missing or wrong (want, got): {wrong}\n{server.log()[-2000:]}") from None
        in_a, in_b = stored(a, b)
        assert in_a and in_b, "carbon_ch sent everything to one cache"
        for name in expected:
            assert (name in in_a) != (name in in_b), f"{name} in both caches or in neither"
        counters = server.status()["backends"]["graphite"]
        assert counters["backend.dropped"] == 0 and counters["backend.buffered_points"] == 0
    finally:
        assert server.stop() == 0, server.log()
        relay.stop()


def test_a_carbon_outage_shorter_than_the_buffer_loses_nothing(tmp_path, caches):
    cache = caches("solo")
    udp = free_port(socket.SOCK_DGRAM)
    server = ServerProcess(tmp_path, CONFIG.format(udp=udp, port=cache.pickle_port, protocol="pickle", extra="",
                                                   backends="graphite"))
    try:
        now = time.time()
        for i in range(N):
            send(udp, "before", "h", [Metric(MetricType.GAUGE, f"g{i}", i)], now)
        def values(prog: str) -> dict[int, float]:
            got = cache.series()
            return {i: got[name][-1][1] for i in range(N)
                    if (name := f"{prog}.md.g{i}.host.h.gauge") in got and got[name]}

        # A whisper file exists a moment before carbon writes its first point: wait for the values.
        wait_for(lambda: values("before") == {i: i for i in range(N)}, timeout=30, what="the first series stored")
        cache.stop()
        for i in range(N):
            send(udp, "during", "h", [Metric(MetricType.GAUGE, f"g{i}", 100 + i)], now)

        def buffered() -> bool:
            counters = server.status()["backends"]["graphite"]
            return counters["backend.buffered_points"] == N and counters["backend.connect_errors"] >= 1

        wait_for(buffered, timeout=20, what="the points buffered while carbon is down")
        time.sleep(2)  # a few failed reconnects
        cache.start()
        wait_for(lambda: values("during") == {i: 100 + i for i in range(N)}, timeout=30,
                 what="the buffered series after the outage")
        assert values("before") == {i: i for i in range(N)}
        assert len(cache.series()) == 2 * N
        counters = server.status()["backends"]["graphite"]
        assert counters["backend.dropped"] == 0 and counters["backend.points_sent"] >= 2 * N
    finally:
        assert server.stop() == 0, server.log()
