"""Crash-safe state files: `write_atomic` and `Checkpoint`, used by `agg` to survive kill -9.

A checkpoint is one JSON document (zlib-compressed) written atomically: a
temporary file in the same directory, fsync, rename over the old one, fsync of
the directory. A reader therefore sees the old checkpoint or the new one,
never a torn mix. A lock file (``PATH.lock``, `fcntl.flock`) keeps two servers
from sharing one checkpoint: the second logs it and runs without.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import zlib
from pathlib import Path
from typing import Any

__all__ = ["Checkpoint", "CheckpointError", "write_atomic"]

#: Format version; a checkpoint of another version is ignored (logged), never misread.
VERSION = 1


class CheckpointError(Exception):
    """A checkpoint that cannot be written (too big, or the file system refused it)."""


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` by `data` atomically and durably (temp file + fsync + rename + directory fsync)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Checkpoint:
    """One state file of one backend: `load` at start, `save` every so often, `close` at the end."""

    def __init__(self, path: Path, max_bytes: int, log: logging.Logger) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.log = log
        self._lock_fd: int | None = None
        self.saves = 0
        self.errors = 0
        self.last_bytes = 0

    def acquire(self) -> bool:
        """Take the lock file; False (logged) when another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            self.log.error("checkpoint %s is in use by another process; running without a checkpoint", self.path)
            return False
        self._lock_fd = fd
        return True

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none or it cannot be read (logged)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.log.error("cannot read checkpoint %s: %s; starting empty", self.path, exc)
            return None
        try:
            state = json.loads(zlib.decompress(data))
        except (zlib.error, ValueError) as exc:
            self.log.error("checkpoint %s is unreadable (%s); starting empty", self.path, exc)
            return None
        if not isinstance(state, dict) or state.get("version") != VERSION:
            self.log.error("checkpoint %s has an unknown format; starting empty", self.path)
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Write `state` atomically; CheckpointError when it is over `max_bytes` or the write fails."""
        data = zlib.compress(json.dumps({**state, "version": VERSION}, separators=(",", ":")).encode(), 1)
        if len(data) > self.max_bytes:
            self.errors += 1
            raise CheckpointError(f"checkpoint of {len(data)} bytes is over checkpoint_max_bytes ({self.max_bytes})")
        try:
            write_atomic(self.path, data)
        except OSError as exc:
            self.errors += 1
            raise CheckpointError(f"cannot write checkpoint {self.path}: {exc}") from exc
        self.saves += 1
        self.last_bytes = len(data)

    def discard(self) -> None:
        """Remove the checkpoint (a stale one must not be restored later)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def close(self) -> None:
        """Release the lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


# -- the agg summariser's state ---------------------------------------------------


def _context(pairs: list[list[str]]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in pairs)


def agg_state(backend: Any) -> dict[str, Any]:
    """What an `AggBackend` must keep across a crash: open intervals, counter states, emitted intervals."""
    buckets = []
    for start, series in backend.buckets.items():
        rows = []
        for (prog_id, context, name), s in series.items():
            sketch = s.sketch.to_text() if s.sketch is not None else None
            rows.append([prog_id, context, name, s.count, s.sum, s.min, s.max, s.percentiles_lost, s.tail_count,
                         s.bot_weighted, s.top_weighted, sketch])
        buckets.append([start, rows])
    counters = [[host, prog_id, name, context, value, ms, seen]
                for (host, prog_id, name, context), (value, ms, seen) in backend.counter_state.items()]
    return {"interval": backend.interval, "buckets": buckets, "counters": counters,
            "emitted": sorted(backend.emitted)}


def restore_agg_state(backend: Any, state: dict[str, Any]) -> int:
    """Put a saved `agg_state` back into `backend` (an empty `AggBackend`); the number of live series restored."""
    from mondemand.sketch import Sketch
    from mondemand.summary import Summary

    if state.get("interval") != backend.interval:
        backend.log.warning("checkpoint is for interval %s s, not %s s; starting empty", state.get("interval"),
                            backend.interval)
        return 0
    buckets: dict[int, dict[Any, Summary]] = {}
    live = 0
    for start, rows in state["buckets"]:
        series = buckets.setdefault(int(start), {})
        for prog_id, context, name, count, total, low, high, lost, tail_count, bot, top, sketch in rows:
            summary = Summary(Sketch.from_text(sketch) if sketch is not None else None)
            summary.count, summary.sum, summary.min, summary.max = count, total, low, high
            summary.percentiles_lost, summary.tail_count = bool(lost), int(tail_count)
            summary.bot_weighted, summary.top_weighted = float(bot), float(top)
            series[(prog_id, _context(context), name)] = summary
            live += 1
    counter_state = {}
    for host, prog_id, name, context, value, ms, seen in state["counters"]:
        counter_state[(host, prog_id, name, _context(context))] = [value, ms, seen]
    backend.buckets = buckets
    backend.counter_state = counter_state
    backend.emitted = {int(b) for b in state["emitted"]}
    backend.live = live + len(counter_state)
    return backend.live
