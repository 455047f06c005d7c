"""End to end: DaTtSs 5 s partials rolled up per minute by a real mondemand-server into rrd, whisper and stats_file.

Three minutes of partials are backfilled (event times in the past), plus
partials of the current minute that the `agg` backend also summarises. After
the server stops, every stored per-host field must equal the value computed
from the raw samples, and the current minute's aggregate must sit on the same
RRD row and stats_file minute as its per-host samples.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import rrdtool
import whisper
from mondemand.backends.series import SeriesKey, file_path, tree_path
from mondemand.client.partials import PARTIAL_CONTEXT_KEY, Partial, tail_size

from mondemand.lwes import encode
from mondemand.messages import Metric, MetricType, Statset, StatsMsg
from tests.e2e.harness import ServerProcess, free_port, send_udp, wait_for

PROG, HOST, NAME = "api", "web01", "query"
CTX = {PARTIAL_CONTEXT_KEY: "5000", "colo": "east"}


def _config(port: int, tmp: Path) -> str:
    return f"""
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {port}

[backend:agg]
type = agg

[backend:rrd]
type = rrd
root = {tmp / "rrd"}
rollup_lateness = 2s

[backend:whisper]
type = whisper
root = {tmp / "wsp"}
rollup_lateness = 2s

[backend:files]
type = stats_file
root = {tmp / "files"}
rollup_lateness = 2s

[route:stats]
events = MonDemand::StatsMsg
backends = agg, rrd, whisper, files
"""


def _partial_msg(samples: list[int], start_ms: int) -> StatsMsg:
    metrics = Partial.from_samples(samples).to_metrics(NAME)
    return StatsMsg(PROG, HOST, CTX, metrics, send_time=start_ms + 5000, collect_time=start_ms)


def _truth(windows: list[list[int]]) -> dict[str, float]:
    """The minute's fields from its raw samples; BOT10/TOP10 by the COUNT-weighted rule over the partials."""
    every = [v for w in windows for v in w]
    count = len(every)
    bot = sum(len(w) * (sum(sorted(w)[:tail_size(len(w))]) / tail_size(len(w))) for w in windows) / count
    top = sum(len(w) * (sum(sorted(w)[-tail_size(len(w)):]) / tail_size(len(w))) for w in windows) / count
    k = tail_size(count)
    ordered = sorted(every)
    return {"count": count, "sum": sum(every), "min": min(every), "max": max(every), "avg": sum(every) / count,
            "bot10": bot, "top10": top, "exact_bot10": sum(ordered[:k]) / k, "exact_top10": sum(ordered[-k:]) / k}


def _rrd_row(path: Path, minute: int) -> float | None:
    """The AVERAGE row (minute, minute + 60] of an RRD file."""
    (first, _last, step), _names, rows = rrdtool.fetch(str(path), "AVERAGE", "--start", str(minute),
                                                      "--end", str(minute + 60))
    values = {first + step * (i + 1): row[0] for i, row in enumerate(rows)}
    return values.get(minute + 60)


def _key(field: str, name: str = NAME, host: str = HOST, context: dict[str, str] | None = None) -> SeriesKey:
    return SeriesKey.make(PROG, field, name, host, context if context is not None else {"colo": "east"})


