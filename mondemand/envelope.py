"""`RawEvent`: one received datagram on its way through the router.

Listeners wrap each datagram without decoding it; the router needs only the
name (`peek_name`), and the backends that want the decoded event share one
lazy decode. Receipt time and sender are kept beside the bytes and written
into the event only when it is decoded or the bytes are forwarded with headers.

`tenant` names who sent the event in a service that hosts several ("" when
there is no such thing, the default); listeners that authenticate their
senders set it, and it travels with the event to the worker processes.

The compiled hot path (`mondemand._speedups`, built by `make setup`) builds
RawEvents by storing into their slots without running `__init__`; it learns the
slots' offsets here, at import. `SPEEDUPS` is that module, or None when it is
missing, built from another version of its source (`SPEEDUPS_API`; `make setup`
builds it again), or `MONDEMAND_PURE_PYTHON=1` asks for the pure-Python path.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from mondemand.lwes import MAX_DECODE_SIZE, Event, LwesDecodeError, LwesType, add_headers, decode, read_headers
from mondemand.lwes.codec import peek_name
from mondemand.messages.stats_fast import decode_stats

# Length byte + name bytes -> name; bounded, cleared when full.
_NAMES: dict[bytes, str] = {}
# Publishing a decode error: several backend threads may decode one RawEvent at once, and all of
# them must see the same exception object (decode errors are counted once per object).
_PUBLISH = threading.Lock()
_STATS_MSG = "MonDemand::StatsMsg"
_UNSET: Any = object()


def _learn_name(data: bytes) -> str:
    name = peek_name(data)  # raises LwesDecodeError for an unreadable name
    if len(_NAMES) >= 4096:
        _NAMES.clear()
    _NAMES[data[: 1 + data[0]]] = name
    return name


class RawEvent:
    """A datagram plus where and when it arrived.

    `receipt_ms`, `sender_ip` and `sender_port` are what the listener saw; an
    event that already carries the LWES header tail (one a forwarder passed
    on) keeps its original values instead, as the C listener does.
    """

    __slots__ = ("_event", "_message", "_stats", "data", "listener", "name", "receipt_ms", "sender_ip",
                 "sender_port", "tenant")

    def __init__(
        self,
        data: bytes,
        receipt_ms: int,
        sender_ip: str,
        sender_port: int,
        listener: str = "",
        name: str | None = None,
        tenant: str = "",
    ) -> None:
        if name is None:
            # Names repeat: one slice and one lookup in the common case.
            name = _NAMES.get(data[: 1 + data[0]] if data else b"")
            if name is None:
                name = _learn_name(data)
        self.data = data
        self.receipt_ms = receipt_ms
        self.sender_ip = sender_ip
        self.sender_port = sender_port
        self.listener = listener
        self.name = name
        #: The tenant that sent it (service mode, mondemand/tenancy.py); "" = none.
        self.tenant = tenant
        # _event and _message stay unset until first use (an unset slot
        # raises AttributeError): two fewer stores per datagram. _stats is
        # read for most datagrams, and a raised AttributeError costs more than a store.
        self._stats = _UNSET

    @classmethod
    def from_event(cls, event: Event, *, sender_ip: str = "127.0.0.1", sender_port: int = 0,
                   listener: str = "internal", tenant: str = "") -> RawEvent:
        """Wrap an event built in this process (self-metrics, re-injected aggregates)."""
        from mondemand.lwes import encode

        return cls(encode(event), int(time.time() * 1000), sender_ip, sender_port, listener, event.name, tenant)

    @property
    def event(self) -> Event:
        """The decoded event with ReceiptTime/SenderIP/SenderPort set; decoded once, shared.

        Raises `LwesDecodeError` for a malformed datagram (the error is cached too).
        """
        try:
            ev = self._event
        except AttributeError:
            try:
                # The listener bounded the size already (UDP: 65535; HTTP: max_body).
                ev = decode(self.data, long_strings=True, max_size=max(len(self.data), MAX_DECODE_SIZE))
            except LwesDecodeError as exc:
                ev = _publish_error(self, "_event", exc)
            else:
                if "ReceiptTime" not in ev.attrs:
                    ev.attrs["ReceiptTime"] = (LwesType.INT64, self.receipt_ms)
                    if _is_ipv4(self.sender_ip):
                        ev.attrs["SenderIP"] = (LwesType.IP_ADDR, self.sender_ip)
                    ev.attrs["SenderPort"] = (LwesType.UINT16, self.sender_port)
            self._event = ev
        if isinstance(ev, LwesDecodeError):
            raise ev
        return ev

    @property
    def message(self) -> Any:
        """The typed MonDemand message (StatsMsg, LogMsg, ...) or None for other events; decoded once."""
        try:
            msg = self._message
        except AttributeError:
            from mondemand.messages import from_lwes

            msg = from_lwes(self.event)
            self._message = msg
        return msg

    @property
    def stats(self) -> Any:
        """The `StatsRecord` of a MonDemand::StatsMsg (`mondemand.messages.stats_fast`), None for other events.

        Decoded once and shared, without building the Event or the StatsMsg.
        The record's RECEIPT_TIME is the datagram's own; fall back to
        `receipt_ms`. Raises `LwesDecodeError` (the very object `event` raises)
        or `MessageError` for a malformed StatsMsg; the error is cached too.
        """
        record = self._stats
        if record is _UNSET:
            if self.name != _STATS_MSG:
                self._stats = None
                return None
            n = len(self.data)
            try:
                record = self._stats = decode_stats(
                    self.data, long_strings=True, max_size=n if n > MAX_DECODE_SIZE else MAX_DECODE_SIZE)
            except LwesDecodeError:
                try:
                    self.event  # noqa: B018 - the generic decode's error, shared with `event`
                except LwesDecodeError as exc:
                    record = _publish_error(self, "_stats", exc)
                else:  # cannot happen: both decoders refuse the same bytes
                    raise
            except ValueError as exc:  # MessageError, and int()'s own for a statset field of absurd length
                record = _publish_error(self, "_stats", exc)
        if isinstance(record, Exception):
            raise record
        return record

    def original_headers(self) -> tuple[int, str, int]:
        """(ReceiptTime, SenderIP, SenderPort): from the datagram's own tail if it has one."""
        tail = read_headers(self.data)
        return tail if tail is not None else (self.receipt_ms, self.sender_ip, self.sender_port)

    def with_headers(self) -> bytes:
        """The datagram with the header attributes appended (unchanged if it carries them)."""
        ip = self.sender_ip if _is_ipv4(self.sender_ip) else "0.0.0.0"
        return add_headers(self.data, self.receipt_ms, ip, self.sender_port)

    def __repr__(self) -> str:
        return f"RawEvent({self.name!r}, {len(self.data)} bytes from {self.sender_ip}:{self.sender_port})"


