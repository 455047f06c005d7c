"""The `rrd` backend against real files, written directly and through a real rrdcached (unix socket and TCP)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import rrdtool
from hypothesis import given, settings
from hypothesis import strategies as st
from mondemand.backends.rrd.backend import Layout, RrdBackend
from mondemand.backends.rrd.rrdcached import RrdcachedClient
from mondemand.backends.series import SeriesKey, file_path, tree_path

from mondemand.envelope import RawEvent
from mondemand.lwes import encode
from mondemand.messages.log import LogMsg
from mondemand.messages.stats import Statset
from mondemand.options import parse_options
from mondemand.plugin_api import ServerContext
from tests.backends.rrd.rrd_helpers import BASE, Rrdcached, raw_events, stats_msg


def make_backend(root: Path, **options: Any) -> RrdBackend:
    """An RrdBackend configured the way the server does it (options parsed from strings), started."""
    raw = {"root": str(root), **{k: str(v) for k, v in options.items()}}
    values, problems = parse_options(RrdBackend.options, raw)
    assert problems == []
    backend = RrdBackend("rrd", values, ServerContext())
    backend.start()
    return backend


@pytest.fixture(params=["direct", "unix", "tcp"])
def mode(request: pytest.FixtureRequest) -> dict[str, str]:
    """Backend options for each way of writing: {} (direct) or {"daemon": address} of a real rrdcached."""
    if request.param == "direct":
        return {}
    daemon: Rrdcached = request.getfixturevalue(f"rrdcached_{request.param}")
    return {"daemon": daemon.address}


def read(path: Path, mode: dict[str, str], cf: str = "AVERAGE", start: int = BASE - 300,
         end: int = BASE + 1800, resolution: int | None = None) -> dict[int, float | None]:
    """{end of interval: value} of the file's only data source (flushing rrdcached first)."""
    args = [str(path), cf, "--start", str(start), "--end", str(end)]
    flush(path, mode, args)
    if resolution:
        args += ["--resolution", str(resolution)]
    (first, _last, step), _names, rows = rrdtool.fetch(*args)
    return {first + step * (i + 1): row[0] for i, row in enumerate(rows)}


def flush(path: Path, mode: dict[str, str], args: list[str] | None = None) -> None:
    """Have rrdcached write `path` out: librrd does it for a unix socket (it refuses absolute paths over TCP)."""
    daemon = mode.get("daemon")
    if daemon is None:
        return
    if daemon.startswith("unix:"):
        if args is None:
            rrdtool.flushcached("--daemon", daemon, str(path))
        else:
            args += ["--daemon", daemon]
    else:
        with RrdcachedClient(daemon) as client:
            client.flush(str(path))


def info(path: Path, mode: dict[str, str]) -> dict[str, Any]:
    flush(path, mode)
    return rrdtool.info(str(path))


def key(metric_type: str, name: str, host: str = "web1", prog: str = "app", **context: str) -> SeriesKey:
    return SeriesKey.make(prog, metric_type, name, host, context)


def minute_events(minutes: range, **extra: Any) -> list[RawEvent]:
    """One StatsMsg per minute from BASE: counter `hits` +600 a minute, gauge `load` = 40 + minute."""
    return raw_events(*(stats_msg(counters={"hits": 1000 + 600 * i}, gauges={"load": 40 + i},
                                  send_time=BASE + 60 * i, **extra) for i in minutes))


# -- stored values ---------------------------------------------------------------------------


def test_counter_is_a_rate_gauge_as_given_and_the_first_sample_is_kept(tmp_path: Path, mode: dict[str, str]) -> None:
    backend = make_backend(tmp_path / "rrd", **mode)
    backend.handle(minute_events(range(0, 1)))  # a new series: its file is created in this batch
    backend.handle(minute_events(range(1, 6)))
    for i in range(6, 11):  # and one event per batch
        backend.handle(minute_events(range(i, i + 1)))
    backend.close()
    counts = backend.counters()
    assert counts["written"] == 22 and counts["created"] == 2 and counts["rejected"] == 0

    root = tmp_path / "rrd"
    gauge = read(root / file_path(key("gauge", "load")), mode)
    assert [gauge[BASE + 60 * i] for i in range(11)] == [40.0 + i for i in range(11)]
    assert gauge[BASE] == 40.0  # the first sample of the new series
    assert gauge[BASE + 660] is None
    counter = read(root / file_path(key("counter", "hits")), mode)
    assert counter[BASE] is None  # a rate needs two samples
    assert [counter[BASE + 60 * i] for i in range(1, 11)] == [10.0] * 10


