"""The alert state machine with synthetic times: transitions, hysteresis, windows, no-data and not-seen."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mondemand.backends.alerts.rules import (
    FIRING,
    OK,
    RuleError,
    RuleState,
    Selector,
    measure,
    rule_from_options,
)

from mondemand.messages import Statset

T0 = 1_700_000_000.0


def make(now: float = T0, forget_after: float = 86_400.0, **options) -> RuleState:
    options.setdefault("metric", "myapp:latency_ms")
    return RuleState(rule_from_options("test", options), now, forget_after)


def gauge(state: RuleState, value: float, t: float, host: str = "web01", name: str = "latency_ms",
          context: dict[str, str] | None = None, kind: str = "gauge", prog_id: str = "myapp"):
    if not state.rule.selector.matches_source(prog_id, host):
        return []
    return state.observe(prog_id, host, name, context or {}, kind, value, t)


def states(transitions) -> list[str]:
    return [t.state for t in transitions]


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "key"), [
    ({}, "above"),
    ({"above": 1.0, "no_data": 5.0}, "no_data"),
    ({"no_data": 5.0, "not_seen": 5.0}, "not_seen"),
    ({"above": 1.0, "below": 2.0}, "below"),
    ({"above": 10.0, "clear_above": 11.0}, "clear_above"),
    ({"below": 10.0, "clear_below": 9.0}, "clear_below"),
    ({"clear_above": 1.0, "below": 0.0}, "clear_above"),
    ({"above": 1.0, "window_mode": "avg"}, "window"),
    ({"metric": "myapp", "above": 1.0}, "metric"),
    ({"metric": "myapp:x", "not_seen": 5.0}, "metric"),
    ({"metric": "myapp", "no_data": 5.0}, "metric"),
    ({"metric": ":x", "above": 1.0}, "metric"),
    ({"no_data": 5.0, "window": 3.0}, "window"),
    ({"above": 1.0, "context": ["dc"]}, "context"),
    ({"above": 10.0, "below": 0.0, "hysteresis": 6.0}, "hysteresis"),
])
def test_bad_rules_name_the_key(options, key):
    options.setdefault("metric", "myapp:latency_ms")
    with pytest.raises(RuleError) as info:
        rule_from_options("r", options)
    assert info.value.key == key


def test_hysteresis_sets_the_clear_thresholds():
    rule = rule_from_options("r", {"metric": "a:b", "above": 100.0, "below": 10.0, "hysteresis": 5.0})
    assert (rule.clear_above, rule.clear_below) == (95.0, 15.0)
    assert rule.breaches(100.5) and rule.breaches(9.0) and not rule.breaches(50.0)
    assert rule.clears(95.0) and not rule.clears(96.0) and not rule.clears(14.0)


def test_selector_globs_host_and_context():
    sel = Selector.parse("my*:lat*", "web*", ["dc=us-*", "role=db"])
    assert sel.matches_source("myapp", "web01") and not sel.matches_source("myapp", "db01")
    assert not sel.matches_source("other", "web01")
    assert sel.matches_metric("latency", {"dc": "us-east", "role": "db"})
    assert not sel.matches_metric("latency", {"dc": "eu-west", "role": "db"})
    assert not sel.matches_metric("latency", {"dc": "us-east"})
    assert not sel.matches_metric("errors", {"dc": "us-east", "role": "db"})


# -- values ----------------------------------------------------------------------------------


def test_measure_gauge_counter_rate_and_statset():
    assert measure("auto", "gauge", 7, None, T0) == (7.0, None)
    first = measure("auto", "counter", 100, None, T0)
    assert first == (None, (T0, 100.0))
    rate, prev = measure("auto", "counter", 160, first[1], T0 + 2)
    assert rate == 30.0 and prev == (T0 + 2, 160.0)
    assert measure("auto", "counter", 5, prev, T0 + 3)[0] is None  # a reset gives no rate
    assert measure("value", "counter", 5, prev, T0 + 3)[0] == 5.0
    stats = Statset(count=4, sum=40, min=1, max=30, avg=10, pctl_99=29)
    assert measure("auto", "statset", stats, None, T0)[0] == 10.0
    assert measure("pctl_99", "statset", stats, None, T0)[0] == 29.0
    assert measure("median", "statset", stats, None, T0)[0] is None


def test_counter_rate_alert():
    state = make(metric="myapp:requests", above=50.0)
    assert gauge(state, 1000, T0, name="requests", kind="counter") == []
    assert gauge(state, 1040, T0 + 1, name="requests", kind="counter") == []  # 40/s
    fired = gauge(state, 1140, T0 + 2, name="requests", kind="counter")  # 100/s
    assert states(fired) == [FIRING] and fired[0].value == 100.0


# -- threshold transitions -------------------------------------------------------------------


def test_fires_once_and_clears_once():
    state = make(above=100.0)
    assert gauge(state, 50, T0) == []
    fired = gauge(state, 150, T0 + 1)
    assert states(fired) == [FIRING]
    assert fired[0].previous == OK and fired[0].condition == "above" and fired[0].value == 150.0
    assert "myapp latency_ms on web01" in fired[0].summary and "above 100" in fired[0].summary
    assert gauge(state, 170, T0 + 2) == [] and state.tick(T0 + 3) == []
    cleared = gauge(state, 90, T0 + 4)
    assert states(cleared) == [OK] and cleared[0].previous == FIRING and cleared[0].condition == "clear"
    assert state.tick(T0 + 10) == []


def test_below_rule():
    state = make(below=10.0, hysteresis=2.0)
    assert states(gauge(state, 5, T0)) == [FIRING]
    assert gauge(state, 11, T0 + 1) == []  # inside the band
    assert states(gauge(state, 12, T0 + 2)) == [OK]


def test_each_series_has_its_own_state():
    state = make(metric="myapp:*", above=100.0, host="web*")
    assert states(gauge(state, 150, T0, host="web01")) == [FIRING]
    assert states(gauge(state, 150, T0, host="web02", context={"dc": "a"})) == [FIRING]
    assert gauge(state, 150, T0, host="db01") == []  # host filter
    fired = gauge(state, 150, T0, host="web02", name="errors")
    assert states(fired) == [FIRING] and fired[0].labels["metric"] == "errors"
    assert state.firing == 3 and len(state.series) == 3


def test_hysteresis_stops_a_flapping_value_from_spamming():
    values = [101, 99] * 20
    without = make(above=100.0)
    with_band = make(above=100.0, hysteresis=5.0)
    counts = []
    for state in (without, with_band):
        out = []
        for i, v in enumerate(values):
            out += gauge(state, v, T0 + i)
        counts.append(len(out))
    assert counts == [40, 1]


def test_clear_window_needs_the_value_to_stay_clear():
    state = make(above=100.0, clear_window=5.0)
    gauge(state, 150, T0)
    assert gauge(state, 50, T0 + 1) == []
    assert gauge(state, 150, T0 + 3) == []  # back over: the clear run restarts
    assert gauge(state, 50, T0 + 4) == []
    assert state.tick(T0 + 8) == []
    assert states(state.tick(T0 + 9)) == [OK]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=200, allow_nan=False), max_size=60))
def test_matches_a_reference_model_without_window(values):
    state = make(above=100.0, clear_above=80.0)
    model, expected, got = OK, [], []
    for i, v in enumerate(values):
        if model == OK and v > 100:
            model = FIRING
            expected.append((i, FIRING))
        elif model == FIRING and v <= 80:
            model = OK
            expected.append((i, OK))
        got += [(i, t.state) for t in gauge(state, v, T0 + i)]
    assert got == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(min_value=0.01, max_value=3), st.sampled_from([50.0, 150.0])), max_size=40))
def test_window_all_fires_only_after_the_condition_held_for_the_whole_window(steps):
    window = 2.0
    state = make(above=100.0, window=window)
    t, run_start, history = T0, None, []
    for dt, v in steps:
        t += dt
        for tr in state.tick(t) + gauge(state, v, t):
            history.append((tr, run_start))
        if state.series and next(iter(state.series.values())).state == OK:
            run_start = (run_start if run_start is not None else t) if v > 100 else None
    states_seen = [tr.state for tr, _ in history]
    assert all(a != b for a, b in itertools.pairwise(states_seen))  # strictly alternating
    for tr, start in history:
        if tr.state == FIRING:
            assert start is not None and tr.time - start >= window


def test_window_all_fires_on_tick_while_the_value_stands():
    state = make(above=100.0, window=2.0)
    assert gauge(state, 150, T0) == []
    assert state.tick(T0 + 1.5) == []
    assert gauge(state, 90, T0 + 1.8) == []  # a dip restarts the window
    assert gauge(state, 150, T0 + 2.0) == []
    assert state.tick(T0 + 3.9) == []
    fired = state.tick(T0 + 4.0)
    assert states(fired) == [FIRING] and "for 2s" in fired[0].summary


def test_window_avg_uses_the_mean_once_the_window_is_full():
    state = make(above=100.0, window=10.0, window_mode="avg")
    assert gauge(state, 500, T0) == []  # the window is not full yet
    assert gauge(state, 0, T0 + 5) == []
    assert gauge(state, 0, T0 + 9) == []
    assert gauge(state, 0, T0 + 10) == []  # mean of 0, 0, 0 once the 500 left the window
    assert gauge(state, 400, T0 + 11) == []  # mean 100: not over
    fired = gauge(state, 200, T0 + 12)  # mean of 0, 0, 0, 400, 200 = 120
    assert states(fired) == [FIRING] and fired[0].value == 120.0 and "average over 10s" in fired[0].summary
    assert state.tick(T0 + 20.5) == []  # 400 and 200 still inside: mean 300
    assert state.tick(T0 + 23) == []  # the window is empty: no judgement either way
    cleared = gauge(state, 10, T0 + 24)
    assert states(cleared) == [OK] and cleared[0].value == 10.0


def test_repeat_reminds_while_firing():
    state = make(above=100.0, repeat=60.0)
    gauge(state, 150, T0)
    assert state.tick(T0 + 59) == []
    reminder = state.tick(T0 + 60)
    assert states(reminder) == [FIRING] and reminder[0].repeat and reminder[0].previous == FIRING
    assert state.tick(T0 + 100) == []
    assert len(state.tick(T0 + 121)) == 1
    gauge(state, 10, T0 + 130)
    assert state.tick(T0 + 500) == []


def test_max_series_and_forgetting():
    state = make(metric="myapp:*", above=100.0, max_series=2, forget_after=100.0)
    gauge(state, 1, T0, name="a")
    gauge(state, 1, T0, name="b")
    assert gauge(state, 500, T0, name="c") == [] and state.overflow == 1
    gauge(state, 500, T0 + 50, name="b")
    assert state.tick(T0 + 101) == [] and len(state.series) == 1  # "a" forgotten, firing "b" kept


# -- no data / not seen ---------------------------------------------------------------------


def test_no_data_fires_after_silence_and_clears_on_data():
    state = make(no_data=120.0)
    assert gauge(state, 1, T0) == []
    assert state.tick(T0 + 119) == []
    fired = state.tick(T0 + 120)
    assert states(fired) == [FIRING] and fired[0].condition == "no_data" and fired[0].value is None
    assert "no data for 120s" in fired[0].summary
    assert state.tick(T0 + 500) == []
    back = gauge(state, 1, T0 + 600)
    assert states(back) == [OK] and "reporting again" in back[0].summary


def test_not_seen_named_source_is_watched_from_start():
    state = make(metric="myapp", host="web01", not_seen=30.0)
    assert state.tick(T0 + 29) == []
    fired = state.tick(T0 + 30)
    assert states(fired) == [FIRING] and fired[0].labels == {"prog_id": "myapp", "host": "web01"}
    assert state.seen("myapp", "web02", T0 + 31) == []  # another host: a series of its own (selector is exact)
    assert states(state.seen("myapp", "web01", T0 + 32)) == [OK]


def test_not_seen_glob_watches_what_it_has_seen():
    state = make(metric="myapp", host="web*", not_seen=30.0)
    assert state.tick(T0 + 100) == []
    state.seen("myapp", "web03", T0 + 100)
    fired = state.tick(T0 + 131)
    assert states(fired) == [FIRING] and fired[0].labels["host"] == "web03"
    assert "not seen for 31s" in fired[0].summary


# -- persistence ------------------------------------------------------------------------------


def test_snapshot_restore_keeps_firing_without_renotifying():
    state = make(above=100.0, repeat=0.0)
    gauge(state, 150, T0)
    data = json.loads(json.dumps(state.snapshot()))
    again = make(now=T0 + 1000, above=100.0)
    assert again.restore(data) == 0
    assert again.firing == 1
    assert gauge(again, 160, T0 + 1001) == [] and again.tick(T0 + 1002) == []
    assert states(gauge(again, 20, T0 + 1003)) == [OK]


def test_restored_silence_counts_from_restart():
    state = make(no_data=60.0)
    gauge(state, 1, T0)
    data = state.snapshot()
    again = make(now=T0 + 1000, no_data=60.0)
    again.restore(data)
    assert again.tick(T0 + 1059) == []  # grace: silence counts from the restart
    assert states(again.tick(T0 + 1060)) == [FIRING]


def test_restore_skips_malformed_entries():
    state = make(above=100.0)
    gauge(state, 150, T0)
    data = state.snapshot()
    data["bad"] = {"labels": "nope", "state": "firing"}
    data["worse"] = {"state": "sideways"}
    again = make(above=100.0)
    assert again.restore(data) == 2 and again.firing == 1


def test_no_data_ignores_aggregate_series_unless_the_rule_names_them():
    # A no_data shorter than the agg interval: the once-a-minute aggregate must not fire it every minute.
    state = make(metric="myapp:*", no_data=30.0)
    assert gauge(state, 1, T0, host="all", context={"stat": "statset"}) == []
    assert gauge(state, 1, T0, host="web01", context={"stat": "gauge"}) == []
    gauge(state, 1, T0, host="web01")
    assert len(state.series) == 1
    fired = state.tick(T0 + 45)
    assert [t.labels["host"] for t in fired] == ["web01"]
    named = make(metric="myapp:*", host="all", no_data=90.0)
    gauge(named, 1, T0, host="all", context={"stat": "statset"})
    assert states(named.tick(T0 + 100)) == [FIRING]
    by_context = make(metric="myapp:*", context=["stat=statset"], no_data=90.0)
    gauge(by_context, 1, T0, host="all", context={"stat": "statset"})
    assert states(by_context.tick(T0 + 100)) == [FIRING]


def test_not_seen_ignores_the_aggregate_host_unless_named():
    state = make(metric="myapp", not_seen=30.0)
    assert state.seen("myapp", "all", T0) == [] and state.series == {}
    state.seen("myapp", "web01", T0)
    assert [t.labels["host"] for t in state.tick(T0 + 40)] == ["web01"]
    named = make(metric="myapp", host="all", not_seen=30.0)
    named.seen("myapp", "all", T0 + 1)
    assert states(named.tick(T0 + 40)) == [FIRING]
