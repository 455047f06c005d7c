"""The `log_file` backend against real files in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from mondemand.backends.files.log_file import LogFileBackend
from mondemand.backends.files.textfiles import unescape_field

from mondemand.envelope import RawEvent
from mondemand.lwes import Event, LwesType, add_headers
from mondemand.messages import LogLine, LogMsg, Metric, MetricType, Priority, StatsMsg
from mondemand.safepath import safe_name
from tests.backends.files.file_helpers import T0, files_under, make_backend, received


def rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


@pytest.fixture
def backend(tmp_path):
    b = make_backend(LogFileBackend, tmp_path)
    yield b
    b.close()


def test_each_log_line_becomes_a_line_dated_by_the_receipt_time(tmp_path, backend):
    msg = LogMsg("myapp", host="web01", context={"dc": "ams", "pool": "b"}, lines=[
        LogLine("main.c", 42, Priority.ERROR, "disk full"),
        LogLine("net.c", 7, Priority.DEBUG, "retrying", repeat=3),
        LogLine("x.py", 0, Priority.ALL, "everything"),
    ], send_time=T0 - 86_400_000)  # the reference dates log lines by receipt, not send_time
    backend.handle(received(msg, receipt_ms=T0 + 1_500))
    path = tmp_path / "2023/11/14/myapp/web01"
    assert files_under(tmp_path) == [path]
    assert rows(path) == [
        ["2023/11/14 22:13:21", "error", "main.c:42", "disk full", "dc=ams-pool=b"],
        ["2023/11/14 22:13:21", "debug", "net.c:7", "retrying", "repeats 3 times", "dc=ams-pool=b"],
        ["2023/11/14 22:13:21", "all", "x.py:0", "everything", "dc=ams-pool=b"],
    ]
    assert backend.counters()["log_lines"] == 3


@pytest.mark.parametrize("priority", list(Priority))
def test_every_priority_has_its_name(tmp_path, backend, priority):
    backend.handle(received(LogMsg("a", host="h", lines=[LogLine("f", 1, priority, "m")])))
    assert rows(tmp_path / "2023/11/14/a/h")[0][1] == priority.name.lower()


def test_a_multi_line_message_stays_one_line(tmp_path, backend):
    text = "Traceback:\n  File \"x\", line 1\n\tValueError: bad\\value"
    backend.handle(received(LogMsg("a", host="h", lines=[LogLine("f", 1, Priority.CRIT, text)])))
    [row] = rows(tmp_path / "2023/11/14/a/h")
    assert unescape_field(row[3]) == text


def test_a_forwarded_event_keeps_its_original_receipt_time(tmp_path, backend):
    [raw] = received(LogMsg("a", host="h", lines=[LogLine("f", 1, Priority.INFO, "m")]))
    forwarded = RawEvent(add_headers(raw.data, T0 + 3 * 86_400_000, "10.0.0.1", 5), T0, "10.9.9.9", 1)
    backend.handle([forwarded])
    assert files_under(tmp_path) == [tmp_path / "2023/11/17/a/h"]


@pytest.mark.parametrize("name", ["..", "a/../../b", "nul\0", "y" * 300])
def test_wire_names_stay_inside_the_root(tmp_path, name):
    root = tmp_path / "logs"
    backend = make_backend(LogFileBackend, root)
    backend.handle(received(LogMsg(name, host=name, lines=[LogLine("f", 1, Priority.INFO, "m")])))
    backend.close()
    assert files_under(root) == [root / "2023/11/14" / safe_name(name) / safe_name(name)]
    assert list(tmp_path.iterdir()) == [root]


def test_other_events_are_skipped_and_counted(tmp_path, backend):
    stats = StatsMsg("a", metrics=[Metric(MetricType.COUNTER, "c", 1)])
    backend.handle(received(stats) + received(Event("X").set("n", LwesType.UINT16, 1)))
    assert files_under(tmp_path) == []
    assert backend.counters()["skipped_events"] == 2


def test_reopen_starts_a_new_file_after_rotation(tmp_path, backend):
    msg = LogMsg("a", host="h", lines=[LogLine("f", 1, Priority.INFO, "m")])
    backend.handle(received(msg))
    path = tmp_path / "2023/11/14/a/h"
    path.rename(tmp_path / "old")
    backend.reopen()
    backend.handle(received(msg))
    assert len(rows(path)) == 1 and len(rows(tmp_path / "old")) == 1
