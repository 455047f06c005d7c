"""Two colo servers and a global one, all real subprocesses: hosts -> colos (agg) -> forwarder -> global (agg).

The shape of the reference's teststats.pl: 10 hosts over two colos, host n
reports a counter growing by n·600 per interval and a gauge n·20. The global
tier's `cluster=all` sums must equal the exact totals. Intervals are 2 s
instead of 60 so the test takes seconds; the code paths are the same.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from mondemand.lwes import encode
from mondemand.messages import Metric, MetricType, StatsMsg
from tests.e2e.harness import ServerProcess, free_port, send_udp, wait_for

INTERVAL = 2


def colo_config(port: int, global_port: int, cluster: str, root: Path) -> str:
    return f"""
[listener:apps]
type = lwes-udp
address = 127.0.0.1
port = {port}

[backend:agg]
type = agg
interval = {INTERVAL}s
lateness = 1s

[backend:to_global]
type = lwes
destinations = 127.0.0.1:{global_port}
filter = aggregates
extra_context = cluster={cluster}

[backend:files]
type = stats_file
root = {root}
context_delimiter = ,

[route:stats]
events = MonDemand::StatsMsg
backends = agg, to_global, files
"""


def global_config(port: int, root: Path) -> str:
    return f"""
[listener:colos]
type = lwes-udp
address = 127.0.0.1
port = {port}

[backend:agg]
type = agg
interval = {INTERVAL}s
; the colos emit an interval 1 s after it ends, plus up to a 1 s flush tick
lateness = 6s
aggregation_keys = cluster

[backend:files]
type = stats_file
root = {root}
context_delimiter = ,

[route:stats]
events = MonDemand::StatsMsg
backends = agg, files
"""


def stat_lines(root: Path) -> list[list[str]]:
    rows = []
    for path in root.rglob("*"):
        if path.is_file():
            rows += [line.split("\t") for line in path.read_text().splitlines() if line]
    return rows


def totals(root: Path, context: str) -> dict[tuple[int, str, str], int]:
    """(interval start, metric, statistic) -> value for the `all` host rows with this context."""
    out = {}
    for when, host, _prog, stat, name, value, ctx in stat_lines(root):
        if host == "all" and sorted(ctx.split(",")) == sorted(context.split(",")):
            start = datetime.strptime(when, "%Y/%m/%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
            out[(int(start), name, stat)] = int(value)
    return out


def test_colo_aggregates_forwarded_to_a_global_tier_sum_to_the_exact_totals(tmp_path):
    global_port, colo_ports = free_port(), {"colo1": free_port(), "colo2": free_port()}
    roots = {name: tmp_path / name / "stats" for name in ("global", "colo1", "colo2")}
    for name in roots:
        (tmp_path / name).mkdir()
    servers = [ServerProcess(tmp_path / "global", global_config(global_port, roots["global"]))]
    try:
        for cluster, port in colo_ports.items():
            servers.append(ServerProcess(tmp_path / cluster, colo_config(port, global_port, cluster, roots[cluster])))
        starts = []
        for round_ in range(3):
            # Send each round just after an interval starts so the three rounds land in three intervals.
            now = time.time()
            start = (int(now) // INTERVAL + 1) * INTERVAL
            time.sleep(start + 0.3 - now)
            starts.append(start)
            for n in range(1, 11):
                msg = StatsMsg("teststats", f"host{n}.example", {}, [
                    Metric(MetricType.COUNTER, "foo", n * 600 * (round_ + 1)),
                    Metric(MetricType.GAUGE, "bar", n * 20),
                ], send_time=int(time.time() * 1000))  # fmt: skip
                send_udp(encode(msg.to_lwes()[0]), colo_ports["colo1" if n <= 5 else "colo2"])

        last = starts[-1]
        wait_for(lambda: (last, "foo", "sum") in totals(roots["global"], "cluster=all,stat=gauge"), timeout=30,
                 what="the global tier's last interval")  # fmt: skip
        result = totals(roots["global"], "cluster=all,stat=gauge")
        # First interval: every counter's first report counts as 0.
        assert result[(starts[0], "foo", "sum")] == 0 and result[(starts[0], "foo", "count")] == 10
        for start in starts[1:]:
            assert {s: result[(start, "foo", s)] for s in ("count", "sum", "min", "max")} == \
                {"count": 10, "sum": 600 * 55, "min": 600, "max": 6000}
            assert {s: result[(start, "bar", s)] for s in ("count", "sum", "min", "max")} == \
                {"count": 10, "sum": 20 * 55, "min": 20, "max": 200}
        # The global tier also stored each colo's forwarded aggregate, labelled with its cluster.
        colo1 = totals(roots["global"], "cluster=colo1,stat=gauge")
        assert colo1[(last, "foo", "sum")] == 600 * 15 and colo1[(last, "bar", "max")] == 100
        # Per-host rows stay at the colos; the global tier only ever saw aggregates.
        assert not any(row[1].startswith("host") for row in stat_lines(roots["global"]))
        assert any(row[1] == "host1.example" for row in stat_lines(roots["colo1"]))
        for server in servers[1:]:
            backends = server.status()["backends"]
            assert backends["agg"]["backend.late"] == 0
            assert backends["to_global"]["backend.filtered"] >= 15  # 5 hosts x 3 rounds of per-host events
    finally:
        codes = [server.stop() for server in servers]
    assert codes == [0, 0, 0]


def test_shutdown_emits_the_open_interval_before_the_storage_backends_stop(tmp_path):
    port = free_port()
    root = tmp_path / "stats"
    config = f"""
[listener:apps]
type = lwes-udp
address = 127.0.0.1
port = {port}

[backend:files]
type = stats_file
root = {root}
context_delimiter = ,

[backend:agg]
type = agg

[route:stats]
events = MonDemand::StatsMsg
backends = files, agg
"""
    server = ServerProcess(tmp_path, config)
    try:
        for n in (1, 2, 3):
            now_ms = int(time.time() * 1000)
            msg = StatsMsg("shutdown", f"h{n}", {}, [Metric(MetricType.GAUGE, "g", n)], send_time=now_ms)
            send_udp(encode(msg.to_lwes()[0]), port)
        wait_for(lambda: server.status()["backends"]["agg"]["backend.samples"] == 3, what="3 samples")
    finally:
        assert server.stop() == 0
    # The minute is still open (interval 60 s): it is emitted at shutdown and the files backend stores it.
    rows = [r for r in stat_lines(root) if r[1] == "all"]
    assert {r[3]: int(r[5]) for r in rows} == {"count": 3, "sum": 6, "min": 1, "max": 3}
