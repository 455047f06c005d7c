"""MonDemand::TraceMsg."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mondemand.lwes import Event, LwesType, decode, encode
from mondemand.messages import TRACE_MSG, MessageError, TraceMsg
from mondemand.messages.trace import RESERVED_KEYS
from tests.messages.vectors import vector_bytes, vector_event


def test_v9_c_client_trace():
    msg = TraceMsg.from_lwes(vector_event("V9"))
    assert (msg.prog_id, msg.trace_id, msg.owner, msg.src_host, msg.message) == (
        "myapp", "t-42", "alice", "web01", "checkout",
    )  # fmt: skip
    assert msg.fields == {"cart": "3 items"}
    assert msg.send_time is None


def test_v9_reencodes_byte_identical():
    assert encode(TraceMsg.from_lwes(vector_event("V9")).to_lwes()) == vector_bytes("V9")


def test_all_values_are_strings_except_send_time():
    msg = TraceMsg("p", "t", "o", "h", "m", {"a": "1"}, send_time=1700000000000)
    event = msg.to_lwes()
    assert event.type_of("send_time") is LwesType.INT64
    assert all(event.type_of(k) is LwesType.STRING for k in event if k != "send_time")
    assert "num" not in event and "ctxt_num" not in event
    assert TraceMsg.from_lwes(event) == msg


def test_enc_and_listener_headers_are_not_fields():
    event = TraceMsg("p", "t", "o", "h", "m", {"x": "y"}).to_lwes()
    event.set("enc", LwesType.INT16, 1)
    event.set("ReceiptTime", LwesType.INT64, 5).set("SenderIP", LwesType.IP_ADDR, "1.2.3.4")
    event.set("SenderPort", LwesType.UINT16, 9)
    assert TraceMsg.from_lwes(event).fields == {"x": "y"}


def test_non_string_extra_is_kept_as_text_and_src_host_defaults():
    event = Event(TRACE_MSG)
    for key in ("mondemand.prog_id", "mondemand.trace_id", "mondemand.owner", "mondemand.message"):
        event.set(key, LwesType.STRING, key.upper())
    event.set("items", LwesType.INT32, 3)
    msg = TraceMsg.from_lwes(event)
    assert msg.fields == {"items": "3"}
    assert msg.src_host == "unknown"
    assert msg.owner == "MONDEMAND.OWNER"


@pytest.mark.parametrize("key", sorted(RESERVED_KEYS))
def test_reserved_keys_cannot_be_fields(key):
    with pytest.raises(MessageError, match="reserved"):
        TraceMsg("p", "t", "o", "h", "m", {key: "x"})


@pytest.mark.parametrize("missing", ["mondemand.prog_id", "mondemand.trace_id", "mondemand.owner", "mondemand.message"])
def test_missing_required_key(missing):
    event = vector_event("V9")
    event.remove(missing)
    with pytest.raises(MessageError, match=f"'{missing}' is missing"):
        TraceMsg.from_lwes(event)


def test_wrong_types():
    event = vector_event("V9").set("mondemand.owner", LwesType.INT64, 3)
    with pytest.raises(MessageError, match="must be a string"):
        TraceMsg.from_lwes(event)
    event = vector_event("V9").set("send_time", LwesType.STRING, "now")
    with pytest.raises(MessageError, match="'send_time' must be an integer"):
        TraceMsg.from_lwes(event)


TEXT = st.text(max_size=15)
KEYS = st.text(min_size=1, max_size=20).filter(lambda k: k not in RESERVED_KEYS and len(k.encode()) <= 255)


@given(
    st.builds(
        TraceMsg,
        prog_id=TEXT,
        trace_id=TEXT,
        owner=TEXT,
        src_host=TEXT,
        message=TEXT,
        fields=st.dictionaries(KEYS, TEXT, max_size=5),
        send_time=st.none() | st.integers(-(2**63), 2**63 - 1),
    )
)
def test_trace_round_trip(msg):
    assert TraceMsg.from_lwes(decode(encode(msg.to_lwes()), strict=True)) == msg
