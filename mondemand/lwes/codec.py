"""Hand-written LWES decoder and encoder: the per-packet hot path.

The construct declarations in `mondemand.lwes.spec` are the executable
specification; property tests check that this module agrees with them byte for
byte. This module trades elegance for speed: one flat loop, the common types
inlined, bounds checked by hand so that arbitrary bytes raise only
`LwesDecodeError`.
"""

from __future__ import annotations

import struct
from typing import Any

from mondemand.lwes.errors import LwesDecodeError, LwesEncodeError
from mondemand.lwes.event import Event, text_encoding
from mondemand.lwes.types import (
    BY_ID,
    MAX_DATAGRAM,
    MAX_DECODE_SIZE,
    MAX_NAME,
    LwesType,
)

_I16 = struct.Struct(">h").unpack_from
_U32 = struct.Struct(">I").unpack_from
_I32 = struct.Struct(">i").unpack_from
_I64 = struct.Struct(">q").unpack_from
_U64 = struct.Struct(">Q").unpack_from
_F32 = struct.Struct(">f").unpack_from
_F64 = struct.Struct(">d").unpack_from

# Fixed-width scalars other than the inlined ones: (size, reader).
_FIXED: dict[int, tuple[int, Any]] = {
    LwesType.UINT16: (2, struct.Struct(">H").unpack_from),
    LwesType.INT16: (2, _I16),
    LwesType.UINT32: (4, _U32),
    LwesType.INT32: (4, _I32),
    LwesType.INT64: (8, _I64),
    LwesType.UINT64: (8, _U64),
    LwesType.FLOAT: (4, _F32),
    LwesType.DOUBLE: (8, _F64),
}
# Array element readers for whole runs of fixed-width values.
_RUN_FORMAT: dict[int, tuple[int, str]] = {
    LwesType.UINT16: (2, "H"),
    LwesType.INT16: (2, "h"),
    LwesType.UINT32: (4, "I"),
    LwesType.INT32: (4, "i"),
    LwesType.INT64: (8, "q"),
    LwesType.UINT64: (8, "Q"),
    LwesType.FLOAT: (4, "f"),
    LwesType.DOUBLE: (8, "d"),
    LwesType.BYTE: (1, "B"),
}

# Names repeat from packet to packet; caching bytes -> str saves a decode per
# attribute. Bounded so that hostile traffic cannot grow it without limit.
_NAME_CACHE: dict[bytes, str] = {}
_NAME_CACHE_MAX = 8192


def _name(raw: bytes) -> str:
    s = _NAME_CACHE.get(raw)
    if s is None:
        s = raw.decode("utf-8", "surrogateescape")
        if len(_NAME_CACHE) < _NAME_CACHE_MAX:
            _NAME_CACHE[raw] = s
    return s


_ENC_LATIN1 = b"\x03enc\x02\x00\x00"

# Key bytes followed by the type byte -> (key, type id, LwesType or None).
_RECORD_CACHE: dict[bytes, tuple[str, int, Any]] = {}


# Whole records of strings and small scalars -> (key, (LwesType, value)), one
# table per text codec. Cleared when full, so hostile variety costs speed, not memory.
_WHOLE_RECORDS: dict[str, dict[bytes, tuple[str, tuple[LwesType, Any]]]] = {"utf-8": {}, "latin-1": {}}
_WHOLE_RECORD_MAX_BYTES = 96
_WHOLE_RECORD_MAX_ENTRIES = 16384
# Value width of the fixed-width types worth caching whole; 0 = not cached.
_CACHED_WIDTH = [0] * 256
for _t, _w in ((1, 2), (2, 2), (3, 4), (4, 4), (6, 4), (9, 1), (10, 1)):
    _CACHED_WIDTH[_t] = _w


def _whole_record(
    buf: bytes, p: int, q: int, e: int, text: str, whole: dict[bytes, Any]
) -> tuple[str, tuple[LwesType, Any]]:
    t = buf[q - 1]
    record = (_name(buf[p + 1 : q - 1]), (BY_ID[t], decode_value(buf, q, t, text=text)[0]))
    if e - p <= _WHOLE_RECORD_MAX_BYTES:
        if len(whole) >= _WHOLE_RECORD_MAX_ENTRIES:
            whole.clear()
        whole[buf[p:e]] = record
    return record


