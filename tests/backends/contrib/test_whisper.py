"""The separately installed `whisper` backend (backends/contrib/mondemand-backend-whisper) against real files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import whisper
from mondemand_backend_whisper import WhisperBackend

from mondemand.config import ConfigError, load_config
from mondemand.messages.stats import Statset
from mondemand.options import parse_options
from mondemand.plugin_api import ServerContext
from mondemand.plugins import PluginHost
from tests.backends.rrd.rrd_helpers import BASE, raw_events, stats_msg
from tests.e2e.harness import ServerProcess, free_port, send_udp, wait_for


def make_backend(root: Path, **options: Any) -> WhisperBackend:
    values, problems = parse_options(WhisperBackend.options, {"root": str(root), **options})
    assert problems == []
    backend = WhisperBackend("whisper", values, ServerContext())
    backend.start()
    return backend


def values(path: Path, start: int = BASE - 60, end: int = BASE + 600) -> dict[int, float]:
    (first, _end, step), data = whisper.fetch(str(path), start, end)
    return {first + i * step: v for i, v in enumerate(data) if v is not None}


def test_the_type_is_found_through_its_entry_point():
    assert PluginHost.discover().backend_types["whisper"] is WhisperBackend


@pytest.mark.parametrize(("mode", "expected"), [("rate", 10.0), ("delta", 600.0)])
def test_counter_of_600_per_minute_reads_back_as_10_per_second_or_600(tmp_path, mode, expected):
    backend = make_backend(tmp_path, counters=mode)
    backend.handle(raw_events(*(stats_msg(counters={"hits": 1000 + 600 * m}, send_time=BASE + 60 * m)
                                for m in range(5))))  # fmt: skip
    path = tmp_path / "app/md/hits/host/web1/counter.wsp"
    # The first report has nothing to compare with: it stores nothing.
    assert values(path) == {BASE + 60 * m: expected for m in range(1, 5)}
    assert backend.counters()["first_counter_reports"] == 1


def test_a_counter_reset_stores_nothing_for_that_report(tmp_path):
    backend = make_backend(tmp_path)
    sent = [100, 700, 50, 650]
    backend.handle(raw_events(*(stats_msg(counters={"c": v}, send_time=BASE + 60 * m) for m, v in enumerate(sent))))
    assert values(tmp_path / "app/md/c/host/web1/counter.wsp") == {BASE + 60: 10.0, BASE + 180: 10.0}
    assert backend.counters()["counter_resets"] == 1


def test_gauges_and_statsets_read_back_as_given_with_their_aggregation_methods(tmp_path):
    backend = make_backend(tmp_path)
    backend.handle(raw_events(stats_msg(gauges={"queue": 17}, send_time=BASE),
                              stats_msg(statsets={"lat": Statset(count=4, sum=40, min=2, max=20, avg=10)},
                                        collect_time=BASE)))  # fmt: skip
    base = tmp_path / "app/md"
    assert values(base / "queue/host/web1/gauge.wsp") == {BASE: 17.0}
    methods = {}
    for sub, value in (("count", 4), ("sum", 40), ("min", 2), ("max", 20), ("avg", 10)):
        path = base / f"lat/host/web1/{sub}.wsp"
        assert values(path) == {BASE: float(value)}
        methods[sub] = whisper.info(str(path))["aggregationMethod"]
    assert methods == {"count": "sum", "sum": "sum", "min": "min", "max": "max", "avg": "average"}
    assert whisper.info(str(base / "queue/host/web1/gauge.wsp"))["aggregationMethod"] == "average"


def test_three_archives_with_the_default_retentions(tmp_path):
    backend = make_backend(tmp_path)
    backend.handle(raw_events(stats_msg(gauges={"g": 1}, send_time=BASE)))
    info = whisper.info(str(tmp_path / "app/md/g/host/web1/gauge.wsp"))
    assert [(a["secondsPerPoint"], a["points"]) for a in info["archives"]] == [(60, 44640), (900, 9600),
                                                                                (86400, 400)]  # fmt: skip
    assert info["xFilesFactor"] == pytest.approx(0.5)


@pytest.mark.parametrize("layout", ["tree", "file"])
def test_wire_names_stay_under_root(tmp_path, layout):
    backend = make_backend(tmp_path / "root", layout=layout)
    backend.handle(raw_events(stats_msg("../../etc", host="../../x", gauges={"../passwd": 1},
                                        context={"..": "/"}, send_time=BASE)))  # fmt: skip
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1 and (tmp_path / "root") in files[0].parents
    assert ".." not in files[0].relative_to(tmp_path / "root").parts
    assert backend.counters()["points_written"] == 1


def test_points_older_than_the_longest_retention_are_counted_not_written(tmp_path):
    # Relative to now, not to BASE: BASE is the hour two hours before the suite started, so BASE + 2 h - 2 min
    # is more than 1 h ago whenever the suite starts in the last minutes of an hour.
    recent = (int(time.time()) // 60 - 2) * 60
    backend = make_backend(tmp_path, retentions="1m:1h")
    backend.handle(raw_events(stats_msg(gauges={"g": 5}, send_time=recent - 7200),  # two hours ago: past 1h
                              stats_msg(gauges={"g": 6}, send_time=recent)))  # fmt: skip
    counts = backend.counters()
    assert (counts["rejected"], counts["points_written"]) == (1, 1)
    assert values(tmp_path / "app/md/g/host/web1/gauge.wsp", recent - 1200, recent + 60) == {recent: 6.0}


def test_short_host_follows_the_rrd_tree(tmp_path):
    backend = make_backend(tmp_path)
    backend.handle(raw_events(stats_msg(host="web1.example.com", gauges={"g": 3}, send_time=BASE)))
    assert values(tmp_path / "app/md/g/host/web1/gauge.wsp") == {BASE: 3.0}


def test_a_corrupt_file_is_counted_and_the_rest_of_the_batch_written(tmp_path):
    backend = make_backend(tmp_path)
    broken = tmp_path / "app/md/bad/host/web1/gauge.wsp"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not whisper")
    backend.handle(raw_events(stats_msg(gauges={"bad": 1, "good": 2}, send_time=BASE)))
    assert backend.counters()["errors"] == 1
    assert values(tmp_path / "app/md/good/host/web1/gauge.wsp") == {BASE: 2.0}


@pytest.mark.parametrize(("options", "key"), [({"retentions": "1m:31x"}, "retentions"),
                                              ({"retentions": "1m:1d,1m:2d"}, "retentions"),
                                              ({"counters": "both"}, "counters"),
                                              ({"x_files_factor": "2"}, "x_files_factor")])
def test_bad_options_name_their_key(tmp_path, options, key):
    _values, problems = parse_options(WhisperBackend.options, {"root": str(tmp_path), **options})
    assert [p.key for p in problems] == [key]


def test_a_bad_retentions_option_is_a_config_error_naming_it(tmp_path):
    routes = tmp_path / "routes.ini"
    routes.write_text(f"""
