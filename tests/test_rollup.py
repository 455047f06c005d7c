"""`mondemand.rollup.MinuteRollup`: closing rules, late partials, mismatches, sketches."""

from __future__ import annotations

import pytest
from mondemand.client.partials import PARTIAL_CONTEXT_KEY, Partial, combine

from mondemand.messages import Metric, MetricType, Statset, StatsMsg
from mondemand.messages.stats_fast import CONTEXT, VALUES, record_from_msg
from mondemand.rollup import MinuteRollup, PartialMismatch, partial_context
from mondemand.sketch import Sketch

T0 = 1_700_000_040  # a minute start
CTX = {PARTIAL_CONTEXT_KEY: "5000", "dc": "x"}


def _record(samples: list[int], at: int, sketch: bool = False, extra: list[Metric] | None = None) -> tuple:
    sk = None
    if sketch:
        sk = Sketch(0.01)
        for v in samples:
            sk.add(v)
    metrics = Partial.from_samples(samples, sk).to_metrics("q") + (extra or [])
    return record_from_msg(StatsMsg("p", "h", CTX, metrics, send_time=at * 1000 + 5000, collect_time=at * 1000))


def _add(rollup: MinuteRollup, record: tuple, now: float) -> list[tuple]:
    return rollup.add(record, partial_context(record[CONTEXT]), None, now=now)


def test_context_marker_is_recognised_and_dropped() -> None:
    assert partial_context((("a", "1"), (PARTIAL_CONTEXT_KEY, "5000"))) == (("a", "1"),)
    assert partial_context((("a", "1"),)) is None


def test_minute_closes_by_event_time_and_combines_like_partials() -> None:
    rollup = MinuteRollup(lateness=10)
    windows = [[1, 2, 3], [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110], [5]]
    for i, w in enumerate(windows):
        assert _add(rollup, _record(w, T0 + 5 * i), now=T0 + 1e6) == []
    assert _add(rollup, _record([7], T0 + 65), now=T0 + 1e6) == []  # 5 s into the next minute: within lateness
    out = _add(rollup, _record([7], T0 + 70), now=T0 + 1e6)
    assert len(out) == 1
    prog, host, ctx, send, collect, _r, types, names, values = out[0]
    assert (prog, host, ctx, send, collect) == ("p", "h", (("dc", "x"),), T0 * 1000, T0 * 1000)
    expected = combine(Partial.from_samples(w) for w in windows)
    got = dict(zip(names, values, strict=True))
    assert got["q"][:4] == (expected.count, expected.sum, expected.min, expected.max)
    assert got["q.bot10"] == pytest.approx(expected.bot10) and got["q.top10"] == pytest.approx(expected.top10)
    assert "q.bot10_sum" not in got and types.count("statset") == 1
    # A partial for the emitted minute is late and left out.
    assert _add(rollup, _record([1], T0 + 30), now=T0 + 1e6) == [] and rollup.counts["late_partials"] == 1


def test_minute_closes_by_wall_clock_only_when_idle() -> None:
    rollup = MinuteRollup(lateness=10)
    _add(rollup, _record([1, 2], T0 + 50), now=T0 + 55)
    assert rollup.due(now=T0 + 65) == []  # not over by lateness yet
    _add(rollup, _record([3], T0 + 55), now=T0 + 69)
    assert rollup.due(now=T0 + 72) == []  # over, but something arrived 3 s ago
    (minute,) = rollup.due(now=T0 + 80)
    assert minute[VALUES][0][:4] == (3, 6, 1, 3)
    assert rollup.drain() == []


def test_drain_emits_open_minutes_in_order() -> None:
    rollup = MinuteRollup(lateness=100)
    _add(rollup, _record([1], T0), now=T0)
    _add(rollup, _record([2], T0 + 60), now=T0)
    assert [m[4] for m in rollup.drain()] == [T0 * 1000, (T0 + 60) * 1000]


def test_counters_and_gauges_keep_the_last_value_of_the_minute() -> None:
    rollup = MinuteRollup(lateness=0)
    _add(rollup, _record([1], T0, extra=[Metric(MetricType.COUNTER, "n", 5), Metric(MetricType.GAUGE, "g", 9)]),
         now=T0)
    _add(rollup, _record([1], T0 + 5, extra=[Metric(MetricType.COUNTER, "n", 8), Metric(MetricType.GAUGE, "g", 3)]),
         now=T0)
    (minute,) = rollup.drain()
    got = dict(zip(minute[7], minute[8], strict=True))
    assert got["n"] == 8 and got["g"] == 3


