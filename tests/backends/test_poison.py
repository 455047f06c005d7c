"""Poison events cost one event each, never a restart: real runners, real backends, real files.

Every backend that takes StatsMsg, LogMsg or TraceMsg gets 2,000 valid events
with 20 poison ones spread among them: a prog_id that is not UTF-8, a
400-digit statset field, a ReceiptTime of 2**62 in the header tail, a trace
attribute of 20,000 `[` (and one that is nested JSON that deep), and a StatsMsg
that says num=3 but carries 2 metrics. Each backend must store every valid
event, lose at most the 20 poison ones (rejected or undecodable) and never
restart.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import pytest
import rrdtool
import whisper
from mondemand.backends.alerts.backend import ALERT_OPTIONS

from mondemand.envelope import RawEvent
from mondemand.journal import JournalReader
from mondemand.lwes import Event, LwesType, add_headers, encode
from mondemand.messages import LogLine, LogMsg, Metric, MetricType, Priority, StatsMsg, TraceMsg, to_events
from mondemand.options import parse_options
from mondemand.plugin_api import Backend, ServerContext
from mondemand.plugins import PluginHost
from mondemand.runner import BackendRunner
from tests.backends.files.file_helpers import files_under

VALID = 2000
SERIES = 20  # valid stats events: SERIES series x VALID / SERIES points, a minute apart
SENDER = ("192.0.2.9", 4711)
NOW = int(time.time())
#: The valid points' minutes: the last is two minutes ago, the first VALID / SERIES minutes before.
FIRST_MINUTE = (NOW // 60 - 2 - VALID // SERIES) * 60


def datagram(data: bytes) -> RawEvent:
    return RawEvent(data, int(time.time() * 1000), *SENDER, "main")


def stats_event(prog_id: str = "poison", *, statset: str = "1:2:3:4:::::::", num: int = 2,
                receipt: int | None = None) -> RawEvent:
    """A StatsMsg built attribute by attribute, so that it can say what a StatsMsg must not."""
    e = Event("MonDemand::StatsMsg").set("prog_id", LwesType.STRING, prog_id)
    e.set("send_time", LwesType.INT64, NOW * 1000).set("collect_time", LwesType.INT64, NOW * 1000)
    e.set("num", LwesType.UINT16, num)
    e.set("t0", LwesType.STRING, "gauge").set("k0", LwesType.STRING, "pg").set("v0", LwesType.INT64, 5)
    e.set("t1", LwesType.STRING, "statset").set("k1", LwesType.STRING, "ps").set("v1", LwesType.STRING, statset)
    e.set("ctxt_num", LwesType.UINT16, 1).set("ctxt_k0", LwesType.STRING, "host").set("ctxt_v0", LwesType.STRING, "h")
    data = encode(e)
    return datagram(data if receipt is None else add_headers(data, receipt, *SENDER))


def log_event(prog_id: str = "poison", receipt: int | None = None) -> RawEvent:
    data = encode(to_events(LogMsg(prog_id, lines=[LogLine("p.c", 1, Priority.ERROR, "bad")]))[0])
    return datagram(data if receipt is None else add_headers(data, receipt, *SENDER))


def trace_event(value: str = "x", prog_id: str = "poison", receipt: int | None = None) -> RawEvent:
    msg = TraceMsg(prog_id, "t1", "poison", "h", "m", fields={"payload": value})
    data = encode(to_events(msg)[0])
    return datagram(data if receipt is None else add_headers(data, receipt, *SENDER))


NOT_UTF8 = b"\xff\xfe\xc3(".decode("utf-8", "surrogateescape")  # what the codec gives for those bytes


def poison() -> list[RawEvent]:
    """The 20 poison events: four of each kind."""
    return [
        stats_event(NOT_UTF8), log_event(NOT_UTF8), trace_event(prog_id=NOT_UTF8), stats_event(NOT_UTF8 + "2"),
        stats_event(statset="9" * 400 + ":1:1:1:::::::"), stats_event(statset="1:" + "9" * 400 + ":1:1:::::::"),
        stats_event(statset="1:1:-" + "9" * 400 + ":1:::::::"), stats_event(statset="1:1:1:" + "9" * 400 + ":::::::"),
        stats_event(receipt=2**62), log_event(receipt=2**62), trace_event(receipt=2**62), stats_event(receipt=2**62),
        trace_event("[" * 20_000), trace_event("[" * 20_000 + "]"), trace_event("[" * 20_000),
        trace_event("{" * 20_000),
        stats_event(num=3), stats_event(num=3), stats_event(num=3), stats_event(num=3),
    ]


def valid_stats(i: int) -> StatsMsg:
    """Valid event i: series i % SERIES, its (i // SERIES)-th minute, value i."""
    minute = FIRST_MINUTE + (i // SERIES) * 60
    return StatsMsg("good", host="web1", metrics=[Metric(MetricType.GAUGE, f"g{i % SERIES}", i)],
                    send_time=minute * 1000, collect_time=minute * 1000)


def valid(kind: str) -> list[RawEvent]:
    if kind == "stats":
        return [datagram(encode(e)) for i in range(VALID) for e in valid_stats(i).to_lwes()]
    if kind == "log":
        return [datagram(encode(e)) for i in range(VALID)
                for e in to_events(LogMsg("good", host="web1", lines=[LogLine("a.c", i, Priority.ERROR, f"line {i}")]))]
    return [datagram(encode(e)) for i in range(VALID)
            for e in to_events(TraceMsg("good", f"trace{i % 10}", "team", "web1", f"message {i}"))]


def mixed(kind: str) -> list[RawEvent]:
    """The valid events with one poison event after every 100th."""
    good, bad = valid(kind), poison()
    out: list[RawEvent] = []
    for i, raw in enumerate(good):
        out.append(raw)
        if i % 100 == 50:
            out.append(bad[i // 100])
    assert len(out) == VALID + 20
    return out


def run(type_name: str, options: dict[str, str], events: list[RawEvent],
        context: ServerContext | None = None) -> tuple[BackendRunner, Backend]:
    """Build the backend the way the server does, run it behind a real BackendRunner over `events`, stop it."""
    host = PluginHost.discover()
    cls = host.backend_types[type_name]
    values, problems = parse_options(cls.options, options)
    assert problems == []
    context = context or ServerContext()
    instances: list[Backend] = []

    def factory() -> Backend:
        instances.append(cls(type_name, values, context))
        return instances[-1]

    runner = BackendRunner(type_name, factory, batch_size=1000, backoff_min=0.01, backoff_max=0.05, linger=0.001)
    assert runner.offer_many(events) == len(events)
    runner.start()
    runner.stop(timeout=60)
    assert (runner.restarts, runner.errors, runner.failed, len(instances)) == (0, 0, 0, 1), runner.counters()
    lost = runner.rejected + runner.decode_errors
    assert lost <= 20
    assert runner.processed + lost == len(events)
    return runner, instances[0]


def test_stats_file(tmp_path):
    r, _ = run("stats_file", {"root": str(tmp_path)}, mixed("stats"))
    lines = [line for path in files_under(tmp_path) if "/good/" in str(path) for line in path.read_text().splitlines()]
    assert sorted(int(line.split("\t")[5]) for line in lines) == list(range(VALID))
    assert r.decode_errors == 4  # num=3


def test_log_file(tmp_path):
    run("log_file", {"root": str(tmp_path)}, mixed("log"))
    lines = [line for path in files_under(tmp_path) if "/good/" in str(path) for line in path.read_text().splitlines()]
    assert sorted(int(line.split("\t")[3].split()[1]) for line in lines) == list(range(VALID))


def test_trace_file(tmp_path):
    run("trace_file", {"root": str(tmp_path), "http_path": ""}, mixed("trace"))
    docs = [json.loads(p.read_bytes()) for p in files_under(tmp_path / "team")]
    assert sorted(int(d["mondemand.message"].split()[1]) for d in docs) == list(range(VALID))
    # The 20,000 '[' are stored as the text they are, the deeply nested JSON too.
    stored = [json.loads(p.read_bytes())["payload"] for p in files_under(tmp_path / "poison")]
    assert "[" * 20_000 + "]" in stored and "[" * 20_000 in stored


def test_journal(tmp_path):
    events = mixed("stats")
    run("journal", {"root": str(tmp_path)}, events)
    [journal] = files_under(tmp_path)
    assert [record.data for record in JournalReader(journal)] == [raw.data for raw in events]


def test_print(tmp_path):
    out = tmp_path / "events.txt"
    r, _ = run("print", {"path": str(out), "format": "text"}, mixed("stats"))
    lines = out.read_text().splitlines()
    good = [line for line in lines if "prog_id=good" in line]
    assert sorted(int(line.split(" v0=")[1].split()[0]) for line in good) == list(range(VALID))
    assert r.rejected == 4  # ReceiptTime 2**62 is past year 9999; the non-UTF-8 prog_ids are printed escaped
    assert sum("\\xff" in line for line in lines) == 4  # the byte as sent, escaped (mondemand.text)


def test_rrd(tmp_path):
    r, backend = run("rrd", {"root": str(tmp_path), "graphite": "false"}, mixed("stats"))
    files = [p for p in files_under(tmp_path) if p.name.startswith("good-gauge-g")]
    assert len(files) == SERIES
    for n in (0, 7, SERIES - 1):
        [path] = [p for p in files if p.name == f"good-gauge-g{n}-web1.rrd"]
        _, _, rows = rrdtool.fetch(str(path), "AVERAGE", "-s", str(FIRST_MINUTE - 60), "-e", str(NOW))
        assert [row[0] for row in rows if row[0] is not None] == list(range(n, VALID, SERIES))
    assert backend.counters()["written"] >= VALID
    assert r.rejected == 4  # the 400-digit statsets


def test_whisper(tmp_path):
    r, _ = run("whisper", {"root": str(tmp_path)}, mixed("stats"))
    for n in (0, 7, SERIES - 1):
        [path] = [p for p in files_under(tmp_path) if f"/good/md/g{n}/" in str(p)]
        (_start, _end, _step), values = whisper.fetch(str(path), FIRST_MINUTE - 60, NOW)
        assert sorted(v for v in values if v is not None) == list(range(n, VALID, SERIES))
    assert r.rejected == 4


def test_agg(tmp_path):
    emitted: list[RawEvent] = []
    events = mixed("stats")
    r, _ = run("agg", {"lateness": "3h"}, events, ServerContext(inject=emitted.append, config_dir=tmp_path))
    sums: dict[tuple[str, int], tuple[int, int]] = {}
    for raw in emitted:
        msg = raw.message
        if msg.prog_id != "good":
            continue
        for metric in msg.metrics:
            sums[(metric.name, msg.collect_time)] = (metric.value.count, metric.value.sum)
    expected = {(f"g{i % SERIES}", valid_stats(i).send_time): (1, i) for i in range(VALID)}
    assert sums == expected
    assert r.rejected == 4


def test_dashboard():
    r, backend = run("dashboard", {"port": "0"}, mixed("stats"))
    counts = backend.state.counts
    assert counts["samples"] >= VALID
    values = {key.name: entry.value for key, entry in backend.state._series.items() if key.prog_id == "good"}
    assert values == {f"g{n}": VALID - SERIES + n for n in range(SERIES)}
    assert r.rejected == 4


def test_alerts(tmp_path):
    rule = {"metric": "*:*", "above": "1e9"}
    values, problems = parse_options(ALERT_OPTIONS, rule)
    assert problems == []
    context = ServerContext(config_dir=tmp_path, sections={"alert": {"big": values}, "notifier": {}})
    _, backend = run("alerts", {"state_file": "alerts.json"}, mixed("stats"), context)
    assert backend.counters()["series"] >= SERIES
    assert backend.counters()["firing"] == 0


def test_lwes_forwarder():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2)
        events = mixed("stats")
        run("lwes", {"destinations": f"127.0.0.1:{sock.getsockname()[1]}"}, events)
        received = []
        try:
            while len(received) < len(events):
                received.append(sock.recv(70_000))
        except TimeoutError:
            pass
    assert received == [raw.data for raw in events]  # raw bytes go on unchanged, poison or not


@pytest.mark.parametrize("make", [lambda: stats_event(NOT_UTF8), lambda: stats_event(receipt=2**62)],
                         ids=["not-utf8", "receipt-2**62"])
def test_a_poison_event_alone_costs_nothing_but_itself(tmp_path, make: Callable[[], RawEvent]):
    """One bad event in a batch of one must not restart the backend either."""
    run("print", {"path": str(tmp_path / "out.txt")}, [make()])



def test_prometheus():
    r, backend = run("prometheus", {"port": "0"}, mixed("stats"))
    gauges = {key[1]: state[0] for key, state in backend.series.items() if key[0] == "gauge" and
              dict(key[2])["prog_id"] == "good"}
    assert gauges == {f"g{n}": float(max(range(n, VALID, SERIES))) for n in range(SERIES)}
    assert r.rejected == 2  # the 400-digit count and sum (min and max are not exposed)
    # A prog_id that is not UTF-8 is exposed escaped, so that the page still encodes.
    assert any("\\xff" in dict(key[2])["prog_id"] for key in backend.series)