def test_three_archives_per_consolidation_with_the_reference_steps_and_rows(tmp_path: Path,
                                                                             mode: dict[str, str]) -> None:
    backend = make_backend(tmp_path / "rrd", **mode)
    backend.handle(raw_events(stats_msg(counters={"c": 1}, gauges={"g": 2}, statsets={"s": Statset(max=3)},
                                        send_time=BASE, collect_time=BASE)))
    root = tmp_path / "rrd"
    expected_rows = {"counter": [44640, 9600, 400], "gauge": [44640, 9600, 400], "max": [44640, 9600, 1200]}
    expected_ds = {"counter": ("DERIVE", 0.0), "gauge": ("GAUGE", None), "max": ("GAUGE", None)}
    for metric_type, name in (("counter", "c"), ("gauge", "g"), ("max", "s")):
        meta = info(root / file_path(key(metric_type, name)), mode)
        assert meta["step"] == 60
        assert meta["ds[value].minimal_heartbeat"] == 900
        assert (meta["ds[value].type"], meta["ds[value].min"]) == expected_ds[metric_type]
        rras = [(meta[f"rra[{i}].cf"], meta[f"rra[{i}].pdp_per_row"], meta[f"rra[{i}].rows"]) for i in range(9)]
        assert "rra[9].cf" not in meta
        assert rras == [(cf, steps, rows) for cf in ("AVERAGE", "MIN", "MAX")
                        for steps, rows in zip((1, 15, 1440), expected_rows[metric_type], strict=True)]
    backend.close()


def test_archive_layout_is_configurable(tmp_path: Path) -> None:
    backend = make_backend(tmp_path / "rrd", step="30", heartbeat="120", rras="1:100 10:50",
                           statset_rras="2:10", consolidation="AVERAGE LAST", xff="0.25")
    backend.handle(raw_events(stats_msg(gauges={"g": 2}, statsets={"s": Statset(sum=1)}, send_time=BASE,
                                        collect_time=BASE)))
    meta = rrdtool.info(str(tmp_path / "rrd" / file_path(key("gauge", "g"))))
    assert meta["step"] == 30 and meta["ds[value].minimal_heartbeat"] == 120
    assert [(meta[f"rra[{i}].cf"], meta[f"rra[{i}].pdp_per_row"], meta[f"rra[{i}].rows"], meta[f"rra[{i}].xff"])
            for i in range(4)] == [("AVERAGE", 1, 100, 0.25), ("AVERAGE", 10, 50, 0.25),
                                   ("LAST", 1, 100, 0.25), ("LAST", 10, 50, 0.25)]
    meta = rrdtool.info(str(tmp_path / "rrd" / file_path(key("sum", "s"))))
    assert [(meta[f"rra[{i}].pdp_per_row"], meta[f"rra[{i}].rows"]) for i in range(2)] == [(2, 10), (2, 10)]


def test_min_and_max_archives_hold_the_extremes(tmp_path: Path) -> None:
    backend = make_backend(tmp_path / "rrd")
    samples = [5, 1, 9, 4] * 8
    backend.handle(raw_events(*(stats_msg(gauges={"g": v}, send_time=BASE + 60 * i) for i, v in enumerate(samples))))
    path = tmp_path / "rrd" / file_path(key("gauge", "g"))
    quarter = {cf: read(path, {}, cf, start=BASE, end=BASE + 1800, resolution=900)[BASE + 900]
               for cf in ("AVERAGE", "MIN", "MAX")}
    in_quarter = samples[1:16]  # the samples at BASE+60 .. BASE+900 make up (BASE, BASE+900]
    assert quarter == {"AVERAGE": pytest.approx(sum(in_quarter) / 15), "MIN": 1.0, "MAX": 9.0}