@pytest.mark.parametrize("stat, gauges, why", [
    (Statset(count=0, sum=5), (0, 0), "COUNT 0"),
    (Statset(count=2, sum=5, min=4, max=1, avg=2), (1, 4), "MIN 4 > MAX 1"),
    (Statset(count=2, sum=5, min=1, max=4, avg=2), (0, 4), "BOT10"),
    (Statset(count=2, sum=5, min=1, max=4, avg=2), (1, 9), "TOP10"),
    (Statset(sum=5), (1, 1), "no COUNT"),
])  # fmt: skip
def test_disagreeing_partials_are_refused_and_leave_nothing(stat: Statset, gauges: tuple[int, int], why: str) -> None:
    rollup = MinuteRollup()
    metrics = [Metric(MetricType.STATSET, "q", stat), Metric(MetricType.GAUGE, "q.bot10_sum", gauges[0]),
               Metric(MetricType.GAUGE, "q.top10_sum", gauges[1])]
    record = record_from_msg(StatsMsg("p", "h", CTX, metrics, send_time=T0 * 1000))
    with pytest.raises(PartialMismatch, match=why):
        _add(rollup, record, now=T0)
    assert rollup.open == {} and rollup.drain() == []


def test_sketches_merge_when_every_partial_has_one() -> None:
    rollup = MinuteRollup(lateness=0)
    a, b = list(range(1, 101)), list(range(500, 601))
    _add(rollup, _record(a, T0, sketch=True), now=T0)
    _add(rollup, _record(b, T0 + 5, sketch=True), now=T0)
    (minute,) = rollup.drain()
    got = dict(zip(minute[7], minute[6], strict=True))
    assert got["q"] == "sketch"
    fields = dict(zip(minute[7], minute[8], strict=True))
    assert Sketch.from_text(fields["q"]).count == 201
    stat = next(v for t, v in zip(minute[6], minute[8], strict=True) if t == "statset")
    assert stat[5] == pytest.approx(sorted(a + b)[100], rel=0.02)  # median from the merged sketch
    # One partial without a sketch: no percentiles for the minute.
    rollup = MinuteRollup(lateness=0)
    _add(rollup, _record(a, T0, sketch=True), now=T0)
    _add(rollup, _record(b, T0 + 5), now=T0)
    (minute,) = rollup.drain()
    stat = next(v for t, v in zip(minute[6], minute[8], strict=True) if t == "statset")
    assert stat[5] is None and "sketch" not in minute[6]


def test_a_replaced_backend_hands_its_open_minutes_over(tmp_path) -> None:
    """After a failure the runner abandons the instance and the new one takes over: the minute is whole, once."""
    from mondemand.backends.files.stats_file import StatsFileBackend

    from mondemand.envelope import RawEvent
    from mondemand.lwes import encode
    from mondemand.options import parse_options
    from mondemand.plugin_api import ServerContext

    def backend(previous=None):
        values, problems = parse_options(StatsFileBackend.options, {"root": str(tmp_path), "rollup_lateness": "1h"})
        assert problems == []
        made = StatsFileBackend("files", values, ServerContext())
        if previous is not None:
            made.takeover(previous)
        made.start()
        return made

    def raw(samples: list[int], at: int) -> list[RawEvent]:
        metrics = Partial.from_samples(samples).to_metrics("q")
        msg = StatsMsg("p", "h", CTX, metrics, send_time=at * 1000 + 5000, collect_time=at * 1000)
        return [RawEvent(encode(event), at * 1000, "127.0.0.1", 1) for event in msg.to_lwes()]

    first = backend()
    first.handle(raw([1, 2, 3], T0))
    first.abandon()
    assert not list(tmp_path.rglob("h"))  # nothing written by the broken instance
    second = backend(first)
    second.handle(raw([10, 20], T0 + 5))
    second.close()
    (path,) = tmp_path.rglob("h")
    lines = {(c[3], c[4]): c[5] for c in (ln.split("\t") for ln in path.read_text().splitlines())}
    assert lines[("count", "q")] == "5" and lines[("sum", "q")] == "36" and lines[("max", "q")] == "20"
