"""`mondemand-rrd`: list, fetch (table and CSV) and graph files the rrd backend wrote."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import rrdtool
from click.testing import CliRunner, Result
from mondemand.backends.rrd.backend import RrdBackend
from mondemand.backends.series import SeriesKey, file_path

from mondemand.cli.rrd import main
from mondemand.messages.stats import Statset
from mondemand.options import parse_options
from mondemand.plugin_api import ServerContext
from tests.backends.rrd.rrd_helpers import BASE, Rrdcached, raw_events, stats_msg

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), prog_name="mondemand-rrd", catch_exceptions=False)


def write_series(root: Path, daemon: str | None = None) -> None:
    """Ten minutes of a counter (+600/min), a gauge and an aggregate statset, stored by the real backend."""
    raw = {"root": str(root)} | ({"daemon": daemon} if daemon else {})
    values, problems = parse_options(RrdBackend.options, raw)
    assert problems == []
    backend = RrdBackend("rrd", values, ServerContext())
    backend.start()
    backend.handle(raw_events(*(stats_msg(host="web1.ny", counters={"hits": 600 * i}, gauges={"load": 5 + i},
                                          send_time=BASE + 60 * i) for i in range(10))))
    backend.handle(raw_events(stats_msg(host="all", context={"stat": "gauge"}, collect_time=BASE,
                                        statsets={"lat": Statset(count=3, sum=12)})))
    backend.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_series(tmp_path / "rrd")
    return tmp_path / "rrd"


def test_list_shows_each_file_with_its_series(root: Path) -> None:
    result = invoke("list", str(root))
    lines = result.output.splitlines()
    assert "app/hits/app-counter-hits-web1.ny.rrd\tmd:app:counter:hits@web1.ny" in lines
    assert "app/lat/app-sum-lat-all-stat=gauge.rrd\tagg:app:sum:lat@all[stat=gauge]" in lines
    assert lines[-1] == "4 series"
    records = [json.loads(line) for line in invoke("list", str(root), "--json", "--prog", "a*").output.splitlines()]
    assert len(records) == 4
    load = next(r for r in records if r["name"] == "load")
    assert load == {"path": "app/load/app-gauge-load-web1.ny.rrd", "parsed": True, "namespace": "md",
                    "prog_id": "app", "type": "gauge", "name": "load", "host": "web1.ny", "context": {}}
    assert invoke("list", str(root), "--prog", "other").output == "0 series\n"


def test_fetch_csv_by_path_and_by_graphite_name(root: Path) -> None:
    start, end = str(BASE - 60), str(BASE + 540)
    by_path = invoke("fetch", "app/hits/app-counter-hits-web1.ny.rrd", "--root", str(root), "--csv",
                     "--start", start, "--end", end).output
    by_name = invoke("fetch", "app.md.hits.host.web1.counter", "--root", str(root), "--csv",
                     "--start", start, "--end", end).output
    assert by_path == by_name
    rows = list(csv.reader(io.StringIO(by_path)))
    assert rows[0] == ["timestamp", "time", "value"]
    table = {int(r[0]): r[2] for r in rows[1:]}
    assert table[BASE] == ""  # the first counter sample gives no rate yet
    assert [table[BASE + 60 * i] for i in range(1, 10)] == ["10"] * 9
    gauge = invoke("fetch", str(root / "app/load/app-gauge-load-web1.ny.rrd"), "--cf", "max", "--csv",
                   "--skip-unknown", "--start", start, "--end", end).output
    assert [r[2] for r in csv.reader(io.StringIO(gauge))][1:] == [str(5 + i) for i in range(10)]


def test_fetch_table(root: Path) -> None:
    # The aggregate of the minute starting at BASE fills the row (BASE, BASE + 60] (docs/aggregation.md).
    out = invoke("fetch", "app.agg.lat.host.all.sum", "--root", str(root), "--start", str(BASE - 60),
                 "--end", str(BASE + 60)).output.splitlines()
    assert out[0].split() == ["time", "value"]
    rows = dict(line.split() for line in out[1:])
    assert rows[datetime.fromtimestamp(BASE + 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")] == "12"
    assert rows[datetime.fromtimestamp(BASE, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")] == "-"


def test_fetch_unknown_series_is_a_clear_error(root: Path) -> None:
    result = CliRunner().invoke(main, ["fetch", "app.md.nope", "--root", str(root)])
    assert result.exit_code != 0 and "no RRD file for 'app.md.nope'" in result.output


def test_graph_writes_a_png(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "hits.png"
    result = invoke("graph", "app.md.hits.host.web1.counter", "app.md.load.host.web1.gauge", "--root", str(root),
                    "--minmax", "--start", str(BASE - 300), "--end", str(BASE + 900), "--title", "hits: load",
                    "-o", str(out))
    assert "wrote" in result.output
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_installed_script_fetches_through_rrdcached(tmp_path_factory: pytest.TempPathFactory,
                                                    tmp_path: Path) -> None:
    """The console script, with values still queued in a real rrdcached on TCP, named by RRDCACHED_ADDRESS."""
    daemon = Rrdcached(tmp_path_factory.getbasetemp(), tcp=True)
    try:
        write_series(tmp_path / "rrd", daemon.address)
        target = tmp_path / "rrd" / file_path(SeriesKey.make("app", "gauge", "load", "web1.ny"))
        script = Path(sys.executable).parent / "mondemand-rrd"
        assert target.stat().st_mtime > 0 and rrdtool.lastupdate(str(target))["ds"]["value"] is None  # all queued
        env = {**os.environ, "RRDCACHED_ADDRESS": daemon.address}
        done = subprocess.run([str(script), "fetch", str(target), "--csv", "--skip-unknown",
                               "--start", str(BASE - 60), "--end", str(BASE + 540)],
                              capture_output=True, text=True, timeout=30, check=True, env=env)
        assert [r[2] for r in csv.reader(io.StringIO(done.stdout))][1:] == [str(5 + i) for i in range(10)]
    finally:
        daemon.stop()
