"""`mondemand-emit`: dry-run output, argument errors, and real unicast and multicast UDP."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mondemand.cli.emit import main, parse_value
from mondemand.lwes import Event, LwesType, decode
from mondemand.messages import (
    AnnotationMsg,
    LogLine,
    LogMsg,
    Metric,
    MetricType,
    PerfMsg,
    Priority,
    Statset,
    StatsMsg,
    Timing,
    TraceMsg,
    from_lwes,
)
from mondemand.transport import UdpSender, is_multicast

TIMEOUT = 3.0


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), prog_name="mondemand-emit", catch_exceptions=False)


def printed_datagrams(output: str) -> list[bytes]:
    """The hex lines of a --dry-run output, as bytes."""
    lines = output.splitlines()
    return [bytes.fromhex(lines[i + 1]) for i, line in enumerate(lines) if line.startswith("# datagram ")]


def dry(*args: str) -> list[Event]:
    result = invoke("--dry-run", *args)
    assert result.exit_code == 0, result.output
    return [decode(raw, strict=True) for raw in printed_datagrams(result.stdout)]


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(TIMEOUT)
    yield sock
    sock.close()


def receive(sock: socket.socket, n: int) -> list[bytes]:
    return [sock.recv(65535) for _ in range(n)]


def assert_nothing_more(sock: socket.socket) -> None:
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(65535)


# --------------------------------------------------------------------------- dry run


def test_dry_run_stats_prints_hex_and_decoded_form():
    result = invoke(
        "--dry-run",
        "stats",
        "--prog-id",
        "myapp",
        "--host-name",
        "web01",
        "--counter",
        "requests=1234",
        "--gauge",
        "queue_depth=17",
        "--statset",
        "latency=5:100:10:30",
        "--context",
        "dc=eu",
    )
    assert result.exit_code == 0, result.output
    [raw] = printed_datagrams(result.stdout)
    assert "prog_id: string = 'myapp'" in result.stdout
    assert "v0: int64 = 1234" in result.stdout
    assert StatsMsg.from_lwes(decode(raw)) == StatsMsg(
        "myapp",
        "web01",
        {"dc": "eu"},
        [
            Metric(MetricType.COUNTER, "requests", 1234),
            Metric(MetricType.GAUGE, "queue_depth", 17),
            Metric(MetricType.STATSET, "latency", Statset(5, 100, 10, 30)),
        ],
    )
    assert "sent" not in result.stderr  # nothing was sent


def test_dry_run_same_bytes_as_vector_v3():
    [event] = dry("stats", "--prog-id", "myapp", "-c", "host=web01", "--counter", "requests=1234", "--gauge",
                  "queue_depth=17")  # fmt: skip
    msg = StatsMsg.from_lwes(event)
    assert msg.host == "web01" and msg.context == {}
    assert list(event) == ["prog_id", "num", "t0", "k0", "v0", "t1", "k1", "v1", "ctxt_num", "ctxt_k0", "ctxt_v0"]


def test_dry_run_splits_with_max_metrics_and_repeats_with_count():
    args = ["stats", "--prog-id", "p", "--host-name", "h", "--max-metrics", "2"]
    args += [f"--counter=c{i}={i}" for i in range(5)]
    events = dry("--count", "2", *args)
    assert [e["num"] for e in events] == [2, 2, 1, 2, 2, 1]
    names = [m.name for e in events[:3] for m in StatsMsg.from_lwes(e).metrics]
    assert names == [f"c{i}" for i in range(5)]


def test_dry_run_log():
    [event] = dry("log", "--prog-id", "app", "--priority", "error", "--message", "disk full", "--file", "main.c",
                  "--line", "42", "--repeat", "3", "--host-name", "web01")  # fmt: skip
    assert from_lwes(event) == LogMsg("app", "web01", {}, [LogLine("main.c", 42, Priority.ERROR, "disk full", 3)])


def test_dry_run_trace():
    [event] = dry("trace", "--prog-id", "myapp", "--owner", "alice", "--trace-id", "t-42", "--message", "checkout",
                  "--field", "cart=3 items", "--src-host", "web01")  # fmt: skip
    assert from_lwes(event) == TraceMsg("myapp", "t-42", "alice", "web01", "checkout", {"cart": "3 items"})


def test_dry_run_perf():
    [event] = dry("perf", "--id", "req-1", "--caller-label", "frontend", "--timing", "db:1700000000000:1700000000042",
                  "--timing", "a:b:1:2", "--host-name", "h")  # fmt: skip
    assert from_lwes(event) == PerfMsg(
        "req-1", "frontend", [Timing("db", 1700000000000, 1700000000042), Timing("a:b", 1, 2)], "h"
    )


def test_dry_run_annotation():
    [event] = dry("annotation", "--id", "deploy-7", "--description", "deploy", "--text", "v1.2.3", "--tag", "release",
                  "--tag", "prod", "--timestamp", "1700000000000")  # fmt: skip
    assert from_lwes(event) == AnnotationMsg("deploy-7", 1700000000000, "deploy", "v1.2.3", ["release", "prod"])


def test_annotation_timestamp_defaults_to_now():
    before = int(time.time() * 1000)
    [event] = dry("annotation", "--id", "a", "--description", "d")
    assert before <= event["timestamp"] <= int(time.time() * 1000)


def test_dry_run_raw_every_kind_of_type():
    [event] = dry(
        "raw",
        "Demo::Event",
        "n=uint16:7",
        "i=int16:-3",
        "u=uint32:4000000000",
        "big=uint64:0xFFFFFFFFFFFFFFFF",
        "s=string:a:b=c",
        "ip=ip_addr:10.1.2.3",
        "ok=boolean:true",
        "no=boolean:0",
        "b=byte:255",
        "f=float:1.5",
        "d=double:-2.25",
        "xs=int32[]:1,2,-3",
        "ns=nullable string[]:a,,c",
        "empty=string:",
    )
    assert event.name == "Demo::Event"
    assert [(k, t.type_name, v) for k, (t, v) in event.attrs.items()] == [
        ("n", "uint16", 7),
        ("i", "int16", -3),
        ("u", "uint32", 4000000000),
        ("big", "uint64", 2**64 - 1),
        ("s", "string", "a:b=c"),
        ("ip", "ip_addr", "10.1.2.3"),
        ("ok", "boolean", True),
        ("no", "boolean", False),
        ("b", "byte", 255),
        ("f", "float", 1.5),
        ("d", "double", -2.25),
        ("xs", "int32[]", [1, 2, -3]),
        ("ns", "nullable string[]", ["a", None, "c"]),
        ("empty", "string", ""),
    ]


def test_parse_value_arrays():
    assert parse_value(LwesType.BOOLEAN_ARRAY, "true,false") == [True, False]
    assert parse_value(LwesType.NULLABLE_INT64_ARRAY, "1,null,") == [1, None, None]
    assert parse_value(LwesType.IP_ADDR_ARRAY, "") == []
    with pytest.raises(ValueError, match="out of range"):
        parse_value(LwesType.UINT16_ARRAY, "1,65536")


# --------------------------------------------------------------------------- argument errors

STATS = ["stats", "--prog-id", "p", "--host-name", "h"]
ERRORS = [
    ([*STATS, "--counter", "requests=abc"], "--counter requests=abc: value must be an integer"),
    ([*STATS, "--gauge", "g=99999999999999999999"], "g=99999999999999999999: value is out of the int64 range"),
    ([*STATS, "--counter", "requests"], "requests: expected name=value"),
    ([*STATS, "--statset", "lat=1:x"], "lat=1:x: statset field sum is 'x', not an integer"),
    ([*STATS, "--statset", "lat=" + ":".join("1" * 12)], "at most 11 fields"),
    (STATS, "give at least one --counter, --gauge or --statset"),
    (["stats", "--counter", "a=1"], "Missing option '--prog-id'"),
    ([*STATS, "--counter", "a=1", "--context", "host=other"], "conflicts"),
    ([*STATS, "--counter", "a=1", "--context", "nokey"], "nokey: expected key=value"),
    (["log", "--prog-id", "p", "--priority", "fatal", "-m", "x"], "unknown priority 'fatal'"),
    (["log", "--prog-id", "p", "--priority", "info", "-m", "x", "--repeat", "0"], "--repeat"),
    (["log", "--prog-id", "p", "-m", "x"], "Missing option '--priority'"),
    (["perf", "--id", "i", "--caller-label", "c", "--timing", "db:5:1"], "db:5:1: end is before start"),
    (["perf", "--id", "i", "--caller-label", "c", "--timing", "db:a:b"], "start and end must be integers"),
    (["perf", "--id", "i", "--caller-label", "c"], "Missing option '--timing'"),
    (
        ["trace", "--prog-id", "p", "--owner", "o", "--trace-id", "t", "-m", "m", "--field", "mondemand.owner=x"],
        "reserved",
    ),
    (["raw", "Demo", "n=uint16:70000"], "n=uint16:70000: 70000 is out of range for uint16"),
    (["raw", "Demo", "n=7"], "n=7: no type given (use key=type:value, or --esf FILE)"),
    (["raw", "Demo", "n=integer:7"], "unknown type 'integer'"),
    (["raw", "Demo", "a=string:x", "a=string:y"], "attribute 'a' given twice"),
    (["raw", "Demo", "ip=ip_addr:1.2.3"], "'1.2.3' is not an IPv4 address"),
    (["raw", "Demo", "ok=boolean:maybe"], "is not a boolean"),
    (["raw", "Demo", "=string:x"], "expected key=type:value"),
    (["raw", "Demo", "s=string:" + "x" * 70000], "cannot encode the event"),
    (["raw", "Demo", "--esf", "/nonexistent/file.esf"], "does not exist"),
    (["--interface", "eth0", *STATS, "--counter", "a=1"], "'eth0' is not an IPv4 address"),
    (["--port", "0", *STATS, "--counter", "a=1"], "--port"),
    (["--ttl", "300", *STATS, "--counter", "a=1"], "--ttl"),
    (["--count", "0", *STATS, "--counter", "a=1"], "--count"),
    (["--rate", "-1", *STATS, "--counter", "a=1"], "--rate"),
]


@pytest.mark.parametrize(("args", "message"), ERRORS, ids=[" ".join(a)[:60] for a, _ in ERRORS])
def test_bad_arguments_are_usage_errors(args, message):
    result = invoke("--dry-run", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_unresolvable_host_is_a_usage_error():
    result = invoke("-H", "no-such-host.invalid", *STATS, "--counter", "a=1")
    assert result.exit_code == 2
    assert "cannot resolve 'no-such-host.invalid'" in result.stderr


@pytest.mark.parametrize("command", [[], ["stats"], ["log"], ["trace"], ["perf"], ["annotation"], ["raw"]])
def test_help_shows_examples(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output
    example = result.output.split("Examples:")[1]
    assert f"mondemand-emit {command[0] if command else ''}".strip() in example
    # \b keeps the example lines unwrapped.
    assert "\n    mondemand-emit" in example


# --------------------------------------------------------------------------- ESF


ESF_TEXT = """
MetaEventInfo { ip_addr SenderIP; uint16 SenderPort; }
Demo {
    required string who;
    uint16 n;
    int32 xs[8];
}
"""


@pytest.fixture
def esf_file(tmp_path: Path) -> Path:
    path = tmp_path / "demo.esf"
    path.write_text(ESF_TEXT)
    return path


def test_raw_types_from_esf(esf_file):
    [event] = dry("raw", "--esf", str(esf_file), "Demo", "who=me", "n=7", "xs=1,2", "SenderIP=1.2.3.4")
    assert [(k, t, v) for k, (t, v) in event.attrs.items()] == [
        ("who", LwesType.STRING, "me"),
        ("n", LwesType.UINT16, 7),
        ("xs", LwesType.INT32_ARRAY, [1, 2]),
        ("SenderIP", LwesType.IP_ADDR, "1.2.3.4"),
    ]


def test_raw_explicit_type_is_kept_with_esf(esf_file):
    [event] = dry("raw", "--esf", str(esf_file), "Demo", "who=string:a:b")
    assert event["who"] == "a:b"
    # A prefix that is not a type name is part of the value.
    [event] = dry("raw", "--esf", str(esf_file), "Demo", "who=x:y")
    assert event["who"] == "x:y"


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        (["n=7"], "does not match"),
        (["who=int32:5"], "does not match"),
        (["who=me", "zz=1"], "'zz' is not declared for Demo"),
        (["who=me", "n=big"], "n=big: 'big' is not an integer"),
    ],
)
def test_raw_esf_errors(esf_file, attrs, message):
    result = invoke("--dry-run", "raw", "--esf", str(esf_file), "Demo", *attrs)
    assert result.exit_code == 2
    assert message in result.stderr


def test_raw_bad_esf_file(tmp_path):
    bad = tmp_path / "bad.esf"
    bad.write_text("Demo { strng x; ")
    result = invoke("--dry-run", "raw", "--esf", str(bad), "Demo")
    assert result.exit_code == 2
    assert "--esf" in result.stderr


# --------------------------------------------------------------------------- real UDP


def test_udp_stats_reaches_the_receiver(receiver):
    port = receiver.getsockname()[1]
    result = invoke("-H", "127.0.0.1", "-p", str(port), *STATS, "--counter", "requests=5", "--gauge", "g=-1")
    assert result.exit_code == 0, result.output
    [raw] = receive(receiver, 1)
    assert StatsMsg.from_lwes(decode(raw, strict=True)) == StatsMsg(
        "p", "h", metrics=[Metric(MetricType.COUNTER, "requests", 5), Metric(MetricType.GAUGE, "g", -1)]
    )
    assert f"sent 1 events ({len(raw)} bytes) in " in result.stderr
    assert result.stderr.rstrip().endswith("events/s, 0 errors")
    assert_nothing_more(receiver)


def test_udp_count_and_rate(receiver):
    port = receiver.getsockname()[1]
    start = time.monotonic()
    result = invoke("-p", str(port), "--count", "5", "--rate", "1000", "log", "--prog-id", "p", "--priority",
                    "warning", "-m", "hello", "--host-name", "h")  # fmt: skip
    elapsed = time.monotonic() - start
    assert result.exit_code == 0, result.output
    datagrams = receive(receiver, 5)
    assert len(set(datagrams)) == 1
    assert LogMsg.from_lwes(decode(datagrams[0])).lines[0].message == "hello"
    assert "sent 5 events" in result.stderr
    assert elapsed >= 0.004  # five sends 1 ms apart
    assert_nothing_more(receiver)


def test_udp_rate_limits(receiver):
    port = receiver.getsockname()[1]
    start = time.monotonic()
    result = invoke("-p", str(port), "--count", "4", "--rate", "20", *STATS, "--counter", "a=1")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - start >= 0.14  # sends at 0, 50, 100, 150 ms
    assert len(receive(receiver, 4)) == 4


def test_split_stats_arrive_as_several_datagrams(receiver):
    port = receiver.getsockname()[1]
    counters = [f"--counter=m{i}={i}" for i in range(1300)]
    result = invoke("-p", str(port), *STATS, *counters)
    assert result.exit_code == 0, result.output
    msgs = [StatsMsg.from_lwes(decode(raw)) for raw in receive(receiver, 3)]
    assert [len(m.metrics) for m in msgs] == [512, 512, 276]
    assert [m.value for msg in msgs for m in msg.metrics] == list(range(1300))
    assert "sent 3 events" in result.stderr


def test_send_errors_are_counted_and_exit_1():
    # A broadcast destination without SO_BROADCAST fails in sendto.
    result = invoke("-H", "255.255.255.255", "--count", "2", *STATS, "--counter", "a=1")
    assert result.exit_code == 1
    assert "sent 0 events (0 bytes)" in result.stderr
    assert "2 errors" in result.stderr
    assert "first error:" in result.stderr


def emitter_executable() -> str:
    candidate = Path(sys.executable).parent / "mondemand-emit"
    found = str(candidate) if candidate.exists() else shutil.which("mondemand-emit")
    assert found, "mondemand-emit is not installed next to the interpreter or on PATH"
    return found


def test_real_subprocess(receiver):
    port = receiver.getsockname()[1]
    proc = subprocess.run(
        [emitter_executable(), "-p", str(port), "--count", "3", "trace", "--prog-id", "myapp", "--owner", "alice",
         "--trace-id", "t-42", "-m", "checkout", "--src-host", "web01", "--field", "cart=3 items"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    msgs = [TraceMsg.from_lwes(decode(raw, strict=True)) for raw in receive(receiver, 3)]
    assert msgs == [TraceMsg("myapp", "t-42", "alice", "web01", "checkout", {"cart": "3 items"})] * 3
    assert "sent 3 events" in proc.stderr
    assert proc.stdout == ""


@pytest.fixture
def multicast_receiver() -> Iterator[tuple[socket.socket, str, int]]:
    group = f"239.255.{random.randrange(256)}.{random.randrange(1, 255)}"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((group, 0))
    mreq = socket.inet_aton(group) + socket.inet_aton("127.0.0.1")
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    sock.settimeout(TIMEOUT)
    yield sock, group, sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize("interface", [["--interface", "127.0.0.1"], []], ids=["explicit", "default"])
def test_multicast(multicast_receiver, interface):
    sock, group, port = multicast_receiver
    result = invoke("-H", group, "-p", str(port), "--ttl", "1", *interface, "--count", "2", "perf", "--id", "r",
                    "--caller-label", "c", "--timing", "db:1:2", "--host-name", "h")  # fmt: skip
    assert result.exit_code == 0, result.output
    msgs = [PerfMsg.from_lwes(decode(raw)) for raw in receive(sock, 2)]
    assert msgs == [PerfMsg("r", "c", [Timing("db", 1, 2)], "h")] * 2
    assert "sent 2 events" in result.stderr


# --------------------------------------------------------------------------- UdpSender


def test_sender_unicast(receiver):
    with UdpSender("127.0.0.1", receiver.getsockname()[1]) as sender:
        assert not sender.multicast
        assert sender.send(b"hello") == 5
    assert sender.closed
    assert receive(receiver, 1) == [b"hello"]
    with pytest.raises(ValueError, match="closed"):
        sender.send(b"x")
    sender.close()  # twice is harmless


def test_sender_resolves_names(receiver):
    with UdpSender("localhost", receiver.getsockname()[1]) as sender:
        assert sender.address.startswith("127.")
        sender.send(b"x")
    assert receive(receiver, 1) == [b"x"]


def test_sender_multicast_socket_options():
    with UdpSender("239.255.1.2", 9999, ttl=3, interface="127.0.0.1") as sender:
        sock = sender._sock
        assert sock is not None
        assert sender.multicast
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 3
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 1
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4) == socket.inet_aton("127.0.0.1")


@pytest.mark.parametrize(("kwargs", "message"), [({"port": 0}, "port"), ({"ttl": 256}, "ttl")])
def test_sender_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UdpSender(**({"host": "127.0.0.1", "port": 1} | kwargs))


def test_is_multicast():
    assert is_multicast("224.0.0.1") and is_multicast("239.255.255.255")
    assert not is_multicast("240.0.0.1") and not is_multicast("127.0.0.1") and not is_multicast("name")


# --------------------------------------------------------------------------- --time and backfill


def test_parse_time_relative_iso_and_now() -> None:
    from datetime import datetime

    from mondemand.cli.emit import parse_step, parse_time

    now = 1_700_000_000.0
    assert parse_time("now", now) == 1_700_000_000_000
    assert parse_time("-7d", now) == 1_700_000_000_000 - 7 * 86_400_000
    assert parse_time("-7d+2h30m", now) == 1_700_000_000_000 - 7 * 86_400_000 + 9_000_000
    assert parse_time("-1h30m", now) == 1_700_000_000_000 - 5_400_000
    assert parse_time("2023-11-14T22:13:20Z") == 1_700_000_000_000
    assert parse_time("2023-11-14") == int(datetime(2023, 11, 14).timestamp() * 1000)  # local midnight
    assert parse_step("1m") == parse_step("60") == 60_000 and parse_step("500ms") == 500
    for bad in ("yesterday", "-7x", "7d"):
        with pytest.raises(ValueError, match="relative time"):
            parse_time(bad, now)
    with pytest.raises(ValueError):
        parse_step("0s")


def test_stats_time_sets_send_and_collect_time() -> None:
    (event,) = dry("stats", "--prog-id", "p", "--host-name", "h", "--gauge", "g=1", "--time", "2023-11-14T22:13:20Z")
    msg = StatsMsg.from_lwes(event)
    assert msg.send_time == msg.collect_time == 1_700_000_000_000


def test_stats_until_backfills_one_message_per_step() -> None:
    events = dry("stats", "--prog-id", "p", "--host-name", "h", "--counter", "n=10", "--statset", "lat=2:10:4:6",
                 "--time", "2023-11-14T00:00:00Z", "--until", "2023-11-14T00:04:00Z", "--step", "1m")
    msgs = [StatsMsg.from_lwes(e) for e in events]
    start = 1_699_920_000_000
    assert [m.collect_time for m in msgs] == [start + 60_000 * i for i in range(5)]
    assert [m.metrics[0].value for m in msgs] == [10, 20, 30, 40, 50]  # counters keep growing
    result = invoke("--dry-run", "stats", "--prog-id", "p", "--gauge", "g=1", "--until", "now")
    assert result.exit_code != 0 and "--until needs --time" in result.output


def test_every_subcommand_takes_time() -> None:
    at = "2023-11-14T22:13:20Z"
    (log_event,) = dry("log", "--prog-id", "p", "--priority", "error", "-m", "x", "--time", at)
    assert LogMsg.from_lwes(log_event).send_time == 1_700_000_000_000
    (trace_event,) = dry("trace", "--prog-id", "p", "--owner", "o", "--trace-id", "t", "-m", "x", "--time", at)
    assert trace_event.get("send_time") == 1_700_000_000_000
    (perf_event,) = dry("perf", "--id", "r", "--caller-label", "c", "--timing", "db:0:42", "--time", at)
    timing = PerfMsg.from_lwes(perf_event).timings[0]
    assert (timing.start, timing.end) == (1_700_000_000_000, 1_700_000_000_042)
    (note,) = dry("annotation", "--id", "d", "--description", "deploy", "--time", "-1h")
    assert abs(AnnotationMsg.from_lwes(note).timestamp - (time.time() - 3600) * 1000) < 60_000
    (raw_event,) = dry("raw", "Demo", "n=uint16:7", "--time", at)
    assert raw_event.get("send_time") == 1_700_000_000_000
