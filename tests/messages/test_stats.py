"""MonDemand::StatsMsg decoding, encoding, splitting, and the package-level dispatch."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mondemand.lwes import Event, LwesType, decode, encode
from mondemand.lwes.types import MAX_DATAGRAM
from mondemand.messages import (
    MESSAGE_TYPES,
    STATS_MSG,
    AnnotationMsg,
    LogMsg,
    MessageError,
    Metric,
    MetricType,
    PerfMsg,
    Statset,
    StatsetFormatError,
    StatsMsg,
    TraceMsg,
    from_lwes,
    to_events,
)
from tests.messages.vectors import all_vectors, vector_bytes, vector_event

# --------------------------------------------------------------------------- vectors


def test_v3_c_client_stats():
    msg = StatsMsg.from_lwes(vector_event("V3"))
    assert msg.prog_id == "myapp"
    assert msg.host == "web01"
    assert msg.context == {}
    assert msg.metrics == [
        Metric(MetricType.COUNTER, "requests", 1234),
        Metric(MetricType.GAUGE, "queue_depth", 17),
    ]
    assert msg.send_time is None and msg.collect_time is None
    assert msg.receipt_time is None and msg.sender_ip is None and msg.sender_port is None
    assert msg.unknown_types == []


def test_v4_listener_headers_are_read():
    msg = StatsMsg.from_lwes(vector_event("V4"))
    assert (msg.receipt_time, msg.sender_ip, msg.sender_port) == (1700000000123, "10.1.2.3", 34567)
    assert msg.metrics == StatsMsg.from_lwes(vector_event("V3")).metrics


@pytest.mark.parametrize("vector_id", ["V3", "V4"])
def test_c_style_vectors_reencode_byte_identical(vector_id):
    [event] = StatsMsg.from_lwes(vector_event(vector_id)).to_lwes()
    assert encode(event) == vector_bytes(vector_id)


def test_v6_erlang_statset():
    msg = StatsMsg.from_lwes(vector_event("V6"))
    assert msg.prog_id == "svc"
    assert msg.host == "web01"
    assert msg.send_time == 1700000060000
    assert msg.collect_time == 1700000060000
    [metric] = msg.metrics
    assert metric.type is MetricType.STATSET
    assert metric.name == "latency"
    assert metric.value == Statset(count=5, sum=100, min=10, max=30)
    assert metric.value.avg is None and metric.value.pctl_99 is None
    [event] = msg.to_lwes()
    assert event.type_of("v0") is LwesType.STRING
    assert event["v0"] == "5:100:10:30:::::::"
    assert StatsMsg.from_lwes(event) == msg


def test_r6_real_erlang_event_in_reverse_order():
    msg = StatsMsg.from_lwes(vector_event("R6"))
    assert msg.prog_id == "riak"
    assert msg.host == "openx-dev.local"
    assert msg.context == {}
    assert [(m.type, m.name, m.value) for m in msg.metrics] == [
        (MetricType.GAUGE, "rtq_max_bytes", 104857600),
        (MetricType.GAUGE, "rtq_bytes", 720),
    ]
    assert msg.receipt_time == 1439929608624
    assert msg.sender_ip == "172.16.101.128"
    assert msg.sender_port == 34777


def test_every_mondemand_vector_dispatches_and_others_give_none():
    seen = set()
    for vec in all_vectors():
        if vec["expect"] != "ok":
            continue
        event = decode(bytes.fromhex(vec["hex"]), strict=True)
        msg = from_lwes(event)
        if event.name in MESSAGE_TYPES:
            assert isinstance(msg, MESSAGE_TYPES[event.name])
            seen.add(event.name)
        else:
            assert msg is None
    assert seen == set(MESSAGE_TYPES)


def test_dispatch_classes():
    assert type(from_lwes(vector_event("V5"))) is LogMsg
    assert type(from_lwes(vector_event("V7"))) is PerfMsg
    assert type(from_lwes(vector_event("V8"))) is AnnotationMsg
    assert type(from_lwes(vector_event("V9"))) is TraceMsg
    assert from_lwes(Event("System::Heartbeat")) is None


# --------------------------------------------------------------------------- round trips


def sample_msg() -> StatsMsg:
    return StatsMsg(
        prog_id="app",
        host="web02",
        context={"cluster": "eu", "role": "api"},
        metrics=[
            Metric(MetricType.COUNTER, "hits", 2**63 - 1),
            Metric(MetricType.GAUGE, "temp", -40),
            Metric(MetricType.STATSET, "lat", Statset(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)),
            Metric(MetricType.UNKNOWN, "mystery", 5),
        ],
        send_time=1700000000000,
        collect_time=1699999999000,
        receipt_time=1700000000500,
        sender_ip="192.168.1.9",
        sender_port=4000,
    )


def test_round_trip_through_bytes():
    msg = sample_msg()
    [event] = msg.to_lwes()
    assert StatsMsg.from_lwes(event) == msg
    assert StatsMsg.from_lwes(decode(encode(event), strict=True)) == msg
    assert to_events(msg) == [event]


def test_encoding_layout():
    [event] = sample_msg().to_lwes()
    keys = list(event)
    assert keys[:4] == ["prog_id", "send_time", "collect_time", "num"]
    assert keys[4:7] == ["t0", "k0", "v0"]
    assert event.type_of("num") is LwesType.UINT16
    assert event.type_of("v0") is LwesType.INT64
    assert event.type_of("v1") is LwesType.INT64
    assert event["t3"] == "unknown"
    # host goes last in the context block, Erlang style; the headers close the event.
    assert event["ctxt_num"] == 3
    assert (event["ctxt_k2"], event["ctxt_v2"]) == ("host", "web02")
    assert keys[-3:] == ["ReceiptTime", "SenderIP", "SenderPort"]


def test_no_context_and_unknown_host_writes_no_context_block():
    [event] = StatsMsg("p", metrics=[Metric(MetricType.GAUGE, "g", 1)]).to_lwes()
    assert "ctxt_num" not in event
    assert StatsMsg.from_lwes(event).host == "unknown"


def test_empty_message_gives_one_event_with_num_zero():
    [event] = StatsMsg("p", host="h").to_lwes()
    assert event["num"] == 0
    assert StatsMsg.from_lwes(event) == StatsMsg("p", host="h")


def test_host_in_context_is_lifted_out():
    msg = StatsMsg("p", context={"host": "h1", "dc": "x"})
    assert msg.host == "h1"
    assert msg.context == {"dc": "x"}
    assert StatsMsg("p", host="h1", context={"host": "h1"}).context == {}
    with pytest.raises(MessageError, match="conflicts"):
        StatsMsg("p", host="h1", context={"host": "h2"})


# --------------------------------------------------------------------------- splitting


def test_split_1300_metrics_into_512_512_276():
    metrics = [Metric(MetricType.COUNTER, f"m{i}", i) for i in range(1300)]
    msg = StatsMsg("big", host="h", context={"c": "1"}, metrics=metrics, send_time=1)
    events = msg.to_lwes(max_metrics=512)
    assert [e["num"] for e in events] == [512, 512, 276]
    decoded = [StatsMsg.from_lwes(decode(encode(e), strict=True)) for e in events]
    assert [len(d.metrics) for d in decoded] == [512, 512, 276]
    assert [m for d in decoded for m in d.metrics] == metrics
    names = [m.name for d in decoded for m in d.metrics]
    assert len(set(names)) == 1300
    for d in decoded:
        assert (d.prog_id, d.host, d.context, d.send_time) == ("big", "h", {"c": "1"}, 1)
    # Each event numbers its metrics from 0.
    assert events[1]["k0"] == "m512"
    assert "t512" not in events[0]


def test_split_by_size_with_huge_names():
    metrics = [Metric(MetricType.GAUGE, f"{i}-" + "x" * 20000, i) for i in range(10)]
    msg = StatsMsg("p", host="h", metrics=metrics)
    events = msg.to_lwes()
    sizes = [len(encode(e)) for e in events]
    assert all(s <= MAX_DATAGRAM for s in sizes)
    # Three ~20 kB metrics fit in one datagram, four do not.
    assert [e["num"] for e in events] == [3, 3, 3, 1]
    assert [m for e in events for m in StatsMsg.from_lwes(e).metrics] == metrics


def test_split_respects_custom_max_size_exactly():
    metrics = [Metric(MetricType.COUNTER, f"metric_{i:03d}", i) for i in range(200)]
    msg = StatsMsg("p", metrics=metrics)
    for limit in (300, 1000, 4096):
        events = msg.to_lwes(max_size=limit)
        sizes = [len(encode(e, max_size=limit)) for e in events]
        assert max(sizes) <= limit
        # Greedy packing: adding the next event's first metric would have overflowed.
        assert len(events) > 1
        assert [m for e in events for m in StatsMsg.from_lwes(e).metrics] == metrics


def test_metric_too_big_for_any_datagram():
    msg = StatsMsg("p", metrics=[Metric(MetricType.GAUGE, "x" * 65500, 1)])
    with pytest.raises(MessageError, match="cannot fit"):
        msg.to_lwes()


def test_bad_max_metrics():
    with pytest.raises(MessageError, match="max_metrics"):
        StatsMsg("p").to_lwes(max_metrics=0)


def test_counter_out_of_int64_range_is_a_message_error():
    msg = StatsMsg("p", metrics=[Metric(MetricType.COUNTER, "c", 2**63)])
    with pytest.raises(MessageError, match="out of range for int64"):
        msg.to_lwes()


# --------------------------------------------------------------------------- unknown types


def stats_event(*metrics: tuple[str, str, LwesType, object], **extra: tuple[LwesType, object]) -> Event:
    event = Event(STATS_MSG).set("prog_id", LwesType.STRING, "p").set("num", LwesType.UINT16, len(metrics))
    for i, (t, k, vt, v) in enumerate(metrics):
        event.set(f"t{i}", LwesType.STRING, t).set(f"k{i}", LwesType.STRING, k).set(f"v{i}", vt, v)
    for key, (typ, value) in extra.items():
        event.set(key, typ, value)
    return event


def test_unknown_metric_type_is_kept_and_reported():
    event = stats_event(
        ("counter", "a", LwesType.INT64, 1),
        ("histogram", "h", LwesType.INT64, 42),
        ("unknown", "u", LwesType.INT64, 7),
        ("histogram", "h2", LwesType.STRING, "1,2,3"),
        ("sketch", "s", LwesType.UINT32, 9),
    )
    msg = StatsMsg.from_lwes(event)
    h = msg.metrics[1]
    assert (h.type, h.type_name, h.value, h.value_type) == (MetricType.UNKNOWN, "histogram", 42, LwesType.INT64)
    assert msg.metrics[2].type_name == "unknown" and msg.metrics[2].is_known_type
    assert msg.metrics[3].value == "1,2,3"
    assert msg.unknown_types == ["histogram", "sketch"]
    [again] = msg.to_lwes()
    assert again["t1"] == "histogram"
    assert again.type_of("v4") is LwesType.UINT32
    assert StatsMsg.from_lwes(again) == msg


def test_metric_type_strings_are_coerced():
    assert Metric("counter", "c", 1).type is MetricType.COUNTER
    m = Metric("histogram", "h", "x")
    assert (m.type, m.type_name, m.value_type) == (MetricType.UNKNOWN, "histogram", LwesType.STRING)
    assert Metric(MetricType.STATSET, "s", "1:2:3:4:::::::").value == Statset(1, 2, 3, 4)


@pytest.mark.parametrize(
    ("kind", "value"),
    [(MetricType.COUNTER, "12"), (MetricType.GAUGE, 1.5), (MetricType.GAUGE, True), (MetricType.STATSET, 5)],
)
def test_metric_value_must_match_its_type(kind, value):
    with pytest.raises(MessageError):
        Metric(kind, "m", value)


# --------------------------------------------------------------------------- malformed events


def _without(event: Event, key: str) -> Event:
    event.remove(key)
    return event


MALFORMED = {
    "missing prog_id": (_without(stats_event(("counter", "a", LwesType.INT64, 1)), "prog_id"), "prog_id"),
    "missing num": (_without(stats_event(("counter", "a", LwesType.INT64, 1)), "num"), "num"),
    "num too large": (
        stats_event(("counter", "a", LwesType.INT64, 1)).set("num", LwesType.UINT16, 3),
        "num is 3 but 't1' is missing",
    ),
    "missing value": (_without(stats_event(("gauge", "a", LwesType.INT64, 1)), "v0"), "'v0' is missing"),
    "counter as string": (stats_event(("counter", "a", LwesType.STRING, "12")), "'v0' must be an integer"),
    "statset as int": (stats_event(("statset", "a", LwesType.INT64, 12)), "'v0' must be a string"),
    "bad statset": (stats_event(("statset", "lat", LwesType.STRING, "1:2:3")), "v0 .*lat"),
    "prog_id as int": (stats_event().set("prog_id", LwesType.INT32, 5), "'prog_id' must be a string"),
    "num as string": (stats_event().set("num", LwesType.STRING, "2"), "'num' must be an integer"),
    "type as int": (stats_event(("counter", "a", LwesType.INT64, 1)).set("t0", LwesType.INT64, 1), "'t0'"),
    "ctxt_num too large": (
        stats_event(ctxt_num=(LwesType.UINT16, 2), ctxt_k0=(LwesType.STRING, "a"), ctxt_v0=(LwesType.STRING, "b")),
        "ctxt_num is 2 but 'ctxt_k1' is missing",
    ),
    "context value as int": (
        stats_event(ctxt_num=(LwesType.UINT16, 1), ctxt_k0=(LwesType.STRING, "a"), ctxt_v0=(LwesType.INT32, 1)),
        "'ctxt_v0' must be a string",
    ),
    "SenderIP as string": (stats_event(SenderIP=(LwesType.STRING, "1.2.3.4")), "SenderIP"),
    "wrong event name": (Event("MonDemand::LogMsg").set("prog_id", LwesType.STRING, "p"), "expected a"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=str)
def test_malformed_event_raises_message_error(case):
    event, pattern = MALFORMED[case]
    with pytest.raises(MessageError, match=pattern) as info:
        StatsMsg.from_lwes(event)
    assert not isinstance(info.value, KeyError | TypeError)
    assert info.value.event_name is not None


def test_malformed_through_dispatch_too():
    with pytest.raises(MessageError):
        from_lwes(MALFORMED["num too large"][0])


# --------------------------------------------------------------------------- statset strings


def test_statset_parse_and_format():
    s = Statset.parse("5:100:10:30:::::::")
    assert (s.count, s.sum, s.min, s.max) == (5, 100, 10, 30)
    assert s.median is None
    assert s.format() == "5:100:10:30:::::::"
    assert Statset().format() == "::::::::::"
    assert Statset.parse("-1:0:-5:7:1:2:3:4:5:6:7").min == -5


@pytest.mark.parametrize(
    "text",
    ["5:100:10:30", "1:2:3:4:5:6:7:8:9:10:11:12", "a::::::::::", " 5::::::::::", "+5::::::::::", "1.5::::::::::", ""],
)
def test_statset_malformed(text):
    with pytest.raises(StatsetFormatError):
        Statset.parse(text)
    with pytest.raises(MessageError):  # the specific error is also a MessageError
        Statset.parse(text)


OPTIONAL_INT = st.none() | st.integers(-(2**63), 2**63 - 1)
STATSETS = st.builds(Statset, *[OPTIONAL_INT] * 11)


@given(STATSETS)
def test_statset_object_round_trip(statset):
    text = statset.format()
    assert text.count(":") == 10
    assert Statset.parse(text) == statset


@given(st.lists(OPTIONAL_INT, min_size=11, max_size=11))
def test_statset_canonical_string_round_trip(values):
    text = ":".join("" if v is None else str(v) for v in values)
    assert Statset.parse(text).format() == text


# --------------------------------------------------------------------------- StatsMsg property


TEXT = st.text(max_size=20)
INT64 = st.integers(-(2**63), 2**63 - 1)
METRICS = st.one_of(
    st.builds(Metric, st.just(MetricType.COUNTER), TEXT, INT64),
    st.builds(Metric, st.just(MetricType.GAUGE), TEXT, INT64),
    st.builds(Metric, st.just(MetricType.STATSET), TEXT, STATSETS),
    st.builds(Metric, st.just(MetricType.UNKNOWN), TEXT, INT64 | TEXT),
    st.builds(Metric, st.sampled_from(["histogram", "timer"]), TEXT, INT64),
)
STATS_MSGS = st.builds(
    StatsMsg,
    prog_id=TEXT,
    host=TEXT.filter(bool),
    context=st.dictionaries(TEXT.filter(lambda k: k != "host"), TEXT, max_size=4),
    metrics=st.lists(METRICS, max_size=30),
    send_time=st.none() | INT64,
    collect_time=st.none() | INT64,
    receipt_time=st.none() | INT64,
    sender_ip=st.none() | st.ip_addresses(v=4).map(str),
    sender_port=st.none() | st.integers(0, 65535),
)


@settings(max_examples=150)
@given(STATS_MSGS)
def test_stats_round_trip_single_event(msg):
    [event] = msg.to_lwes()
    assert StatsMsg.from_lwes(event) == msg
    assert StatsMsg.from_lwes(decode(encode(event), strict=True)) == msg


@settings(max_examples=100)
@given(STATS_MSGS, st.integers(1, 7))
def test_stats_round_trip_split(msg, max_metrics):
    events = msg.to_lwes(max_metrics=max_metrics)
    assert len(events) == max(1, -(-len(msg.metrics) // max_metrics))
    parts = [StatsMsg.from_lwes(decode(encode(e), strict=True)) for e in events]
    assert all(len(p.metrics) <= max_metrics for p in parts)
    assert [m for p in parts for m in p.metrics] == msg.metrics
    for part in parts:
        part.metrics = msg.metrics
        assert part == msg
