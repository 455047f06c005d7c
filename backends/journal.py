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
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.journal import JournalReader, JournalRecord, JournalWriter
from mondemand.options import DAY, Option
from mondemand.plugin_api import Backend


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
    )

    def start(self) -> None:
        self.root = Path(self.config["root"]).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.base: str = self.config.get("name") or "all_events.log"
        self.interval: float = float(self.config.get("interval") or 60.0)
        self.level: int = int(self.config.get("level", 6))
        self.current = self.root / f"{self.base}.gz"
        self.writer: JournalWriter | None = None
        self._opened_wall = 0.0
        self._opened_mono = 0.0
        self.records = 0
        self.bytes_written = 0
        self.rotations = 0
        self.recovered = 0
        self.last_rotated: Path | None = None
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
        if self.writer is not None and self._due():
            self.rotate()
        writer = self.writer if self.writer is not None else self._open()
        written = 0
        for raw in batch:
            try:
                record = JournalRecord(raw.data, raw.receipt_ms, raw.sender_ip, raw.sender_port, raw.listener)
            except Exception as exc:  # a record the format cannot hold (e.g. a bad sender address)
                self.reject(raw, exc)
                continue
            writer.write(record)
            written += 1
        self.bytes_written += writer.sync()
        self.records += written

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
        finally:
            end = int(time.time() * 1000)
            target = self.root / rotated_name(self.base, int(self._opened_wall * 1000), end, directory=self.root)
            os.rename(self.current, target)
            self.rotations += 1
            self.last_rotated = target
        return target

    def flush(self) -> None:
        if self.writer is not None and self._due():
            self.rotate()

    def reopen(self) -> None:
        self.rotate()

    def close(self) -> None:
        self.rotate()

    def counters(self) -> dict[str, float]:
        return {"records": self.records, "bytes_written": self.bytes_written, "rotations": self.rotations,
                "recovered": self.recovered}


@hookimpl
def register_backend_types(register) -> None:
    register("journal", JournalBackend)
