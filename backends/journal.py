"""`journal` backend: every raw event, untouched, in rotated gzip journals (the all_journaller's job).

The current journal is `<root>/<name>.gz`; records are in the format of
`mondemand.journal` (docs/journal.md). Each batch is written and flushed with
Z_SYNC_FLUSH at once, so a killed server leaves a file readable up to its
last complete record. Every `interval` seconds (counted from the file's first
record), on SIGHUP and at shutdown the file is closed and renamed
`<name>.<YYYYMMDDHHMMSS>.<start>.<end>.gz`: the end time in UTC, then start
and end in milliseconds since the epoch, so that names are unique and sort in
time order even when journals rotate more than once a second. A file is
opened only when an event arrives, so quiet periods leave no empty journals.
A current file found at start-up (left by a killed server) is renamed the
same way (start: its first record's receipt time; end: its modification
time), never appended to.

A full, read-only or failing file system is an outage, not a failure (no
restart): the journal is cut back to its last complete record and closed,
records are kept in memory (at most `outage_buffer_bytes`, beyond that counted
in `dropped`), and written, in order, to a new journal once a retry (with a
doubling back-off) succeeds. docs/journal.md, "When the disk is full".
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from mondemand.backends.outage import Outage, is_outage

from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.journal import JournalReader, JournalRecord, JournalWriter
from mondemand.options import DAY, TIB, Option
from mondemand.plugin_api import Backend
from mondemand.runner import RateLimitedLog

#: Bytes a buffered record costs besides its datagram (the record object, its strings).
_RECORD_OVERHEAD = 300
#: Buffered records written per sync when replaying after an outage.
REPLAY_CHUNK = 1000


def _check_name(value: str) -> None:
    if not value or "/" in value or "\0" in value or value.startswith("."):
        raise ValueError("expected a plain file name (no '/', not starting with '.')")


def _check_level(value: int) -> None:
    if not 0 <= value <= 9:
        raise ValueError("expected a gzip level 0..9")


def rotated_name(name: str, start_ms: int, end_ms: int, directory: Path | None = None) -> str:
    """`<name>.<YYYYMMDDHHMMSS of end, UTC>.<start ms>.<end ms>.gz`, with `-<k>` after end if that file exists."""
    start, end = start_ms, end_ms
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(end // 1000))
    candidate = f"{name}.{stamp}.{start}.{end}.gz"
    k = 0
    while directory is not None and (directory / candidate).exists():
        k += 1
        candidate = f"{name}.{stamp}.{start}.{end}-{k}.gz"
    return candidate


class JournalBackend(Backend):
    """Write every event it receives, as received, into gzip journals rotated every `interval`."""

    type_name = "journal"
    needs = "raw"
    options = (
        Option("root", "str", required=True, help="directory of the journals (relative: to the working directory)"),
        Option("name", "str", "all_events.log", check=_check_name, help="file name; the current journal is "
               "<name>.gz"),
        Option("interval", "duration", 60.0, minimum=0.1, maximum=DAY,
               help="rotate a journal this long after its first record"),
        Option("level", "int", 6, check=_check_level, help="gzip compression level (1 fastest, 9 smallest)"),
        Option("outage_buffer_bytes", "size", 64 << 20, minimum=0, maximum=TIB,
               help="events kept in memory while the file system refuses writes (full, read-only); beyond, dropped"),
    )

    def start(self) -> None:
        self.root = Path(self.config["root"]).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.base: str = self.config.get("name") or "all_events.log"
        self.interval: float = float(self.config.get("interval") or 60.0)
        self.level: int = int(self.config.get("level", 6))
        self.current = self.root / f"{self.base}.gz"
        self.ratelog = RateLimitedLog(self.log)
        self.writer: JournalWriter | None = None
        self._opened_wall = 0.0
        self._opened_mono = 0.0
        self.records = 0
        self.bytes_written = 0
        self.rotations = 0
        self.recovered = 0
        self.last_rotated: Path | None = None
        self.outage: Outage[JournalRecord] = Outage(max_bytes=int(self.config.get("outage_buffer_bytes", 64 << 20)))
        self._recover()

    def _recover(self) -> None:
        """Rename a current journal left behind (by a killed server) so that it is never appended to."""
        try:
            stat = self.current.stat()
        except FileNotFoundError:
            return
        if stat.st_size == 0:
            self.current.unlink()
            return
        end = stat.st_mtime_ns // 1_000_000
        start = end
        for record in JournalReader(self.current):
            start = min(start, record.receipt_ms)
            break
        target = self.root / rotated_name(self.base, start, end, directory=self.root)
        os.rename(self.current, target)
        self.recovered += 1
        self.log.warning("%s: renamed the journal a previous run left open to %s", self.name, target.name)

    def handle(self, batch: list[RawEvent]) -> None:
        records = []
        for raw in batch:
            try:
                records.append(JournalRecord(raw.data, raw.receipt_ms, raw.sender_ip, raw.sender_port, raw.listener))
            except Exception as exc:  # a record the format cannot hold (e.g. a bad sender address)
                self.reject(raw, exc)
        if self.outage.active:  # behind the buffered records, in arrival order
            for record in records:
                self.outage.add(record, len(record.data) + _RECORD_OVERHEAD)
            self._replay()
            return
        self._write(records)

    def _write(self, records: list[JournalRecord]) -> bool:
        """Write and sync `records`; False when the file system is in an outage (they are buffered in front)."""
        try:
            if self.writer is not None and self._due():
                self.rotate()
            writer = self.writer if self.writer is not None else self._open()
            for record in records:
                writer.write(record)
            self.bytes_written += writer.sync()
        except OSError as exc:
            if not is_outage(exc):
                raise
            self._give_up_file()
            self.outage.put_back(records, [len(r.data) + _RECORD_OVERHEAD for r in records])
            delay = self.outage.failed()
            self.ratelog.error("outage", "%s: cannot write %s: %s; writes stopped, %d events buffered, retrying in "
                               "%.1f s", self.name, self.current, exc, len(self.outage.items), delay)
            return False
        self.records += len(records)
        return True

    def _replay(self, force: bool = False) -> None:
        """Write buffered records in order, to a new journal, once the back-off is over."""
        outage = self.outage
        while outage.items and (force or outage.due()):
            if not self._write(outage.take(REPLAY_CHUNK)):
                return
        if not outage.items and outage.active:
            self.log.info("%s: writes resumed; the buffered events are journaled", self.name)
            outage.succeeded()

    def _give_up_file(self) -> None:
        """After a failed write: cut the journal back to its last complete record and rotate it away."""
        writer, self.writer = self.writer, None
        if writer is None:
            return
        try:
            writer.abandon()
        except OSError as exc:
            self.log.error("%s: cannot truncate %s after a failed write: %s", self.name, self.current, exc)
        self._rename_current(writer)

    def _rename_current(self, writer: JournalWriter) -> None:
        if writer.written == 0:  # nothing reached the file: it is empty
            with contextlib.suppress(OSError):
                self.current.unlink()
            return
        end = int(time.time() * 1000)
        target = self.root / rotated_name(self.base, int(self._opened_wall * 1000), end, directory=self.root)
        try:
            os.rename(self.current, target)
        except OSError as exc:  # left in place: the next open renames it (_recover)
            self.log.error("%s: cannot rename %s: %s", self.name, self.current, exc)
            return
        self.rotations += 1
        self.last_rotated = target

    def _due(self) -> bool:
        return time.monotonic() - self._opened_mono >= self.interval

    def _open(self) -> JournalWriter:
        if self.current.exists():
            self._recover()
        self.writer = JournalWriter(self.current, self.level)
        self._opened_wall, self._opened_mono = time.time(), time.monotonic()
        return self.writer

    def rotate(self) -> Path | None:
        """Close the current journal and rename it with its time range; returns the new path (None if none open)."""
        writer, self.writer = self.writer, None
        if writer is None:
            return None
        try:
            writer.close()
        except OSError as exc:
            if not is_outage(exc):
                raise
            # Every record was synced before: the journal is whole but for its trailer (readers accept that).
            self.ratelog.error("outage", "%s: cannot finish %s: %s", self.name, self.current, exc)
        end = int(time.time() * 1000)
        target = self.root / rotated_name(self.base, int(self._opened_wall * 1000), end, directory=self.root)
        os.rename(self.current, target)
        self.rotations += 1
        self.last_rotated = target
        return target

    def flush(self) -> None:
        if self.outage.items:
            self._replay()
        if self.writer is not None and self._due():
            self.rotate()

    def reopen(self) -> None:
        self.rotate()

    def close(self) -> None:
        if self.outage.items:
            self._replay(force=True)
        lost = self.outage.drop_all()
        if lost:
            self.log.error("%s: the file system still refuses writes at shutdown; %d events dropped", self.name, lost)
        self.rotate()

    def counters(self) -> dict[str, float]:
        return {"records": self.records, "bytes_written": self.bytes_written, "rotations": self.rotations,
                "recovered": self.recovered, "dropped": self.outage.dropped, **self.outage.counters()}


@hookimpl
def register_backend_types(register) -> None:
    register("journal", JournalBackend)
