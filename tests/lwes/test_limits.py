"""Encoder and decoder limits give clear errors."""

from __future__ import annotations

import pytest

from mondemand.lwes import (
    MAX_DATAGRAM,
    Event,
    LwesDecodeError,
    LwesEncodeError,
    LwesType,
    decode,
    encode,
    peek_name,
)


def test_datagram_over_65507_bytes_is_refused():
    # name (1+5) + count (2) + key (1+1) + type (1) + length (2) = 13 bytes of framing
    fits = Event("Event").set("s", LwesType.STRING, "x" * (MAX_DATAGRAM - 13))
    assert len(encode(fits)) == MAX_DATAGRAM
    too_big = Event("Event").set("s", LwesType.STRING, "x" * (MAX_DATAGRAM - 12))
    with pytest.raises(LwesEncodeError, match="65508 bytes, over the 65507-byte limit"):
        encode(too_big)
    assert len(encode(too_big, max_size=70000)) == MAX_DATAGRAM + 1


def test_decoding_more_than_65535_bytes_is_refused():
    raw = encode(Event("E").set("s", LwesType.LONG_STRING, "x" * 70000), max_size=1 << 20)
    with pytest.raises(LwesDecodeError) as info:
        decode(raw, long_strings=True)
    assert info.value.kind == "too-large"
    assert decode(raw, long_strings=True, max_size=1 << 20)["s"] == "x" * 70000


@pytest.mark.parametrize("name", ["", "n" * 256, "é" * 128])
def test_event_names_must_be_1_to_255_bytes(name):
    with pytest.raises(LwesEncodeError, match="event name"):
        encode(Event(name))


def test_attribute_names_must_be_1_to_255_bytes():
    assert decode(encode(Event("E").set("k" * 255, LwesType.BOOLEAN, True)))["k" * 255] is True
    with pytest.raises(LwesEncodeError, match="attribute name"):
        encode(Event("E").set("k" * 256, LwesType.BOOLEAN, True))


@pytest.mark.parametrize(
    ("typ", "value"),
    [
        (LwesType.UINT16, 65536),
        (LwesType.UINT16, -1),
        (LwesType.INT16, 40000),
        (LwesType.INT32, 2**31),
        (LwesType.UINT64, -1),
        (LwesType.INT64, 2**63),
        (LwesType.BYTE, 256),
        (LwesType.INT32, "12"),
        (LwesType.STRING, 12),
    ],
)
def test_out_of_range_or_mistyped_values_name_the_attribute(typ, value):
    with pytest.raises(LwesEncodeError, match=r"^attr: "):
        encode(Event("E", {"attr": (typ, value)}))


@pytest.mark.parametrize("ip", ["1.2.3", "1.2.3.256", "a.b.c.d", "1.2.3.4.5", "-1.2.3.4"])
def test_bad_ip_addresses_are_refused(ip):
    with pytest.raises(LwesEncodeError, match="IPv4"):
        encode(Event("E", {"ip": (LwesType.IP_ADDR, ip)}))


def test_none_only_in_nullable_arrays():
    with pytest.raises(LwesEncodeError, match="None in a non-nullable array"):
        encode(Event("E", {"a": (LwesType.INT32_ARRAY, [1, None])}))
    ev = Event("E", {"a": (LwesType.NULLABLE_INT32_ARRAY, [1, None])})
    assert decode(encode(ev)) == ev


def test_unknown_type_id_reports_its_offset():
    raw = b"\x01E\x00\x01\x01a\x42\x00"
    with pytest.raises(LwesDecodeError) as info:
        decode(raw)
    assert (info.value.kind, info.value.offset) == ("bad-type-id", 6)
    assert "0x42" in str(info.value)


def test_nullable_array_with_differing_counts_is_malformed():
    raw = b"\x01E\x00\x01\x01n\x8d\x00\x01\x00\x02\x01\x00\x07"
    with pytest.raises(LwesDecodeError, match="counts differ"):
        decode(raw)


def test_nullable_array_padding_bits_must_be_zero():
    raw = b"\x01E\x00\x01\x01n\x8d\x00\x01\x00\x01\x03\x00\x07"
    with pytest.raises(LwesDecodeError, match="padding bits"):
        decode(raw)


def test_float_values_are_rounded_to_binary32_when_set():
    ev = Event("E").set("f", LwesType.FLOAT, 0.1)
    assert ev["f"] == pytest.approx(0.1, rel=1e-7) and ev["f"] != 0.1
    assert decode(encode(ev)) == ev


def test_peek_name_reads_only_the_name(vectors):
    for vec in vectors.values():
        if vec["expect"] in ("ok", "lax"):
            raw = bytes.fromhex(vec["hex"])
            assert peek_name(raw) == vec["name"]
            assert peek_name(memoryview(raw)[: 1 + raw[0]]) == vec["name"]
    with pytest.raises(LwesDecodeError):
        peek_name(b"")
    with pytest.raises(LwesDecodeError):
        peek_name(b"\x05abc")
