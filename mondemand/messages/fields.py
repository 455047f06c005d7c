"""Typed attribute access shared by the message decoders and encoders.

Every reader turns a missing attribute or a value of the wrong LWES type into a
`MessageError` naming the event and the key, so decoders never leak a
KeyError or TypeError.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from mondemand.lwes import Event, LwesEncodeError, LwesType, encode
from mondemand.lwes.types import INT_RANGES
from mondemand.messages.errors import MessageError

#: Integer wire types a decoder accepts wherever the schema says "a number".
INTEGER_TYPES: frozenset[LwesType] = frozenset(INT_RANGES)
#: Wire types that carry text.
STRING_TYPES: frozenset[LwesType] = frozenset({LwesType.STRING, LwesType.LONG_STRING})

INT64_MIN, INT64_MAX = INT_RANGES[LwesType.INT64]

_MISSING = object()


def _typed(event: Event, key: str, allowed: frozenset[LwesType], what: str, default: Any) -> Any:
    item = event.attrs.get(key)
    if item is None:
        if default is _MISSING:
            raise MessageError(f"required attribute {key!r} is missing", event.name)
        return default
    typ, value = item
    if typ not in allowed:
        raise MessageError(f"attribute {key!r} must be {what}, got {typ.type_name}", event.name)
    return value


def get_int(event: Event, key: str, default: Any = _MISSING) -> Any:
    """The integer value of `key` (any LWES integer type); `default` when absent, else MessageError."""
    return _typed(event, key, INTEGER_TYPES, "an integer", default)


def get_str(event: Event, key: str, default: Any = _MISSING) -> Any:
    """The text value of `key` (string or long_string); `default` when absent, else MessageError."""
    return _typed(event, key, STRING_TYPES, "a string", default)


def get_count(event: Event, key: str, default: Any = _MISSING) -> Any:
    """A non-negative entry count such as `num`; `default` when absent."""
    value = get_int(event, key, default)
    if isinstance(value, int) and value < 0:
        raise MessageError(f"attribute {key!r} is negative ({value})", event.name)
    return value


def check_int(value: Any, lwes_type: LwesType, what: str, event_name: str | None = None) -> int:
    """`value` when it is an int within the range of `lwes_type`, else MessageError."""
    lo, hi = INT_RANGES[lwes_type]
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"{what} must be an integer, got {type(value).__name__}", event_name)
    if not lo <= value <= hi:
        raise MessageError(f"{what} = {value} is out of range for {lwes_type.type_name}", event_name)
    return value


def check_str(value: Any, what: str, event_name: str | None = None) -> str:
    """`value` when it is a str, else MessageError."""
    if not isinstance(value, str):
        raise MessageError(f"{what} must be a string, got {type(value).__name__}", event_name)
    return value


def string_size(value: str) -> int:
    """Bytes a string value takes on the wire (u16 length + UTF-8 bytes)."""
    return 2 + len(value.encode("utf-8", "surrogateescape"))


def attr_size(key: str, value_size: int) -> int:
    """Bytes one attribute record takes: key length byte, key, type byte, value."""
    return 2 + len(key.encode("utf-8", "surrogateescape")) + value_size


def check_event_name(event: Event, expected: str) -> None:
    """MessageError unless `event` is named `expected`."""
    if event.name != expected:
        raise MessageError(f"expected a {expected} event", event.name)


def get_indexed(event: Event, key: str, num: int, reader: Any, count_key: str = "num") -> Any:
    """`reader(event, key)` for one entry of a counted group, with a clear error when it is absent."""
    if key not in event.attrs:
        raise MessageError(f"{count_key} is {num} but {key!r} is missing", event.name)
    return reader(event, key)


def value_size(lwes_type: LwesType, value: Any) -> int:
    """Bytes `value` takes on the wire as `lwes_type`; MessageError when it cannot be encoded."""
    if lwes_type is LwesType.STRING and isinstance(value, str):
        return string_size(value)
    fixed = _FIXED_SIZES.get(lwes_type)
    if fixed is not None and isinstance(value, int) and not isinstance(value, bool):
        lo, hi = INT_RANGES[lwes_type]
        if lo <= value <= hi:
            return fixed
    try:
        raw = encode(Event("x", {"k": (lwes_type, value)}), max_size=1 << 32)
    except LwesEncodeError as exc:
        raise MessageError(str(exc)) from None
    return len(raw) - _PROBE_OVERHEAD


_FIXED_SIZES = {
    LwesType.UINT16: 2,
    LwesType.INT16: 2,
    LwesType.UINT32: 4,
    LwesType.INT32: 4,
    LwesType.INT64: 8,
    LwesType.UINT64: 8,
    LwesType.BYTE: 1,
}
# Name length byte + "x" + u16 count, then key length byte + "k" + type byte.
_PROBE_OVERHEAD = 1 + 1 + 2 + 1 + 1 + 1


def check_ip(value: Any, what: str, event_name: str | None = None) -> str:
    """`value` as a dotted-quad IPv4 address, else MessageError."""
    try:
        return str(ipaddress.IPv4Address(value))
    except (ValueError, TypeError):
        raise MessageError(f"{what} must be an IPv4 address, got {value!r}", event_name) from None
