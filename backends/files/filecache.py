"""`FileCache`: open append-only file descriptors kept between batches, closed when idle.

The text backends (stats_file, log_file) write many lines to few files, each
batch touching the same files again. Opening and closing per line, as the
reference does, costs two syscalls per line; here each file stays open until
it has not been written for `idle_timeout` seconds, at most `max_open` are open
at once (least recently used closed first), and `reopen` closes them all so
that the next write opens the path anew (SIGHUP after a log rotation moved
the files away).

Writes go straight to the descriptor (`O_APPEND`, no user-space buffer): data
handed to `append` is in the OS when it returns, so a killed process loses
none of it. Callers batch their lines and call `append` once per file per batch.
Not thread-safe: each backend owns its cache and uses it from its worker.

An append is all or nothing: when a write fails part way (a full disk), the
file is truncated back to where the append started, so a reader never sees a
partial line, and `OSError` is raised. `mondemand.backends.outage.is_outage` tells the errors that are
the file system's condition (full, read-only, over quota, I/O error) from those
of one file. `write` is the seam tests use to inject such errors on a real
descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
#: errno values that mean the file system cannot take writes for now (not a problem of one file or line).
class FileCache:
    """Append-mode descriptors by path, closed after `idle_timeout` seconds unused or when over `max_open`."""

    def __init__(self, idle_timeout: float = 60.0, max_open: int = 256, mode: int = 0o644) -> None:
        self.idle_timeout = idle_timeout
        self.max_open = max(1, max_open)
        self.mode = mode
        self._open: OrderedDict[Path, tuple[int, float]] = OrderedDict()  # least recently written first
        self.opens = 0
        self.closes = 0
        self.writes = 0
        self.bytes = 0
        self.truncations = 0
        #: `os.write` by default; tests replace it to make a real descriptor fail (short writes, ENOSPC)
        self.write: Callable[[int, memoryview], int] = os.write

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, path: object) -> bool:
        return path in self._open

    def append(self, path: Path, data: bytes) -> None:
        """Append `data` to `path`, creating it and its directories as needed; OSError when that fails."""
        fd = self._fd(path)
        view = memoryview(data)
        write = self.write
        try:
            while view:
                n = write(fd, view)
                view = view[n:]
        except OSError:
            done = len(data) - len(view)
            if done:
                self._undo(fd, path, done)
            self._close(path)  # a descriptor that failed is not trusted again
            raise
        self._open[path] = (fd, time.monotonic())
        self.writes += 1
        self.bytes += len(data)

    def _undo(self, fd: int, path: Path, done: int) -> None:
        """Truncate away the `done` bytes a failed append wrote, so the file ends with its last complete line."""
        try:
            os.ftruncate(fd, os.fstat(fd).st_size - done)
            self.truncations += 1
        except OSError as exc:  # cannot happen on a local file system; say so rather than hide a torn line
            raise OSError(exc.errno, f"{path}: a failed append left {done} bytes that cannot be removed: {exc}") \
                from exc

    def close_idle(self, now: float | None = None) -> int:
        """Close descriptors unused for `idle_timeout` seconds; returns how many were closed."""
        now = time.monotonic() if now is None else now
        stale = [path for path, (_, used) in self._open.items() if now - used >= self.idle_timeout]
        for path in stale:
            self._close(path)
        return len(stale)

    def reopen(self) -> None:
        """Close every descriptor: the next write to each path opens it again (log rotation)."""
        for path in list(self._open):
            self._close(path)

    close = reopen

    def _fd(self, path: Path) -> int:
        entry = self._open.get(path)
        if entry is not None:
            self._open.move_to_end(path)
            return entry[0]
        while len(self._open) >= self.max_open:
            self._close(next(iter(self._open)))
        try:
            fd = os.open(path, _FLAGS, self.mode)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, _FLAGS, self.mode)
        self.opens += 1
        self._open[path] = (fd, time.monotonic())
        return fd

    def _close(self, path: Path) -> None:
        entry = self._open.pop(path, None)
        if entry is not None:
            self.closes += 1
            with contextlib.suppress(OSError):  # nothing was buffered: the data is already in the kernel
                os.close(entry[0])

    def counters(self) -> dict[str, float]:
        """open_files, opens, closes, writes and bytes."""
        return {"open_files": len(self._open), "opens": self.opens, "closes": self.closes, "writes": self.writes,
                "bytes": self.bytes, "truncations": self.truncations}