def test_statsets_give_one_gauge_per_sub_statistic_at_collect_time(tmp_path: Path, mode: dict[str, str]) -> None:
    backend = make_backend(tmp_path / "rrd", **mode)
    backend.handle(raw_events(*(stats_msg(statsets={"lat": Statset(count=10 + i, sum=100 * i, pctl_99=7)},
                                          send_time=BASE + 60 * i + 59, collect_time=BASE + 60 * i)
                                for i in range(3))))
    root = tmp_path / "rrd"
    assert sorted(p.name for p in (root / "app" / "lat").iterdir()) == [
        "app-count-lat-web1.rrd", "app-pctl_99-lat-web1.rrd", "app-sum-lat-web1.rrd"]
    counts = read(root / file_path(key("count", "lat")), mode)
    assert [counts[BASE + 60 * i] for i in range(3)] == [10.0, 11.0, 12.0]
    sums = read(root / file_path(key("sum", "lat")), mode)
    assert [sums[BASE + 60 * i] for i in range(3)] == [0.0, 100.0, 200.0]


# -- refused updates ------------------------------------------------------------------------------


def test_late_and_duplicate_samples_are_counted_and_the_next_one_written(tmp_path: Path,
                                                                         mode: dict[str, str]) -> None:
    backend = make_backend(tmp_path / "rrd", **mode)
    g = lambda i, v: stats_msg(gauges={"g": v}, send_time=BASE + 60 * i)  # noqa: E731
    backend.handle(raw_events(g(0, 1), g(1, 2), g(2, 3)))
    backend.handle(raw_events(g(1, 99), g(2, 99)))  # late, duplicate
    backend.handle(raw_events(g(3, 4), g(3, 98)))  # a duplicate inside one batch
    backend.handle(raw_events(g(4, 5)))
    assert backend.counters()["rejected"] == 3
    assert backend.counters()["written"] == 5
    values = read(tmp_path / "rrd" / file_path(key("gauge", "g")), mode)
    assert [values[BASE + 60 * i] for i in range(5)] == [1.0, 2.0, 3.0, 4.0, 5.0]
    backend.close()


def test_a_refusal_from_the_file_itself_does_not_silence_it(tmp_path: Path, mode: dict[str, str]) -> None:
    """A restarted backend knows nothing of a file's last update: librrd or rrdcached refuses, we go on."""
    first = make_backend(tmp_path / "rrd", **mode)
    first.handle(raw_events(*(stats_msg(gauges={"g": i}, send_time=BASE + 60 * i) for i in range(6))))
    first.close()
    second = make_backend(tmp_path / "rrd", **mode)
    second.handle(raw_events(*(stats_msg(gauges={"g": v}, send_time=BASE + 60 * i)
                               for i, v in ((3, 50), (4, 50), (6, 6), (7, 7)))))
    second.handle(raw_events(stats_msg(gauges={"g": 8}, send_time=BASE + 480)))
    counts = second.counters()
    assert (counts["rejected"], counts["written"], counts["errors"]) == (2, 3, 0)
    values = read(tmp_path / "rrd" / file_path(key("gauge", "g")), mode)
    assert [values[BASE + 60 * i] for i in range(9)] == [float(i) for i in range(9)]
    second.close()


def test_samples_from_the_future_are_refused_so_they_cannot_block_the_file(tmp_path: Path) -> None:
    backend = make_backend(tmp_path / "rrd", max_future="5m")
    now = int(time.time())
    backend.handle(raw_events(stats_msg(gauges={"g": 1}, send_time=now - 60),
                              stats_msg(gauges={"g": 9}, send_time=now + 86400 * 365)))  # ms taken for s, say
    backend.handle(raw_events(stats_msg(gauges={"g": 2}, send_time=now)))
    counts = backend.counters()
    assert (counts["future"], counts["written"], counts["rejected"]) == (1, 2, 0)
    assert rrdtool.last(str(tmp_path / "rrd" / file_path(key("gauge", "g")))) == now


def test_a_deleted_file_is_created_again(tmp_path: Path) -> None:
    backend = make_backend(tmp_path / "rrd")
    backend.handle(raw_events(stats_msg(gauges={"g": 1}, send_time=BASE)))
    path = tmp_path / "rrd" / file_path(key("gauge", "g"))
    path.unlink()
    backend.handle(raw_events(stats_msg(gauges={"g": 2}, send_time=BASE + 60)))
    assert backend.counters()["recreated"] == 1
    assert read(path, {})[BASE + 60] == 2.0


