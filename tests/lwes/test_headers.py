"""Listener header attributes: ReceiptTime, SenderIP, SenderPort."""

from __future__ import annotations

import pytest

from mondemand.lwes import HEADER_SIZE, LwesDecodeError, add_headers, decode, has_headers, read_headers


def test_adding_headers_to_v3_gives_exactly_v4(vectors):
    v3 = bytes.fromhex(vectors["V3"]["hex"])
    v4 = bytes.fromhex(vectors["V4"]["hex"])
    assert HEADER_SIZE == 49
    assert add_headers(v3, 1700000000123, "10.1.2.3", 34567) == v4


def test_forwarded_events_keep_their_original_headers(vectors):
    v4 = bytes.fromhex(vectors["V4"]["hex"])
    assert add_headers(v4, 1, "127.0.0.1", 1) == v4
    assert read_headers(v4) == (1700000000123, "10.1.2.3", 34567)
    event = decode(v4, strict=True)
    assert (event.receipt_time, event.sender_ip, event.sender_port) == (1700000000123, "10.1.2.3", 34567)


def test_real_erlang_packet_is_recognised(vectors):
    r6 = bytes.fromhex(vectors["R6"]["hex"])
    assert has_headers(r6)
    assert read_headers(r6) == (1439929608624, "172.16.101.128", 34777)
    assert not has_headers(bytes.fromhex(vectors["R7"]["hex"]))
    assert read_headers(bytes.fromhex(vectors["V3"]["hex"])) is None


def test_stamped_event_decodes_strictly(vectors):
    stamped = add_headers(bytes.fromhex(vectors["V10"]["hex"]), 42, "192.168.0.9", 65535)
    event = decode(stamped, strict=True)
    assert event.count_matches
    assert (event.receipt_time, event.sender_ip, event.sender_port) == (42, "192.168.0.9", 65535)


def test_bad_datagrams_are_refused():
    with pytest.raises(LwesDecodeError):
        add_headers(b"", 1, "1.2.3.4", 1)
    with pytest.raises(LwesDecodeError):
        add_headers(b"\x09abc", 1, "1.2.3.4", 1)
    with pytest.raises(LwesDecodeError, match="too large"):
        add_headers(b"\x01E\xff\xff", 1, "1.2.3.4", 1)
