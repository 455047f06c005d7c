"""HMAC-SHA256-signed LWES datagrams (docs/wire-format.md, "Signed events").

A signed datagram is an ordinary LWES event whose last attribute is the
STRING `auth` = `v1:KEY_ID:TIMESTAMP_MS:HEX64`, with the attribute count in
the header including it. HEX64 is the lowercase hex HMAC-SHA256, under the
key id's secret, of every byte of the datagram but the last 64 (the event,
the `auth` attribute's name, type, length and `v1:KEY_ID:TIMESTAMP_MS:`).

`Verifier.verify` is the one call a listener makes per datagram: it returns
the tenant and the event without its `auth` attribute, or a refusal reason.
Replays are refused by remembering each accepted signature until its
timestamp leaves the window; the memory is bounded by `max_remembered`.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
from typing import Any

from mondemand.tenants import KEY_ID, Tenants

#: Name, type and prefix of the signature attribute.
ATTRIBUTE = b"\x04auth\x05"
VERSION = b"v1:"
SIG_HEX = 64
#: Longest `auth` value: v1: + 32-character key id + : + 13 digits + : + 64.
MAX_VALUE = 3 + 32 + 1 + 13 + 1 + SIG_HEX
#: Most bytes signing adds to an event (the `auth` attribute's name, type, length and longest value).
SIGNATURE_OVERHEAD = len(ATTRIBUTE) + 2 + MAX_VALUE
_U16 = struct.Struct(">H")

UNSIGNED = "unsigned"
BAD_SIGNATURE = "bad_signature"
UNKNOWN_KEY = "unknown_key"
EXPIRED = "expired"
REPLAYED = "replayed"
REPLAY_FULL = "replay_cache_full"
REASONS = (UNSIGNED, BAD_SIGNATURE, UNKNOWN_KEY, EXPIRED, REPLAYED, REPLAY_FULL)


_PADS: dict[bytes, tuple[Any, Any]] = {}


def mac_hex(secret: bytes, message: bytes | memoryview) -> str:
    """HMAC-SHA256 of `message` as lowercase hex (RFC 2104), from the secret's keyed inner and outer states.

    The same value as `hmac.new(secret, message, "sha256").hexdigest()` at less than half its cost: the two
    padded-key blocks are hashed once per secret, and each message costs two `copy()`s of those states.
    """
    pads = _PADS.get(secret)
    if pads is None:
        key = hashlib.sha256(secret).digest() if len(secret) > 64 else secret
        key = key.ljust(64, b"\0")
        if len(_PADS) >= 1024:
            _PADS.clear()
        pads = _PADS[secret] = (hashlib.sha256(bytes(b ^ 0x36 for b in key)),
                                hashlib.sha256(bytes(b ^ 0x5C for b in key)))
    inner = pads[0].copy()
    inner.update(message)
    outer = pads[1].copy()
    outer.update(inner.digest())
    return outer.hexdigest()


def sign(data: bytes, kid: str, secret: bytes, ts_ms: int | None = None) -> bytes:
    """`data` (one encoded LWES event) with the `auth` attribute appended and counted."""
    if not KEY_ID.match(kid):
        raise ValueError(f"key id {kid!r}: 1 to 32 letters, digits, '_', '.' or '-'")
    if ts_ms is None:
        ts_ms = int(time.time() * 1000)
    at = 1 + data[0]
    (count,) = _U16.unpack_from(data, at)
    if count >= 0xFFFF:
        raise ValueError("the event has 65535 attributes already")
    value = VERSION + kid.encode() + b":" + str(ts_ms).encode() + b":"
    head = data[:at] + _U16.pack(count + 1) + data[at + 2:] + ATTRIBUTE + _U16.pack(len(value) + SIG_HEX) + value
    return head + mac_hex(secret, head).encode()


def split(data: bytes) -> tuple[int, bytes] | None:
    """(offset of the `auth` attribute, its value) when `data` ends with one, else None."""
    n = len(data)
    if n < SIG_HEX + 20:
        return None
    start = data.rfind(ATTRIBUTE, max(0, n - MAX_VALUE - 8))
    if start < 0 or start + 8 > n:
        return None
    (length,) = _U16.unpack_from(data, start + 6)
    if start + 8 + length != n:
        return None
    return start, data[start + 8:]


class Verifier:
    """Checks signed datagrams against the tenants' HMAC secrets; one per listener."""

    def __init__(self, tenants: Tenants, window: float = 60.0, max_remembered: int = 100_000) -> None:
        self.tenants = tenants
        self.window_ms = int(window * 1000)
        self.max_remembered = max_remembered
        # signature -> timestamp (ms): insertion order is near enough time order to prune from the front.
        self._seen: dict[bytes, int] = {}
        self.refused: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.verified = 0

    def verify(self, data: bytes, now_ms: int) -> tuple[str, bytes] | str:
        """(tenant, the event without `auth`) for a good signature; else the refusal reason (counted)."""
        n = len(data)  # `split`, inlined: this runs for every datagram
        start = data.rfind(ATTRIBUTE, n - MAX_VALUE - 8 if n > MAX_VALUE + 8 else 0)
        if start < 0 or n < start + 8 or start + 8 + ((data[start + 6] << 8) | data[start + 7]) != n:
            self.refused[UNSIGNED] += 1
            return UNSIGNED
        parts = data[start + 8:].split(b":")
        if len(parts) != 4 or parts[0] != b"v1" or len(parts[3]) != SIG_HEX or not parts[2].isdigit():
            self.refused[BAD_SIGNATURE] += 1
            return BAD_SIGNATURE
        known = self.tenants.secret(parts[1].decode("ascii", "replace"))
        if known is None:
            self.refused[UNKNOWN_KEY] += 1
            return UNKNOWN_KEY
        tenant, secret = known
        mac = mac_hex(secret, memoryview(data)[:-SIG_HEX])
        if not hmac.compare_digest(mac, parts[3].decode("ascii", "replace")):
            self.refused[BAD_SIGNATURE] += 1
            return BAD_SIGNATURE
        ts = int(parts[2])
        if abs(now_ms - ts) > self.window_ms:
            self.refused[EXPIRED] += 1
            return EXPIRED
        seen = self._seen
        sig = parts[3]
        if sig in seen:
            self.refused[REPLAYED] += 1
            return REPLAYED
        if len(seen) >= self.max_remembered:
            horizon = now_ms - self.window_ms
            while seen:
                oldest = next(iter(seen))
                if seen[oldest] >= horizon:
                    break
                del seen[oldest]
            if len(seen) >= self.max_remembered:
                self.refused[REPLAY_FULL] += 1
                return REPLAY_FULL
        seen[sig] = ts
        self.verified += 1
        at = 1 + data[0]
        (count,) = _U16.unpack_from(data, at)
        return tenant, data[:at] + _U16.pack(count - 1) + data[at + 2:start]

    def counters(self) -> dict[str, int]:
        """verified, and each refusal reason."""
        return {"verified": self.verified, **self.refused, "remembered_signatures": len(self._seen)}
