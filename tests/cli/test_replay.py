"""`mondemand-replay`, run as the real command: to a UDP channel and through a routes.ini."""

from __future__ import annotations

import gzip
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from mondemand.cli.replay import Pacer
from mondemand.journal import JournalRecord, JournalWriter
from mondemand.lwes import Event, LwesType, decode, encode, read_headers
from mondemand.messages import Metric, MetricType, StatsMsg

BIN = Path(sys.executable).parent
T0 = 1_700_000_000_000


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "mondemand-replay"), *args], capture_output=True, text=True, timeout=60)


def stats_bytes(i: int, prog_id: str = "app") -> bytes:
    [event] = StatsMsg(prog_id, host="h1", metrics=[Metric(MetricType.COUNTER, "n", i)]).to_lwes()
    return encode(event)


def journal(path: Path, records: list[JournalRecord], close: bool = True) -> Path:
    writer = JournalWriter(path)
    for record in records:
        writer.write(record)
    writer.sync()
    if close:
        writer.close()
    return path


@pytest.fixture
def receiver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def receive(sock: socket.socket, n: int) -> list[bytes]:
    return [sock.recv(70_000) for _ in range(n)]


def test_replay_to_a_channel_keeps_the_original_receipt_time_and_sender(tmp_path, receiver):
    records = [JournalRecord(stats_bytes(i), T0 + i, "192.0.2.9", 5000 + i, "main") for i in range(3)]
    path = journal(tmp_path / "j.gz", records)
    result = replay("-p", str(receiver.getsockname()[1]), "--speed", "0", "-q", str(path))
    assert result.returncode == 0, result.stderr
    got = receive(receiver, 3)
    assert [read_headers(d) for d in got] == [(T0 + i, "192.0.2.9", 5000 + i) for i in range(3)]
    assert [decode(d)["v0"] for d in got] == [0, 1, 2]
    assert "replayed 3 events" in result.stderr and "3 records, complete" in result.stderr


def test_no_headers_sends_the_bytes_untouched_and_skips_what_udp_cannot_carry(tmp_path, receiver):
    big = encode(Event("Big").set("s", LwesType.LONG_STRING, "x" * 70_000), max_size=80_000)
    records = [JournalRecord(stats_bytes(1), T0, "2001:db8::1", 1, "main"),
               JournalRecord(big, T0 + 1, "10.0.0.1", 2, "ingest"),
               JournalRecord(stats_bytes(2), T0 + 2, "10.0.0.1", 3, "main")]
    path = journal(tmp_path / "j.gz", records)
    result = replay("-p", str(receiver.getsockname()[1]), "--speed", "0", "--no-headers", "-q", str(path))
    assert result.returncode == 0, result.stderr
    assert receive(receiver, 2) == [records[0].data, records[2].data]
    assert "1 too large for UDP" in result.stderr


def test_name_filter(tmp_path, receiver):
    records = [JournalRecord(stats_bytes(1), T0, "10.0.0.1", 1),
               JournalRecord(encode(Event("Other::Event")), T0, "10.0.0.1", 1)]
    path = journal(tmp_path / "j.gz", records)
    result = replay("-p", str(receiver.getsockname()[1]), "--speed", "0", "--name", "Other::*", "-q", str(path))
    assert result.returncode == 0, result.stderr
    [datagram] = receive(receiver, 1)
    assert decode(datagram).name == "Other::Event"
    assert "1 filtered by name" in result.stderr


def test_the_pacer_keeps_the_original_spacing_scaled_by_speed():
    pacer = Pacer(speed=2.0)
    assert pacer.delay(T0) == 0.0
    assert 0.4 < pacer.delay(T0 + 1000) <= 0.5  # 1 s apart at twice the speed
    assert pacer.delay(T0 - 5000) == 0.0  # late records go at once
    fast = Pacer(speed=0.0, rate=10.0)
    assert fast.delay(T0 + 10_000_000) == 0.0
    fast.sent()
    assert 0.05 < fast.delay(T0) <= 0.1