def _record_entry(raw: bytes) -> tuple[str, int, Any]:
    entry = (_name(raw[:-1]), raw[-1], BY_ID[raw[-1]])
    if entry[2] is not None and len(_RECORD_CACHE) < _NAME_CACHE_MAX:
        _RECORD_CACHE[raw] = entry
    return entry


def peek_name(buf: bytes | bytearray | memoryview) -> str:
    """The event name, read from the first bytes only (what the router needs)."""
    n = len(buf)
    if n == 0:
        raise LwesDecodeError("truncated", 0, "empty datagram")
    end = 1 + buf[0]
    if end > n:
        raise LwesDecodeError("length-overflow", 0, f"event name of {buf[0]} bytes runs past the end")
    return _name(bytes(buf[1:end]))


def decode(
    buf: bytes | bytearray | memoryview,
    *,
    strict: bool = False,
    long_strings: bool = False,
    max_size: int = MAX_DECODE_SIZE,
) -> Event:
    """Decode one datagram into an `Event`.

    Lax (the default, what a router wants): records are parsed to the end of the
    datagram whatever the header count says; a mismatch shows as
    `event.count_matches == False` and a repeated key keeps its last value.
    Strict: a count mismatch or a repeated key is an error too.
    `long_strings` accepts the Erlang-only type 0x0D.
    """
    if type(buf) is not bytes:
        buf = bytes(buf)
    n = len(buf)
    if n > max_size:
        raise LwesDecodeError("too-large", 0, f"datagram of {n} bytes exceeds {max_size}")
    if n == 0:
        raise LwesDecodeError("truncated", 0, "empty datagram")
    p = 1 + buf[0]
    if p > n:
        raise LwesDecodeError("length-overflow", 0, f"event name of {buf[0]} bytes runs past the end")
    name = _name(buf[1:p])
    if p + 2 > n:
        raise LwesDecodeError("truncated", p, "attribute count missing")
    declared = (buf[p] << 8) | buf[p + 1]
    p += 2

    # Java's rule: enc=0 (int16) as the very first attribute selects ISO-8859-1.
    text = "latin-1" if buf.startswith(_ENC_LATIN1, p) else "utf-8"
    try:
        attrs = _attrs_fast(buf, p, n, text, long_strings)
    except (IndexError, struct.error):
        # A read ran off the end: walk again with every check to say where and why.
        _walk_records(buf, p, text, long_strings)
        raise LwesDecodeError("malformed", p, "record runs past the end") from None
    if strict:
        records, duplicate = _walk_records(buf, p, text, long_strings)
        if duplicate is not None:
            raise duplicate
        if records != declared:
            raise LwesDecodeError("count-mismatch", p - 2, f"header says {declared} attributes, {records} present")
    event = Event.__new__(Event)
    event.name = name
    event.attrs = attrs
    event.declared_count = declared
    return event


