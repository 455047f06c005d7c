"""The `stats_file` backend against real files in a temporary directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mondemand.backends.files.stats_file import BUSY_BATCH, StatsFileBackend
from mondemand.backends.files.textfiles import escape_field, unescape_field

from mondemand.lwes import Event, LwesType
from mondemand.messages import LogLine, LogMsg, Metric, MetricType, Priority, Statset, StatsMsg
from mondemand.safepath import MAX_NAME_BYTES, safe_name, unsafe_name
from tests.backends.files.file_helpers import T0, files_under, make_backend, received

DAY = 86_400_000


def lines(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


@pytest.fixture
def backend(tmp_path):
    b = make_backend(StatsFileBackend, tmp_path)
    yield b
    b.close()


def test_counters_gauges_and_statsets_become_seven_column_lines(tmp_path, backend):
    msg = StatsMsg("myapp", host="web01", context={"cluster": "eu", "dc": "ams"}, metrics=[
        Metric(MetricType.COUNTER, "requests", 600),
        Metric(MetricType.GAUGE, "queue", -17),
        Metric(MetricType.STATSET, "latency", Statset(count=5, sum=100, min=10, max=30, pctl_99=29)),
    ], send_time=T0 + 5_000, collect_time=T0 + 2_000)
    backend.handle(received(msg, receipt_ms=T0 + 9_000))
    path = tmp_path / "2023" / "11" / "14" / "myapp" / "web01"
    assert files_under(tmp_path) == [path]
    assert lines(path) == [
        ["2023/11/14 22:13:25", "web01", "myapp", "counter", "requests", "600", "cluster=eu-dc=ams"],
        ["2023/11/14 22:13:25", "web01", "myapp", "gauge", "queue", "-17", "cluster=eu-dc=ams"],
        ["2023/11/14 22:13:22", "web01", "myapp", "count", "latency", "5", "cluster=eu-dc=ams"],
        ["2023/11/14 22:13:22", "web01", "myapp", "sum", "latency", "100", "cluster=eu-dc=ams"],
        ["2023/11/14 22:13:22", "web01", "myapp", "min", "latency", "10", "cluster=eu-dc=ams"],
        ["2023/11/14 22:13:22", "web01", "myapp", "max", "latency", "30", "cluster=eu-dc=ams"],
        ["2023/11/14 22:13:22", "web01", "myapp", "pctl_99", "latency", "29", "cluster=eu-dc=ams"],
    ]
    assert backend.counters()["stats_sent_count"] == 3
    assert backend.counters()["lines_written"] == 7


def test_without_message_times_the_receipt_time_dates_every_line(tmp_path, backend):
    msg = StatsMsg("app", host="h", metrics=[Metric(MetricType.COUNTER, "c", 1),
                                              Metric(MetricType.STATSET, "s", Statset(count=2))])
    backend.handle(received(msg, receipt_ms=T0 + DAY))
    [path] = files_under(tmp_path)
    assert path == tmp_path / "2023" / "11" / "15" / "app" / "h"
    assert [row[0] for row in lines(path)] == ["2023/11/15 22:13:20"] * 2
    assert lines(path)[0][6] == ""  # no context: the column is there, empty


def test_statsets_and_counters_of_one_message_may_land_on_different_days(tmp_path, backend):
    msg = StatsMsg("app", host="h", metrics=[Metric(MetricType.GAUGE, "g", 3),
                                              Metric(MetricType.STATSET, "s", Statset(max=9))],
                   send_time=T0 + DAY, collect_time=T0)
    backend.handle(received(msg))
    assert files_under(tmp_path) == [tmp_path / "2023/11/14/app/h", tmp_path / "2023/11/15/app/h"]
    assert lines(tmp_path / "2023/11/14/app/h")[0][3:6] == ["max", "s", "9"]
    assert lines(tmp_path / "2023/11/15/app/h")[0][3:6] == ["gauge", "g", "3"]


def test_unusable_message_times_fall_back_to_the_receipt_time(tmp_path, backend):
    msg = StatsMsg("app", host="h", metrics=[Metric(MetricType.GAUGE, "g", 3)], send_time=-5)
    backend.handle(received(msg, receipt_ms=T0))
    assert lines(tmp_path / "2023/11/14/app/h")[0][0] == "2023/11/14 22:13:20"


def test_the_context_delimiter_is_an_option(tmp_path):
    backend = make_backend(StatsFileBackend, tmp_path, context_delimiter=",")
    backend.handle(received(StatsMsg("a", host="h", context={"x": "1", "y": "2"},
                                     metrics=[Metric(MetricType.COUNTER, "c", 1)])))
    backend.close()
    assert lines(tmp_path / "2023/11/14/a/h")[0][6] == "x=1,y=2"


def test_context_pairs_are_written_sorted_whatever_order_they_were_sent_in(tmp_path, backend):
    for context in ({"zone": "b", "app": "x"}, {"app": "x", "zone": "b"}):
        backend.handle(received(StatsMsg("a", host="h", context=context, metrics=[Metric(MetricType.GAUGE, "g", 1)])))
    backend.close()
    assert [row[6] for row in lines(tmp_path / "2023/11/14/a/h")] == ["app=x-zone=b", "app=x-zone=b"]


def test_an_event_failing_halfway_leaves_no_line_behind(tmp_path, backend):
    class Exploding(int):
        def __format__(self, spec):
            raise ValueError("cannot be written")

    [good] = received(StatsMsg("a", host="h", metrics=[Metric(MetricType.GAUGE, "g", 1)]))
    [bad] = received(StatsMsg("a", host="h", metrics=[Metric(MetricType.GAUGE, "first", 1),
                                                       Metric(MetricType.GAUGE, "second", 2)]))
    record = bad.stats
    bad._stats = (*record[:8], (1, Exploding(2)))
    rejected = []
    backend.reject_hook = lambda raw, reason: rejected.append(raw)
    backend.handle([good, bad])
    backend.close()
    assert [row[4] for row in lines(tmp_path / "2023/11/14/a/h")] == ["g"] and rejected == [bad]


def test_tabs_and_newlines_from_the_wire_cannot_break_a_line(tmp_path, backend):
    msg = StatsMsg("a", host="h", context={"note": "two\tcols\nand\\lines"},
                   metrics=[Metric(MetricType.COUNTER, "bad\tname\r", 1)])
    backend.handle(received(msg))
    [row] = lines(tmp_path / "2023/11/14/a/h")
    assert len(row) == 7
    assert unescape_field(row[4]) == "bad\tname\r"
    assert unescape_field(row[6]) == "note=two\tcols\nand\\lines"
    assert escape_field("plain") == "plain"


UNSAFE = ["..", "../../etc", "a/b", "/abs", ".hidden", "nul\0byte", "x" * 400, "", "é%~"]


@pytest.mark.parametrize("name", UNSAFE)
def test_wire_names_that_could_escape_the_root_land_inside_it(tmp_path, name):
    root = tmp_path / "root"
    backend = make_backend(StatsFileBackend, root)
    backend.handle(received(StatsMsg(name, host=name, metrics=[Metric(MetricType.COUNTER, "c", 1)])))
    backend.close()
    [path] = files_under(root)
    assert path == root / "2023/11/14" / safe_name(name) / safe_name(name)
    assert len(path.name.encode()) <= MAX_NAME_BYTES
    assert not any(part in (".", "..") or part.startswith(".") for part in path.relative_to(root).parts)
    if len(name) < 60:
        assert unsafe_name(path.name) == name  # listings can show what was sent
    assert list(tmp_path.iterdir()) == [root]  # nothing written beside the root


def test_one_write_per_file_per_batch(tmp_path, backend):
    batch = []
    for i in range(50):
        batch += received(StatsMsg("a", host=f"h{i % 2}", metrics=[Metric(MetricType.COUNTER, "c", i)]))
    backend.handle(batch)
    assert backend.files.writes == 2
    assert backend.files.opens == 2
    assert len(lines(tmp_path / "2023/11/14/a/h0")) == 25
    backend.handle(batch)
    assert backend.files.opens == 2  # handles were kept open
    assert len(lines(tmp_path / "2023/11/14/a/h1")) == 50


def test_reopen_after_the_file_was_moved_writes_a_new_file(tmp_path, backend):
    msg = StatsMsg("a", host="h", metrics=[Metric(MetricType.COUNTER, "c", 1)])
    path = tmp_path / "2023/11/14/a/h"
    backend.handle(received(msg))
    path.rename(tmp_path / "rotated")
    backend.handle(received(msg))  # still the moved file's descriptor
    assert len(lines(tmp_path / "rotated")) == 2 and not path.exists()
    backend.reopen()
    backend.handle(received(msg))
    assert len(lines(path)) == 1
    assert len(lines(tmp_path / "rotated")) == 2
    assert backend.counters()["reopens"] == 1


def test_idle_files_are_closed_on_flush(tmp_path):
    backend = make_backend(StatsFileBackend, tmp_path, idle_timeout="0s")
    backend.handle(received(StatsMsg("a", host="h", metrics=[Metric(MetricType.COUNTER, "c", 1)])))
    assert backend.counters()["open_files"] == 1
    backend.flush()
    assert backend.counters()["open_files"] == 0
    backend.close()


def test_a_file_that_cannot_be_written_loses_only_its_own_lines(tmp_path, backend):
    blocker = tmp_path / "2023/11/14/broken"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where a directory should be")
    batch = received(StatsMsg("broken", host="h", metrics=[Metric(MetricType.COUNTER, "c", 1)]))
    batch += received(StatsMsg("fine", host="h", metrics=[Metric(MetricType.COUNTER, "c", 2)]))
    backend.handle(batch)
    assert lines(tmp_path / "2023/11/14/fine/h")[0][5] == "2"
    counters = backend.counters()
    assert counters["write_errors"] == 1 and counters["lines_dropped"] == 1 and counters["lines_written"] == 1


def test_a_symlink_out_of_the_root_is_refused(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    (root / "2023/11/14").mkdir(parents=True)
    os.symlink(outside, root / "2023/11/14/app")
    backend = make_backend(StatsFileBackend, root)
    backend.handle(received(StatsMsg("app", host="h", metrics=[Metric(MetricType.COUNTER, "c", 1)])))
    backend.close()
    assert list(outside.iterdir()) == []
    assert backend.counters()["path_errors"] == 1 and backend.counters()["lines_dropped"] == 1


def test_other_events_are_skipped_and_counted(tmp_path, backend):
    log = LogMsg("a", host="h", lines=[LogLine("f.c", 1, Priority.ERROR, "m")])
    backend.handle(received(log) + received(Event("Other::Thing").set("x", LwesType.INT32, 1)))
    assert files_under(tmp_path) == []
    assert backend.counters()["skipped_events"] == 2


def test_metrics_of_types_this_library_does_not_know_keep_their_type_name(tmp_path, backend):
    msg = StatsMsg("a", host="h", metrics=[
        Metric("gcounter", "g", 12),
        Metric(MetricType.UNKNOWN, "arr", [1, 2], type_name="histogram", value_type=LwesType.INT32_ARRAY),
    ])
    backend.handle(received(msg))
    assert lines(tmp_path / "2023/11/14/a/h") == [["2023/11/14 22:13:20", "h", "a", "gcounter", "g", "12", ""]]
    assert backend.counters()["unwritten_metrics"] == 1


def test_an_existing_file_is_appended_to(tmp_path, backend):
    path = tmp_path / "2023/11/14/a/h"
    path.parent.mkdir(parents=True)
    path.write_text("earlier line\n")
    backend.handle(received(StatsMsg("a", host="h", metrics=[Metric(MetricType.COUNTER, "c", 1)])))
    assert path.read_text().splitlines()[0] == "earlier line"
    assert len(path.read_text().splitlines()) == 2


# -- the per-shape plans and the deferred writes give the plain path's files --------------------------------------

_SHAPES = [  # (prog_id, host, context, metrics as (type, name))
    ("app", "web01", {"cluster": "eu"}, (("counter", "requests"), ("gauge", "queue"))),
    ("app", "web02", {}, (("counter", "c"), ("counter", "c"))),  # a name twice
    ("odd{0}", "h\tx", {"k": "v{1}\n", "a": "b"}, (("gauge", "g}{"), ("counter", "back\\slash"))),
    ("..", "h", {}, (("gauge", "g"),)),  # a prog_id that is not a safe path
    ("app", "web01", {"cluster": "eu"}, (("statset", "latency"), ("gauge", "queue"))),  # plain path only
    ("app", "web03", {}, (("weird", "w"),)),  # an unknown type: plain path only
]
#: send_time choices: valid (around midnight UTC of T0's day), missing, unusable.
_TIMES = st.sampled_from([T0, T0 + 1, T0 + 7_199_999, T0 + 7_200_000, T0 + DAY, None, 0, -5, 2**62])


def _raw(shape: int, values: list[int], send_time: int | None) -> Any:
    prog_id, host, context, metrics = _SHAPES[shape]
    out = []
    for (kind, name), value in zip(metrics, values, strict=False):
        if kind == "statset":
            out.append(Metric(MetricType.STATSET, name, Statset(count=1, sum=value, min=value, max=value)))
        elif kind == "weird":
            out.append(Metric(MetricType.UNKNOWN, name, value, type_name=kind))
        else:
            out.append(Metric(MetricType(kind), name, value))
    msg = StatsMsg(prog_id, host=host, context=dict(context), metrics=out, send_time=send_time)
    [raw] = received(msg, receipt_ms=T0 + 3_000)
    return raw


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(st.lists(st.tuples(st.integers(0, len(_SHAPES) - 1),
                                           st.lists(st.integers(-(2**63), 2**63 - 1), min_size=2, max_size=2),
                                           _TIMES), min_size=1, max_size=30), min_size=1, max_size=5),
       plans_max=st.sampled_from([2, 16384]), write_interval=st.sampled_from(["0", "1m"]))  # fmt: skip
def test_plans_and_deferred_writes_give_the_plain_paths_files(tmp_path_factory, batches, plans_max,
                                                             write_interval):
    roots = [tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("planned")]
    plain = make_backend(StatsFileBackend, roots[0], write_interval="0")
    planned = make_backend(StatsFileBackend, roots[1], write_interval=write_interval)
    plain.use_plans, planned.max_plans = False, plans_max
    for batch in batches:
        events = [_raw(*item) for item in batch]
        # Long batches are what defer the writes: repeat the batch so that it reaches BUSY_BATCH.
        if write_interval != "0":
            events = events * (-(-BUSY_BATCH // len(events)))
        for backend in (plain, planned):
            backend.handle(events)
    for backend in (plain, planned):
        backend.close()
    trees = [{p.relative_to(root): p.read_bytes() for p in files_under(root)} for root in roots]
    assert trees[0] == trees[1]
    assert {k: v for k, v in plain.counters().items() if k != "open_files"} == \
        {k: v for k, v in planned.counters().items() if k != "open_files"}


def test_busy_batches_wait_for_write_interval_and_small_ones_do_not(tmp_path):
    backend = make_backend(StatsFileBackend, tmp_path, write_interval="1m")
    path = tmp_path / "2023" / "11" / "14" / "app" / "web02"
    busy = [_raw(1, [i, i + 1], T0 + i) for i in range(BUSY_BATCH)]
    backend.handle(busy)  # the first batch is written: nothing was waiting yet
    assert len(lines(path)) == 2 * BUSY_BATCH
    backend.handle(busy)
    assert len(lines(path)) == 2 * BUSY_BATCH and backend.pending_chars > 0  # waits
    backend.handle(busy[:3])  # a small batch: the server is not busy, everything is written
    assert len(lines(path)) == 2 * (2 * BUSY_BATCH + 3) and backend.pending_chars == 0
    backend.handle(busy)
    backend.flush()  # the runner's periodic flush writes what waits
    assert len(lines(path)) == 2 * (3 * BUSY_BATCH + 3)
    small_buffer = make_backend(StatsFileBackend, tmp_path / "b", write_interval="1m", write_buffer_bytes="4096")
    small_buffer.handle(busy)
    small_buffer.handle(busy)  # over write_buffer_bytes: written at once
    assert small_buffer.counters()["lines_written"] == 4 * BUSY_BATCH
    backend.close()
    small_buffer.close()
