"""`RawEvent`: the name read up front, the event and message decoded once, headers kept or added."""

from __future__ import annotations

import time

import pytest

from mondemand.envelope import RawEvent
from mondemand.lwes import HEADER_SIZE, Event, LwesDecodeError, LwesType, decode, encode
from mondemand.messages import LogMsg, MessageError, Metric, MetricType, StatsMsg


def stats_bytes() -> bytes:
    return encode(StatsMsg("myapp", host="web01", metrics=[Metric(MetricType.COUNTER, "hits", 5)]).to_lwes()[0])


def test_name_is_read_without_decoding_the_rest():
    # A broken body does not stop the name from being read: routing needs only the name.
    raw = RawEvent(b"\x06Broken\x00\x01\x01a\x42", 1, "10.0.0.1", 5, "main")
    assert (raw.name, raw.listener, raw.sender_ip, raw.sender_port, raw.receipt_ms) == (
        "Broken", "main", "10.0.0.1", 5, 1)
    again = RawEvent(b"\x06Broken\x00\x00", 2, "10.0.0.1", 5)
    assert again.name == "Broken"


@pytest.mark.parametrize("data", [b"", b"\x09abc"])
def test_an_unreadable_name_is_refused_at_once(data):
    with pytest.raises(LwesDecodeError):
        RawEvent(data, 1, "10.0.0.1", 5)


def test_a_given_name_is_trusted():
    assert RawEvent(b"\x01A\x00\x00", 1, "10.0.0.1", 5, name="Routed::As").name == "Routed::As"


def test_event_is_decoded_once_and_shared():
    raw = RawEvent(stats_bytes(), 1_700_000_000_000, "10.0.0.1", 4000, "main")
    first = raw.event
    assert raw.event is first
    assert first["prog_id"] == "myapp"
    # Every backend sees that same object, so a change made by one is visible to all.
    first.set("extra", LwesType.UINT16, 1)
    assert raw.event["extra"] == 1


def test_a_decode_error_is_cached_too():
    raw = RawEvent(b"\x06Broken\x00\x01\x01a\x42", 1, "10.0.0.1", 5)
    with pytest.raises(LwesDecodeError) as first:
        raw.event  # noqa: B018
    with pytest.raises(LwesDecodeError) as second:
        raw.event  # noqa: B018
    assert second.value is first.value
    assert first.value.kind == "bad-type-id"


def test_message_is_typed_decoded_once_and_carries_the_headers():
    raw = RawEvent(stats_bytes(), 1_700_000_000_000, "10.0.0.1", 4000, "main")
    msg = raw.message
    assert isinstance(msg, StatsMsg)
    assert raw.message is msg
    assert (msg.prog_id, msg.host, msg.metrics) == ("myapp", "web01", [Metric(MetricType.COUNTER, "hits", 5)])
    assert (msg.receipt_time, msg.sender_ip, msg.sender_port) == (1_700_000_000_000, "10.0.0.1", 4000)
    log = RawEvent(encode(LogMsg("app").to_lwes()), 1, "10.0.0.1", 1).message
    assert isinstance(log, LogMsg)


def test_message_of_a_non_mondemand_event_is_none():
    raw = RawEvent(encode(Event("System::Heartbeat").set("seq", LwesType.INT64, 1)), 1, "10.0.0.1", 1)
    assert raw.message is None
    assert raw.event["seq"] == 1


def test_a_malformed_mondemand_message_raises_message_error():
    raw = RawEvent(encode(Event("MonDemand::StatsMsg").set("num", LwesType.UINT16, 0)), 1, "10.0.0.1", 1)
    with pytest.raises(MessageError, match="prog_id"):
        raw.message  # noqa: B018


def test_event_without_headers_gets_the_listeners_values():
    raw = RawEvent(encode(Event("E")), 1_700_000_000_500, "192.168.1.20", 34567)
    event = raw.event
    assert (event.receipt_time, event.sender_ip, event.sender_port) == (1_700_000_000_500, "192.168.1.20", 34567)
    assert event.type_of("ReceiptTime") is LwesType.INT64
    assert event.type_of("SenderIP") is LwesType.IP_ADDR
    assert event.type_of("SenderPort") is LwesType.UINT16
    assert raw.original_headers() == (1_700_000_000_500, "192.168.1.20", 34567)


def test_forwarded_event_keeps_its_original_headers(vectors):
    v4 = bytes.fromhex(vectors["V4"]["hex"])  # V3 as stamped by another listener
    raw = RawEvent(v4, 1_800_000_000_000, "127.0.0.1", 1)
    assert raw.original_headers() == (1_700_000_000_123, "10.1.2.3", 34567)
    assert (raw.event.receipt_time, raw.event.sender_ip, raw.event.sender_port) == (
        1_700_000_000_123, "10.1.2.3", 34567)
    assert raw.with_headers() == v4