# -- rrdcached availability ---------------------------------------------------------------------------


def test_unreachable_daemon_buffers_and_counts_then_replays_in_order(tmp_path: Path) -> None:
    sock_dir = Path(tempfile.mkdtemp(prefix="rrds"))
    address = f"unix:{sock_dir / 'sock'}"
    backend = make_backend(tmp_path / "rrd", daemon=address)  # nobody listens yet: start does not fail
    backend.handle(raw_events(stats_msg(gauges={"g": 1}, send_time=BASE)))
    backend.handle(raw_events(stats_msg(gauges={"g": 2}, send_time=BASE + 60)))  # within the back-off
    counts = backend.counters()
    assert (counts["daemon_errors"], counts["buffered"], counts["dropped"], counts["written"]) == (1, 2, 0, 0)

    daemon = Rrdcached(tmp_path, socket_path=sock_dir / "sock")
    try:
        time.sleep(0.15)  # past the first back-off
        backend.handle(raw_events(stats_msg(gauges={"g": 3}, send_time=BASE + 120)))
        counts = backend.counters()
        assert (counts["written"], counts["buffered"], counts["dropped"]) == (3, 0, 0)
        values = read(tmp_path / "rrd" / file_path(key("gauge", "g")), {"daemon": address})
        assert (values[BASE + 60], values[BASE + 120]) == (2.0, 3.0)
    finally:
        backend.close()
        daemon.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


# -- which series, and where ------------------------------------------------------------------------


def test_whitelist_and_blacklist_by_prog_id_glob(tmp_path: Path) -> None:
    msgs = [stats_msg(prog, gauges={"g": 1}, send_time=BASE) for prog in ("app", "noisy_1", "noisy_2", "other")]
    black = make_backend(tmp_path / "b", blacklist="noisy_*")
    black.handle(raw_events(*msgs))
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["app", "other"]
    assert black.counters()["filtered"] == 2
    white = make_backend(tmp_path / "w", whitelist="noisy_* app", blacklist="app")
    white.handle(raw_events(*msgs))
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["app", "noisy_1", "noisy_2"]
    assert white.counters()["filtered"] == 1


def test_colliding_series_are_reported_not_merged(tmp_path: Path) -> None:
    backend = make_backend(tmp_path / "rrd")
    backend.handle(raw_events(stats_msg(host="a-b=c", gauges={"g": 1}, send_time=BASE),
                              stats_msg(host="a", context={"b": "c"}, gauges={"g": 2}, send_time=BASE + 60),
                              stats_msg(host="a-b=c", gauges={"g": 3}, send_time=BASE + 120),
                              stats_msg(host="a", context={"b": "c"}, gauges={"g": 4}, send_time=BASE + 180)))
    counts = backend.counters()
    assert (counts["collisions"], counts["collided_samples"], counts["written"], counts["series"]) == (1, 2, 2, 1)
    values = read(tmp_path / "rrd" / file_path(key("gauge", "g", host="a-b=c")), {})
    assert (values[BASE], values[BASE + 60], values[BASE + 120]) == (1.0, 3.0, 3.0)


def test_graphite_tree_links_to_the_files_and_reports_its_collisions(tmp_path: Path) -> None:
    backend = make_backend(tmp_path / "rrd")
    backend.handle(raw_events(
        stats_msg(host="web1.ny", gauges={"g": 1}, send_time=BASE),
        stats_msg(host="web1.sf", gauges={"g": 2}, send_time=BASE),  # same short host
        stats_msg(host="all", context={"stat": "gauge", "colo": "ny"}, statsets={"lat": Statset(sum=5)},
                  collect_time=BASE),
    ))
    root, tree = tmp_path / "rrd", tmp_path / "rrdg"
    link = tree / "app/md/g/host/web1/gauge.rrd"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == (root / file_path(key("gauge", "g", host="web1.ny"))).resolve()
    assert (root / file_path(key("gauge", "g", host="web1.sf"))).is_file()
    agg = key("sum", "lat", host="all", stat="gauge", colo="ny")
    assert tree_path(agg).as_posix() == "app/agg/lat/colo/ny/host/all/sum.rrd"
    assert (tree / tree_path(agg)).resolve() == (root / file_path(agg)).resolve()
    assert backend.counters()["tree_collisions"] == 1

    # A later run finds the link; another series claiming it is still reported.
    again = make_backend(tmp_path / "rrd")
    again.handle(raw_events(stats_msg(host="web1.sf", gauges={"g": 3}, send_time=BASE + 60),
                            stats_msg(host="web1.ny", gauges={"g": 4}, send_time=BASE + 60)))
    assert again.counters()["tree_collisions"] == 1
    assert link.resolve() == (root / file_path(key("gauge", "g", host="web1.ny"))).resolve()


