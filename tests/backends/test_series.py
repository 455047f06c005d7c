"""Series identity, naming and the collision registry (mondemand.backends.series)."""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from mondemand.backends.series import (
    AGG,
    MD,
    STATSET_FIELDS,
    PathRegistry,
    ProgIdFilter,
    SeriesKey,
    file_path,
    graphite_name,
    parse_file_path,
    series_from_stats,
    tree_path,
)

from mondemand.messages.stats import Metric, MetricType, Statset, StatsMsg
from tests.backends.rrd.rrd_helpers import stats_msg

# -- series_from_stats ---------------------------------------------------------------


def test_counters_and_gauges_use_send_time_and_statsets_collect_time() -> None:
    msg = stats_msg(counters={"hits": 7}, gauges={"load": 3}, statsets={"lat": Statset(count=4, sum=10, max=9)},
                    context={"b": "2", "a": "1"}, send_time=1_700_000_060, collect_time=1_700_000_000)
    points = list(series_from_stats(msg))
    ctx = (("a", "1"), ("b", "2"))
    assert points == [
        (SeriesKey(MD, "app", "counter", "hits", "web1", ctx), 1_700_000_060, 7),
        (SeriesKey(MD, "app", "gauge", "load", "web1", ctx), 1_700_000_060, 3),
        (SeriesKey(MD, "app", "count", "lat", "web1", ctx), 1_700_000_000, 4),
        (SeriesKey(MD, "app", "sum", "lat", "web1", ctx), 1_700_000_000, 10),
        (SeriesKey(MD, "app", "max", "lat", "web1", ctx), 1_700_000_000, 9),
    ]
    assert [p.key.kind for p in points] == ["counter", "gauge", "statset", "statset", "statset"]


def test_missing_times_fall_back_to_receipt_time_then_now() -> None:
    msg = stats_msg(gauges={"g": 1}, statsets={"s": Statset(count=1)})
    msg.receipt_time = 1_700_000_123_456
    assert [p.timestamp for p in series_from_stats(msg)] == [1_700_000_123, 1_700_000_123]
    msg.receipt_time = None
    assert [p.timestamp for p in series_from_stats(msg, now=1_600_000_000.9)] == [1_600_000_000] * 2


def test_stat_context_makes_an_aggregate() -> None:
    msg = stats_msg(host="all", statsets={"lat": Statset(sum=5)}, context={"stat": "gauge"}, collect_time=60)
    (point,) = series_from_stats(msg)
    assert point.key.namespace == AGG
    assert point.key.context == (("stat", "gauge"),)


def test_unknown_types_are_skipped_unless_mapped() -> None:
    msg = StatsMsg("app", metrics=[Metric("histogram", "h", 5), Metric("weird", "w", "text"),
                                   Metric(MetricType.GAUGE, "g", 1)], send_time=120_000)
    assert [p.key.name for p in series_from_stats(msg)] == ["g"]
    mapped = list(series_from_stats(msg, unknown_as="counter"))
    assert [(p.key.name, p.key.metric_type) for p in mapped] == [("h", "counter"), ("g", "gauge")]
    with pytest.raises(ValueError):
        list(series_from_stats(msg, unknown_as="statset"))


def test_key_checks_its_invariants() -> None:
    with pytest.raises(ValueError, match="sorted"):
        SeriesKey(MD, "p", "gauge", "n", "h", (("b", "1"), ("a", "2")))
    with pytest.raises(ValueError, match="namespace"):
        SeriesKey(MD, "p", "gauge", "n", "h", (("stat", "sum"),))
    with pytest.raises(ValueError, match="metric_type"):
        SeriesKey(MD, "p", "statset", "n", "h")
    key = SeriesKey.make("p", "pctl_99", "n", "h", {"stat": "max", "a": "1"})
    assert key.namespace == AGG and key.context == (("a", "1"), ("stat", "max")) and key.is_statset


# -- layouts -----------------------------------------------------------------------------


def test_file_path_is_the_reference_layout() -> None:
    key = SeriesKey.make("app", "counter", "hits", "web1.example.com", {"colo": "ny", "stat": "gauge"})
    assert file_path(key) == PurePosixPath("app/hits/app-counter-hits-web1.example.com-colo=ny-stat=gauge.rrd")
    assert file_path(key, ".wsp").suffix == ".wsp"


