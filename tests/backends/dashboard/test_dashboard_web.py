"""The dashboard backend in-process: its real HTTP server on a loopback port, JSON routes and the event stream."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from mondemand.backends.dashboard import DashboardBackend, local_timezone
from mondemand.backends.dashboard.web import DashboardError
from mondemand.backends.rrd.backend import RrdBackend

from mondemand.envelope import RawEvent
from mondemand.lwes import encode
from mondemand.messages.log import LogLine, LogMsg, Priority
from mondemand.messages.stats import Metric, MetricType, StatsMsg
from mondemand.options import parse_options
from mondemand.plugin_api import ServerContext


def raw(msg: Any) -> list[RawEvent]:
    events = msg.to_lwes()
    events = events if isinstance(events, list) else [events]
    return [RawEvent(encode(e), int(time.time() * 1000), "127.0.0.1", 40000) for e in events]


def stats(value: int, host: str = "web01") -> StatsMsg:
    return StatsMsg("shop", host=host, metrics=[Metric(MetricType.GAUGE, "queue", value)])


def log(message: str, priority: Priority = Priority.ERROR) -> LogMsg:
    return LogMsg("shop", host="web01", lines=[LogLine("cart.py", 12, priority, message)])


def make(**options: str) -> DashboardBackend:
    values, problems = parse_options(DashboardBackend.options, {"port": "0", **options})
    assert not problems
    return DashboardBackend("dash", values, ServerContext())


@pytest.fixture
def dashboard() -> Iterator[DashboardBackend]:
    backend = make(push_interval="50ms", stale_after="1s")
    backend.start()
    yield backend
    backend.close()


def get(backend: DashboardBackend, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(backend.web.url + path.lstrip("/"), timeout=5) as resp:
            body = resp.read()
            kind = resp.headers.get("Content-Type", "")
            return resp.status, json.loads(body) if "json" in kind else body
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if "json" in exc.headers.get("Content-Type", "") else body


def test_serves_the_page_its_script_and_the_vendored_chart_library(dashboard):
    status, page = get(dashboard, "/")
    assert status == 200 and b"static/dashboard.js" in page and b"static/uPlot.iife.min.js" in page
    status, lib = get(dashboard, "/static/uPlot.iife.min.js")
    assert status == 200 and lib.startswith(b"/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    assert get(dashboard, "/static/dashboard.js")[0] == 200
    assert get(dashboard, "/static/../__init__.py")[0] in (403, 404)
    assert get(dashboard, "/static/nothing.js")[0] == 404


def test_overview_series_and_errors_reflect_what_was_handled(dashboard):
    dashboard.handle(raw(stats(5)) + raw(stats(9)) + raw(stats(1, host="web02")) + raw(log("payment failed")))
    dashboard.handle(raw(log("all fine", Priority.INFO)))
    status, overview = get(dashboard, "/api/overview")
    assert status == 200
    [prog] = overview["processes"]
    assert prog["prog_id"] == "shop" and prog["status"] == "live"
    assert [(h["host"], h["status"]) for h in prog["hosts"]] == [("web01", "live"), ("web02", "live")]
    assert overview["history"] is False and overview["last_error"] == 1
    assert overview["counters"]["stats_messages"] == 3 and overview["counters"]["error_lines"] == 1
    assert overview["counters"]["series"] == 2 and overview["counters"]["kept_errors"] == 1

    status, body = get(dashboard, "/api/series?prog_id=shop")
    rows = {r["host"]: r for r in body["series"]}
    assert rows["web01"]["value"] == 9 and rows["web01"]["average"] == 7.0 and rows["web01"]["type"] == "gauge"
    assert get(dashboard, "/api/series")[0] == 400
    assert get(dashboard, "/api/series?prog_id=none")[1]["series"] == []

    status, body = get(dashboard, "/api/errors")
    assert [e["message"] for e in body["errors"]] == ["payment failed"] and body["errors"][0]["file"] == "cart.py"
    assert get(dashboard, "/api/errors?after=1")[1]["errors"] == []
    assert get(dashboard, "/api/errors?after=x")[0] == 400

    time.sleep(1.1)  # stale_after is 1 s in this fixture
    hosts = get(dashboard, "/api/overview")[1]["processes"][0]["hosts"]
    assert {h["status"] for h in hosts} == {"stopped"}


def test_history_needs_rrd_root_and_checks_its_parameters(dashboard, tmp_path):
    status, body = get(dashboard, "/api/history?prog_id=shop&name=queue&host=web01&kind=gauge")
    assert status == 404 and "rrd_root" in body["error"]
    with_rrd = make(rrd_root=str(tmp_path), timezone="UTC")
    with_rrd.start()
    try:
        status, body = get(with_rrd, "/api/history?prog_id=shop&name=queue&host=web01&kind=gauge")
        assert status == 200 and body["charts"] == [] and body["missing"] == ["AVG", "MIN", "MAX"]
        assert body["timezone"] == "UTC"
        assert get(with_rrd, "/api/history?prog_id=shop&name=queue&host=web01&kind=pie")[0] == 400
        assert get(with_rrd, "/api/history?prog_id=shop&name=queue&host=web01&kind=gauge&ctx=novalue")[0] == 400
        assert "host" in get(with_rrd, "/api/history?prog_id=shop&name=queue&kind=gauge")[1]["error"]
    finally:
        with_rrd.close()


def _read_event(resp) -> tuple[str, dict[str, Any], str | None]:
    """The next named event of an SSE stream: (event, data, id)."""
    event, data, event_id = None, None, None
    while True:
        line = resp.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line == "" and event is not None:
            return event, data, event_id


def test_the_stream_sends_kept_errors_live_state_and_new_errors_as_they_come(dashboard):
    dashboard.handle(raw(log("first")) + raw(stats(3)))
    with urllib.request.urlopen(dashboard.web.url + "api/stream?prog_id=shop", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert _read_event(resp) == ("log", {**_read_log(dashboard, 1)}, "1")
        event, data, _ = _read_event(resp)
        assert event == "live" and data["prog_id"] == "shop" and data["series"]["full"]
        assert data["series"]["upsert"][0]["value"] == 3
        assert data["processes"]["upsert"][0]["prog_id"] == "shop"
        dashboard.handle(raw(log("second", Priority.WARNING)))
        while True:
            event, data, event_id = _read_event(resp)
            if event == "log":
                break
        assert data["message"] == "second" and data["priority"] == "warning" and event_id == "2"
    # A reconnecting browser sends the last id it saw and gets only what came after.
    request = urllib.request.Request(dashboard.web.url + "api/stream", headers={"Last-Event-ID": "1"})
    dashboard.handle(raw(log("third")))
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert [_read_event(resp)[1]["message"] for _ in range(2)] == ["second", "third"]


def test_the_stream_sends_only_what_changed_after_its_first_frame(dashboard):
    """A frame carries the rows that changed since the previous one; the page rebuilds the tables from them."""
    metrics = [Metric(MetricType.GAUGE, f"m{i}", i) for i in range(50)]
    dashboard.handle(raw(StatsMsg("shop", "web01", {}, metrics)))
    with urllib.request.urlopen(dashboard.web.url + "api/stream?prog_id=shop", timeout=5) as resp:
        event, first, _ = _read_event(resp)
        assert event == "live" and first["series"]["full"] and len(first["series"]["upsert"]) == 50
        ids = {row["name"]: row["id"] for row in first["series"]["upsert"]}
        assert all("age" not in row for row in first["series"]["upsert"])  # the page works ages out from now
        dashboard.handle(raw(StatsMsg("shop", "web01", {}, [Metric(MetricType.GAUGE, "m7", 700)])))
        while True:
            event, frame, _ = _read_event(resp)
            if event == "live" and frame["series"]["upsert"]:
                break
        assert frame["gen"] > first["gen"] and "full" not in frame["series"]
        assert [(row["name"], row["value"]) for row in frame["series"]["upsert"]] == [("m7", 700)]
        assert ids["m7"] not in frame["series"]["remove"] and frame["series"]["order"] is None
        assert len(json.dumps(frame)) < len(json.dumps(first)) / 5


def _read_log(backend: DashboardBackend, seq: int) -> dict[str, Any]:
    return next(e for e in get(backend, "/api/errors")[1]["errors"] if e["seq"] == seq)


def test_streams_are_limited_and_close_ends_them(tmp_path):
    backend = make(max_streams="1", push_interval="50ms")
    backend.start()
    url = backend.web.url
    first = urllib.request.urlopen(url + "api/stream", timeout=5)
    try:
        _read_event(first)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url + "api/stream", timeout=5)
        assert info.value.code == 503
        closer = threading.Thread(target=backend.close)
        closer.start()
        closer.join(15)
        assert not closer.is_alive(), "close() hung on an open stream"
        rest = first.read()  # the server ended the stream
        assert isinstance(rest, bytes)
    finally:
        first.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_a_port_in_use_fails_start_with_a_clear_error():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        backend = make(port=str(port))
        with pytest.raises(DashboardError, match=f"127.0.0.1:{port}"):
            backend.start()


def test_options_are_validated():
    assert "Mars/Olympus" in str(parse_options(DashboardBackend.options, {"timezone": "Mars/Olympus"})[1][0])
    assert parse_options(DashboardBackend.options, {"log_priority": "loud"})[1]
    values, problems = parse_options(DashboardBackend.options, {})
    assert not problems and values["port"] == 20604 and values["address"] == "127.0.0.1"


def test_the_time_zone_is_the_option_then_tz_then_the_machines(monkeypatch):
    assert local_timezone("Asia/Tokyo") == ZoneInfo("Asia/Tokyo")
    monkeypatch.setenv("TZ", ":America/Chicago")
    assert local_timezone() == ZoneInfo("America/Chicago")
    monkeypatch.setenv("TZ", "Not/AZone")
    machine = local_timezone()
    assert machine.utcoffset(datetime(2024, 1, 1)) is not None


def test_programs_and_series_with_files_but_no_traffic_are_listed_as_stored(tmp_path):
    writer = RrdBackend("rrd", {"root": str(tmp_path), "graphite": False}, ServerContext())
    writer.start()
    writer.handle(raw(StatsMsg("archive", host="old01", metrics=[Metric(MetricType.GAUGE, "jobs", 4)])))
    writer.close()
    backend = make(rrd_root=str(tmp_path), timezone="UTC")
    backend.start()
    try:
        backend.handle(raw(stats(2)))
        overview = get(backend, "/api/overview")[1]
        assert overview["stored_programs"] == ["archive"] and overview["history"] is True
        assert [p["prog_id"] for p in overview["processes"]] == ["shop"]
        [row] = get(backend, "/api/series?prog_id=archive")[1]["series"]
        assert (row["name"], row["host"], row["status"], row["value"]) == ("jobs", "old01", "stored", None)
        status, body = get(backend, "/api/history?prog_id=archive&name=jobs&host=old01&kind=gauge")
        assert status == 200 and [c["stat"] for c in body["charts"]] == ["AVG", "MIN", "MAX"]
    finally:
        backend.close()


def test_a_stream_whose_page_reads_nothing_is_ended_after_idle_timeout(tmp_path):
    """A client that never reads cannot hold a stream (and its frames) for ever: ended, counted, others served."""
    backend = make(push_interval="50ms", idle_timeout="1s")
    backend.start()
    try:
        metrics = [Metric(MetricType.GAUGE, f"metric_with_a_long_name_{i:05d}", i) for i in range(4000)]
        for start in range(0, len(metrics), 500):
            backend.handle(raw(StatsMsg("shop", "web01", {}, metrics[start:start + 500])))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", backend.web.port))
        sock.sendall(b"GET /api/stream?prog_id=shop HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read
        deadline = time.monotonic() + 10
        n = 0
        while backend.counters().get("stalled_streams", 0) == 0 and time.monotonic() < deadline:
            n += 1  # every row changes: each frame is about a megabyte, more than the socket buffers hold
            changed = [Metric(MetricType.GAUGE, m.name, n) for m in metrics]
            for start in range(0, len(changed), 500):
                backend.handle(raw(StatsMsg("shop", "web01", {}, changed[start:start + 500])))
            time.sleep(0.1)
        counters = backend.counters()
        assert counters["stalled_streams"] == 1 and counters["streams"] == 0
        assert get(backend, "/api/overview")[0] == 200
        sock.close()
    finally:
        backend.close()