def _publish_error(raw: RawEvent, slot: str, exc: Exception) -> Any:
    """Store `exc` in `slot` unless another thread stored a result first; returns what is stored."""
    with _PUBLISH:
        stored = getattr(raw, slot, _UNSET)
        if stored is _UNSET:
            setattr(raw, slot, exc)
            return exc
        return stored


def _is_ipv4(address: str) -> bool:
    return address.count(".") == 3 and ":" not in address


#: The version of `mondemand/_speedups.c` this code calls; a module built from another is not used.
SPEEDUPS_API = 2
#: SPEEDUPS_MISSING when the module is there but stale: the server warns of it at start.
STALE_BUILD = "mondemand._speedups was built from another version: run make setup"
#: Why the compiled hot path is not used ("" when it is).
SPEEDUPS_MISSING = ""


def _load_speedups() -> Any:
    global SPEEDUPS_MISSING
    if os.environ.get("MONDEMAND_PURE_PYTHON", "") not in ("", "0"):
        SPEEDUPS_MISSING = "MONDEMAND_PURE_PYTHON is set"
        return None
    try:
        from mondemand import _speedups
    except ImportError:
        SPEEDUPS_MISSING = "mondemand._speedups is not built"
        return None
    if getattr(_speedups, "API", 1) != SPEEDUPS_API:
        SPEEDUPS_MISSING = STALE_BUILD
        return None
    _speedups.setup(RawEvent, _UNSET)
    return _speedups


#: The compiled hot path, or None (pure Python).
SPEEDUPS: Any = _load_speedups()
