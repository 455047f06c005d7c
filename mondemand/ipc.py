"""Frames between the server's main process and its backend worker processes.

A frame is an 8-byte header, `>II` (payload length, target mask), followed
by a pickled payload. The mask says which of the worker's backends a batch is
for (bit i: the worker's i-th backend); control frames carry mask 0. Batches
are pickled as plain tuples, never as objects, so one `pickle.dumps` covers a
whole burst and the worker rebuilds its `RawEvent`s with one call each.

Messages (the payload's first item names the kind):

- main -> worker: ``("batch", name, [(data, receipt_ms, ip, port, listener, tenant), ...])``,
  ``("stop",)``, ``("reopen",)``, ``("http", request_id, path, query)``
- worker -> main: ``("ready", http_prefixes)``, ``("failed", message)``,
  ``("inject", [(data, receipt_ms, ip, port, listener, name, tenant), ...])``,
  ``("counters", {backend: {counter: value}})``, ``("http", request_id, status, body)``, ``("end",)``
"""

from __future__ import annotations

import contextlib
import operator
import os
import pickle
import struct
import threading
from collections.abc import Iterable
from typing import Any

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


_ROW = operator.attrgetter("data", "receipt_ms", "sender_ip", "sender_port", "listener", "tenant")


def encode_batch(name: str, events: Iterable[RawEvent]) -> bytes:
    """The pickled payload of one batch of same-named events (without the header)."""
    return pickle.dumps(("batch", name, list(map(_ROW, events))), protocol=pickle.HIGHEST_PROTOCOL)


def encode_message(message: tuple[Any, ...], mask: int = 0) -> bytes:
    """A whole frame (header and payload) for a control message."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload), mask) + payload


def batch_events(name: str, rows: list[tuple[bytes, int, str, int, str, str]]) -> list[RawEvent]:
    """RawEvents back from a batch's rows; the name is known, so nothing is peeked again."""
    return [RawEvent(data, ms, ip, port, listener, name, tenant) for data, ms, ip, port, listener, tenant in rows]


class FrameWriter:
    """Writes whole frames to a pipe; safe to call from several threads (one frame at a time)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()

    def write(self, frame: bytes) -> None:
        """Write all of `frame`; raises OSError (e.g. EPIPE) when the reader is gone."""
        with self._lock:
            view = memoryview(frame)
            while view:
                written = os.write(self.fd, view)
                view = view[written:]

    def send(self, message: tuple[Any, ...]) -> None:
        """Write one control message."""
        self.write(encode_message(message))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class FrameReader:
    """Reads frames from a pipe: `read()` returns (mask, message) or None at end of file."""

    def __init__(self, fd: int) -> None:
        self._file = os.fdopen(fd, "rb", buffering=PIPE_SIZE)

    def read(self) -> tuple[int, Any] | None:
        header = self._file.read(HEADER.size)
        if not header:
            return None
        if len(header) < HEADER.size:
            raise FrameError("frame header cut short")
        size, mask = HEADER.unpack(header)
        if size > MAX_FRAME:
            raise FrameError(f"frame of {size} bytes announced")
        payload = self._file.read(size)
        if len(payload) < size:
            raise FrameError("frame cut short")
        return mask, pickle.loads(payload)

    def close(self) -> None:
        self._file.close()