[listener:in]
type = lwes-udp
port = {free_port()}

[backend:w]
type = whisper
root = {tmp_path}
retentions = 1m:31d, 15m:100q

[route:stats]
events = MonDemand::StatsMsg
backends = w
""")
    with pytest.raises(ConfigError) as info:
        load_config(routes, PluginHost.discover())
    assert len(info.value.problems) == 1
    assert "[backend:w]" in info.value.problems[0] and "retentions" in info.value.problems[0]
    assert "'15m:100q'" in info.value.problems[0] and "Invalid unit 'q'" in info.value.problems[0]


def test_the_real_server_stores_a_gauge_through_the_plugin(tmp_path):
    port = free_port()
    server = ServerProcess(tmp_path, f"""
[listener:in]
type = lwes-udp
address = 127.0.0.1
port = {port}

[backend:whisper]
type = whisper
root = {tmp_path / "wsp"}

[route:stats]
events = MonDemand::StatsMsg
backends = whisper
""")
    try:
        from mondemand.lwes import encode

        send_udp(encode(stats_msg("web", gauges={"users": 42}, send_time=BASE).to_lwes()[0]), port)
        path = tmp_path / "wsp/web/md/users/host/web1/gauge.wsp"
        wait_for(path.exists, what="the whisper file")
        wait_for(lambda: values(path) == {BASE: 42.0}, what="the stored value")
    finally:
        assert server.stop() == 0