def _stored(tmp: Path, minute: int) -> dict[str, dict[str, Any]]:
    """What rrd, whisper and stats_file hold for the per-host series in `minute`."""
    out: dict[str, dict[str, Any]] = {"rrd": {}, "whisper": {}, "stats_file": {}}
    fields = [("count", "count", NAME), ("sum", "sum", NAME), ("min", "min", NAME), ("max", "max", NAME),
              ("avg", "avg", NAME), ("bot10", "gauge", NAME + ".bot10"), ("top10", "gauge", NAME + ".top10")]
    day = time.strftime("%Y/%m/%d", time.gmtime(minute))
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(minute))
    lines = (tmp / "files" / day / PROG / HOST).read_text().splitlines()
    for label, kind, name in fields:
        key = _key(kind, name)
        out["rrd"][label] = _rrd_row(tmp / "rrd" / file_path(key), minute)
        (start, _end, step), values = whisper.fetch(str(tmp / "wsp" / tree_path(key, ".wsp")), minute - 1, minute + 60)
        out["whisper"][label] = values[(minute - start) // step]
        found = [ln.split("\t") for ln in lines if ln.startswith(stamp)]
        match = [float(cols[5]) for cols in found if cols[3] == kind and cols[4] == name]
        out["stats_file"][label] = match[0] if len(match) == 1 else match
    return out


def test_partials_roll_up_per_minute_and_align_with_agg(tmp_path: Path) -> None:
    rng = random.Random(7)
    port = free_port()
    now = time.time()
    current = int(now // 60) * 60
    first = current - 10 * 60
    minutes = [first, first + 60, first + 120]
    windows: dict[int, list[list[int]]] = {}
    server = ServerProcess(tmp_path, _config(port, tmp_path))
    try:
        sent = 0
        for minute in minutes:
            windows[minute] = []
            for i in range(12):
                # Uneven load and one latency spike, so every field differs from a naive average of partials.
                n = 1 if i == 3 else rng.randint(20, 900)
                scale = 8.0 if (minute == minutes[1] and i == 7) else 1.0
                samples = [max(1, round(rng.lognormvariate(4, 0.6) * scale)) for _ in range(n)]
                windows[minute].append(samples)
                send_udp(encode(_partial_msg(samples, minute * 1000 + 5000 * i).to_lwes()[0]), port)
                sent += 1
        # Bad partials: their fields disagree; each backend rejects them and stores nothing of them.
        bad = [Statset(count=3, sum=30, min=20, max=5, avg=10), Statset(count=0, sum=12)]
        for stat in bad:
            msg = StatsMsg(PROG, HOST, CTX, [Metric(MetricType.STATSET, "broken", stat),
                                             Metric(MetricType.GAUGE, "broken.bot10_sum", 5),
                                             Metric(MetricType.GAUGE, "broken.top10_sum", 20)],
                           send_time=minutes[0] * 1000 + 5000, collect_time=minutes[0] * 1000)
            send_udp(encode(msg.to_lwes()[0]), port)
            sent += 1
        msg = StatsMsg(PROG, HOST, CTX, [*Partial.from_samples([50, 60, 70]).to_metrics("outside")[:2],
                                         Metric(MetricType.GAUGE, "outside.top10_sum", 500)],
                       send_time=minutes[0] * 1000 + 5000, collect_time=minutes[0] * 1000)
        send_udp(encode(msg.to_lwes()[0]), port)
        sent += 1
        # The current minute: agg summarises it too (emitted when the server stops).
        now_windows = [[rng.randint(10, 99) for _ in range(rng.randint(5, 40))] for _ in range(3)]
        for i, samples in enumerate(now_windows):
            send_udp(encode(_partial_msg(samples, current * 1000 + 5000 * i).to_lwes()[0]), port)
            sent += 1

        def processed() -> bool:
            backends = server.status()["backends"]
            return all(backends[b]["events_processed"] + backends[b].get("rejected", 0) >= sent
                       for b in ("rrd", "whisper", "files"))

        wait_for(processed, what="every partial handled")
        status = server.status()["backends"]
        for name in ("rrd", "whisper", "files"):
            assert status[name]["rejected"] == 3, (name, status[name])
        assert server.stop() == 0
    finally:
        server.stop()

    # No series carries the interval marker.
    assert not [p for p in tmp_path.rglob("*") if "partial_interval_ms" in p.name]
    assert not any("partial_interval_ms" in p.read_text() for p in (tmp_path / "files").rglob("*") if p.is_file())
    assert not list(tmp_path.rglob("*broken*")) and not list(tmp_path.rglob("*outside*"))

    table = []
    for minute in minutes:
        truth = _truth(windows[minute])
        stored = _stored(tmp_path, minute)
        for field in ("count", "sum", "min", "max", "avg", "bot10", "top10"):
            for store in ("rrd", "whisper", "stats_file"):
                got = stored[store][field]
                assert got is not None and not isinstance(got, list), (store, field, minute, got)
                if field in ("count", "sum", "min", "max"):
                    assert got == truth[field], (store, field, minute, got, truth[field])
                else:
                    assert math.isclose(got, truth[field], rel_tol=1e-9), (store, field, minute, got, truth[field])
            table.append((minute - first, field, truth[field], stored["rrd"][field], stored["whisper"][field],
                          stored["stats_file"][field], truth.get("exact_" + field)))
    print("\nminute field true rrd whisper stats_file exact-pooled")
    for row in table:
        print(" ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row if v is not None))

    # Time alignment: the current minute's aggregate and its per-host samples share an RRD row and a file minute.
    truth = _truth(now_windows)
    agg_ctx = {"colo": "east", "stat": "statset"}
    for field in ("count", "sum", "min", "max"):
        host_value = _rrd_row(tmp_path / "rrd" / file_path(_key(field)), current)
        agg_value = _rrd_row(tmp_path / "rrd" / file_path(_key(field, host="all", context=agg_ctx)), current)
        assert host_value == agg_value == truth[field], (field, host_value, agg_value, truth[field])
    agg_bot = _rrd_row(tmp_path / "rrd" / file_path(_key("gauge", NAME + ".bot10", "all", agg_ctx)), current)
    assert agg_bot == round(truth["bot10"])
    day = time.strftime("%Y/%m/%d", time.gmtime(current))
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(current))
    for host in (HOST, "all"):
        lines = [ln.split("\t") for ln in (tmp_path / "files" / day / PROG / host).read_text().splitlines()
                 if ln.startswith(stamp)]
        got = {(c[3], c[4]): float(c[5]) for c in lines}
        assert got[("sum", NAME)] == truth["sum"] and got[("count", NAME)] == truth["count"], (host, got)
        assert (("gauge", NAME + ".bot10") in got), (host, got)
