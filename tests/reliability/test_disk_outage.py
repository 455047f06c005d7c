"""A full file system is an outage for stats_file: nothing torn, every line written once when space returns.

The stats_file backend runs behind a real `BackendRunner` on 3,900 events
(13 hosts x 300 gauges, one line each). Part way the file system fills up:

- `test_injected_full_disk`: everywhere, through `FileCache.write` (the seam):
  a real descriptor that takes a few more bytes (a short write, cutting a line)
  and then fails with ENOSPC;
- `test_full_tmpfs`: a real 1 MiB tmpfs (needs root to mount; skipped otherwise)
  filled by a filler file, freed by deleting it.

During the outage every file ends with a complete line; once space returns
every one of the 3,900 lines is in the files exactly once, the counters add
up and the backend was never restarted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mondemand.backends.files.stats_file import StatsFileBackend
from mondemand.backends.journal import JournalBackend

from mondemand.envelope import RawEvent
from mondemand.journal import JournalReader, JournalWriter
from mondemand.lwes import decode
from mondemand.messages import Metric, MetricType, StatsMsg
from mondemand.options import parse_options
from mondemand.plugin_api import ServerContext
from mondemand.runner import BackendRunner
from tests.e2e.harness import wait_for

pytestmark = pytest.mark.reliability

HOSTS, PER_HOST = 13, 300
TOTAL = HOSTS * PER_HOST


class FullDisk:
    """`os.write` on the real descriptor, until `room` is set: then `room` more bytes, then ENOSPC."""

    def __init__(self) -> None:
        self.room: int | None = None
        self.refused = 0

    def __call__(self, fd: int, view: memoryview) -> int:
        if self.room is None:
            return os.write(fd, view)
        if self.room <= 0:
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(fd, view[:self.room])
        self.room -= n
        return n


def events(start: int, stop: int) -> list[RawEvent]:
    now = int(time.time() * 1000)
    out = []
    for i in range(start, stop):
        msg = StatsMsg("diskapp", f"host{i % HOSTS}", {}, [Metric(MetricType.GAUGE, "seq", i)], send_time=now)
        out.append(RawEvent.from_event(msg.to_lwes()[0]))
    return out


def lines_of(root: Path) -> tuple[list[str], list[Path]]:
    """Every line under `root`, and the files that do not end with a complete line."""
    lines, torn = [], []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                torn.append(path)
            lines += data.decode().splitlines()
    return lines, torn


def scenario(root: Path, fill: Callable[[], None], free: Callable[[], None],
             setup: Callable[[StatsFileBackend], None] = lambda b: None) -> dict[str, float]:
    values, problems = parse_options(StatsFileBackend.options, {"root": str(root)})
    assert problems == []

    def factory() -> StatsFileBackend:
        backend = Instrumented("files", values, ServerContext())
        backend.setup = setup
        return backend

    runner = BackendRunner("files", factory, flush_interval=0.1, backoff_min=0.01, linger=0.001, batch_size=100)
    runner.start()
    try:
        runner.offer_many(events(0, 1000))
        wait_for(lambda: runner.counters()["backend.lines_written"] == 1000, what="the first 1,000 lines")
        fill()
        for start in range(1000, 2900, 100):
            runner.offer_many(events(start, start + 100))
            time.sleep(0.01)
        wait_for(lambda: runner.depth == 0 and runner.counters()["backend.buffered"] > 0, what="lines buffered")
        during = runner.counters()
        lines, torn = lines_of(root)
        assert torn == [], f"torn lines during the outage: {torn}"
        assert len(lines) == len(set(lines)) == during["backend.lines_written"]
        assert during["backend.lines_written"] + during["backend.buffered"] == 2900
        free()
        runner.offer_many(events(2900, TOTAL))
        wait_for(lambda: runner.counters()["backend.lines_written"] == TOTAL, timeout=30, what="every line")
        after = runner.counters()
    finally:
        runner.stop()
    lines, torn = lines_of(root)
    assert torn == []
    seqs = Counter(int(line.split("\t")[5]) for line in lines)
    assert sorted(seqs) == list(range(TOTAL)) and set(seqs.values()) == {1}, "a line missing or written twice"
    assert (after["backend.dropped"], after["backend.buffered"], after["restarts"], after["failed"]) == (0, 0, 0, 0)
    assert after["backend.outages"] >= 1 and after["backend.outage_seconds"] > 0
    print(f"disk full: {TOTAL} of {TOTAL} lines kept, {len(torn)} torn, {after['backend.truncations']} partial "
          f"writes undone, {during['backend.buffered']} buffered at most, {after['backend.dropped']} dropped, "
          f"{after['restarts']} restarts, outage {after['backend.outage_seconds']} s")
    return after


class Instrumented(StatsFileBackend):
    """The real backend; `setup` may reach its `FileCache` after start (the fault-injection seam)."""

    setup: Callable[[StatsFileBackend], None]

    def start(self) -> None:
        super().start()
        self.setup(self)


def test_injected_full_disk(tmp_path: Path) -> None:
    disk = FullDisk()

    def install(backend: StatsFileBackend) -> None:
        backend.files.write = disk

    def fill() -> None:
        disk.room = 50  # part of the next line, then ENOSPC

    def free() -> None:
        disk.room = None

    after = scenario(tmp_path / "stats", fill, free, install)
    assert disk.refused >= 1 and after["backend.truncations"] >= 1


@contextlib.contextmanager
def tmpfs(mnt: Path) -> Iterator[tuple[Path, Callable[[], None], Callable[[], None]]]:
    """A 1 MiB tmpfs at `mnt` with fill (a filler file taking every block) and free (delete it); skips if no mount."""
    mnt.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode}); "
                    "the injected-fault test covers the same path")
    filler = mnt / "filler"

    def fill() -> None:
        with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:  # to the last block: ENOSPC ends it
                f.write(b"x" * 4096)

    def free() -> None:
        filler.unlink()

    try:
        yield mnt, fill, free
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_tmpfs(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "tmpfs") as (mnt, fill, free):
        scenario(mnt / "stats", fill, free)


# -- the journal backend ------------------------------------------------------------------------------


def journal_scenario(root: Path, fill: Callable[[], None], free: Callable[[], None]) -> dict[str, float]:
    values, problems = parse_options(JournalBackend.options, {"root": str(root), "interval": "1h"})
    assert problems == []
    runner = BackendRunner("journal", lambda: JournalBackend("journal", values, ServerContext()), flush_interval=0.1,
                           backoff_min=0.01, linger=0.001, batch_size=100)
    runner.start()
    try:
        runner.offer_many(events(0, 1000))
        wait_for(lambda: runner.counters()["backend.records"] == 1000, what="the first 1,000 records")
        fill()
        for start in range(1000, 2900, 100):
            runner.offer_many(events(start, start + 100))
            time.sleep(0.01)
        wait_for(lambda: runner.depth == 0 and runner.counters()["backend.buffered"] > 0, what="events buffered")
        # Every journal reads to its last record (the worker may still be finishing a batch: read between two looks).
        during = wait_for(lambda: (lambda a, n, b: a if a["backend.records"] == n == b["backend.records"] else None)(
            runner.counters(), len(journal_records(root)), runner.counters()), what="the journal to stand still")
        free()
        runner.offer_many(events(2900, TOTAL))
        wait_for(lambda: runner.counters()["backend.records"] == TOTAL, timeout=30, what="every record")
        after = runner.counters()
    finally:
        runner.stop()
    seqs = Counter(StatsMsg.from_lwes(decode(r.data)).metrics[0].value for r in journal_records(root))
    assert sorted(seqs) == list(range(TOTAL)) and set(seqs.values()) == {1}, "a record missing or written twice"
    assert (after["backend.dropped"], after["backend.buffered"], after["restarts"], after["failed"]) == (0, 0, 0, 0)
    print(f"journal, disk full: {TOTAL} of {TOTAL} events journaled, {during['backend.buffered']} buffered at "
          f"most, {after['failed']} failed, {after['restarts']} restarts, outage {after['backend.outage_seconds']} s")
    return after


def journal_records(root: Path) -> list:
    out = []
    for path in sorted(root.glob("*.gz")):
        reader = JournalReader(path)
        out += list(reader)
        assert reader.status in ("complete", "truncated"), (path, reader.problem)
    return out


def test_injected_full_disk_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = FullDisk()
    monkeypatch.setattr(JournalWriter, "write_fn", staticmethod(disk))

    def fill() -> None:
        disk.room = 50

    def free() -> None:
        disk.room = None

    journal_scenario(tmp_path / "journal", fill, free)
    assert disk.refused >= 1


def test_full_tmpfs_journal(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "tmpfs") as (mnt, fill, free):
        journal_scenario(mnt / "journal", fill, free)