def _attrs_fast(buf: bytes, p: int, n: int, text: str, long_strings: bool) -> dict[str, tuple[LwesType, Any]]:
    """The optimistic loop: no bounds checks where a read past the end raises anyway.

    Every value read touches at least the byte at its start offset, so a record
    whose key or value runs off the end raises IndexError or struct.error,
    which `decode` turns into a precise `LwesDecodeError`. Slices do not raise,
    so string lengths are checked explicitly.
    """
    cache = _RECORD_CACHE
    whole = _WHOLE_RECORDS[text]
    widths = _CACHED_WIDTH
    attrs: dict[str, tuple[LwesType, Any]] = {}
    while p < n:
        q = p + 2 + buf[p]  # first byte after the type byte
        t = buf[q - 1]
        e = q + 2 + ((buf[q] << 8) | buf[q + 1]) if t == 5 else q + widths[t]
        if e > q:
            # Strings and small scalars (prog_id, t0="counter", num=2,
            # SenderIP, ...) repeat across packets: one lookup on the whole
            # record's bytes yields the finished (key, (type, value)) pair.
            hit = whole.get(buf[p:e])
            if hit is None:
                if e > n:
                    if t == 5:
                        raise LwesDecodeError("length-overflow", q, "string runs past the end")
                    raise IndexError
                hit = _whole_record(buf, p, q, e, text, whole)
            attrs[hit[0]] = hit[1]
            p = e
            continue
        # One lookup on (key bytes + type byte) yields the key and the LwesType.
        entry = cache.get(buf[p + 1 : q])
        if entry is None:
            if q > n:
                raise IndexError
            entry = _record_entry(buf[p + 1 : q])
        key, t, typ = entry
        if t == 7:  # int64
            attrs[key] = (typ, _I64(buf, q)[0])
            p = q + 8
        elif t == 1:  # uint16
            attrs[key] = (typ, (buf[q] << 8) | buf[q + 1])
            p = q + 2
        elif t == 6:  # ip_addr, octets reversed
            attrs[key] = (typ, f"{buf[q + 3]}.{buf[q + 2]}.{buf[q + 1]}.{buf[q]}")
            p = q + 4
        elif t == 9:  # boolean: any non-zero byte is true
            attrs[key] = (typ, buf[q] != 0)
            p = q + 1
        elif t == 10:  # byte
            attrs[key] = (typ, buf[q])
            p = q + 1
        elif t in _FIXED:
            size, reader = _FIXED[t]
            attrs[key] = (typ, reader(buf, q)[0])
            p = q + size
        elif 0x81 <= t <= 0x98:
            v, p = _decode_array(buf, q, n, t, key, text)
            attrs[key] = (typ, v)
        elif t == 13 and long_strings:
            p = q + 4 + _U32(buf, q)[0]
            if p > n:
                raise LwesDecodeError("length-overflow", q, f"{key}: long string runs past the end")
            attrs[key] = (typ, buf[q + 4 : p].decode(text, "surrogateescape"))
        else:
            raise LwesDecodeError("bad-type-id", q - 1, f"{key}: unknown type id 0x{t:02x}")
    return attrs


def _walk_records(buf: bytes, p: int, text: str, long_strings: bool) -> tuple[int, LwesDecodeError | None]:
    """Walk the records with every bounds check; returns (records, first duplicate as an error or None).

    Raises the precise `LwesDecodeError` for the first malformed record. Used
    on error paths and for strict decoding, never for a good lax decode.
    """
    n = len(buf)
    seen: set[bytes] = set()
    duplicate = None
    records = 0
    while p < n:
        q = p + 1 + buf[p]
        if q > n:
            raise LwesDecodeError("length-overflow", p, f"attribute name of {buf[p]} bytes runs past the end")
        if q == n:
            raise LwesDecodeError("truncated", q, "attribute type missing")
        raw = buf[p + 1 : q]
        key = _name(raw)
        try:
            p = decode_value(buf, q + 1, buf[q], text=text, long_strings=long_strings)[1]
        except LwesDecodeError as exc:
            raise LwesDecodeError(exc.kind, exc.offset, f"{key}: {exc.reason}") from None
        if raw in seen and duplicate is None:
            duplicate = LwesDecodeError("duplicate-attribute", q - len(raw) - 1, f"attribute {key!r} repeated")
        seen.add(raw)
        records += 1
    return records, duplicate