ROUTES = """
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = 0

[listener:other]
type = lwes-udp
address = 127.0.0.1
port = 0

[backend:files]
type = stats_file
root = {root}
queue_size = 10
batch_size = 5

[route:stats]
events = MonDemand::StatsMsg
listeners = main
backends = files
"""


def test_through_a_routes_ini_each_event_comes_from_its_listener_and_nothing_is_dropped(tmp_path):
    root = tmp_path / "stats"
    config = tmp_path / "routes.ini"
    config.write_text(ROUTES.format(root=root))
    first = [JournalRecord(stats_bytes(i), T0 + i, "10.0.0.1", 1, "main") for i in range(1000)]
    second = [JournalRecord(stats_bytes(i, "ignored"), T0, "10.0.0.1", 1, "other") for i in range(5)]
    second += [JournalRecord(stats_bytes(i), T0 + 1000 + i, "10.0.0.1", 1, "main") for i in range(1000, 1500)]
    paths = [journal(tmp_path / "a.gz", first), journal(tmp_path / "b.gz", second, close=False)]
    result = replay("-c", str(config), *map(str, paths))
    assert result.returncode == 0, result.stderr
    [out] = [p for p in root.rglob("*") if p.is_file()]
    assert out.relative_to(root).parts == ("2023", "11", "14", "app", "h1")
    values = [int(line.split("\t")[5]) for line in out.read_text().splitlines()]
    assert values == list(range(1500))  # in order, none dropped by a queue of 10
    assert "backend files: 1500 processed, 0 dropped" in result.stderr
    assert "b.gz: 505 records, truncated" in result.stderr
    assert "5 matched no route" in result.stderr


def test_listener_override(tmp_path):
    root = tmp_path / "stats"
    config = tmp_path / "routes.ini"
    config.write_text(ROUTES.format(root=root))
    path = journal(tmp_path / "a.gz", [JournalRecord(stats_bytes(7), T0, "10.0.0.1", 1, "")])
    result = replay("-c", str(config), "--listener", "main", "-q", str(path))
    assert result.returncode == 0, result.stderr
    [out] = [p for p in root.rglob("*") if p.is_file()]
    assert out.read_text().split("\t")[5] == "7"


def test_a_journal_of_the_reference_journallers_can_be_replayed(tmp_path, receiver):
    data = stats_bytes(3)
    header = struct.pack(">HQ4sHH4s", len(data), T0, bytes([4, 3, 2, 1]), 77, 1, bytes(4))
    path = tmp_path / "all_events.log.gz"
    path.write_bytes(gzip.compress(header + data))
    result = replay("-p", str(receiver.getsockname()[1]), "--speed", "0", "-q", str(path))
    assert result.returncode == 0, result.stderr
    [datagram] = receive(receiver, 1)
    assert read_headers(datagram) == (T0, "1.2.3.4", 77)


def test_damaged_or_missing_journals_make_the_exit_status_1(tmp_path, receiver):
    good = journal(tmp_path / "good.gz", [JournalRecord(stats_bytes(1), T0, "10.0.0.1", 1)])
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"this is not gzip at all")
    port = str(receiver.getsockname()[1])
    result = replay("-p", port, "--speed", "0", "-q", str(good), str(bad))
    assert result.returncode == 1
    assert "bad.gz: 0 records, corrupt" in result.stderr
    assert len(receive(receiver, 1)) == 1  # the good journal was still replayed
    result = replay("-p", port, "-q", str(tmp_path / "missing.gz"))
    assert result.returncode == 1 and "missing.gz: cannot read" in result.stderr


def test_the_journal_order_is_kept_across_listeners(tmp_path):
    root = tmp_path / "stats"
    config = tmp_path / "routes.ini"
    config.write_text(ROUTES.format(root=root).replace("listeners = main\n", ""))
    records = [JournalRecord(stats_bytes(i), T0 + i, "10.0.0.1", 1, "main" if i % 3 else "other")
               for i in range(300)]
    result = replay("-c", str(config), "-q", str(journal(tmp_path / "a.gz", records)))
    assert result.returncode == 0, result.stderr
    [out] = [p for p in root.rglob("*") if p.is_file()]
    assert [int(line.split("\t")[5]) for line in out.read_text().splitlines()] == list(range(300))
