"""The dashboard's live state: moving average, counter rate, stopped reporting, error ring, bounds."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from mondemand.backends.dashboard.state import LiveState, moving_average, window_rate

from mondemand.messages.log import LogLine, LogMsg, Priority
from mondemand.messages.stats import Metric, MetricType, Statset, StatsMsg
from mondemand.messages.trace import TraceMsg

T0 = 1_700_000_000.0


def gauge(value: int, ts: float, host: str = "web01", name: str = "queue", prog: str = "app") -> StatsMsg:
    return StatsMsg(prog, host=host, metrics=[Metric(MetricType.GAUGE, name, value)], send_time=int(ts * 1000))


def counter(value: int, ts: float, host: str = "web01") -> StatsMsg:
    return StatsMsg("app", host=host, metrics=[Metric(MetricType.COUNTER, "requests", value)], send_time=int(ts * 1000))


def log(*lines: tuple[Priority, str], host: str = "web01", ts: float | None = None) -> LogMsg:
    return LogMsg("app", host=host, lines=[LogLine("main.c", 7, p, m) for p, m in lines],
                  send_time=None if ts is None else int(ts * 1000))


samples_strategy = st.lists(
    st.tuples(st.integers(0, 300).map(lambda s: T0 + s), st.integers(-10**6, 10**6).map(float)), max_size=40)


@given(samples_strategy, st.integers(1, 300))
def test_moving_average_is_the_mean_of_exactly_the_samples_inside_the_window(samples, window):
    now = T0 + 300
    inside = [v for t, v in samples if now - window < t <= now]
    result = moving_average(samples, now, window)
    if not inside:
        assert result is None
    else:
        assert math.isclose(result, sum(inside) / len(inside), rel_tol=1e-9, abs_tol=1e-9)
        assert min(inside) <= result <= max(inside)


@given(st.lists(st.integers(0, 1000), min_size=2, max_size=30), st.integers(1, 30))
def test_window_rate_of_a_steady_counter_is_its_slope(increments, period):
    total, samples = 0, []
    for i, inc in enumerate(increments):
        total += inc
        samples.append((T0 + i * period, float(total)))
    now = samples[-1][0]
    span = samples[-1][0] - samples[0][0]
    rate = window_rate(samples, now, span + 1)
    assert math.isclose(rate, (samples[-1][1] - samples[0][1]) / span, rel_tol=1e-9, abs_tol=1e-12)


def test_window_rate_survives_a_counter_reset_and_needs_two_samples():
    samples = [(T0, 100.0), (T0 + 10, 160.0), (T0 + 20, 5.0), (T0 + 30, 35.0)]
    # 60 before the reset, 30 after it, over 30 seconds.
    assert window_rate(samples, T0 + 30, 60) == 3.0
    assert window_rate(samples[:1], T0 + 30, 60) is None
    assert window_rate(samples, T0 + 100, 60) is None


def test_value_and_one_minute_average_follow_the_samples_and_age_out():
    state = LiveState(window=60)
    state.record([(gauge(10, T0), T0), (gauge(20, T0 + 20), T0 + 20), (gauge(60, T0 + 40), T0 + 40)])
    [row] = state.series("app", T0 + 45)
    assert row["value"] == 60 and row["average"] == 30.0 and row["rate"] is None
    assert row["samples_in_window"] == 3 and row["status"] == "live"
    # 70 s on, the first sample has left the window; at 200 s none is left.
    assert state.series("app", T0 + 70)[0]["average"] == 40.0
    assert state.series("app", T0 + 200)[0]["average"] is None
    assert state.series("app", T0 + 200)[0]["value"] == 60


def test_a_late_sample_counts_in_the_average_but_does_not_replace_the_current_value():
    state = LiveState(window=60)
    state.record([(gauge(50, T0 + 30), T0 + 30), (gauge(10, T0 + 20), T0 + 31)])
    [row] = state.series("app", T0 + 31)
    assert row["value"] == 50
    assert row["average"] == 30.0


def test_counters_show_a_rate_per_second():
    state = LiveState(window=60)
    state.record([(counter(1000, T0), T0), (counter(1600, T0 + 30), T0 + 30), (counter(2200, T0 + 60), T0 + 60)])
    [row] = state.series("app", T0 + 60)
    assert row["value"] == 2200 and row["kind"] == "counter"
    # Samples at T0 + 30 and T0 + 60 are inside (now - 60, now]: 600 in 30 s.
    assert row["rate"] == 20.0 and row["average"] is None


def test_hosts_stop_reporting_after_stale_after_and_come_back():
    state = LiveState(stale_after=180)
    state.record([(gauge(1, T0, host="web01"), T0), (gauge(1, T0 + 100, host="web02"), T0 + 100)])
    [prog] = state.processes(T0 + 200)
    assert prog["status"] == "live" and prog["live_hosts"] == 1
    hosts = {h["host"]: h for h in prog["hosts"]}
    assert hosts["web01"]["status"] == "stopped" and hosts["web01"]["age"] == 200
    assert hosts["web02"]["status"] == "live"
    assert state.processes(T0 + 281)[0]["status"] == "stopped"
    state.record([(gauge(2, T0 + 290, host="web01"), T0 + 290)])
    hosts = {h["host"]: h for h in state.processes(T0 + 291)[0]["hosts"]}
    assert hosts["web01"]["status"] == "live" and hosts["web01"]["first_seen"] == T0
    assert state.series("app", T0 + 291)[1]["status"] == "stopped"  # web02's series, silent for 191 s


def test_live_programs_are_listed_before_stopped_ones():
    state = LiveState(stale_after=60)
    state.record([(gauge(1, T0, prog="zeta"), T0), (gauge(1, T0, prog="alpha"), T0 - 100)])
    assert [p["prog_id"] for p in state.processes(T0 + 1)] == ["zeta", "alpha"]


def test_error_stream_keeps_the_last_lines_at_or_above_the_priority_in_order():
    state = LiveState(max_errors=100, max_priority=Priority.WARNING)
    batch = []
    for i in range(130):
        batch.append((log((Priority.ERROR, f"e{i}"), (Priority.INFO, f"i{i}"), (Priority.WARNING, f"w{i}")), T0 + i))
    state.record(batch)
    errors = state.errors()
    assert len(errors) == 100
    assert [e["message"] for e in errors[-3:]] == ["w128", "e129", "w129"]
    assert not [e for e in errors if e["message"].startswith("i")]
    assert [e["seq"] for e in errors] == list(range(161, 261))
    assert state.last_error_seq == 260
    assert [e["message"] for e in state.errors(after=258)] == ["e129", "w129"]
    assert state.counts["error_lines"] == 260 and state.counts["log_messages"] == 130


def test_error_lines_carry_their_origin_and_send_time():
    state = LiveState()
    msg = log((Priority.CRIT, "disk full"), host="db1", ts=T0 - 5)
    msg.lines[0].repeat = 3
    state.record([(msg, T0)])
    [line] = state.errors()
    assert line == {**line, "prog_id": "app", "host": "db1", "priority": "crit", "level": 2, "file": "main.c",
                    "line": 7, "message": "disk full", "repeat": 3, "time": T0 - 5, "received": T0}
    assert state.processes(T0)[0]["hosts"][0]["log_events"] == 1


def test_series_and_hosts_are_bounded_and_counted():
    state = LiveState(max_series=3, max_hosts=2)
    msgs = [(gauge(1, T0, host=f"h{i}", name=f"m{i}"), T0) for i in range(5)]
    state.record(msgs)
    assert state.sizes() == {"series": 3, "hosts": 2, "errors": 0}
    assert state.counts["dropped_series"] == 2 and state.counts["dropped_hosts"] == 3


def test_samples_per_series_are_bounded():
    state = LiveState(window=1000, max_samples=5)
    state.record([(gauge(i, T0 + i), T0 + i) for i in range(20)])
    assert state.series("app", T0 + 20)[0]["samples_in_window"] == 5


def test_prune_forgets_what_was_silent_for_forget_after():
    state = LiveState(forget_after=3600)
    state.record([(gauge(1, T0, host="old"), T0), (gauge(1, T0 + 3000, host="new"), T0 + 3000)])
    version = state.version
    state.prune(T0 + 3700)
    assert [h["host"] for h in state.processes(T0 + 3700)[0]["hosts"]] == ["new"]
    assert [r["host"] for r in state.series("app", T0 + 3700)] == ["new"]
    assert state.counts["forgotten_series"] == 1 and state.counts["forgotten_hosts"] == 1
    assert state.version > version


def test_aggregates_sit_before_the_per_host_series_of_the_same_metric():
    state = LiveState()
    per_host = StatsMsg("app", host="web01", metrics=[Metric(MetricType.STATSET, "lat", Statset(count=2, max=9))])
    agg = StatsMsg("app", host="all", context={"stat": "gauge"},
                   metrics=[Metric(MetricType.STATSET, "lat", Statset(count=5, max=9))])
    other = gauge(3, T0, name="aaa")
    state.record([(per_host, T0), (agg, T0), (other, T0)])
    rows = state.series("app", T0)
    assert [(r["name"], r["namespace"], r["host"], r["type"]) for r in rows] == [
        ("aaa", "md", "web01", "gauge"),
        ("lat", "agg", "all", "count"), ("lat", "agg", "all", "max"),
        ("lat", "md", "web01", "count"), ("lat", "md", "web01", "max"),
    ]
    assert rows[1]["stat"] == "gauge" and rows[1]["context"] == [["stat", "gauge"]] and rows[1]["kind"] == "statset"


def test_other_messages_are_counted_only():
    state = LiveState()
    state.record([(TraceMsg("app", "t1", "me", "web01", "hello"), T0), (None, T0)])
    assert state.counts["other_messages"] == 2
    assert state.processes(T0) == []