def test_with_headers_appends_the_c_style_tail(vectors):
    v3 = bytes.fromhex(vectors["V3"]["hex"])
    raw = RawEvent(v3, 1_700_000_000_123, "10.1.2.3", 34567)
    assert raw.with_headers() == bytes.fromhex(vectors["V4"]["hex"])
    assert len(raw.with_headers()) == len(v3) + HEADER_SIZE


def test_ipv6_sender_has_no_sender_ip_attribute():
    raw = RawEvent(encode(Event("E")), 5, "::1", 999)
    assert "SenderIP" not in raw.event
    assert raw.event.sender_port == 999
    assert raw.original_headers() == (5, "::1", 999)
    # The wire type is IPv4 only: forwarding writes 0.0.0.0 rather than a wrong address.
    stamped = decode(raw.with_headers(), strict=True)
    assert (stamped.receipt_time, stamped.sender_ip, stamped.sender_port) == (5, "0.0.0.0", 999)


def test_from_event_wraps_an_event_built_in_process():
    before = int(time.time() * 1000)
    event = Event("Self::Metric").set("n", LwesType.UINT32, 3)
    raw = RawEvent.from_event(event)
    assert (raw.name, raw.listener, raw.sender_ip, raw.sender_port) == ("Self::Metric", "internal", "127.0.0.1", 0)
    assert before <= raw.receipt_ms <= int(time.time() * 1000)
    assert raw.data == encode(event)
    assert raw.event["n"] == 3
    assert repr(raw) == f"RawEvent('Self::Metric', {len(raw.data)} bytes from 127.0.0.1:0)"


def test_events_larger_than_a_datagram_decode():
    # HTTP bodies may exceed 65535 bytes; the listener already bounded them.
    big = Event("Big").set("s", LwesType.LONG_STRING, "x" * 70_000)
    raw = RawEvent(encode(big, max_size=1 << 20), 1, "127.0.0.1", 1)
    assert raw.event["s"] == "x" * 70_000


# --------------------------------------------------------------------------- .stats


def broken_stats_bytes() -> bytes:
    return stats_bytes()[:-3]  # the last record cut short


def test_stats_record_is_decoded_once_and_shared():
    raw = RawEvent(stats_bytes(), 1_700_000_000_000, "10.0.0.1", 4000, "main")
    record = raw.stats
    assert raw.stats is record
    assert record == ("myapp", "web01", (), None, None, None, ("counter",), ("hits",), (5,))
    assert not hasattr(raw, "_event")  # no Event was built for it


def test_stats_is_none_for_other_events_without_decoding_them():
    raw = RawEvent(b"\x06Broken\x00\x01\x01a\x42", 1, "10.0.0.1", 5)
    assert raw.stats is None
    with pytest.raises(LwesDecodeError):
        raw.event  # noqa: B018


def test_stats_keeps_the_datagrams_own_receipt_time_only():
    plain = RawEvent(stats_bytes(), 1_700_000_000_000, "10.0.0.1", 4000)
    assert plain.stats[5] is None and plain.receipt_ms == 1_700_000_000_000
    forwarded = RawEvent(RawEvent(stats_bytes(), 1_600_000_000_000, "10.0.0.9", 7).with_headers(), 5, "10.0.0.1", 1)
    assert forwarded.stats[5] == 1_600_000_000_000


def test_a_stats_decode_error_is_cached_and_is_the_events_own():
    raw = RawEvent(broken_stats_bytes(), 1, "10.0.0.1", 5)
    with pytest.raises(LwesDecodeError) as first:
        raw.stats  # noqa: B018
    with pytest.raises(LwesDecodeError) as again:
        raw.stats  # noqa: B018
    with pytest.raises(LwesDecodeError) as event_error:
        raw.event  # noqa: B018
    assert first.value is again.value is event_error.value


def test_a_malformed_stats_message_error_is_cached():
    raw = RawEvent.from_event(Event("MonDemand::StatsMsg").set("num", LwesType.UINT16, 0))  # no prog_id
    with pytest.raises(MessageError) as first:
        raw.stats  # noqa: B018
    with pytest.raises(MessageError) as again:
        raw.stats  # noqa: B018
    assert first.value is again.value


@pytest.mark.parametrize("prop", ["stats", "event"])
def test_racing_threads_see_one_error_object(prop):
    import threading

    raws = [RawEvent(broken_stats_bytes(), 1, "10.0.0.1", 5) for _ in range(200)]
    seen: list[list[int]] = [[] for _ in raws]
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait()
        for i, raw in enumerate(raws):
            for name in (prop, "event", "stats"):
                try:
                    getattr(raw, name)
                except LwesDecodeError as exc:
                    seen[i].append(id(exc))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(ids) == 12 and len(set(ids)) == 1 for ids in seen)
