"""Frames between the server's main process and its backend worker processes.

A frame is an 8-byte header, `>II` (payload length, target mask), followed
by a payload. The mask says which of the worker's backends a batch is for
(bit i: the worker's i-th backend). A frame with a mask is a batch; a frame
with mask 0 is a control message, pickled.

A batch payload is columnar, one burst of same-named events, little-endian:

    u32 count, u32 nstrings
    nstrings x (u32 length, UTF-8 bytes)   the string table; string 0 is the events' name
    count x <qIIIIH                         receipt_ms, datagram length, and the string indexes of
                                            sender_ip, listener and tenant, then sender_port
    the datagrams, back to back

Senders, the listener and the tenant repeat across a burst, so each is sent
once per batch; the worker rebuilds RawEvents sharing those string objects.
`mondemand._speedups` encodes and decodes it in C (and the listener builds the
RawEvents it encodes); `encode_batch_py` and `decode_batch_py` are the
pure-Python twins, used when the module is missing, and tested to produce
and accept the same bytes.

Control messages (the payload's first item names the kind):

- main -> worker: ``("stop",)``, ``("reopen",)``, ``("poll", seq)``, ``("http", request_id, path, query)``
- worker -> main: ``("ready", http_prefixes)``, ``("failed", message)``,
  ``("inject", [(data, receipt_ms, ip, port, listener, name, tenant), ...])``,
  ``("counters", {backend: {counter: value}})``, ``("http", request_id, status, body)``, ``("end",)``
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import struct
import threading
from typing import Any

from mondemand import envelope
from mondemand.envelope import RawEvent

HEADER = struct.Struct(">II")
#: Largest frame accepted from the other side; a corrupt length cannot make us allocate more.
MAX_FRAME = 1 << 30
#: Linux lets a pipe hold this much once asked (fcntl F_SETPIPE_SZ); the default is 64 KiB.
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031


class FrameError(Exception):
    """The other process sent something that is not a frame (it died mid-write, or memory was corrupted)."""


def grow_pipe(fd: int, size: int = PIPE_SIZE) -> None:
    """Ask for a larger pipe buffer so a burst does not block the writer; best effort."""
    try:
        import fcntl

        fcntl.fcntl(fd, F_SETPIPE_SZ, size)
    except (OSError, ImportError, ValueError):
        pass


_COUNTS = struct.Struct("<II")
_LENGTH = struct.Struct("<I")
_RECORD = struct.Struct("<qIIIIH")


def encode_batch_py(name: str, events: list[RawEvent]) -> bytes:
    """The batch payload of same-named `events` (pure Python; see the module's docstring for the format)."""
    index: dict[str, int] = {name: 0}
    records = bytearray()
    pack = _RECORD.pack
    try:
        for raw in events:
            ip, listener, tenant = raw.sender_ip, raw.listener, raw.tenant
            i = index.setdefault(ip, len(index))
            j = index.setdefault(listener, len(index))
            k = index.setdefault(tenant, len(index))
            records += pack(raw.receipt_ms, len(raw.data), i, j, k, raw.sender_port)
    except struct.error as exc:  # a receipt time or port out of range
        raise ValueError(f"cannot encode {raw!r}: {exc}") from None
    table = [s.encode() for s in index]  # dicts keep insertion order: index order
    head = _COUNTS.pack(len(events), len(table)) + b"".join(_LENGTH.pack(len(b)) + b for b in table)
    return b"".join([head, records, *(raw.data for raw in events)])


def decode_batch_py(payload: bytes) -> list[RawEvent]:
    """The RawEvents of a batch payload (pure Python); FrameError when it is not one."""
    try:
        count, nstrings = _COUNTS.unpack_from(payload, 0)
        pos = _COUNTS.size
        strings = []
        for _ in range(nstrings):
            (n,) = _LENGTH.unpack_from(payload, pos)
            pos += 4
            if pos + n > len(payload):
                raise FrameError("batch payload: string runs past the end")
            strings.append(payload[pos:pos + n].decode())
            pos += n
        name = strings[0]
        end = pos + count * _RECORD.size
        if end > len(payload):
            raise FrameError("batch payload: records run past the end")
        events = []
        append = events.append
        for ms, n, i, j, k, port in _RECORD.iter_unpack(payload[pos:end]):
            append(RawEvent(payload[end:end + n], ms, strings[i], port, strings[j], name, strings[k]))
            end += n
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise FrameError(f"batch payload: {exc}") from None
    if end != len(payload):
        raise FrameError("batch payload: datagrams do not fill it")
    return events


def encode_batch(name: str, events: list[RawEvent]) -> bytes:
    """The batch payload of same-named `events` (compiled when available)."""
    fast = envelope.SPEEDUPS
    if fast is not None:
        try:
            return fast.encode_batch(name, events)
        except TypeError:  # not RawEvents exactly (a subclass): the general path says what is wrong, if anything
            pass
    return encode_batch_py(name, events)


def decode_batch(payload: bytes) -> list[RawEvent]:
    """The RawEvents of a batch payload (compiled when available); FrameError when it is not one."""
    fast = envelope.SPEEDUPS
    if fast is not None:
        try:
            return fast.decode_batch(payload, FrameError)
        except UnicodeDecodeError as exc:
            raise FrameError(f"batch payload: {exc}") from None
    return decode_batch_py(payload)


def encode_message(message: tuple[Any, ...], mask: int = 0) -> bytes:
    """A whole frame (header and payload) for a control message."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload), mask) + payload


class FrameWriter:
    """Writes whole frames to a pipe; safe to call from several threads (one frame at a time)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()

    def write(self, frame: bytes) -> None:
        """Write all of `frame`, waiting for room; raises OSError (e.g. EPIPE) when the reader is gone.

        Works on a blocking or a non-blocking descriptor.
        """
        with self._lock:
            view = memoryview(frame)
            while view:
                try:
                    written = os.write(self.fd, view)
                except BlockingIOError:
                    poller = select.poll()
                    poller.register(self.fd, select.POLLOUT)
                    poller.poll()
                    continue
                view = view[written:]

    def send(self, message: tuple[Any, ...]) -> None:
        """Write one control message."""
        self.write(encode_message(message))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class FrameReader:
    """Reads frames from a pipe: `read()` returns (mask, message) or None at end of file.

    A batch frame (mask not 0) is returned as (mask, ("batch", events)). The
    reader keeps its own buffer (one `read` takes whatever the pipe holds, up to
    PIPE_SIZE), so `buffered` can tell whether another frame is already here.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray()
        self._pos = 0

    @property
    def buffered(self) -> int:
        """Bytes read from the pipe and not yet returned as frames."""
        return len(self._buf) - self._pos

    def _fill(self, need: int) -> bool:
        """Have `need` unread bytes in the buffer; False at end of file before that."""
        buf = self._buf
        if self._pos and self._pos >= len(buf) // 2:
            del buf[:self._pos]
            self._pos = 0
        while len(buf) - self._pos < need:
            chunk = os.read(self.fd, max(PIPE_SIZE, need - (len(buf) - self._pos)))
            if not chunk:
                return False
            buf += chunk
        return True

    def read(self) -> tuple[int, Any] | None:
        if not self._fill(HEADER.size):
            if self.buffered:
                raise FrameError("frame header cut short")
            return None
        size, mask = HEADER.unpack_from(self._buf, self._pos)
        if size > MAX_FRAME:
            raise FrameError(f"frame of {size} bytes announced")
        if not self._fill(HEADER.size + size):
            raise FrameError("frame cut short")
        start = self._pos + HEADER.size
        payload = bytes(self._buf[start:start + size])
        self._pos = start + size
        if mask:
            return mask, ("batch", decode_batch(payload))
        return mask, pickle.loads(payload)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