def _decode_array(
    buf: bytes, p: int, n: int, t: int, key: str, text: str
) -> tuple[list[Any], int]:
    """Decode an array or nullable array value starting at `p`; returns (values, new offset)."""
    if p + 2 > n:
        raise LwesDecodeError("truncated", p, f"{key}: array count missing")
    count = (buf[p] << 8) | buf[p + 1]
    p += 2
    base = t - 0x80 if t < 0x8D else t - 0x8C
    present: list[bool] | None = None
    wanted = count
    if t >= 0x8D:
        if p + 2 > n:
            raise LwesDecodeError("truncated", p, f"{key}: nullable array's second count missing")
        again = (buf[p] << 8) | buf[p + 1]
        if again != count:
            raise LwesDecodeError("malformed", p, f"{key}: nullable array counts differ ({count} vs {again})")
        p += 2
        nbytes = (count + 7) >> 3
        if p + nbytes > n:
            raise LwesDecodeError("length-overflow", p, f"{key}: nullable array bitmap runs past the end")
        bitmap = buf[p : p + nbytes]
        if count & 7 and bitmap[-1] >> (count & 7):
            raise LwesDecodeError("malformed", p + nbytes - 1, f"{key}: padding bits set in bitmap")
        p += nbytes
        present = [bool(bitmap[i >> 3] >> (i & 7) & 1) for i in range(count)]
        wanted = sum(present)

    values: list[Any]
    run = _RUN_FORMAT.get(base)
    if run is not None:
        size, code = run
        e = p + size * wanted
        if e > n:
            raise LwesDecodeError("length-overflow", p, f"{key}: array of {wanted} runs past the end")
        values = list(struct.unpack_from(f">{wanted}{code}", buf, p))
        p = e
    elif base == 5:
        values = []
        for _ in range(wanted):
            if p + 2 > n:
                raise LwesDecodeError("length-overflow", p, f"{key}: string array runs past the end")
            e = p + 2 + ((buf[p] << 8) | buf[p + 1])
            if e > n:
                raise LwesDecodeError("length-overflow", p, f"{key}: string array element runs past the end")
            values.append(buf[p + 2 : e].decode(text, "surrogateescape"))
            p = e
    elif base == 6:
        e = p + 4 * wanted
        if e > n:
            raise LwesDecodeError("length-overflow", p, f"{key}: ip_addr array runs past the end")
        values = [f"{buf[i + 3]}.{buf[i + 2]}.{buf[i + 1]}.{buf[i]}" for i in range(p, e, 4)]
        p = e
    else:  # boolean
        e = p + wanted
        if e > n:
            raise LwesDecodeError("length-overflow", p, f"{key}: boolean array runs past the end")
        values = [b != 0 for b in buf[p:e]]
        p = e

    if present is not None:
        it = iter(values)
        values = [next(it) if flag else None for flag in present]
    return values, p


def decode_value(
    buf: bytes, p: int, t: int, *, text: str = "utf-8", long_strings: bool = False
) -> tuple[Any, int]:
    """Decode one value of type id `t` at offset `p`; returns (value, offset after it).

    The general, unhurried form of what `decode` inlines for speed; used for
    attribute fragments and to walk records again on error paths.
    """
    n = len(buf)
    if 0x81 <= t <= 0x98:
        return _decode_array(buf, p, n, t, "value", text)
    if t in _FIXED or t in (6, 9, 10):
        size = _FIXED[t][0] if t in _FIXED else (4 if t == 6 else 1)
        if p + size > n:
            raise LwesDecodeError("truncated", p, f"{LwesType(t).type_name} cut short")
        if t == 6:
            return f"{buf[p + 3]}.{buf[p + 2]}.{buf[p + 1]}.{buf[p]}", p + 4
        if t == 9:
            return buf[p] != 0, p + 1
        if t == 10:
            return buf[p], p + 1
        return _FIXED[t][1](buf, p)[0], p + size
    if t == 5 or (t == 13 and long_strings):
        width = 2 if t == 5 else 4
        if p + width > n:
            raise LwesDecodeError("truncated", p, "string length missing")
        e = p + width + int.from_bytes(buf[p : p + width], "big")
        if e > n:
            raise LwesDecodeError("length-overflow", p, "string runs past the end")
        return buf[p + width : e].decode(text, "surrogateescape"), e
    raise LwesDecodeError("bad-type-id", p - 1, f"unknown type id 0x{t:02x}")


# ----------------------------------------------------------------------------
# Encoder

_P_U16 = struct.Struct(">H").pack
_P_U32 = struct.Struct(">I").pack
_PACK: dict[int, Any] = {
    LwesType.UINT16: struct.Struct(">H").pack,
    LwesType.INT16: struct.Struct(">h").pack,
    LwesType.UINT32: struct.Struct(">I").pack,
    LwesType.INT32: struct.Struct(">i").pack,
    LwesType.INT64: struct.Struct(">q").pack,
    LwesType.UINT64: struct.Struct(">Q").pack,
    LwesType.FLOAT: struct.Struct(">f").pack,
    LwesType.DOUBLE: struct.Struct(">d").pack,
    LwesType.BYTE: struct.Struct(">B").pack,
}


