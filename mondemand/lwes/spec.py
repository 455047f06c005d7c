"""The LWES format declared with construct: the executable specification.

Slow (thousands of events per second) but declarative and exact; the fast
codec in `mondemand.lwes.codec` is tested against it. At this level strings
and names are raw bytes; `parse_event` and `build_event` apply the same text
rule as the fast codec (UTF-8 with surrogateescape, ISO-8859-1 when `enc`=0
comes first).
"""

from __future__ import annotations

from typing import Any

from construct import (
    Adapter,
    Array,
    Bytes,
    Construct,
    ConstructError,
    Container,
    Error,
    Flag,
    Float32b,
    Float64b,
    GreedyBytes,
    GreedyRange,
    Int8ub,
    Int16sb,
    Int16ub,
    Int32sb,
    Int32ub,
    Int64sb,
    Int64ub,
    ListContainer,
    Prefixed,
    PrefixedArray,
    Struct,
    Switch,
    Terminated,
    stream_read,
    stream_write,
    this,
)

from mondemand.lwes.errors import LwesDecodeError
from mondemand.lwes.event import Event, text_encoding
from mondemand.lwes.types import BY_ID, MAX_DECODE_SIZE, LwesType


class IpAddrAdapter(Adapter):
    """Four octets, least significant first on the wire, as a dotted quad."""

    def _decode(self, obj: bytes, context: Any, path: str) -> str:
        return ".".join(str(b) for b in reversed(obj))

    def _encode(self, obj: str, context: Any, path: str) -> bytes:
        return bytes(int(x) for x in reversed(obj.split(".")))


IpAddr = IpAddrAdapter(Bytes(4))
String = Prefixed(Int16ub, GreedyBytes)
LongString = Prefixed(Int32ub, GreedyBytes)

SCALARS: dict[int, Construct] = {
    LwesType.UINT16: Int16ub,
    LwesType.INT16: Int16sb,
    LwesType.UINT32: Int32ub,
    LwesType.INT32: Int32sb,
    LwesType.STRING: String,
    LwesType.IP_ADDR: IpAddr,
    LwesType.INT64: Int64sb,
    LwesType.UINT64: Int64ub,
    LwesType.BOOLEAN: Flag,
    LwesType.BYTE: Int8ub,
    LwesType.FLOAT: Float32b,
    LwesType.DOUBLE: Float64b,
}


