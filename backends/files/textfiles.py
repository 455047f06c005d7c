"""What the stats_file and log_file backends share: dated paths, TSV fields, a cache of open files.

Both write tab-separated lines to `<root>/YYYY/MM/DD/<prog_id>/<host>` (UTC
date). prog_id and host come from the wire, so each goes through
`mondemand.safepath.safe_name` (docs/files.md, "Names from the wire"). Lines
are gathered per file during a batch and written with one `write` per file
at the end of it. Bytes that are not UTF-8 are written as ``\\xe9`` (`mondemand.text`).

A full, read-only or failing file system is an outage (`mondemand.backends.outage`):
writing stops, what arrives is kept (up to `outage_buffer_bytes`) and written
in order once writes succeed again; a failed append leaves no partial line
(`FileCache`). docs/files.md, "When the disk is full".
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from mondemand.backends.files.filecache import FileCache
from mondemand.backends.outage import Outage, is_outage

from mondemand.fdlimit import descriptor_share
from mondemand.options import DAY, TIB, Option
from mondemand.plugin_api import Backend
from mondemand.runner import RateLimitedLog
from mondemand.safepath import UnsafePathError, join_under
from mondemand.text import escape_bytes

#: Milliseconds since the epoch accepted as a timestamp: 1970-01-01 up to the end of year 9999.
MAX_TIME_MS = 253_402_300_800_000

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_SPECIAL = frozenset("\\\t\n\r")
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
_PATH_CACHE_MAX = 10_000
#: Bytes a buffered chunk costs besides its data (the tuple, the path, the bytes object's header).
_CHUNK_OVERHEAD = 200


def escape_field(text: str) -> str:
    """`text` with backslash, TAB, LF and CR written as \\\\, \\t, \\n, \\r, so that a field stays one field."""
    if _SPECIAL.isdisjoint(text):
        return text
    return text.translate(_ESCAPES)


def unescape_field(text: str) -> str:
    """The inverse of `escape_field` (for readers of the files)."""
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in _UNESCAPES:
            out.append(_UNESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def format_context(context: Mapping[str, str], delimiter: str) -> str:
    """`k=v` pairs in the order given, joined by `delimiter`, each escaped."""
    return escape_field(delimiter.join(f"{k}={v}" for k, v in context.items()))


def valid_ms(value: Any) -> bool:
    """True for an int that is a usable time in ms (after 1970, before year 10000)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < MAX_TIME_MS


class DayClock:
    """Seconds -> ("YYYY", "MM", "DD") and "YYYY/MM/DD HH:MM:SS" (UTC), remembering the last second asked."""

    def __init__(self) -> None:
        self._second = -1
        self._value: tuple[tuple[str, str, str], str] = (("", "", ""), "")

    def __call__(self, seconds: int) -> tuple[tuple[str, str, str], str]:
        if seconds != self._second:
            t = time.gmtime(seconds)
            day = (f"{t.tm_year:04d}", f"{t.tm_mon:02d}", f"{t.tm_mday:02d}")
            stamp = f"{day[0]}/{day[1]}/{day[2]} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
            self._second, self._value = seconds, (day, stamp)
        return self._value


