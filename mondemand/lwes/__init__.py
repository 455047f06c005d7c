"""The LWES binary event format: model, fast codec, listener headers, ESF files.

    >>> from mondemand.lwes import Event, LwesType, encode, decode
    >>> e = Event("Demo").set("n", LwesType.UINT16, 7)
    >>> decode(encode(e)) == e
    True
"""

from mondemand.lwes.codec import decode, encode, peek_name
from mondemand.lwes.errors import (
    EsfError,
    LwesDecodeError,
    LwesEncodeError,
    LwesError,
    ValidationError,
)
from mondemand.lwes.event import RECEIPT_TIME, SENDER_IP, SENDER_PORT, Event
from mondemand.lwes.headers import HEADER_SIZE, add_headers, has_headers, read_headers
from mondemand.lwes.types import MAX_DATAGRAM, MAX_DECODE_SIZE, LwesType

__all__ = [
    "HEADER_SIZE",
    "MAX_DATAGRAM",
    "MAX_DECODE_SIZE",
    "RECEIPT_TIME",
    "SENDER_IP",
    "SENDER_PORT",
    "EsfError",
    "Event",
    "LwesDecodeError",
    "LwesEncodeError",
    "LwesError",
    "LwesType",
    "ValidationError",
    "add_headers",
    "decode",
    "encode",
    "has_headers",
    "peek_name",
    "read_headers",
]
