"""MonDemand::PerfMsg."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mondemand.lwes import LwesType, decode, encode
from mondemand.messages import MessageError, PerfMsg, Timing
from tests.messages.vectors import vector_bytes, vector_event


def test_v7_perf():
    msg = PerfMsg.from_lwes(vector_event("V7"))
    assert msg.id == "req-1"
    assert msg.caller_label == "frontend"
    assert msg.timings == [Timing("db", 1700000000000, 1700000000042)]
    assert msg.timings[0].duration == 42
    assert msg.host == "unknown"
    assert msg.context == {}


def test_v7_reencodes_byte_identical():
    assert encode(PerfMsg.from_lwes(vector_event("V7")).to_lwes()) == vector_bytes("V7")


def test_host_and_context_round_trip():
    msg = PerfMsg("r", "lbl", [Timing("a", 1, 2), Timing("b", 2, 5)], host="web9", context={"dc": "x"})
    event = msg.to_lwes()
    assert event["num"] == 2
    assert event.type_of("start1") is LwesType.INT64 and event.type_of("end1") is LwesType.INT64
    assert (event["ctxt_k1"], event["ctxt_v1"]) == ("host", "web9")
    assert PerfMsg.from_lwes(event) == msg


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda e: e.set("num", LwesType.UINT16, 2), "num is 2 but 'label1' is missing"),
        (lambda e: e.set("start0", LwesType.STRING, "x"), "'start0' must be an integer"),
        (lambda e: e.remove("id"), "'id' is missing"),
        (lambda e: e.remove("caller_label"), "'caller_label' is missing"),
        (lambda e: e.remove("end0"), "'end0' is missing"),
        (lambda e: e.set("label0", LwesType.INT32, 1), "'label0' must be a string"),
    ],
)
def test_malformed_perf(mutate, pattern):
    event = vector_event("V7")
    mutate(event)
    with pytest.raises(MessageError, match=pattern):
        PerfMsg.from_lwes(event)


def test_timing_values_are_checked():
    with pytest.raises(MessageError):
        Timing("x", "1", 2)
    with pytest.raises(MessageError):
        Timing("x", 1, 2**63)


TEXT = st.text(max_size=15)
MS = st.integers(-(2**63), 2**63 - 1)


@given(
    st.builds(
        PerfMsg,
        TEXT,
        TEXT,
        st.lists(st.builds(Timing, TEXT, MS, MS), max_size=6),
        TEXT,
        st.dictionaries(TEXT.filter(lambda k: k != "host"), TEXT, max_size=3),
    )
)
def test_perf_round_trip(msg):
    assert PerfMsg.from_lwes(decode(encode(msg.to_lwes()), strict=True)) == msg
