"""The header attributes a listener stamps on received events.

ReceiptTime (int64 ms), SenderIP (ip_addr) and SenderPort (uint16) are appended
to the raw bytes in that order, 49 bytes in all, and the attribute count is
raised by 3: the C library's way, the only variant the Java, C and Erlang
decoders all accept. An event that already ends with the three records (one a
forwarder passed on) keeps its original values.
"""

from __future__ import annotations

import struct

from mondemand.lwes.codec import encode_ip
from mondemand.lwes.errors import LwesDecodeError

_TAIL = struct.Struct(">B11sBqB8sB4sB10sBH")
HEADER_SIZE = _TAIL.size  # 49
_KEYS = (11, b"ReceiptTime", 7, 8, b"SenderIP", 6, 10, b"SenderPort", 1)


def has_headers(buf: bytes) -> bool:
    """True when `buf` ends with exactly the three header records, in order and with their types."""
    if len(buf) < HEADER_SIZE:
        return False
    f = _TAIL.unpack_from(buf, len(buf) - HEADER_SIZE)
    return (f[0], f[1], f[2], f[4], f[5], f[6], f[8], f[9], f[10]) == _KEYS


def read_headers(buf: bytes) -> tuple[int, str, int] | None:
    """(ReceiptTime ms, SenderIP, SenderPort) from the tail, or None when there is none."""
    if not has_headers(buf):
        return None
    f = _TAIL.unpack_from(buf, len(buf) - HEADER_SIZE)
    ip = f[7]
    return f[3], f"{ip[3]}.{ip[2]}.{ip[1]}.{ip[0]}", f[11]


def header_tail(receipt_ms: int, sender_ip: str, sender_port: int) -> bytes:
    """The 49 bytes that carry the three header attributes."""
    return _TAIL.pack(
        11, b"ReceiptTime", 7, receipt_ms, 8, b"SenderIP", 6, encode_ip(sender_ip),
        10, b"SenderPort", 1, sender_port,
    )


def add_headers(buf: bytes, receipt_ms: int, sender_ip: str, sender_port: int) -> bytes:
    """`buf` with the header attributes appended and its count raised by 3.

    Returns `buf` unchanged when it already carries them. Raises
    `LwesDecodeError` when the name runs past the end or the count would overflow.
    """
    if has_headers(buf):
        return buf
    if not buf:
        raise LwesDecodeError("truncated", 0, "empty datagram")
    p = 1 + buf[0]
    if p + 2 > len(buf):
        raise LwesDecodeError("length-overflow", 0, "event name runs past the end")
    count = (buf[p] << 8) | buf[p + 1]
    if count > 0xFFFF - 3:
        raise LwesDecodeError("malformed", p, "attribute count too large to add headers")
    count += 3
    return b"".join(
        (buf[:p], bytes((count >> 8, count & 0xFF)), buf[p + 2 :], header_tail(receipt_ms, sender_ip, sender_port))
    )
