"""MonDemand::AnnotationMsg."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mondemand.lwes import LwesType, decode, encode
from mondemand.messages import AnnotationMsg, MessageError
from tests.messages.vectors import vector_bytes, vector_event


def test_v8_c_client_annotation():
    msg = AnnotationMsg.from_lwes(vector_event("V8"))
    assert msg == AnnotationMsg("deploy-7", 1700000000000, "deploy", "v1.2.3", ["release"], {})


def test_v8_reencodes_byte_identical():
    assert encode(AnnotationMsg.from_lwes(vector_event("V8")).to_lwes()) == vector_bytes("V8")


def test_uint64_timestamp_accepted_and_int64_written():
    event = vector_event("V8").set("timestamp", LwesType.UINT64, 1700000000000)
    msg = AnnotationMsg.from_lwes(event)
    assert msg.timestamp == 1700000000000
    assert msg.to_lwes().type_of("timestamp") is LwesType.INT64


def test_optional_parts_are_omitted():
    msg = AnnotationMsg("a", 1, "d")
    event = msg.to_lwes()
    assert list(event) == ["id", "timestamp", "description"]
    assert AnnotationMsg.from_lwes(event) == msg
    assert msg.text is None and msg.tags == []


def test_host_stays_in_annotation_context():
    msg = AnnotationMsg("a", 1, "d", context={"host": "web1", "env": "prod"})
    decoded = AnnotationMsg.from_lwes(msg.to_lwes())
    assert decoded.context == {"host": "web1", "env": "prod"}
    assert decoded == msg


def test_timestamp_too_large_for_int64():
    msg = AnnotationMsg.from_lwes(vector_event("V8").set("timestamp", LwesType.UINT64, 2**64 - 1))
    with pytest.raises(MessageError, match="out of range for int64"):
        msg.to_lwes()


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda e: e.remove("description"), "'description' is missing"),
        (lambda e: e.remove("timestamp"), "'timestamp' is missing"),
        (lambda e: e.set("timestamp", LwesType.STRING, "now"), "'timestamp' must be an integer"),
        (lambda e: e.set("tag_num", LwesType.UINT16, 2), "tag_num is 2 but 'tag1' is missing"),
        (lambda e: e.set("text", LwesType.INT32, 2), "'text' must be a string"),
        (lambda e: e.set("ctxt_num", LwesType.UINT16, 1), "ctxt_num is 1"),
    ],
)
def test_malformed_annotation(mutate, pattern):
    event = vector_event("V8")
    mutate(event)
    with pytest.raises(MessageError, match=pattern):
        AnnotationMsg.from_lwes(event)


TEXT = st.text(max_size=15)


@given(
    st.builds(
        AnnotationMsg,
        TEXT,
        st.integers(-(2**63), 2**63 - 1),
        TEXT,
        st.none() | TEXT,
        st.lists(TEXT, max_size=5),
        st.dictionaries(TEXT, TEXT, max_size=3),
    )
)
def test_annotation_round_trip(msg):
    assert AnnotationMsg.from_lwes(decode(encode(msg.to_lwes()), strict=True)) == msg