def test_graphite_tree_can_be_turned_off_or_moved(tmp_path: Path) -> None:
    make_backend(tmp_path / "a", graphite="false").handle(raw_events(stats_msg(gauges={"g": 1}, send_time=BASE)))
    assert not (tmp_path / "ag").exists()
    moved = make_backend(tmp_path / "b", graphite_root=tmp_path / "tree", host_dir="hosts", short_host="false")
    moved.handle(raw_events(stats_msg(host="w.x", gauges={"g": 1}, send_time=BASE)))
    assert (tmp_path / "tree/app/hosts/g/host/w_x/gauge.rrd").resolve().is_file()


def test_wire_names_stay_inside_the_root_and_under_the_name_limit(tmp_path: Path) -> None:
    backend = make_backend(tmp_path / "data" / "rrd")
    backend.handle(raw_events(stats_msg("../../escape", host="/etc", gauges={"../x/y": 1, "n" * 600: 2},
                                        context={"k/../..": "v" * 400}, send_time=BASE)))
    assert backend.counters()["written"] == 2
    outside = [p for p in tmp_path.rglob("*") if not p.resolve().is_relative_to((tmp_path / "data").resolve())]
    assert outside == []
    files = list((tmp_path / "data" / "rrd").rglob("*.rrd"))
    assert len(files) == 2
    for path in files + list((tmp_path / "data" / "rrdg").rglob("*")):
        assert all(len(part.encode()) <= 255 for part in path.relative_to(tmp_path).parts)


def test_other_messages_are_ignored(tmp_path: Path) -> None:
    backend = make_backend(tmp_path / "rrd")
    backend.handle([RawEvent(encode(LogMsg("app").to_lwes()), 0, "127.0.0.1", 1)])
    assert backend.counters()["ignored_messages"] == 1
    assert list((tmp_path / "rrd").iterdir()) == []


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(("option", "value", "message"), [
    ("rras", "1:44640 15", "steps:rows"),
    ("consolidation", "AVERAGE MEDIAN", "unknown consolidation"),
    ("daemon", "host:notaport", "bad port"),
    ("xff", "1", "below 1"),
    ("unknown_types", "histogram", "expected one of"),
    ("host_dir", "a/b", "single directory name"),
])
def test_bad_options_are_reported(option: str, value: str, message: str) -> None:
    _values, problems = parse_options(RrdBackend.options, {"root": "/tmp/x", option: value})
    assert len(problems) == 1 and problems[0].key == option and message in problems[0].message


def test_create_arguments() -> None:
    layout = Layout()
    args = layout.create_args(key("counter", "c"), BASE + 17)
    assert args[:6] == ["--start", str(BASE - 60), "--step", "60", "--no-overwrite", "DS:value:DERIVE:900:0:U"]
    assert args[6:] == [f"RRA:{cf}:0.5:{s}:{r}" for cf in ("AVERAGE", "MIN", "MAX")
                        for s, r in ((1, 44640), (15, 9600), (1440, 400))]
    assert layout.data_source(key("gauge", "g")) == "DS:value:GAUGE:900:U:U"


# -- the per-shape plans store what the plain path stores -----------------------------------------------------

