"""Daily-against-week curves: day boundaries, alignment, and real RRD files written by the rrd backend."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mondemand.backends.dashboard.history import History, HistoryError, align, day_pair, statistics_for
from mondemand.backends.rrd.backend import RrdBackend
from mondemand.backends.series import SeriesKey, file_path

from mondemand.envelope import RawEvent
from mondemand.lwes import encode
from mondemand.messages.stats import Metric, MetricType, Statset, StatsMsg
from mondemand.plugin_api import ServerContext

#: Wednesday 2024-05-15 12:34:56 UTC.
NOW = int(datetime(2024, 5, 15, 12, 34, 56, tzinfo=UTC).timestamp())
TODAY = int(datetime(2024, 5, 15, tzinfo=UTC).timestamp())
WEEK = TODAY - 7 * 86400


def test_day_pair_is_local_midnight_today_and_the_whole_same_weekday_last_week():
    days = day_pair(NOW + 0.7, UTC)
    assert (days.today_start, days.now, days.week_start, days.week_end) == (TODAY, NOW, WEEK, WEEK + 86400)
    assert days.length == 86400
    tokyo = day_pair(NOW, ZoneInfo("Asia/Tokyo"))  # 21:34 there, same date
    assert tokyo.today_start == TODAY - 9 * 3600 and tokyo.week_start == WEEK - 9 * 3600


def test_day_pair_across_a_daylight_saving_change_keeps_both_days_whole():
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2024, 4, 7, 12, 0, tzinfo=berlin).timestamp()  # a week after the 23-hour day of 2024-03-31
    days = day_pair(now, berlin)
    assert days.week_end - days.week_start == 23 * 3600
    assert days.today_end - days.today_start == 24 * 3600
    assert days.length == 24 * 3600
    assert datetime.fromtimestamp(days.week_start, berlin).date().isoformat() == "2024-03-31"


@given(st.integers(0, 3000), st.sampled_from([60, 300, 900]),
       st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), max_size=120))
def test_align_puts_each_row_at_the_start_of_the_interval_it_covers(offset, step, values):
    day_start = 1_700_000_000 // 86400 * 86400
    start = day_start - 600 + offset // step * step
    grid = align(start, step, values, day_start, 60, 86400)
    assert len(grid) == 1440
    for i, value in enumerate(values):
        lo = start + i * step - day_start
        for slot in range(max(0, lo // 60), min(1440, (lo + step) // 60)):
            assert grid[slot] == value
    filled = sum(v is not None for v in grid)
    assert filled <= sum(v is not None for v in values) * step // 60


def test_align_drops_rows_outside_the_day():
    day_start = 1_000_000_020 // 60 * 60
    grid = align(day_start - 120, 60, [1.0, 2.0, 3.0], day_start, 60, 120)
    assert grid == [3.0, None]
    assert align(day_start + 60, 60, [4.0, 5.0], day_start, 60, 120) == [None, 4.0]


def test_statistics_per_kind():
    assert [s[0] for s in statistics_for("gauge")] == ["AVG", "MIN", "MAX"]
    # DaTtSs's "MIN, MAX, AVG, BOT10, TOP10, COUNT, SUM"; BOT10/TOP10 are the NAME.bot10/.top10 gauges.
    assert [s[0] for s in statistics_for("statset")][:7] == ["MIN", "MAX", "AVG", "BOT10", "TOP10", "COUNT", "SUM"]
    assert statistics_for("statset")[3][1:] == ("gauge", "AVERAGE", ".bot10")
    with pytest.raises(HistoryError):
        statistics_for("histogram")


# -- real files ----------------------------------------------------------------------------


def _raw(msg: StatsMsg) -> list[RawEvent]:
    return [RawEvent(encode(event), NOW * 1000, "127.0.0.1", 40000) for event in msg.to_lwes()]


def _write(root: Path, messages: list[StatsMsg], daemon: str = "") -> None:
    config = {"root": str(root), "graphite": False, **({"daemon": daemon} if daemon else {})}
    backend = RrdBackend("rrd", config, ServerContext())
    backend.start()
    try:
        backend.handle([raw for msg in messages for raw in _raw(msg)])
        assert backend.counters()["errors"] == 0
    finally:
        backend.close()


def _minutes(day_start: int, first: int, last: int) -> list[int]:
    return [day_start + m * 60 for m in range(first, last + 1)]


def _gauges(prog: str, host: str, times: list[int], value) -> list[StatsMsg]:
    return [StatsMsg(prog, host=host, metrics=[Metric(MetricType.GAUGE, "queue", value(ts))], send_time=ts * 1000)
            for ts in times]


def test_gauge_curves_line_up_today_and_last_week_by_time_of_day(tmp_path):
    # Last week 09:00-11:00 and today 10:00-12:00, each value telling its own time of day and day.
    week_times = _minutes(WEEK, 9 * 60, 11 * 60)
    today_times = _minutes(TODAY, 10 * 60, 12 * 60)
    value = lambda ts: (ts - (TODAY if ts >= TODAY else WEEK)) // 60 + (0 if ts >= TODAY else 10_000)  # noqa: E731
    _write(tmp_path, _gauges("app", "web01", week_times + today_times, value))
    result = History(tmp_path, UTC).curves("app", "queue", "web01", "gauge", [], NOW)
    assert result["step"] == 60 and result["x"][:3] == [0, 60, 120] and len(result["x"]) == 1440
    assert result["today"]["start"] == TODAY and result["week"]["start"] == WEEK
    assert result["missing"] == [] and not result["rate"]
    charts = {c["stat"]: c for c in result["charts"]}
    assert set(charts) == {"AVG", "MIN", "MAX"}
    avg = charts["AVG"]
    # The sample stamped hh:mm covers the minute before it, so slot m holds the value sent at minute m + 1.
    for minute in range(9 * 60, 11 * 60):
        assert avg["week"][minute] == 10_000 + minute + 1
    for minute in range(10 * 60, 12 * 60):
        assert avg["today"][minute] == minute + 1
    assert avg["week"][11 * 60 + 5] is None and avg["today"][9 * 60] is None and avg["today"][12 * 60 + 1] is None
    # A new file starts one step before its first sample, which so fills minute 08:59 last week; today's
    # first sample follows a gap longer than the heartbeat, so the minute before it stays unknown.
    assert avg["week"][9 * 60 - 1] == 10_000 + 9 * 60
    assert avg["today_points"] == 120 and avg["week_points"] == 121
    assert charts["MIN"]["today"] == charts["MAX"]["today"] == avg["today"]
    assert avg["file"] == str(file_path(SeriesKey.make("app", "gauge", "queue", "web01")))


def test_counter_curves_are_rates_per_second(tmp_path):
    times = _minutes(TODAY, 60, 90)
    msgs = [StatsMsg("app", host="web01", metrics=[Metric(MetricType.COUNTER, "requests", 600 * i)],
                     send_time=ts * 1000) for i, ts in enumerate(times)]
    _write(tmp_path, msgs)
    result = History(tmp_path, UTC).curves("app", "requests", "web01", "counter", [], NOW)
    assert result["rate"]
    avg = next(c for c in result["charts"] if c["stat"] == "AVG")
    assert {v for v in avg["today"] if v is not None} == {10.0}
    assert avg["week_points"] == 0


def test_statset_and_aggregate_curves_show_the_sub_statistics_that_exist(tmp_path):
    times = _minutes(TODAY, 60, 70)
    per_host = [StatsMsg("app", host="web01", metrics=[Metric(MetricType.STATSET, "lat", Statset(
        count=4, sum=40, min=1, max=20, avg=10))], collect_time=ts * 1000) for ts in times]
    agg = [StatsMsg("app", host="all", context={"stat": "gauge", "cluster": "eu"}, metrics=[
        Metric(MetricType.STATSET, "lat", Statset(count=9, sum=90, min=1, max=30))], collect_time=ts * 1000)
        for ts in times]
    _write(tmp_path, per_host + agg)
    history = History(tmp_path, UTC)
    host = history.curves("app", "lat", "web01", "statset", [], NOW)
    assert [c["stat"] for c in host["charts"]] == ["MIN", "MAX", "AVG", "COUNT", "SUM"]
    assert host["missing"] == ["BOT10", "TOP10", "MEDIAN", "P75", "P90", "P95", "P98", "P99"]
    assert {v for v in host["charts"][1]["today"] if v is not None} == {20.0}
    both = history.curves("app", "lat", "all", "statset", [("cluster", "eu"), ("stat", "gauge")], NOW)
    # No avg file for the aggregate: AVG is SUM / COUNT, row by row.
    assert [c["stat"] for c in both["charts"]] == ["MIN", "MAX", "AVG", "COUNT", "SUM"]
    assert {v for v in both["charts"][4]["today"] if v is not None} == {90.0}
    assert {v for v in both["charts"][2]["today"] if v is not None} == {10.0} and "AVG" not in both["missing"]
    assert both["metric"]["context"] == [["cluster", "eu"], ["stat", "gauge"]]


def test_listing_what_is_stored_reads_names_back_and_stays_under_the_root(tmp_path):
    root = tmp_path / "rrd"
    times = _minutes(TODAY, 60, 62)
    _write(root, _gauges("../evil/app", "h/1", times, lambda ts: 1) + _gauges("plain", "web01", times, lambda ts: 2))
    assert sorted(p.relative_to(root).parts[0] for p in root.rglob("*.rrd")) == ["%2E.%2Fevil%2Fapp", "plain"]
    history = History(root, UTC)
    assert history.programs() == ["../evil/app", "plain"]
    [key] = history.stored("../evil/app")
    assert (key.prog_id, key.host, key.name, key.metric_type) == ("../evil/app", "h/1", "queue", "gauge")
    result = history.curves("../evil/app", "queue", "h/1", "gauge", [], NOW)
    assert result["charts"] and result["charts"][0]["today_points"] == 3  # 3 samples, the first fills its step
    assert history.stored("nothing-here") == []
    assert History(tmp_path / "absent", UTC).programs() == []


def test_a_metric_without_files_has_no_charts_and_bad_requests_are_errors(tmp_path):
    history = History(tmp_path, UTC)
    result = history.curves("app", "queue", "web01", "gauge", [], NOW)
    assert result["charts"] == [] and result["missing"] == ["AVG", "MIN", "MAX"]
    with pytest.raises(HistoryError):
        history.curves("app", "queue", "web01", "histogram", [], NOW)
    with pytest.raises(HistoryError):
        history.curves("app", "queue", "web01", "gauge", [("b", "1"), ("a", "2"), ("a", "3")], NOW)


def test_reads_through_rrdcached_see_updates_the_daemon_still_holds(tmp_path, rrdcached_unix):
    times = _minutes(TODAY, 60, 70)
    _write(tmp_path, _gauges("app", "web01", times, lambda ts: 7), daemon=rrdcached_unix.address)
    direct = History(tmp_path, UTC).curves("app", "queue", "web01", "gauge", [], NOW)
    assert direct["charts"][0]["today_points"] == 0  # written only when flushed (-w 3600)
    cached = History(tmp_path, UTC, rrdcached_unix.address).curves("app", "queue", "web01", "gauge", [], NOW)
    assert cached["charts"][0]["today_points"] == 11  # the first sample also fills the step before it


def test_just_after_midnight_today_is_empty_and_last_week_is_whole(tmp_path):
    _write(tmp_path, _gauges("app", "web01", _minutes(WEEK, 0, 30) + _minutes(TODAY - 600, 0, 5), lambda ts: 3))
    for now in (TODAY, TODAY + 5):
        result = History(tmp_path, UTC).curves("app", "queue", "web01", "gauge", [], now)
        avg = result["charts"][0]
        # The first sample, at 00:00, fills the minute before midnight, outside the day.
        assert "error" not in avg and avg["today_points"] == 0 and avg["week_points"] == 30
