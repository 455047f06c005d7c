"""MonDemand::LogMsg."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mondemand.lwes import Event, LwesType, decode, encode
from mondemand.messages import LOG_MSG, LogLine, LogMsg, MessageError, Priority
from tests.messages.vectors import vector_bytes, vector_event


def test_v5_c_client_log():
    msg = LogMsg.from_lwes(vector_event("V5"))
    assert msg.prog_id == "myapp"
    assert msg.host == "web01"
    assert msg.context == {}
    assert msg.send_time is None
    assert msg.lines == [LogLine("main.c", 42, Priority.ERROR, "disk full", repeat=3)]
    assert msg.lines[0].priority.label == "error"
    assert msg.lines[0].trace_id is None


def test_v5_reencodes_byte_identical():
    assert encode(LogMsg.from_lwes(vector_event("V5")).to_lwes()) == vector_bytes("V5")


def test_repeat_written_only_above_one_and_read_as_one_when_missing():
    msg = LogMsg("p", lines=[LogLine("a.c", 1, Priority.INFO, "once"), LogLine("b.c", 2, Priority.DEBUG, "x", 2)])
    event = msg.to_lwes()
    assert "r0" not in event
    assert event["r1"] == 2 and event.type_of("r1") is LwesType.UINT16
    assert LogMsg.from_lwes(event).lines[0].repeat == 1
    assert LogMsg.from_lwes(event) == msg


def test_wire_types_and_trace_id():
    line = LogLine("f.py", 7, Priority.WARNING, "careful", trace_id=2**64 - 1)
    msg = LogMsg("p", host="h", context={"k": "v"}, lines=[line], send_time=1700000000000)
    event = msg.to_lwes()
    assert [event.type_of(k) for k in ("trace_id0", "l0", "p0", "send_time")] == [
        LwesType.UINT64,
        LwesType.UINT32,
        LwesType.UINT32,
        LwesType.INT64,
    ]
    assert event["p0"] == 4
    assert event["ctxt_num"] == 2 and event["ctxt_k1"] == "host"
    assert LogMsg.from_lwes(decode(encode(event), strict=True)) == msg


def test_priority_names():
    assert [p.label for p in Priority] == [
        "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug", "all",
    ]  # fmt: skip
    assert Priority.from_name("error") is Priority.ERROR
    assert Priority.from_name("WARNING") is Priority.WARNING
    assert Priority.from_name("8") is Priority.ALL
    for bad in ("fatal", "9", ""):
        with pytest.raises(MessageError, match="priority"):
            Priority.from_name(bad)


@pytest.mark.parametrize(
    "kwargs",
    [{"repeat": 0}, {"repeat": 70000}, {"priority": 9}, {"line": -1}, {"trace_id": -1}, {"message": 5}],
)
def test_bad_log_line(kwargs):
    args = {"file": "f", "line": 1, "priority": Priority.INFO, "message": "m"} | kwargs
    with pytest.raises(MessageError):
        LogLine(**args)


def log_event(**attrs: tuple[LwesType, object]) -> Event:
    event = Event(LOG_MSG)
    base = {
        "prog_id": (LwesType.STRING, "p"),
        "num": (LwesType.UINT16, 1),
        "f0": (LwesType.STRING, "f"),
        "l0": (LwesType.UINT32, 1),
        "p0": (LwesType.UINT32, 3),
        "m0": (LwesType.STRING, "m"),
    }
    for key, (typ, value) in (base | attrs).items():
        if typ is not None:
            event.set(key, typ, value)
    return event


def test_minimal_event_decodes():
    msg = LogMsg.from_lwes(log_event())
    assert msg.lines == [LogLine("f", 1, Priority.ERROR, "m")]
    assert msg.host == "unknown"


@pytest.mark.parametrize(
    ("attrs", "pattern"),
    [
        ({"prog_id": (None, None)}, "'prog_id' is missing"),
        ({"num": (LwesType.UINT16, 2)}, "num is 2 but 'p1' is missing"),
        ({"m0": (None, None)}, "'m0' is missing"),
        ({"p0": (LwesType.UINT32, 12)}, "not a priority"),
        ({"l0": (LwesType.STRING, "42")}, "'l0' must be an integer"),
        ({"m0": (LwesType.INT32, 1)}, "'m0' must be a string"),
        ({"r0": (LwesType.UINT16, 0)}, "repeat"),
        ({"trace_id0": (LwesType.STRING, "x")}, "'trace_id0'"),
        ({"ctxt_num": (LwesType.UINT16, 1)}, "ctxt_num is 1"),
    ],
)
def test_malformed_log_raises_message_error(attrs, pattern):
    with pytest.raises(MessageError, match=pattern):
        LogMsg.from_lwes(log_event(**attrs))


TEXT = st.text(max_size=15)
LINES = st.builds(
    LogLine,
    file=TEXT,
    line=st.integers(0, 2**32 - 1),
    priority=st.sampled_from(list(Priority)),
    message=TEXT,
    repeat=st.integers(1, 65535),
    trace_id=st.none() | st.integers(0, 2**64 - 1),
)


@given(
    st.builds(
        LogMsg,
        prog_id=TEXT,
        host=TEXT,
        context=st.dictionaries(TEXT.filter(lambda k: k != "host"), TEXT, max_size=3),
        lines=st.lists(LINES, max_size=8),
        send_time=st.none() | st.integers(-(2**63), 2**63 - 1),
    )
)
def test_log_round_trip(msg):
    assert LogMsg.from_lwes(decode(encode(msg.to_lwes()), strict=True)) == msg