_SHAPES: list[tuple[str, str, dict[str, str], tuple[tuple[str, str], ...]]] = [
    ("app", "web1", {}, (("counter", "c"), ("gauge", "g"))),
    ("app", "web2", {"cluster": "eu"}, (("counter", "c"), ("counter", "c"))),  # one series twice per event
    ("app", "web1", {"stat": "sum"}, (("gauge", "g"),)),  # an aggregate: plain path
    ("app", "web3", {}, (("statset", "s"), ("gauge", "g"))),  # a statset: plain path
    ("app", "web4", {"partial_interval_ms": "5000"}, (("gauge", "g"),)),  # a DaTtSs partial: rolled up
    ("app", "web5", {}, (("gauge", "n" * 300),)),  # a name no file can have: counted as bad_names
    ("web", "web1", {}, (("counter", "c"),)),
]
#: Seconds after BASE: repeats, out of order, a minute later; None: no send_time; 10**6: ahead of the clock.
_SECONDS = st.sampled_from([0, 0, 1, 2, 2, 1, 5, 60, 61, None, 10**6])


def _event(shape: int, values: list[int], second: int | None, huge: bool) -> RawEvent:
    prog_id, host, context, metrics = _SHAPES[shape]
    counters = {name: v for (kind, name), v in zip(metrics, values, strict=False) if kind == "counter"}
    gauges = {name: v for (kind, name), v in zip(metrics, values, strict=False) if kind == "gauge"}
    statsets = {name: Statset(count=1, sum=v, min=v, max=v)
                for (kind, name), v in zip(metrics, values, strict=False) if kind == "statset"}  # fmt: skip
    send = None if second is None else BASE + 600 + (time.time() if second == 10**6 else second)
    msg = stats_msg(prog_id, host, counters=counters, gauges=gauges, statsets=statsets, context=dict(context),
                    send_time=None if send is None else int(send), collect_time=BASE + 600)
    [raw] = raw_events(msg)
    raw.receipt_ms = (BASE + 650) * 1000
    if huge:  # a value beyond a double: the event is rejected, the others are not
        record = raw.stats
        raw._stats = (*record[:8], (10**400,) * len(record[8]))
    return raw


def _stored(root: Path, daemon: str | None) -> dict[str, Any]:
    out = {}
    for path in sorted(root.rglob("*.rrd")):
        if daemon is not None:
            rrdtool.flushcached("--daemon", daemon, str(path))
        (first, _last, step), _names, rows = rrdtool.fetch(str(path), "AVERAGE", "--start", str(BASE),
                                                           "--end", str(BASE + 900))
        out[str(path.relative_to(root))] = (rrdtool.lastupdate(str(path)), first, step, rows)
    return out


@pytest.mark.parametrize("writer", ["direct", "unix"])
@settings(max_examples=25, deadline=None)
@given(batches=st.lists(st.lists(st.tuples(st.integers(0, len(_SHAPES) - 1),
                                           st.lists(st.integers(0, 10**6), min_size=2, max_size=2),
                                           _SECONDS, st.integers(0, 9).map(lambda i: i == 0)),
                                 min_size=1, max_size=12), min_size=1, max_size=4),
       plans_max=st.sampled_from([1, 65536]))  # fmt: skip
def test_per_shape_plans_store_and_count_what_the_plain_path_does(writer, batches, plans_max, rrdcached_unix,
                                                                 tmp_path_factory):
    daemon = rrdcached_unix.address if writer == "unix" else None
    options = {"step": "1s", "rras": "1:1200", "statset_rras": "1:1200", "heartbeat": "120s",
               **({"daemon": daemon} if daemon else {})}
    roots = [tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("planned")]
    plain, planned = (make_backend(root, **options) for root in roots)
    plain.use_plans, planned.max_plans = False, plans_max
    for batch in batches:
        for backend in (plain, planned):
            backend.handle([_event(*item) for item in batch])
    for backend in (plain, planned):
        backend.close()
    assert plain.counters() == planned.counters()
    assert _stored(roots[0], daemon) == _stored(roots[1], daemon)


def test_a_repeating_sender_is_served_by_its_plan_and_refused_seconds_are_counted(tmp_path: Path) -> None:
    backend = make_backend(tmp_path, step="1s", rras="1:1200")
    events = [_event(0, [100 + i, i], i // 3, False) for i in range(9)]  # three reports per second
    backend.handle(events[:1])
    assert list(backend._plans.values()) == [[backend.files[key("counter", "c")], backend.files[key("gauge", "g")]]]
    backend.handle(events[1:])
    counts = backend.counters()
    assert counts["written"] == 2 * 3 and counts["rejected"] == 2 * 6
    backend.close()