class DatedTextBackend(Backend):
    """Base of stats_file and log_file: subclasses turn a batch into `add_line` calls."""

    needs: ClassVar[str] = "message"
    options = (
        Option("root", "str", required=True, help="directory of the YYYY/MM/DD tree (relative: to the working "
               "directory)"),
        Option("context_delimiter", "str", "-", help="text between the k=v context pairs of a line"),
        Option("idle_timeout", "duration", 60.0, minimum=0.0, maximum=DAY,
               help="close a file not written for this long"),
        Option("max_open_files", "int", 4096, minimum=1,
               help="most files kept open at once (one per program and host a day: keep above the senders)"),
        Option("outage_buffer_bytes", "size", 64 << 20, minimum=0, maximum=TIB,
               help="lines kept in memory while the file system refuses writes (full, read-only); beyond, dropped"),
    )

    def start(self) -> None:
        self.root = Path(self.config["root"]).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.delimiter: str = self.config.get("context_delimiter") or ""
        max_open = descriptor_share(int(self.config.get("max_open_files", 4096)), f"[backend:{self.name}]")
        self.files = FileCache(self.config.get("idle_timeout", 60.0), max_open)
        self.clock = DayClock()
        self._paths: dict[tuple[str, str, str, str, str], Path | None] = {}
        #: path -> [lines (or blocks of lines joined by LF), how many lines]
        self._pending: dict[Path, list[Any]] = {}
        #: characters of the pending lines (about their bytes), for a bound on what waits
        self.pending_chars = 0
        self._ratelog = RateLimitedLog(self.log)
        self.lines_written = 0
        self.lines_dropped = 0
        self.write_errors = 0
        self.path_errors = 0
        self.skipped_events = 0
        self.reopens = 0
        #: (path, data, lines) chunks waiting for the file system to take writes again
        self.outage: Outage[tuple[Path, bytes, int]] = Outage(
            max_bytes=int(self.config.get("outage_buffer_bytes", 64 << 20)))
        self.buffered_lines = 0

    def path_for(self, day: tuple[str, str, str], prog_id: str, host: str) -> Path | None:
        """`<root>/YYYY/MM/DD/<prog_id>/<host>` with both names made safe; None (logged) if it would escape."""
        key = (*day, prog_id, host)
        path = self._paths.get(key, False)
        if path is False:
            try:
                path = join_under(self.root, *day, prog_id, host)
            except UnsafePathError as exc:
                self.path_errors += 1
                self._ratelog.error("path", "%s: refusing to write outside the root: %s", self.name, exc)
                path = None
            if len(self._paths) >= _PATH_CACHE_MAX:
                self._paths.clear()
            self._paths[key] = path
        return path  # type: ignore[return-value]

    def add_line(self, path: Path | None, line: str) -> None:
        """Queue one line (without its newline) for `path`; written by `write_pending`."""
        self.add_block(path, line, 1)

    def add_lines(self, path: Path | None, lines: list[str]) -> None:
        """`add_line` for several lines of one file."""
        self.add_block(path, "\n".join(lines), len(lines))

    def add_block(self, path: Path | None, block: str, lines: int) -> None:
        """Queue `lines` lines already joined by LF (no newline at the end) for `path`."""
        if path is None:
            self.lines_dropped += lines
            return
        self.pending_chars += len(block) + 1
        pending = self._pending.get(path)
        if pending is None:
            self._pending[path] = [[block], lines]
        else:
            pending[0].append(block)
            pending[1] += lines

    def write_pending(self) -> None:
        """One write per file for everything queued; a file that fails loses only its own lines (counted)."""
        pending, self._pending = self._pending, {}
        self.pending_chars = 0
        # Fields are already escaped (a real backslash is \\), so a byte that is not UTF-8 written as \xe9
        # is unambiguous and the file stays valid UTF-8.
        chunks = [(path, escape_bytes("\n".join(blocks) + "\n").encode("utf-8"), lines)
                  for path, (blocks, lines) in pending.items()]
        for blocks, _lines in pending.values():
            blocks.clear()  # a stats_file plan may still hold the entry: not the text
        if self.outage.active:  # behind what is buffered: every file keeps its order
            for chunk in chunks:
                self._buffer(chunk)
            self._replay()
            return
        for i, chunk in enumerate(chunks):
            if not self._write(chunk):
                for later in chunks[i + 1:]:
                    self._buffer(later)
                return

    def _write(self, chunk: tuple[Path, bytes, int], buffered: bool = False) -> bool:
        """Append one chunk; False when the file system is in an outage (the chunk is then buffered in front)."""
        path, data, lines = chunk
        try:
            self.files.append(path, data)
        except OSError as exc:
            if is_outage(exc):
                lost = self.outage.put_back([chunk], [len(data) + _CHUNK_OVERHEAD])
                if not buffered:
                    self.buffered_lines += lines
                self._lost(lost)
                delay = self.outage.failed()
                self._ratelog.error("outage", "%s: cannot write %s: %s; writes stopped, %d lines buffered, retrying "
                                    "in %.1f s", self.name, path, exc, self.buffered_lines, delay)
                return False
            self.write_errors += 1
            self.lines_dropped += lines
            if buffered:
                self.buffered_lines -= lines
            self._ratelog.error("write", "%s: cannot write %s: %s", self.name, path, exc)
            return True
        self.lines_written += lines
        if buffered:
            self.buffered_lines -= lines
        return True

    def _buffer(self, chunk: tuple[Path, bytes, int]) -> None:
        if self.outage.add(chunk, len(chunk[1]) + _CHUNK_OVERHEAD):
            self.buffered_lines += chunk[2]
        else:
            self.lines_dropped += chunk[2]

    def _lost(self, chunks: list[tuple[Path, bytes, int]]) -> None:
        for _path, _data, lines in chunks:
            self.lines_dropped += lines
            self.buffered_lines -= lines

    def _replay(self, force: bool = False) -> None:
        """Write buffered chunks in order while the file system takes them (after the back-off)."""
        outage = self.outage
        while outage.items and (force or outage.due()):
            chunk = outage.take(1)[0]
            if not self._write(chunk, buffered=True):
                return
        if not outage.items:
            if outage.active:
                self.log.info("%s: writes resumed; the buffered lines are written", self.name)
            outage.succeeded()

    def flush(self) -> None:
        if self.outage.items:
            self._replay()
        self.files.close_idle()

    def reopen(self) -> None:
        self.files.reopen()
        self.reopens += 1

    def close(self) -> None:
        self.write_pending()
        if self.outage.items:
            self._replay(force=True)
        if self.outage.items:
            lost = self.outage.take(len(self.outage.items))
            self._lost(lost)
            self.outage.dropped += len(lost)
            self.log.error("%s: the file system still refuses writes at shutdown; %d lines dropped", self.name,
                           sum(c[2] for c in lost))
        self.files.close()

    def counters(self) -> dict[str, float]:
        return {
            "lines_written": self.lines_written,
            "lines_dropped": self.lines_dropped,
            "write_errors": self.write_errors,
            "path_errors": self.path_errors,
            "skipped_events": self.skipped_events,
            "reopens": self.reopens,
            "open_files": len(self.files),
            "buffered": self.buffered_lines,
            "dropped": self.lines_dropped,
            "truncations": self.files.truncations,
            **{k: v for k, v in self.outage.counters().items() if k != "buffered"},
        }