def test_tree_path_and_graphite_name_follow_the_reference() -> None:
    agg = SeriesKey.make("app", "sum", "req.time", "all", {"stat": "gauge", "colo": "ny-1"})
    assert tree_path(agg) == PurePosixPath("app/agg/req_time/colo/ny_1/host/all/sum.rrd")
    md = SeriesKey.make("app", "gauge", "load", "web1.example.com")
    assert tree_path(md) == PurePosixPath("app/md/load/host/web1/gauge.rrd")
    full = PurePosixPath("app/raw/load/host/web1_example_com/gauge.rrd")
    assert tree_path(md, short_host=False, md_dir="raw") == full
    assert graphite_name(agg) == "app.agg.req_time.colo.ny_1.host.all.sum"
    assert graphite_name(SeriesKey.make("a.b", "gauge", "", "h")) == "a_b.md._.host.h.gauge"


def test_wire_names_cannot_climb_out() -> None:
    key = SeriesKey.make("..", "gauge", "../../etc/passwd", "/", {"../x": "a/b"})
    path = file_path(key)
    assert path.parts[0] == "%2E." and ".." not in path.parts and not path.is_absolute()
    assert all("/" not in part for part in path.parts)


def test_long_names_are_cut_to_the_filesystem_limit_and_stay_distinct() -> None:
    a = SeriesKey.make("p", "gauge", "m" * 1000, "h" * 300, {"k": "v" * 500 + "1"})
    b = SeriesKey.make("p", "gauge", "m" * 1000, "h" * 300, {"k": "v" * 500 + "2"})
    pa, pb = file_path(a), file_path(b)
    assert pa != pb
    assert all(len(part.encode()) <= 255 for part in pa.parts + pb.parts)
    assert parse_file_path(pa) is None  # a cut name cannot be read back


def test_known_collision_is_reported_once_and_not_merged(caplog: pytest.LogCaptureFixture) -> None:
    first = SeriesKey.make("p", "gauge", "m", "a-b=c")
    second = SeriesKey.make("p", "gauge", "m", "a", {"b": "c"})
    assert file_path(first) == file_path(second)
    registry = PathRegistry()
    with caplog.at_level(logging.WARNING, logger="mondemand.series"):
        assert registry.claim(file_path(first), first)
        assert registry.claim(file_path(first), first)
        assert not registry.claim(file_path(second), second)
        assert not registry.claim(file_path(second), second)
    assert registry.collisions == 2
    assert len([r for r in caplog.records if "collision" in r.message]) == 1
    assert registry.colliding() == [(str(file_path(first)), first, second)]


def test_prog_filter() -> None:
    assert ProgIdFilter().allows("anything")
    black = ProgIdFilter(blacklist=["noisy*", "debug"])
    assert not black.allows("noisy_app") and not black.allows("debug") and black.allows("app")
    white = ProgIdFilter(whitelist=["app?"], blacklist=["app1"])
    assert white.allows("app1") and not white.allows("app") and not white.allows("other")


# -- properties ------------------------------------------------------------------------------

names = st.text(min_size=0, max_size=300)
types = st.sampled_from(("counter", "gauge", *STATSET_FIELDS))


@st.composite
def keys(draw: st.DrawFn, name: st.SearchStrategy[str] = names) -> SeriesKey:
    context = draw(st.dictionaries(name, name, max_size=4))
    if draw(st.booleans()):
        context["stat"] = draw(name)
    return SeriesKey.make(draw(name), draw(types), draw(name), draw(name), context)


def _components_ok(path: PurePosixPath) -> None:
    assert not path.is_absolute()
    for part in path.parts:
        assert part not in ("", ".", "..")
        assert len(part.encode()) <= 255


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(keys())
def test_every_path_stays_under_root_and_fits(key: SeriesKey) -> None:
    root = Path("/srv/rrd")
    for rel in (file_path(key), tree_path(key)):
        _components_ok(rel)
        assert os.path.normpath(root / rel).startswith(str(root) + "/")
    assert "." not in graphite_name(key).split(".")[0]


