"""`mondemand-dump` as a user runs it: a real subprocess on real loopback sockets."""

from __future__ import annotations

import json
import selectors
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from mondemand.lwes import Event, LwesType, encode
from mondemand.messages import LogLine, LogMsg, Metric, MetricType, Priority, StatsMsg
from tests.e2e.harness import BIN, free_port, random_group, send_udp

TIMEOUT = 20


class Dump:
    """A running mondemand-dump; `ready()` waits for its "listening on" line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "mondemand-dump"), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def ready(self) -> str:
        """The first stderr line, read with a deadline."""
        assert self.proc.stderr is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stderr, selectors.EVENT_READ)
            if not sel.select(TIMEOUT):
                raise AssertionError("mondemand-dump printed nothing on stderr")
        line = self.proc.stderr.readline()
        assert line.startswith("listening on "), line
        return line

    def finish(self) -> tuple[int, str, str]:
        """Wait for the exit: (code, stdout, the rest of stderr)."""
        try:
            out, err = self.proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"mondemand-dump did not exit; stdout so far:\n{out}\nstderr:\n{err}") from None
        return self.proc.returncode, out, err


@pytest.fixture
def dumps() -> Iterator[list[Dump]]:
    running: list[Dump] = []
    yield running
    for dump in running:
        if dump.proc.poll() is None:
            dump.proc.kill()
            dump.proc.communicate()


def start(dumps: list[Dump], *args: str) -> Dump:
    dump = Dump(*args)
    dumps.append(dump)
    dump.ready()
    return dump


def stats_datagram(prog_id: str = "myapp") -> bytes:
    msg = StatsMsg(prog_id, host="web01", metrics=[Metric(MetricType.COUNTER, "requests", 42)])
    return encode(msg.to_lwes()[0])


def log_datagram() -> bytes:
    return encode(LogMsg("myapp", lines=[LogLine("main.c", 7, Priority.ERROR, "disk full")]).to_lwes())


def test_count_and_json_print_one_object_per_event(dumps):
    port = free_port()
    dump = start(dumps, "--address", "127.0.0.1", "-p", str(port), "--count", "2", "--json")
    before = int(time.time() * 1000)
    send_udp(stats_datagram("first"), port)
    send_udp(stats_datagram("second"), port)
    code, out, err = dump.finish()
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    objects = [json.loads(line) for line in lines]
    assert [o["attrs"]["prog_id"] for o in objects] == ["first", "second"]
    for o in objects:
        assert o["name"] == "MonDemand::StatsMsg"
        assert (o["attrs"]["k0"], o["attrs"]["v0"], o["attrs"]["ctxt_v0"]) == ("requests", 42, "web01")
        assert o["sender"].startswith("127.0.0.1:")
        assert o["receipt_time"] >= before
        assert o["attrs"]["ReceiptTime"] == o["receipt_time"]
    assert "2 events printed, 2 datagrams received, 0 malformed" in err


def test_text_lines_show_time_sender_name_and_attributes(dumps):
    port = free_port()
    dump = start(dumps, "--address", "127.0.0.1", "-p", str(port), "--count", "1")
    send_udp(encode(Event("Demo::Thing").set("who", LwesType.STRING, "alice smith").set("n", LwesType.UINT16, 7)),
             port)
    code, out, _ = dump.finish()
    assert code == 0
    [line] = out.splitlines()
    when, sender, name, *attrs = line.split(" ", 3)
    assert when.endswith("Z") and "T" in when
    assert sender.startswith("127.0.0.1:")
    assert name == "Demo::Thing"
    assert attrs == ['who="alice smith" n=7']


def test_name_filter_prints_only_matching_events(dumps):
    port = free_port()
    dump = start(dumps, "--address", "127.0.0.1", "-p", str(port), "--count", "1", "--json",
                 "--name", "MonDemand::Log*")
    send_udp(stats_datagram(), port)
    send_udp(log_datagram(), port)
    code, out, err = dump.finish()
    assert code == 0, err
    [line] = out.splitlines()
    event = json.loads(line)
    assert event["name"] == "MonDemand::LogMsg"
    assert event["attrs"]["m0"] == "disk full"
    assert "1 events printed, 2 datagrams received" in err


def test_malformed_datagram_prints_a_malformed_line(dumps):
    port = free_port()
    dump = start(dumps, "--address", "127.0.0.1", "-p", str(port), "--count", "1")
    send_udp(b"\x09abc", port)  # the name runs past the end
    # A readable name with a broken body is reported too, by name.
    send_udp(b"\x06Broken\x00\x01\x01a\x42", port)
    send_udp(stats_datagram(), port)
    code, out, err = dump.finish()
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("! malformed: length-overflow at offset 0")
    assert "4 bytes from 127.0.0.1:" in lines[0]
    assert lines[1].startswith("! malformed: bad-type-id at offset 11: a: unknown type id 0x42")
    assert "name 'Broken'" in lines[1]
    assert " MonDemand::StatsMsg " in lines[2]
    assert "1 events printed, 3 datagrams received, 2 malformed" in err


def test_timeout_exits_zero_with_a_summary(dumps):
    port = free_port()
    started = time.monotonic()
    dump = start(dumps, "--address", "127.0.0.1", "-p", str(port), "--timeout", "0.3")
    code, out, err = dump.finish()
    assert code == 0
    assert out == ""
    assert err.strip() == "0 events printed, 0 datagrams received, 0 malformed"
    assert time.monotonic() - started < TIMEOUT


def test_multicast_on_loopback(dumps):
    group, port = random_group(), free_port()
    dump = start(dumps, "--address", group, "--interface", "127.0.0.1", "-p", str(port), "--count", "1", "--json")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.sendto(stats_datagram("mcast"), (group, port))
    code, out, err = dump.finish()
    assert code == 0, err
    [line] = out.splitlines()
    assert json.loads(line)["attrs"]["prog_id"] == "mcast"


def test_port_in_use_is_a_clear_error():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        result = subprocess.run([str(BIN / "mondemand-dump"), "--address", "127.0.0.1", "-p", str(port),
                                 "--timeout", "0.2"], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 1
    assert f"listener 'dump' on udp://127.0.0.1:{port}: cannot bind" in result.stderr
