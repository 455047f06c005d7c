"""The decoded form of one LWES event."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator, Mapping
from typing import Any

from mondemand.lwes.types import LwesType

#: Attribute names a listener adds to a received event.
RECEIPT_TIME = "ReceiptTime"
SENDER_IP = "SenderIP"
SENDER_PORT = "SenderPort"
#: Reserved attribute selecting the string encoding (int16: 0 ISO-8859-1, 1 UTF-8).
ENCODING = "enc"

_F32 = struct.Struct(">f")


def text_encoding(attrs: Mapping[str, tuple[LwesType, Any]]) -> str:
    """The codec for string values: ISO-8859-1 only when `enc`=0 is the first attribute.

    This is the Java library's rule (the only one of the three that transcodes);
    C and Erlang treat strings as opaque bytes, which UTF-8 with surrogateescape
    reproduces losslessly.
    """
    for key, (typ, value) in attrs.items():
        if key == ENCODING and typ == LwesType.INT16 and value == 0:
            return "latin-1"
        break
    return "utf-8"


class Event:
    """An LWES event: a name and ordered, typed attributes.

    `attrs` maps each key to `(LwesType, value)`. Values are Python natives:
    ints, floats, bools, str (strings and dotted-quad IPv4 addresses), and lists
    for arrays, with None for absent elements of nullable arrays.
    `declared_count` is the count the datagram's header claimed (None for events
    built in code); a lax decode keeps events whose count disagrees.
    """

    __slots__ = ("attrs", "declared_count", "name")

    def __init__(
        self,
        name: str,
        attrs: Mapping[str, tuple[LwesType, Any]] | None = None,
        declared_count: int | None = None,
    ) -> None:
        self.name = name
        self.attrs: dict[str, tuple[LwesType, Any]] = dict(attrs) if attrs else {}
        self.declared_count = declared_count

    def __getitem__(self, key: str) -> Any:
        return self.attrs[key][1]

    def __contains__(self, key: object) -> bool:
        return key in self.attrs

    def __len__(self) -> int:
        return len(self.attrs)

    def __iter__(self) -> Iterator[str]:
        return iter(self.attrs)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of `key`, or `default` when absent."""
        item = self.attrs.get(key)
        return default if item is None else item[1]

    def type_of(self, key: str) -> LwesType:
        """The wire type of `key`."""
        return self.attrs[key][0]

    def set(self, key: str, typ: LwesType, value: Any) -> Event:
        """Set `key` to `value` of type `typ`, normalising floats and IP addresses; returns self."""
        self.attrs[key] = (typ, normalise(typ, value))
        return self

    def remove(self, key: str) -> None:
        """Drop `key` if present."""
        self.attrs.pop(key, None)

    @property
    def count_matches(self) -> bool:
        """False when the header's attribute count disagreed with the records present."""
        return self.declared_count is None or self.declared_count == len(self.attrs)

    @property
    def receipt_time(self) -> int | None:
        """ReceiptTime in ms since the epoch, as stamped by a listener."""
        return self.get(RECEIPT_TIME)

    @property
    def sender_ip(self) -> str | None:
        """SenderIP as a dotted quad."""
        return self.get(SENDER_IP)

    @property
    def sender_port(self) -> int | None:
        """SenderPort."""
        return self.get(SENDER_PORT)

    def to_dict(self) -> dict[str, Any]:
        """Plain `{key: value}` mapping (for JSON output)."""
        return {k: v for k, (_, v) in self.attrs.items()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self.name == other.name and self.attrs == other.attrs

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={t.type_name}:{v!r}" for k, (t, v) in self.attrs.items())
        return f"Event({self.name!r}, {inner})"


def normalise(typ: LwesType, value: Any) -> Any:
    """Bring `value` to the form a decode of its encoding gives back.

    Floats are rounded to binary32, IP addresses become dotted quads, array
    values become lists. Range checks happen in the encoder.
    """
    base = typ.base
    if typ.is_array:
        return [None if v is None else _normalise_scalar(base, v) for v in value]
    return _normalise_scalar(base, value)


def _normalise_scalar(typ: LwesType, value: Any) -> Any:
    if typ == LwesType.FLOAT:
        return _F32.unpack(_F32.pack(value))[0]
    if typ == LwesType.IP_ADDR:
        return str(ipaddress.IPv4Address(value))
    if typ == LwesType.BOOLEAN:
        return bool(value)
    return value