def _name_bytes(name: str, what: str) -> bytes:
    raw = name.encode("utf-8", "surrogateescape")
    if not 0 < len(raw) <= MAX_NAME:
        raise LwesEncodeError(f"{what} {name[:40]!r} is {len(raw)} bytes; it must be 1..{MAX_NAME}")
    return raw


def encode_ip(value: Any) -> bytes:
    """Four octets of an IPv4 address in LWES's reversed order."""
    parts = str(value).split(".")
    try:
        octets = bytes(int(x) for x in parts)
    except ValueError:
        octets = b""
    if len(parts) != 4 or len(octets) != 4 or not all(x.isdigit() for x in parts):
        raise LwesEncodeError(f"{value!r} is not a dotted-quad IPv4 address")
    return octets[::-1]


def _encode_text(value: Any, text: str, prefix: Any, limit: int, key: str) -> bytes:
    raw = value if isinstance(value, bytes | bytearray) else value.encode(text, "surrogateescape")
    if len(raw) > limit:
        raise LwesEncodeError(f"{key}: string of {len(raw)} bytes exceeds {limit}")
    return prefix(len(raw)) + raw


def encode_scalar(t: int, value: Any, text: str = "utf-8", key: str = "") -> bytes:
    """The wire bytes of one scalar value of type `t`."""
    if t == 5:
        if not isinstance(value, str | bytes | bytearray):
            raise LwesEncodeError(f"{key}: string value expected, got {type(value).__name__}")
        return _encode_text(value, text, _P_U16, 0xFFFF, key)
    if t == 9:
        return b"\x01" if value else b"\x00"
    if t == 6:
        return encode_ip(value)
    if t == 13:
        return _encode_text(value, text, _P_U32, 0xFFFFFFFF, key)
    pack = _PACK.get(t)
    if pack is None:
        raise LwesEncodeError(f"{key}: type id 0x{t:02x} is not a scalar type")
    if isinstance(value, str) or (t not in (11, 12) and not isinstance(value, int)):
        raise LwesEncodeError(f"{key}: {LwesType(t).type_name} needs a number, got {value!r}")
    try:
        return pack(value)
    except struct.error:
        raise LwesEncodeError(f"{key}: {value!r} is out of range for {LwesType(t).type_name}") from None


def _encode_array(t: int, values: Any, text: str, key: str) -> bytes:
    values = list(values)
    count = len(values)
    if count > 0xFFFF:
        raise LwesEncodeError(f"{key}: array of {count} elements exceeds 65535")
    base = t - 0x80 if t < 0x8D else t - 0x8C
    out = bytearray(_P_U16(count))
    if t >= 0x8D:
        out += _P_U16(count)
        bitmap = bytearray((count + 7) >> 3)
        for i, v in enumerate(values):
            if v is not None:
                bitmap[i >> 3] |= 1 << (i & 7)
        out += bitmap
        values = [v for v in values if v is not None]
    elif any(v is None for v in values):
        raise LwesEncodeError(f"{key}: None in a non-nullable array")
    for v in values:
        out += encode_scalar(base, v, text, key)
    return bytes(out)


def encode(event: Event, *, max_size: int = MAX_DATAGRAM) -> bytes:
    """Serialize `event`; raises `LwesEncodeError` on bad values or a datagram over `max_size`."""
    attrs = event.attrs
    if len(attrs) > 0xFFFF:
        raise LwesEncodeError(f"{len(attrs)} attributes exceed 65535")
    name = _name_bytes(event.name, "event name")
    out = bytearray()
    out.append(len(name))
    out += name
    out += _P_U16(len(attrs))
    text = text_encoding(attrs)
    for key, (t, v) in attrs.items():
        raw = _name_bytes(key, "attribute name")
        out.append(len(raw))
        out += raw
        out.append(t)
        if t >= 0x81:
            if t > 0x98:
                raise LwesEncodeError(f"{key}: type id 0x{t:02x} is not an LWES type")
            out += _encode_array(t, v, text, key)
        else:
            out += encode_scalar(t, v, text, key)
    if len(out) > max_size:
        raise LwesEncodeError(f"event {event.name!r} encodes to {len(out)} bytes, over the {max_size}-byte limit")
    return bytes(out)
