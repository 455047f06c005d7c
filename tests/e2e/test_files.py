"""End to end: the real mondemand-server writing stats, log, trace and journal files from UDP and HTTP."""

from __future__ import annotations

import gzip
import json
import re
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mondemand.journal import JournalReader, JournalRecord
from mondemand.lwes import Event, LwesType, decode, encode, peek_name
from mondemand.messages import Metric, MetricType, StatsMsg, TraceMsg
from mondemand.safepath import safe_name
from tests.e2e.harness import ServerProcess, emit, free_port, send_udp, wait_for

ROTATED = re.compile(r"all_events\.log\.\d{14}\.(\d{13})\.(\d{13})(-\d+)?\.gz")


@pytest.fixture
def run_server(tmp_path):
    servers: list[ServerProcess] = []

    def start(config: str, where: Path | None = None) -> ServerProcess:
        where = where or tmp_path
        where.mkdir(exist_ok=True)
        server = ServerProcess(where, config)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def files(root: Path) -> list[Path]:
    found = sorted(p for p in root.rglob("*") if p.is_file())
    for path in found:
        assert path.resolve().is_relative_to(root.resolve())
    return found


def get_json(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def journal_records(root: Path) -> tuple[list[tuple[Path, JournalReader, list[JournalRecord]]], Path]:
    """Every journal under root, closed ones first in time order, the current one last."""
    closed = sorted(p for p in root.iterdir() if ROTATED.fullmatch(p.name))  # names sort in time order
    current = root / "all_events.log.gz"
    out = []
    for path in [*closed, *([current] if current.exists() else [])]:
        reader = JournalReader(path)
        out.append((path, reader, list(reader)))
    return out, current


FILES_CONFIG = """
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {udp}

[listener:ingest]
type = lwes-http
address = 127.0.0.1
port = {tcp}

[backend:stats]
type = stats_file
root = {root}/stats

[backend:logs]
type = log_file
root = {root}/logs

[backend:traces]
type = trace_file
root = {root}/traces

[backend:journal]
type = journal
root = {root}/journal

[route:stats]
events = MonDemand::StatsMsg
backends = stats

[route:logs]
events = MonDemand::LogMsg
backends = logs

[route:traces]
events = MonDemand::TraceMsg
backends = traces

[route:all]
events = *
backends = journal
"""


def test_events_from_udp_and_http_end_up_in_files_and_traces_are_browsable(tmp_path, run_server):
    udp, tcp = free_port(), free_port(socket.SOCK_STREAM)
    root = tmp_path / "data"
    server = run_server(FILES_CONFIG.format(udp=udp, tcp=tcp, root=root))
    emit("-p", str(udp), "stats", "--prog-id", "myapp", "--host-name", "web01", "--counter", "requests=600",
         "--statset", "latency=5:100:10:30", "-c", "cluster=eu")
    emit("-p", str(udp), "log", "--prog-id", "myapp", "--host-name", "web01", "--priority", "error",
         "-m", "disk full", "--file", "main.c", "--line", "42", "--repeat", "3")
    emit("-p", str(udp), "trace", "--prog-id", "shop", "--owner", "alice", "--trace-id", "t-42", "-m", "checkout")
    # Names no file system should take literally, straight from the wire.
    hostile = "../../../outside"
    [event] = StatsMsg(hostile, host="a/b\0c", metrics=[Metric(MetricType.GAUGE, "g", 1)]).to_lwes()
    send_udp(encode(event), udp)
    # A trace over 64 KB, POSTed as the Erlang client does.
    payload = {f"part{i}": "x" * 40_000 for i in range(3)}  # one string holds at most 64 KB
    big = TraceMsg("shop", "t-42", "alice", "web01", "big one", payload).to_lwes()
    request = urllib.request.Request(f"http://127.0.0.1:{tcp}/tcp", data=encode(big, max_size=200_000),
                                     method="POST")
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 202

    wait_for(lambda: server.status()["backends"]["journal"]["events_processed"] == 5, what="5 journalled events")
    wait_for(lambda: len(files(root / "traces")) == 2, what="two trace files")
    stats_files = files(root / "stats")
    [day] = {p.relative_to(root / "stats").parts[:3] for p in stats_files}
    mine = root / "stats" / Path(*day) / "myapp" / "web01"
    rows = [line.split("\t") for line in mine.read_text().splitlines()]
    assert [r[1:] for r in rows] == [
        ["web01", "myapp", "counter", "requests", "600", "cluster=eu"],
        ["web01", "myapp", "count", "latency", "5", "cluster=eu"],
        ["web01", "myapp", "sum", "latency", "100", "cluster=eu"],
        ["web01", "myapp", "min", "latency", "10", "cluster=eu"],
        ["web01", "myapp", "max", "latency", "30", "cluster=eu"],
    ]
    assert root / "stats" / Path(*day) / safe_name(hostile) / safe_name("a/b\0c") in stats_files
    assert not (tmp_path / "outside").exists()
    [log_file] = files(root / "logs")
    assert log_file.read_text().split("\t")[1:5] == ["error", "main.c:42", "disk full", "repeats 3 times"]

    http = server.http_port
    assert get_json(http, "/traces") == (200, {"owners": [{"name": "alice", "href": "/traces/alice"}]})
    status, body = get_json(http, "/traces/alice/t-42")
    assert status == 200
    assert sorted(e["message"] for e in body["events"]) == ["big one", "checkout"]
    [big_row] = [e for e in body["events"] if e["message"] == "big one"]
    assert len(big_row["event"]["part2"]) == 40_000
    assert get_json(http, big_row["href"])[1]["mondemand.message"] == "big one"
    assert get_json(http, "/traces/%2E%2E/%2E%2E")[0] == 400  # never a path outside the trace root

    assert server.stop() == 0
    journals, current = journal_records(root / "journal")
    assert not current.exists()  # rotated at shutdown
    [(_, reader, records)] = journals
    assert reader.status == "complete"
    assert [peek_name(r.data) for r in records].count("MonDemand::TraceMsg") == 2
    assert max(len(r.data) for r in records) > 100_000
    assert {r.listener for r in records} == {"main", "ingest"}
    assert all(r.sender_ip == "127.0.0.1" for r in records)


HUP_CONFIG = """
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {udp}

[backend:stats]
type = stats_file
root = {root}/stats

[backend:journal]
type = journal
root = {root}/journal
interval = 1h

[route:all]
events = MonDemand::StatsMsg
backends = stats, journal
"""


def test_sighup_reopens_the_files_and_rotates_the_journal(tmp_path, run_server):
    udp = free_port()
    root = tmp_path / "data"
    server = run_server(HUP_CONFIG.format(udp=udp, root=root))
    emit("-p", str(udp), "stats", "--prog-id", "app", "--host-name", "h", "--counter", "c=1")
    [path] = wait_for(lambda: files(root / "stats"), what="the stats file")
    wait_for(lambda: (root / "journal/all_events.log.gz").exists(), what="the journal")
    moved = tmp_path / "rotated-by-logrotate"
    path.rename(moved)
    hup(server)
    wait_for(lambda: server.status()["backends"]["journal"].get("backend.rotations") == 1, what="the rotation")
    emit("-p", str(udp), "stats", "--prog-id", "app", "--host-name", "h", "--counter", "c=2")
    wait_for(lambda: path.exists() and path.read_text().count("\n") == 1, what="a new stats file")
    assert path.read_text().split("\t")[5] == "2"
    assert moved.read_text().split("\t")[5] == "1"
    journals, _ = journal_records(root / "journal")
    assert [(reader.status, len(records)) for _, reader, records in journals] == [("complete", 1), ("truncated", 1)]


def hup(server: ServerProcess) -> None:
    """SIGHUP the server once and wait until the stats backend has reopened its files."""
    server.signal(signal.SIGHUP)
    wait_for(lambda: server.status()["backends"]["stats"].get("backend.reopens", 0) >= 1, what="the reopen")


KILL_CONFIG = """
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {udp}

[backend:journal]
type = journal
root = {root}
interval = 0.3s

[route:all]
events = *
backends = journal
"""


def test_kill_9_mid_stream_leaves_every_journal_readable(tmp_path, run_server):
    udp = free_port()
    root = tmp_path / "journal"
    config = KILL_CONFIG.format(udp=udp, root=root)
    server = run_server(config, tmp_path / "first")
    stop = threading.Event()
    sent = [0]

    def stream() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while not stop.is_set():
                sock.sendto(encode(Event("Test::Seq").set("seq", LwesType.INT64, sent[0])), ("127.0.0.1", udp))
                sent[0] += 1
                if sent[0] % 20 == 0:
                    time.sleep(0.002)

    sender = threading.Thread(target=stream)
    sender.start()
    try:
        wait_for(lambda: len(list(root.glob("all_events.log.*.gz"))) >= 3, what="three rotated journals")
        server.proc.send_signal(signal.SIGKILL)  # mid-stream: the sender is still going
        server.proc.wait(10)
    finally:
        stop.set()
        sender.join()

    journals, current = journal_records(root)
    left_open = current.exists()
    assert len(journals) >= 3
    seqs: list[int] = []
    for path, reader, records in journals:
        if path == current:
            assert reader.status in ("truncated", "complete"), reader.problem
        else:
            assert reader.status == "complete", (path.name, reader.problem)
            assert gzip.decompress(path.read_bytes())  # whole gzip files for any other reader too
        seqs += [decode(r.data)["seq"] for r in records]
    assert seqs == sorted(set(seqs))  # in order, nothing twice, nothing garbled
    assert 0 < len(seqs) <= sent[0]

    # The next server renames the journal the killed one left open, and starts a new one.
    restarted = run_server(config, tmp_path / "second")
    send_udp(encode(Event("Test::Seq").set("seq", LwesType.INT64, -1)), udp)
    wait_for(lambda: restarted.status()["backends"]["journal"]["events_processed"] == 1, what="the new event")
    status = restarted.status()["backends"]["journal"]
    assert status["backend.recovered"] == int(left_open)
    journals_after, current_after = journal_records(root)
    [(_, reader, records)] = [j for j in journals_after if j[0] == current_after]
    assert [decode(r.data)["seq"] for r in records] == [-1]
    old = [decode(r.data)["seq"] for path, _, recs in journals_after if path != current_after for r in recs]
    assert old == seqs  # nothing of the killed server's journals was lost or appended to