class NullableArray(Construct):
    """u16 count, the same count again, an LSB-first presence bitmap, then the present elements."""

    def __init__(self, subcon: Construct) -> None:
        super().__init__()
        self.subcon = subcon

    def _parse(self, stream: Any, context: Any, path: str) -> list[Any]:
        count = Int16ub._parsereport(stream, context, path)
        again = Int16ub._parsereport(stream, context, path)
        if again != count:
            raise ConstructError(f"nullable array counts differ: {count} vs {again}", path=path)
        bitmap = stream_read(stream, (count + 7) // 8, path)
        if count % 8 and bitmap[-1] >> (count % 8):
            raise ConstructError("padding bits set in nullable array bitmap", path=path)
        return ListContainer(
            self.subcon._parsereport(stream, context, path) if bitmap[i // 8] >> (i % 8) & 1 else None
            for i in range(count)
        )

    def _build(self, obj: list[Any], stream: Any, context: Any, path: str) -> list[Any]:
        Int16ub._build(len(obj), stream, context, path)
        Int16ub._build(len(obj), stream, context, path)
        bitmap = bytearray((len(obj) + 7) // 8)
        for i, v in enumerate(obj):
            if v is not None:
                bitmap[i // 8] |= 1 << (i % 8)
        stream_write(stream, bytes(bitmap), len(bitmap), path)
        for v in obj:
            if v is not None:
                self.subcon._build(v, stream, context, path)
        return obj


def _value_switch(long_strings: bool) -> Switch:
    # Plain int keys: compiled mode writes the keys' repr into Python source.
    cases: dict[int, Construct] = {int(t): sub for t, sub in SCALARS.items()}
    for tid, sub in list(cases.items()):
        cases[tid + 0x80] = PrefixedArray(Int16ub, sub)
        cases[tid + 0x8C] = NullableArray(sub)
    if long_strings:
        cases[int(LwesType.LONG_STRING)] = LongString
    return Switch(this.type, cases, default=Error)


def _attribute(long_strings: bool) -> Struct:
    return Struct(
        "key" / Prefixed(Int8ub, GreedyBytes),
        "type" / Int8ub,
        "value" / _value_switch(long_strings),
    )


def _event_struct(long_strings: bool) -> Struct:
    # Records run to the end of the datagram whatever the count says (§1.10):
    # GreedyRange, then Terminated so that a broken record is an error.
    return Struct(
        "name" / Prefixed(Int8ub, GreedyBytes),
        "count" / Int16ub,
        "attributes" / GreedyRange(_attribute(long_strings)),
        Terminated,
    )


#: The format as LWES's Java and C libraries define it.
LWES_EVENT = _event_struct(long_strings=False)
#: The same with Erlang's long_string (0x0D) accepted.
LWES_EVENT_LONG = _event_struct(long_strings=True)
#: A strict variant that trusts the header count. GreedyRange and Terminated
#: have no compiled form, so this is the shape that `.compile()` speeds up
#: (used for the compiled figure in benchmarks/bench_codec.py).
LWES_EVENT_COUNTED = Struct(
    "name" / Prefixed(Int8ub, GreedyBytes),
    "count" / Int16ub,
    "attributes" / Array(this.count, _attribute(long_strings=False)),
)


def _text(t: LwesType, value: Any, codec: str, decode: bool) -> Any:
    """Apply the string codec to string values and string-array elements."""
    if t.base not in (LwesType.STRING, LwesType.LONG_STRING):
        return value
    conv = (lambda b: b.decode(codec, "surrogateescape")) if decode else (
        lambda s: s if isinstance(s, bytes) else s.encode(codec, "surrogateescape")
    )
    if t.is_array:
        return [None if v is None else conv(v) for v in value]
    return conv(value)


def parse_event(
    buf: bytes, *, strict: bool = False, long_strings: bool = False, compiled: Any = None
) -> Event:
    """Parse with the construct spec into an `Event` (same contract as `codec.decode`)."""
    if len(buf) > MAX_DECODE_SIZE:
        raise LwesDecodeError("too-large", 0, f"datagram of {len(buf)} bytes")
    spec = compiled or (LWES_EVENT_LONG if long_strings else LWES_EVENT)
    try:
        c = spec.parse(buf)
    except (ConstructError, ValueError, IndexError) as exc:
        raise LwesDecodeError("malformed", 0, f"construct: {exc}") from None
    attrs: dict[str, tuple[LwesType, Any]] = {}
    codec = "utf-8"
    for i, a in enumerate(c.attributes):
        key = a.key.decode("utf-8", "surrogateescape")
        t = BY_ID[a.type]
        assert t is not None
        if i == 0 and key == "enc" and t == LwesType.INT16 and a.value == 0:
            codec = "latin-1"
        value = list(a.value) if t.is_array else a.value
        attrs[key] = (t, _text(t, value, codec, decode=True))
    if strict and (len(attrs) != len(c.attributes) or c.count != len(c.attributes)):
        kind = "duplicate-attribute" if len(attrs) != len(c.attributes) else "count-mismatch"
        raise LwesDecodeError(kind, 0, "strict check failed")
    return Event(c.name.decode("utf-8", "surrogateescape"), attrs, declared_count=c.count)


def build_event(event: Event) -> bytes:
    """Serialize with the construct spec (the reference for `codec.encode`)."""
    codec = text_encoding(event.attrs)
    long_strings = any(t == LwesType.LONG_STRING for t, _ in event.attrs.values())
    spec = LWES_EVENT_LONG if long_strings else LWES_EVENT
    return spec.build(
        Container(
            name=event.name.encode("utf-8", "surrogateescape"),
            count=len(event.attrs),
            attributes=[
                Container(key=k.encode("utf-8", "surrogateescape"), type=int(t), value=_text(t, v, codec, False))
                for k, (t, v) in event.attrs.items()
            ],
        )
    )
