"""`decode_stats` against the typed path: equal records, equal error classes, bounded caches."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mondemand.lwes import Event, LwesDecodeError, LwesType, decode, encode
from mondemand.messages import STATS_MSG, Metric, MetricType, Statset, StatsetFormatError, StatsMsg
from mondemand.messages import stats_fast as sf
from mondemand.messages.stats_fast import (
    CONTEXT,
    HOST,
    NAMES,
    PROG_ID,
    RECEIPT_TIME,
    SEND_TIME,
    TYPES,
    VALUES,
    decode_stats,
    record_from_msg,
)
from tests.messages.vectors import all_vectors, vector_bytes

INT_TYPES = [LwesType.UINT16, LwesType.INT16, LwesType.UINT32, LwesType.INT32, LwesType.INT64, LwesType.UINT64,
             LwesType.BYTE]  # fmt: skip
RANGES = {
    LwesType.UINT16: (0, 0xFFFF), LwesType.INT16: (-0x8000, 0x7FFF), LwesType.UINT32: (0, 0xFFFFFFFF),
    LwesType.INT32: (-0x80000000, 0x7FFFFFFF), LwesType.INT64: (-(1 << 63), (1 << 63) - 1),
    LwesType.UINT64: (0, (1 << 64) - 1), LwesType.BYTE: (0, 0xFF),
}  # fmt: skip


def typed(data: bytes, long_strings: bool = False) -> tuple:
    return record_from_msg(StatsMsg.from_lwes(decode(data, long_strings=long_strings)))


def outcome(fn, data: bytes, **kw) -> tuple:
    """("ok", normalised record) or ("error", exception class)."""
    try:
        return "ok", _norm(fn(data, **kw))
    except Exception as exc:  # the classes are what is compared
        return "error", type(exc)


def _norm(value):
    if isinstance(value, tuple):
        return tuple(_norm(v) for v in value)
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def same(data: bytes, long_strings: bool = False) -> tuple:
    fast = outcome(decode_stats, data, long_strings=long_strings)
    slow = outcome(typed, data, long_strings=long_strings)
    assert fast == slow, data.hex()
    return fast


# --------------------------------------------------------------------------- strategies

# Any bytes, read as the decoder does: lone surrogates stand for invalid UTF-8.
texts = st.one_of(
    st.sampled_from(["web01", "colo1", "requests", "host", "stat", "cluster", "", "é", "日本"]),
    st.binary(max_size=12).map(lambda b: b.decode("utf-8", "surrogateescape")),
)
statset_valid = st.lists(st.one_of(st.none(), st.integers(-(10**12), 10**12)), min_size=11, max_size=11).map(
    lambda vs: Statset(*vs).format())
statset_texts = st.one_of(
    statset_valid,
    st.sampled_from(["", "1:2", "1:2:3:4:5:6:7:8:9:10:x", "+1::::::::::", "1::::::::::", "::::::::::",
                     "-::::::::::", "1:2:3:4:5:6:7:8:9:10:11:12", "\u0661::::::::::"]),
)  # fmt: skip


@st.composite
def int_values(draw, types=INT_TYPES):
    typ = draw(st.sampled_from(types))
    lo, hi = RANGES[typ]
    return typ, draw(st.integers(lo, hi))


def maybe(draw, broken: bool, good, bad):
    """`good`, or when `broken` sometimes `bad`: most events are well formed, some are broken on purpose."""
    return draw(st.one_of(good, bad) if broken else good)


@st.composite
def metric_attrs(draw, i: int, broken: bool) -> list[tuple[str, LwesType, object]]:
    kind = draw(st.sampled_from(["counter", "gauge", "counter", "gauge", "statset", "unknown", "histogram", "",
                                 "sketch", "Counter"]))  # fmt: skip
    attrs = [(f"t{i}", LwesType.STRING, kind), (f"k{i}", LwesType.STRING, draw(texts))]
    if kind in ("counter", "gauge"):
        typ, value = maybe(draw, broken, st.one_of(int_values(), int_values([LwesType.INT64])),
                           st.tuples(st.just(LwesType.STRING), texts))
    elif kind == "statset":
        typ, value = maybe(draw, broken, st.tuples(st.just(LwesType.STRING), statset_valid),
                           st.one_of(st.tuples(st.just(LwesType.STRING), statset_texts), int_values()))
    else:
        typ, value = draw(st.one_of(
            int_values(), st.tuples(st.just(LwesType.STRING), texts),
            st.tuples(st.just(LwesType.DOUBLE), st.floats(allow_nan=False)),
            st.tuples(st.just(LwesType.FLOAT), st.floats(width=32, allow_nan=False)),
            st.tuples(st.just(LwesType.BOOLEAN), st.booleans()),
            st.tuples(st.just(LwesType.IP_ADDR), st.sampled_from(["10.1.2.3", "0.0.0.0"])),
            st.tuples(st.just(LwesType.INT64_ARRAY), st.lists(st.integers(-5, 5), max_size=3)),
        ))  # fmt: skip
    attrs.append((f"v{i}", typ, value))
    return attrs


@st.composite
def stats_events(draw) -> Event:
    """A StatsMsg event, attributes in any order; one in four may be broken somewhere on purpose."""
    broken = draw(st.integers(0, 3)) == 0
    attrs: list[tuple[str, LwesType, object]] = []
    attrs.append(("prog_id", *maybe(draw, broken, st.tuples(st.just(LwesType.STRING), texts), int_values())))
    n = draw(st.integers(0, 6))
    for i in range(n):
        attrs += draw(metric_attrs(i, broken))
    if not broken or draw(st.booleans()):
        declared = n if not broken or draw(st.booleans()) else draw(st.integers(0, 8))
        num_type = draw(st.sampled_from([LwesType.UINT16, LwesType.UINT16, LwesType.INT32, LwesType.INT16]))
        attrs.append(("num", num_type, declared if not broken or num_type != LwesType.INT16 else -1))
    pairs = draw(st.lists(st.tuples(st.sampled_from(["cluster", "host", "stat", "shard", "a"]), texts), max_size=4))
    if pairs or draw(st.booleans()):
        count = len(pairs) + (broken and draw(st.booleans()))
        attrs.append(("ctxt_num", LwesType.UINT16, count))
        for j, (k, v) in enumerate(pairs):
            attrs.append((f"ctxt_k{j}", LwesType.STRING, k))
            attrs.append((f"ctxt_v{j}", LwesType.STRING, v))
    for key in ("send_time", "collect_time", "ReceiptTime", "SenderPort"):
        if draw(st.booleans()):
            attrs.append((key, *maybe(draw, broken, st.one_of(int_values(), int_values([LwesType.INT64])),
                                      st.tuples(st.just(LwesType.STRING), texts))))
    if draw(st.booleans()):
        attrs.append(("SenderIP", *maybe(draw, broken, st.just((LwesType.IP_ADDR, "10.0.0.1")),
                                         st.just((LwesType.STRING, "10.0.0.1")))))
    if draw(st.integers(0, 4)) == 0:
        attrs.append(("extra", *draw(st.one_of(int_values(), st.tuples(st.just(LwesType.BOOLEAN), st.booleans()),
                                                st.tuples(st.just(LwesType.STRING_ARRAY), st.lists(texts))))))
    if broken and draw(st.booleans()):  # a repeated key: the last one counts
        attrs.append(draw(st.sampled_from(attrs)))
    attrs = draw(st.permutations(attrs))
    if draw(st.integers(0, 5)) == 0:
        attrs.insert(0, ("enc", LwesType.INT16, draw(st.sampled_from([0, 1]))))
    event = Event(STATS_MSG)
    event.attrs = {}
    for key, typ, value in attrs:
        event.attrs.pop(key, None)  # a repeated key moves to its last position
        event.attrs[key] = (typ, value)
    return event


def encoded(event: Event) -> bytes | None:
    try:
        return encode(event, max_size=1 << 20)
    except Exception:
        return None


def revalue(event: Event, draw) -> Event:
    """The same shape with other numbers: every fixed-width integer attribute gets a new value of its type."""
    out = Event(event.name, event.attrs)
    for key, (typ, _value) in event.attrs.items():
        if typ in RANGES and key not in ("num", "ctxt_num", "enc"):
            out.attrs[key] = (typ, draw(st.integers(*RANGES[typ])))
    return out


# --------------------------------------------------------------------------- properties


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stats_events(), st.data())
def test_equal_to_typed_path_and_after_a_shape_hit(event, data):
    raw = encoded(event)
    if raw is None:
        return
    same(raw)
    same(raw)  # a second time: the shape is known now
    for _ in range(data.draw(st.integers(1, 4))):
        other = encoded(revalue(event, data.draw))
        if other is not None:
            same(other)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stats_events(), st.data())
def test_mutated_bytes_fail_alike(event, data):
    raw = encoded(event)
    if raw is None:
        return
    same(raw)  # remember the shape, so that same-length mutants can meet it
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        how = data.draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        if how == "truncate":
            del buf[data.draw(st.integers(0, len(buf))):]
        elif not buf:
            continue
        elif how in ("flip", "set"):
            at = data.draw(st.integers(0, len(buf) - 1))
            buf[at] = buf[at] ^ (1 << data.draw(st.integers(0, 7))) if how == "flip" else data.draw(st.integers(0, 255))
        elif how == "insert":
            buf.insert(data.draw(st.integers(0, len(buf))), data.draw(st.integers(0, 255)))
        else:
            del buf[data.draw(st.integers(0, len(buf) - 1))]
    same(bytes(buf))
    same(bytes(buf), long_strings=True)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_fail_alike(blob):
    same(blob)
    same(b"\x13MonDemand::StatsMsg" + blob)


@pytest.mark.parametrize("vector_id", [v["id"] for v in all_vectors()])
def test_reference_vectors(vector_id):
    data = vector_bytes(vector_id)
    same(data, long_strings=True)
    same(data)


# --------------------------------------------------------------------------- examples


def _msg(host: str, counter: int, gauge: int, send: int, **context: str) -> bytes:
    msg = StatsMsg("app", host, context, [Metric(MetricType.COUNTER, "requests", counter),
                                          Metric(MetricType.GAUGE, "queue", gauge)], send_time=send)  # fmt: skip
    [event] = msg.to_lwes()
    return encode(event)


def test_record_layout():
    sf.clear_caches()
    data = _msg("web01", 10, 3, 1_700_000_000_000, cluster="colo1", az="b")
    record = decode_stats(data)
    assert record == ("app", "web01", (("az", "b"), ("cluster", "colo1")), 1_700_000_000_000, None, None,
                      ("counter", "gauge"), ("requests", "queue"), (10, 3))  # fmt: skip
    assert (record[PROG_ID], record[HOST], record[CONTEXT], record[SEND_TIME], record[RECEIPT_TIME]) == (
        "app", "web01", (("az", "b"), ("cluster", "colo1")), 1_700_000_000_000, None)
    assert (record[TYPES], record[NAMES], record[VALUES]) == (("counter", "gauge"), ("requests", "queue"), (10, 3))


def test_same_shape_other_values_is_a_hit_with_the_new_values():
    sf.clear_caches()
    first = decode_stats(_msg("web01", 10, 3, 1000))
    assert sf.cache_sizes()["templates"] == 1
    second = decode_stats(_msg("web01", 99, -4, 2000))
    assert sf.cache_sizes()["templates"] == 1  # nothing new learnt: it was a hit
    assert first[VALUES] == (10, 3) and second[VALUES] == (99, -4) and second[SEND_TIME] == 2000
    other_host = decode_stats(_msg("web02", 5, 6, 3000))
    assert other_host[HOST] == "web02" and other_host[VALUES] == (5, 6)
    assert sf.cache_sizes()["templates"] == 2


def test_statsets_are_parsed_and_never_remembered_as_shapes():
    sf.clear_caches()
    msg = StatsMsg("app", "h", metrics=[Metric(MetricType.STATSET, "lat", Statset(3, 30, 1, 20, None, 9))])
    data = encode(msg.to_lwes()[0])
    assert decode_stats(data)[VALUES] == ((3, 30, 1, 20, None, 9, None, None, None, None, None),)
    assert sf.cache_sizes()["templates"] == 0
    bad = data.replace(b"3:30:1", b"3:3x:1")
    with pytest.raises(StatsetFormatError):
        decode_stats(bad)


def test_malformed_bytes_raise_lwes_decode_error_after_a_hit():
    sf.clear_caches()
    data = _msg("web01", 10, 3, 1000)
    decode_stats(data)
    with pytest.raises(LwesDecodeError):
        decode_stats(data[:-1])
    with pytest.raises(LwesDecodeError):
        decode_stats(data, max_size=len(data) - 1)


def test_caches_stay_bounded(monkeypatch):
    sf.clear_caches()
    monkeypatch.setattr(sf, "_TEMPLATES_MAX", 50)
    monkeypatch.setattr(sf, "_STRINGS_MAX", 40)
    monkeypatch.setattr(sf, "_STATSETS_MAX", 10)
    monkeypatch.setattr(sf, "_TEMPLATE_BYTES_MAX", 3000)
    peak = dict.fromkeys(sf.cache_sizes(), 0)
    for i in range(400):
        decode_stats(_msg(f"host-{i}", i, i, i))  # a new shape each time
        decode_stats(encode(StatsMsg("p", f"h{i}", metrics=[
            Metric(MetricType.STATSET, "s", Statset(i, i))]).to_lwes()[0]))  # fmt: skip
        for name, size in sf.cache_sizes().items():
            peak[name] = max(peak[name], size)
    assert peak["templates"] <= 50 and peak["strings"] <= 2 * 40 and peak["statsets"] <= 10
    assert peak["template_bytes"] <= 3000 and peak["structs"] <= 50
    assert 0 < sf.cache_sizes()["templates"] < 50  # it was cleared and filled again
    assert decode_stats(_msg("host-7", 1, 2, 3))[VALUES] == (1, 2)  # still right after the clears


def test_layouts_per_length_are_bounded(monkeypatch):
    sf.clear_caches()
    monkeypatch.setattr(sf, "_LAYOUTS_PER_LENGTH", 2)
    # The same length, different layouts: the numbers move as the name lengths trade places.
    for i in range(6):
        data = encode(StatsMsg("p", "h", metrics=[Metric(MetricType.COUNTER, "a" * i, 1),
                                                  Metric(MetricType.COUNTER, "b" * (6 - i), 2)]).to_lwes()[0])
        assert decode_stats(data)[VALUES] == (1, 2)
        assert decode_stats(data)[NAMES] == ("a" * i, "b" * (6 - i))
    assert max(len(v) for v in sf._LAYOUTS.values()) <= 2


def test_non_bytes_input_and_unknown_values():
    sf.clear_caches()
    event = Event(STATS_MSG).set("prog_id", LwesType.STRING, "p").set("num", LwesType.UINT16, 2)
    event.set("t0", LwesType.STRING, "histogram").set("k0", LwesType.STRING, "h").set("v0", LwesType.DOUBLE, 0.5)
    event.set("t1", LwesType.STRING, "").set("k1", LwesType.STRING, "b").set("v1", LwesType.BOOLEAN, True)
    data = encode(event)
    for _ in range(2):
        record = decode_stats(memoryview(data))
        assert record[TYPES] == ("histogram", "unknown") and record[VALUES] == (0.5, True)
    assert record == typed(data)
    assert struct.unpack(">d", struct.pack(">d", record[VALUES][0])) == (0.5,)


TRICKY_STATSETS = ["", "1:2", "1:2:3:4:5:6:7:8:9:10:x", "+1::::::::::", "1::::::::::", "::::::::::", "-::::::::::",
                   "1:2:3:4:5:6:7:8:9:10:11:12", "\u0661::::::::::", " 1::::::::::", "1 ::::::::::", "1_0::::::::::",
                   "-0:-5:::::::::", "--1::::::::::", "0x1::::::::::", "1.5::::::::::", "²::::::::::",
                   "1:2:3:4:5:6:7:8:9:10:" + "9" * 5000]  # fmt: skip


@pytest.mark.parametrize("text", TRICKY_STATSETS)
def test_statset_text_like_statset_parse(text):
    try:
        expected = ("ok", tuple(getattr(Statset.parse(text), f) for f in Statset.FIELDS))
    except ValueError as exc:
        expected = ("error", type(exc))
    sf.clear_caches()
    msg = Event(STATS_MSG).set("prog_id", LwesType.STRING, "p").set("num", LwesType.UINT16, 1)
    msg.set("t0", LwesType.STRING, "statset").set("k0", LwesType.STRING, "s").set("v0", LwesType.STRING, text)
    data = encode(msg, max_size=1 << 20)
    got = outcome(decode_stats, data)
    assert got == same(data)
    assert got == (expected if expected[0] == "error" else ("ok", ("p", "unknown", (), None, None, None,
                                                                    ("statset",), ("s",), (expected[1],))))
