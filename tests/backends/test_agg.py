"""`agg` summariser: per-interval sums, exact extremes, counter deltas, statset merging, lateness, tiers."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mondemand.backends.agg import AGG_LISTENER_PREFIX, AggBackend

from mondemand.envelope import RawEvent
from mondemand.messages import Metric, MetricType, Statset, StatsMsg
from mondemand.options import OptionError, parse_options
from mondemand.plugin_api import ServerContext
from mondemand.runner import BackendRunner
from mondemand.sketch import Sketch
from tests.e2e.harness import wait_for

T0 = 1_700_000_040  # a minute boundary (seconds)


class Collector:
    """`inject` that keeps what the summariser emits, decoded."""

    def __init__(self) -> None:
        self.raw: list[RawEvent] = []

    def __call__(self, raw: RawEvent) -> None:
        self.raw.append(raw)

    def messages(self) -> list[StatsMsg]:
        return [raw.message for raw in self.raw]

    def table(self) -> dict[tuple[int, str, tuple[tuple[str, str], ...], str], Statset]:
        """(interval start s, prog_id, context, metric) -> statset, over everything emitted."""
        out = {}
        for msg in self.messages():
            assert msg.host == "all"
            for m in msg.metrics:
                if m.type is MetricType.STATSET:
                    out[(msg.collect_time // 1000, msg.prog_id, tuple(sorted(msg.context.items())), m.name)] = m.value
        return out


def make_agg(collector: Collector | None = None, name: str = "agg", **options: str) -> AggBackend:
    values, problems = parse_options(AggBackend.options, {"checkpoint": "off", **options})
    assert problems == []
    backend = AggBackend(name, values, ServerContext(inject=collector if collector is not None else Collector()))
    backend.start()
    return backend


def stats(host: str, t: float, *metrics: Metric, prog: str = "app", **context: str) -> StatsMsg:
    return StatsMsg(prog, host, context, list(metrics), send_time=int(t * 1000))


def counter(name: str, value: int) -> Metric:
    return Metric(MetricType.COUNTER, name, value)


def gauge(name: str, value: int) -> Metric:
    return Metric(MetricType.GAUGE, name, value)


GAUGE_CTX = (("stat", "gauge"),)


def test_reference_oracle_ten_hosts_counter_deltas_and_gauges():
    out = Collector()
    agg = make_agg(out)
    for minute in range(3):
        for n in range(1, 11):
            t = T0 + minute * 60 + n  # a few seconds into the minute
            agg.add(stats(f"host{n}", t, counter("foo", n * 600 * (minute + 1)), gauge("bar", n * 20)), now=t)
    agg.flush(now=T0 + 3 * 60 + 30)
    table = out.table()
    # First report of each counter gives 0, as the reference does.
    assert table[(T0, "app", GAUGE_CTX, "foo")] == Statset(count=10, sum=0, min=0, max=0)
    for minute in (1, 2):
        start = T0 + minute * 60
        assert table[(start, "app", GAUGE_CTX, "foo")] == Statset(count=10, sum=600 * 55, min=600, max=6000)
        assert table[(start, "app", GAUGE_CTX, "bar")] == Statset(count=10, sum=20 * 55, min=20, max=200)
    assert agg.counters()["live_series"] == 10  # only the counter states remain


def test_an_interval_is_emitted_once_it_is_over_by_the_lateness_and_late_events_are_counted():
    out = Collector()
    agg = make_agg(out, lateness="10s")
    agg.add(stats("a", T0 + 5, gauge("g", 1)), now=T0 + 5)
    agg.flush(now=T0 + 69)
    assert out.raw == []
    agg.add(stats("b", T0 + 50, gauge("g", 2)), now=T0 + 69)  # 9 s after the end: still on time
    agg.flush(now=T0 + 70)
    assert out.table()[(T0, "app", GAUGE_CTX, "g")] == Statset(count=2, sum=3, min=1, max=2)
    agg.add(stats("c", T0 + 59, gauge("g", 100)), now=T0 + 71)  # that minute is closed
    agg.flush(now=T0 + 200)
    assert len(out.raw) == 1 and agg.counters()["late"] == 1
    assert out.messages()[0].collect_time == T0 * 1000


def test_events_are_bucketed_by_their_own_time_and_far_future_ones_are_refused():
    out = Collector()
    agg = make_agg(out, max_future="60s")
    agg.add(stats("a", T0 + 61, gauge("g", 7)), now=T0 + 30)  # a client clock 31 s ahead
    agg.add(stats("a", T0 + 500, gauge("g", 9)), now=T0 + 30)
    agg.flush(now=T0 + 1000)
    assert list(out.table()) == [(T0 + 60, "app", GAUGE_CTX, "g")]
    assert agg.counters()["future"] == 1


def test_receipt_time_source_buckets_by_arrival():
    out = Collector()
    agg = make_agg(out, time_source="receipt")
    msg = stats("a", T0 - 3600, gauge("g", 7))
    msg.receipt_time = (T0 + 10) * 1000
    agg.add(msg, now=T0 + 10)
    agg.flush(now=T0 + 1000)
    assert list(out.table()) == [(T0, "app", GAUGE_CTX, "g")]


def test_counter_resets_give_zero_and_reordered_or_repeated_reports_are_left_out():
    out = Collector()
    agg = make_agg(out)
    agg.add(stats("a", T0 + 1, counter("c", 100)), now=T0 + 1)
    agg.add(stats("a", T0 + 2, counter("c", 130)), now=T0 + 2)  # +30
    agg.add(stats("a", T0 + 2, counter("c", 130)), now=T0 + 2)  # the same report again
    agg.add(stats("a", T0 + 1, counter("c", 110)), now=T0 + 3)  # older than the last one
    agg.add(stats("a", T0 + 4, counter("c", 5)), now=T0 + 4)  # restarted: 0
    agg.add(stats("a", T0 + 5, counter("c", 25)), now=T0 + 5)  # +20
    agg.flush(now=T0 + 1000)
    assert out.table()[(T0, "app", GAUGE_CTX, "c")] == Statset(count=4, sum=50, min=0, max=30)
    counters = agg.counters()
    assert (counters["duplicates"], counters["out_of_order"], counters["counter_resets"]) == (1, 1, 1)


def test_counters_are_tracked_per_host_and_context():
    out = Collector()
    agg = make_agg(out)
    for t, value in ((1, 10), (2, 25)):
        agg.add(stats("a", T0 + t, counter("c", value), shard="1"), now=T0 + t)
        agg.add(stats("a", T0 + t, counter("c", value * 2), shard="2"), now=T0 + t)
        agg.add(stats("b", T0 + t, counter("c", value * 3), shard="1"), now=T0 + t)
    agg.flush(now=T0 + 1000)
    table = out.table()
    assert table[(T0, "app", (("shard", "1"), ("stat", "gauge")), "c")].sum == 15 + 45
    assert table[(T0, "app", (("shard", "2"), ("stat", "gauge")), "c")].sum == 30


def test_client_statsets_merge_exactly():
    out = Collector()
    agg = make_agg(out, stats="count,sum,min,max,avg")
    for host, s in (("a", Statset(count=3, sum=30, min=5, max=20)), ("b", Statset(count=7, sum=40, min=1, max=9))):
        msg = StatsMsg("app", host, {}, [Metric(MetricType.STATSET, "lat", s)], collect_time=(T0 + 3) * 1000)
        agg.add(msg, now=T0 + 5)
    agg.flush(now=T0 + 1000)
    assert out.table()[(T0, "app", (("stat", "statset"),), "lat")] == Statset(count=10, sum=70, min=1, max=20, avg=7)


def test_aggregation_keys_become_all_and_incoming_stat_is_replaced():
    out = Collector()
    agg = make_agg(out, aggregation_keys="cluster")
    for cluster, s in (("colo1", Statset(count=5, sum=9000, min=600, max=3000)),
                       ("colo2", Statset(count=5, sum=24000, min=3600, max=6000))):  # fmt: skip
        msg = StatsMsg("app", "all", {"cluster": cluster, "stat": "gauge"}, [Metric(MetricType.STATSET, "foo", s)],
                       collect_time=T0 * 1000)  # fmt: skip
        agg.add(msg, now=T0 + 70)
    agg.flush(now=T0 + 1000)
    assert out.table() == {
        (T0, "app", (("cluster", "all"), ("stat", "gauge")), "foo"): Statset(count=10, sum=33000, min=600, max=6000)
    }


def test_its_own_output_is_skipped_but_other_servers_aggregates_are_taken():
    out = Collector()
    agg = make_agg(out)
    msg = stats("a", time.time(), gauge("g", 1))  # handle() uses the real clock
    own = RawEvent.from_event(msg.to_lwes()[0], listener=AGG_LISTENER_PREFIX + "other")
    network = RawEvent.from_event(msg.to_lwes()[0], listener="udp")
    agg.handle([own, network])
    counters = agg.counters()
    assert (counters["own_skipped"], counters["messages"]) == (1, 1)
    agg.close()
    assert out.raw[0].listener == AGG_LISTENER_PREFIX + "agg"


def test_percentiles_come_from_sketches_that_the_next_tier_merges():
    rng = random.Random(5)
    colo_out = [Collector(), Collector()]
    colos = [make_agg(c, stats="count,median,pctl_99") for c in colo_out]
    everything = []
    for n in range(40):
        colo = colos[n % 2]
        value = int(rng.lognormvariate(4, 1)) + (5000 if n % 2 else 0)
        everything.append(value)
        colo.add(stats(f"h{n}", T0 + 1, gauge("lat", value)), now=T0 + 1)
    for colo in colos:
        colo.flush(now=T0 + 1000)
    top_out = Collector()
    top = make_agg(top_out, stats="count,median,pctl_99", aggregation_keys="cluster")
    for i, collector in enumerate(colo_out):
        for msg in collector.messages():
            msg.context["cluster"] = f"colo{i}"
            top.add(msg, now=T0 + 80)
    top.flush(now=T0 + 1000)
    [result] = top_out.messages()
    statset = next(m.value for m in result.metrics if m.type is MetricType.STATSET)
    sketch = Sketch.from_text(next(m.value for m in result.metrics if m.type_name == "sketch"))
    ordered = sorted(everything)
    assert statset.count == 40 and sketch.count == 40
    assert statset.pctl_99 == pytest.approx(ordered[int(0.99 * 39)], rel=0.02)
    assert statset.median == pytest.approx(ordered[int(0.5 * 39)], rel=0.02)


def test_a_statset_without_a_sketch_drops_percentiles_rather_than_guessing():
    out = Collector()
    agg = make_agg(out, stats="count,median")
    agg.add(stats("a", T0 + 1, gauge("x", 5)), now=T0 + 1)
    msg = StatsMsg("app", "b", {"stat": "gauge"}, [Metric(MetricType.STATSET, "x", Statset(count=1, sum=7))],
                   collect_time=T0 * 1000)  # fmt: skip
    agg.add(msg, now=T0 + 2)
    agg.flush(now=T0 + 1000)
    assert out.table()[(T0, "app", GAUGE_CTX, "x")] == Statset(count=2)
    assert agg.counters()["percentiles_lost"] == 1


def test_live_series_are_bounded_and_silent_counters_expire():
    out = Collector()
    agg = make_agg(out, max_series="5", expire_after="120s")
    for i in range(8):
        agg.add(stats("a", T0 + 1, gauge(f"g{i}", i)), now=T0 + 1)
    assert (agg.counters()["live_series"], agg.counters()["overflow"]) == (5, 3)
    agg.flush(now=T0 + 100)
    assert agg.counters()["live_series"] == 0
    agg.add(stats("a", T0 + 101, counter("c", 10)), now=T0 + 101)
    agg.flush(now=T0 + 101)
    agg.flush(now=T0 + 400)
    assert agg.counters()["counter_states"] == 0 and agg.counters()["expired"] == 1


def test_many_series_are_split_under_max_metrics():
    out = Collector()
    agg = make_agg(out, max_metrics="10")
    agg.add(stats("a", T0 + 1, *(gauge(f"g{i}", i) for i in range(25))), now=T0 + 1)
    agg.flush(now=T0 + 1000)
    assert [len(m.metrics) for m in out.messages()] == [10, 10, 5]
    assert len(out.table()) == 25


@pytest.mark.parametrize(
    ("options", "key"),
    [({"interval": "7s"}, "interval"), ({"stats": "count,p99"}, "stats"), ({"time_source": "wall"}, "time_source"),
     ({"relative_accuracy": "2"}, "relative_accuracy"), ({"max_series": "0"}, "max_series")],
)  # fmt: skip
def test_bad_options_name_their_key(options, key):
    _values, problems = parse_options(AggBackend.options, options)
    assert [p.key for p in problems] == [key]
    assert isinstance(problems[0], OptionError)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(-(10**12), 10**12)), min_size=1, max_size=60))
def test_two_tier_sums_and_extremes_equal_the_exact_ones(samples):
    """Gauges from hosts spread over colos, summarised per colo, then across colos, equal the direct figures."""
    colo_out = {c: Collector() for c in range(2)}
    colos = {c: make_agg(colo_out[c]) for c in range(2)}
    for i, (host, value) in enumerate(samples):
        colos[host % 2].add(stats(f"h{host}-{i}", T0 + 1, gauge("g", value)), now=T0 + 1)
    top_out = Collector()
    top = make_agg(top_out, aggregation_keys="cluster")
    for c, colo in colos.items():
        colo.flush(now=T0 + 1000)
        for msg in colo_out[c].messages():
            msg.context["cluster"] = f"colo{c}"
            top.add(msg, now=T0 + 70)
    top.flush(now=T0 + 1000)
    values = [v for _h, v in samples]
    [(_key, result)] = top_out.table().items()
    assert result == Statset(count=len(values), sum=sum(values), min=min(values), max=max(values))


def test_dattss_partials_combine_bot10_top10_count_weighted_through_two_tiers():
    from mondemand.client.partials import PARTIAL_CONTEXT_KEY, Partial, combine

    groups = [list(range(1, 101)), [1000 + i for i in range(10)], list(range(50, 80))]
    partials = [Partial.from_samples(g) for g in groups]
    colo_out = Collector()
    colo = make_agg(colo_out)
    for i, p in enumerate(partials[:2]):
        msg = StatsMsg("api", f"web{i}", {PARTIAL_CONTEXT_KEY: "5000"}, p.to_metrics("query"),
                       send_time=(T0 + 1) * 1000)  # fmt: skip
        colo.add(msg, now=T0 + 2)
    colo.flush(now=T0 + 1000)
    [colo_msg] = colo_out.messages()
    gauges = {m.name: m.value for m in colo_msg.metrics if m.type is MetricType.GAUGE}
    expected = combine(partials[:2])
    assert gauges == {"query.bot10": round(expected.bot10), "query.top10": round(expected.top10)}
    assert colo_msg.context == {"stat": "statset"}

    # A second tier merges the colo's combined tails with another partial, still COUNT-weighted.
    top_out = Collector()
    top = make_agg(top_out)
    top.add(colo_msg, now=T0 + 70)
    third = StatsMsg("api", "web9", {PARTIAL_CONTEXT_KEY: "5000"}, partials[2].to_metrics("query"),
                     send_time=(T0 + 1) * 1000)  # fmt: skip
    top.add(third, now=T0 + 70)
    top.flush(now=T0 + 1000)
    [result] = top_out.messages()
    gauges = {m.name: m.value for m in result.metrics if m.type is MetricType.GAUGE}
    statset = next(m.value for m in result.metrics if m.type is MetricType.STATSET)
    everything = combine(partials)
    assert statset == Statset(count=140, sum=round(everything.sum), min=1, max=1009)
    assert gauges["query.bot10"] == pytest.approx(everything.bot10, abs=1)
    assert gauges["query.top10"] == pytest.approx(everything.top10, abs=1)


class FlushFailsOnce(AggBackend):
    """A real agg whose first instance fails in `flush` once `armed` is set (a broken instance to restart)."""

    armed = threading.Event()
    instances: list[FlushFailsOnce] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instances.append(self)

    def flush(self, now: float | None = None) -> None:
        if self is self.instances[0] and self.armed.is_set():
            raise OSError("flush broke")
        super().flush(now)


def test_a_restart_mid_interval_emits_each_interval_once_with_all_its_samples(tmp_path):
    emitted: list[RawEvent] = []
    config, problems = parse_options(AggBackend.options, {"lateness": "3h", "interval": "60s"})
    assert problems == []
    context = ServerContext(inject=emitted.append, config_dir=tmp_path)
    FlushFailsOnce.instances = []
    FlushFailsOnce.armed.clear()
    runner = BackendRunner("agg", lambda: FlushFailsOnce("agg", config, context), flush_interval=0.02,
                           backoff_min=0.01, backoff_max=0.05, linger=0.001)
    minute = (int(time.time()) // 60 - 5) * 60
    first, second = minute, minute + 60  # two intervals in the past, both open (lateness 3 h)

    def gauges(start: int, n: int, at: int, host: str = "web1") -> list[RawEvent]:
        return [RawEvent.from_event(e) for i in range(start, start + n)
                for e in StatsMsg("app", host=host, metrics=[Metric(MetricType.GAUGE, "load", i)],
                                  send_time=at * 1000 + i).to_lwes()]

    def counters(values: list[int], at: int, start: int = 0) -> list[RawEvent]:
        return [RawEvent.from_event(StatsMsg("app", host="web1", metrics=[Metric(MetricType.COUNTER, "hits", v)],
                                             send_time=at * 1000 + k).to_lwes()[0])
                for k, v in enumerate(values, start)]

    runner.start()
    runner.offer_many(gauges(0, 10, first) + gauges(100, 5, second) + counters([1000, 1010], first))
    wait_for(lambda: runner.processed == 17, what="the first events")
    FlushFailsOnce.armed.set()
    wait_for(lambda: runner.restarts == 1, what="the restart")
    runner.offer_many(gauges(10, 10, first, host="web2") + gauges(105, 5, second) + counters([1030], first, 2))
    wait_for(lambda: runner.processed == 33, what="the events after the restart")
    runner.stop(timeout=10)
    assert len(FlushFailsOnce.instances) == 2 and runner.failed == 0

    got: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for raw in emitted:
        msg = raw.message
        for metric in msg.metrics:
            got.setdefault((metric.name, msg.collect_time // 1000), []).append((metric.value.count, metric.value.sum))
    assert got == {
        ("load", first): [(20, sum(range(20)))],
        ("load", second): [(10, sum(range(100, 110)))],
        # 0 for the first report, then +10 and +20: the counter state survived the restart.
        ("hits", first): [(3, 30)],
    }


# -- the per-shape plans equal the plain path ------------------------------------------------------------------

_SHAPES = [  # (prog_id, host, context, metrics as (type, name)): a sender keeps one shape, values change
    ("app", "h0", {}, (("counter", "c"), ("gauge", "g"))),
    ("app", "h1", {}, (("counter", "c"), ("gauge", "g"))),
    ("app", "h0", {"cluster": "x"}, (("counter", "c"), ("counter", "c"), ("gauge", "g"))),  # a name twice
    ("app", "h2", {"cluster": "y"}, (("gauge", "g"), ("counter", "d"))),
    ("web", "h0", {}, (("counter", "c"),)),
    ("app", "h1", {"stat": "gauge"}, (("statset", "g"), ("gauge", "g"))),  # an aggregate: plain path only
    ("app", "h3", {}, (("statset", "s"), ("counter", "c"))),  # a statset: plain path only
]
#: Offsets of an event's time from `now` (ms): late, in the past, now, ahead, too far ahead.
_OFFSETS = st.sampled_from([-40_000, -16_000, -9_000, -1_000, 0, 0, 1, 700, 2_500, 4_000, 9_000, 25_000])


def _datagram(shape: int, values: list[int], ms: int) -> bytes:
    from mondemand.lwes import encode

    prog_id, host, context, metrics = _SHAPES[shape]
    ms_list = []
    for (kind, name), value in zip(metrics, values, strict=False):
        if kind == "statset":
            ms_list.append(Metric(MetricType.STATSET, name, Statset(count=1, sum=value, min=value, max=value)))
        else:
            ms_list.append(Metric(MetricType(kind), name, value))
    [event] = StatsMsg(prog_id, host, dict(context), ms_list, send_time=ms).to_lwes()
    return encode(event)


def _snapshot(agg: AggBackend) -> tuple[Any, ...]:
    buckets = {start: {key: (s.count, s.sum, s.min, s.max, s.tail_count) for key, s in series.items()}
               for start, series in agg.buckets.items()}  # fmt: skip
    counters = {key: tuple(state) for key, state in agg.counter_state.items()}
    return buckets, counters, dict(agg.stats), agg.live, sorted(agg.emitted)


_STEP = st.one_of(
    st.tuples(st.just("events"), st.lists(st.tuples(st.integers(0, len(_SHAPES) - 1),
                                                    st.lists(st.integers(0, 60), min_size=3, max_size=3),
                                                    _OFFSETS), min_size=1, max_size=12)),
    st.tuples(st.just("flush"), st.sampled_from([0.5, 3.0, 11.0, 40.0])),
)  # fmt: skip


@pytest.mark.parametrize("plans_max", [65536, 2])
@settings(max_examples=150, deadline=None)
@given(steps=st.lists(_STEP, min_size=1, max_size=14), max_series=st.integers(1, 14),
       max_future=st.sampled_from(["20s", "3s"]))  # 3 s: part of an open interval is ahead of the clock
def test_per_shape_plans_give_the_plain_paths_state(plans_max, steps, max_series, max_future):
    """Counter resets, out-of-order, duplicates, late and future events, overflow, expiry: state equal, always."""
    options = {"interval": "10s", "lateness": "5s", "max_future": max_future, "expire_after": "2s",
               "max_series": str(max_series)}
    outs = (Collector(), Collector())
    planned, plain = make_agg(outs[0], **options), make_agg(outs[1], **options)
    plain.use_plans, planned.max_plans = False, plans_max
    now = float(T0)
    for kind, arg in steps:
        if kind == "flush":
            now += arg
            for agg in (planned, plain):
                agg.flush(now=now)
            continue
        batch = [RawEvent(_datagram(shape, values, int(now * 1000) + offset), int(now * 1000), "10.0.0.1", 1, "udp")
                 for shape, values, offset in arg]  # fmt: skip
        for agg in (planned, plain):
            agg.handle_at(batch, now)
        assert _snapshot(planned) == _snapshot(plain)
    for agg in (planned, plain):
        agg.flush(now=now + 1000)
    assert _snapshot(planned) == _snapshot(plain)
    assert outs[0].table() == outs[1].table()


def test_plans_are_used_and_bounded():
    """A repeating sender is served by its plan; more shapes than the bound forget the plans, not the data."""
    agg = make_agg()
    now = float(T0 + 1)
    batch = [RawEvent(_datagram(0, [10 * i, i], int(now * 1000) + i), int(now * 1000), "10.0.0.1", 1, "udp")
             for i in range(5)]  # fmt: skip
    agg.handle_at(batch, now)
    [plan] = agg._plans.values()
    assert plan is not None and plan[4] is not None  # the summaries of the open interval are held
    agg.max_plans = 3
    for shape in range(len(_SHAPES)):
        agg.handle_at([RawEvent(_datagram(shape, [1, 2, 3], int(now * 1000) + 10), int(now * 1000), "10.0.0.1", 1,
                                "udp")], now)  # fmt: skip
    assert len(agg._plans) <= 3
    assert agg.stats["samples"] == 5 * 2 + sum(len(shape[3]) for shape in _SHAPES)
    agg.flush(now=now + 1000)  # the interval is emitted: no plan keeps its summaries alive
    assert all(plan is None or (plan[3] is None and plan[4] is None) for plan in agg._plans.values())