@settings(max_examples=200)
@given(st.lists(keys(st.text(alphabet="ab-=.", max_size=3)), min_size=2, max_size=30))
def test_distinct_keys_get_distinct_paths_or_a_reported_collision(batch: list[SeriesKey]) -> None:
    registry = PathRegistry()
    owner: dict[PurePosixPath, SeriesKey] = {}
    refused = 0
    for key in batch:
        path = file_path(key)
        claimed = registry.claim(path, key)
        first = owner.setdefault(path, key)
        assert claimed == (first == key)
        refused += not claimed
    assert registry.collisions == refused
    assert len(registry) == len(owner)


plain = st.text(st.characters(blacklist_characters="-=~", blacklist_categories=("Cs",)), max_size=12)
value_text = st.text(st.characters(blacklist_characters="=~", blacklist_categories=("Cs",)), max_size=12)


@st.composite
def parsable_keys(draw: st.DrawFn) -> SeriesKey:
    context = draw(st.dictionaries(plain, value_text, max_size=3))
    return SeriesKey.make(draw(names.filter(lambda s: len(s) < 40)), draw(types),
                          draw(names.filter(lambda s: len(s) < 40)), draw(value_text), context)


@settings(max_examples=300)
@given(parsable_keys())
def test_parse_inverts_file_path(key: SeriesKey) -> None:
    assume("~" not in file_path(key).name)  # names cut to fit are not invertible (tested above)
    assert parse_file_path(file_path(key)) == key


def test_parse_rejects_other_files() -> None:
    assert parse_file_path("a/b/c.rrd") is None
    assert parse_file_path("app/hits/app-bogus-hits-h.rrd") is None
    assert parse_file_path("app/hits/app-counter-hits-h.txt") is None
    assert parse_file_path("app-counter-hits-h.rrd") is None


def test_series_from_record_falls_back_to_the_listeners_receipt_time():
    from mondemand.backends.series import series_from_record

    from mondemand.envelope import RawEvent
    from mondemand.lwes import encode

    msg = StatsMsg("app", "web01", {"stat": "sum", "dc": "ams"}, [
        Metric(MetricType.COUNTER, "c", 5), Metric(MetricType.STATSET, "s", Statset(2, 9, None, 7)),
        Metric(MetricType.UNKNOWN, "h", 1.5, type_name="histogram")], collect_time=1_700_000_100_000)
    raw = RawEvent(encode(msg.to_lwes()[0]), 1_700_000_050_999, "10.0.0.1", 9)
    points = list(series_from_record(raw.stats, receipt_ms=raw.receipt_ms, unknown_as="gauge"))
    assert points == list(series_from_stats(raw.message, unknown_as="gauge"))
    assert [(p.key.metric_type, p.key.namespace, p.timestamp, p.value) for p in points] == [
        ("counter", "agg", 1_700_000_050, 5), ("count", "agg", 1_700_000_100, 2), ("sum", "agg", 1_700_000_100, 9),
        ("max", "agg", 1_700_000_100, 7), ("gauge", "agg", 1_700_000_050, 1.5)]
    assert points[0].key.context == (("dc", "ams"), ("stat", "sum"))
    assert next(p.timestamp for p in series_from_record(raw.stats, now=1234.9)) == 1234


def test_counter_rates_give_increase_per_second_or_delta_and_say_why_not():
    from mondemand.backends.series import CounterRates

    key = SeriesKey.make("app", "counter", "requests", "web01")
    rates, deltas = CounterRates(), CounterRates(delta=True)
    assert rates.step(key, 100, 1000) == deltas.step(key, 100, 1000) == CounterRates.FIRST
    assert rates.step(key, 160, 1600) == 10.0 and deltas.step(key, 160, 1600) == 600
    assert rates.step(key, 160, 1700) == CounterRates.NOT_NEWER  # the same time again: no honest rate
    assert rates.step(key, 150, 1700) == CounterRates.NOT_NEWER  # older: left out, and it changes nothing
    assert rates.step(key, 220, 2200) == 10.0
    assert rates.step(key, 280, 50) == CounterRates.RESET  # went down: the process restarted
    assert rates.step(key, 340, 650) == 10.0
