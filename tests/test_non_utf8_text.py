"""LWES strings are bytes: every text output writes what is not UTF-8 as \\xe9 and stays valid UTF-8."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mondemand.backends.files.log_file import LogFileBackend
from mondemand.backends.files.stats_file import StatsFileBackend
from mondemand.backends.printer import PrintBackend

from mondemand.envelope import RawEvent
from mondemand.lwes import Event, LwesType, encode
from mondemand.messages import LogLine, LogMsg, Metric, MetricType, Priority, StatsMsg
from mondemand.options import parse_options
from mondemand.plugin_api import ServerContext
from mondemand.text import escape_bytes, escape_repr, escape_value
from tests.backends.files.file_helpers import files_under, make_backend, received
from tests.cli.test_dump import dumps, start  # noqa: F401 - the fixture
from tests.e2e.harness import free_port, send_udp

#: "café" sent as ISO-8859-1: the byte 0xE9 is not UTF-8, so the decoders keep it as U+DCE9.
CAFE = b"caf\xe9".decode("utf-8", "surrogateescape")
RECEIPT = 1_700_000_000_123


def datagram() -> bytes:
    event = Event("Demo::Thing")
    event.set("who", LwesType.STRING, CAFE)
    event.set("said", LwesType.STRING, f"{CAFE} au lait")
    event.set(f"k{CAFE}", LwesType.STRING_ARRAY, [CAFE, "ok"])
    return encode(event)


def test_escape_bytes_writes_non_utf8_bytes_as_hex_and_keeps_text():
    assert escape_bytes(CAFE) == "caf\\xe9"
    assert escape_bytes("café ☕") == "café ☕"
    assert escape_bytes("\ud800") == "\\ud800"
    assert escape_repr(f"{CAFE} x") == "'caf\\xe9 x'"
    assert escape_repr("a\\udce9") == repr("a\\udce9")  # a real backslash stays a backslash
    assert escape_value({CAFE: [CAFE, 1]}) == {"caf\\xe9": ["caf\\xe9", 1]}


@given(st.binary())
def test_escaped_text_is_always_utf8(data):
    escape_bytes(data.decode("utf-8", "surrogateescape")).encode("utf-8")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_print_escapes_non_utf8_and_creates_its_directory(tmp_path, fmt):
    path = tmp_path / "not" / "yet" / "events.log"
    values, problems = parse_options(PrintBackend.options, {"path": str(path), "format": fmt})
    assert problems == []
    backend = PrintBackend("out", values, ServerContext())
    backend.start()
    backend.handle([RawEvent(datagram(), RECEIPT, "10.0.0.7", 4242, "main")])
    backend.close()
    text = path.read_bytes().decode("utf-8")  # strict: the file is valid UTF-8
    if fmt == "text":
        assert text.endswith("Demo::Thing who=caf\\xe9 said='caf\\xe9 au lait' kcaf\\xe9=['caf\\xe9', 'ok']\n")
    else:
        attrs = json.loads(text)["attrs"]
        assert attrs["who"] == "caf\\xe9" and attrs["said"] == "caf\\xe9 au lait"
        assert attrs["kcaf\\xe9"] == ["caf\\xe9", "ok"]


@pytest.mark.parametrize("as_json", [False, True])
def test_dump_escapes_non_utf8(dumps, as_json):  # noqa: F811 - the fixture
    port = free_port()
    dump = start(dumps, "--address", "127.0.0.1", "-p", str(port), "--count", "1", *(["--json"] if as_json else []))
    send_udp(datagram(), port)
    code, out, err = dump.finish()
    assert code == 0, err
    if as_json:
        assert json.loads(out)["attrs"]["who"] == "caf\\xe9"
    else:
        assert "Demo::Thing who=caf\\xe9 said=\"caf\\xe9 au lait\"" in out


def test_log_and_stats_files_escape_non_utf8(tmp_path):
    logs = make_backend(LogFileBackend, tmp_path / "logs")
    logs.handle(received(LogMsg(CAFE, host="web01", lines=[LogLine("x.c", 1, Priority.ERROR, f"{CAFE} closed")])))
    logs.close()
    stats = make_backend(StatsFileBackend, tmp_path / "stats")
    stats.handle(received(StatsMsg("shop", host=CAFE, metrics=[Metric(MetricType.GAUGE, f"q_{CAFE}", 3)])))
    stats.close()
    [log_path] = files_under(tmp_path / "logs")
    [stats_path] = files_under(tmp_path / "stats")
    assert log_path.parent.name == "caf%E9" and stats_path.name == "caf%E9"  # safe_name keeps the byte
    log_line = log_path.read_bytes().decode("utf-8")
    stats_line = stats_path.read_bytes().decode("utf-8")
    assert "caf\\xe9 closed" in log_line
    assert "q_caf\\xe9" in stats_line
