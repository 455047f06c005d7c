"""A full or read-only file system is an outage for the whisper backend, as for stats_file and journal.

The real whisper backend runs behind a real `BackendRunner`; whisper's own
`open` is replaced by a fault-injecting opener (the seam the disk tests use:
real files, writes refused with ENOSPC, or opens with EROFS, while the
fault lasts). During the outage the backend is never restarted, nothing is
written, every file on disk is a whole whisper file; once the file system
takes writes again every one of the 601 points is in its file, once (one
of them in a file first needed during the outage).
"""

from __future__ import annotations

import builtins
import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest
import whisper
from mondemand_backend_whisper import WhisperBackend

from mondemand.envelope import RawEvent
from mondemand.messages import Metric, MetricType, StatsMsg
from mondemand.options import parse_options
from mondemand.plugin_api import ServerContext
from mondemand.runner import BackendRunner
from tests.e2e.harness import wait_for

pytestmark = pytest.mark.reliability

HOSTS, PER_HOST = 10, 60
TOTAL = HOSTS * PER_HOST
BASE = int(time.time()) - 3600


class FaultyDisk:
    """whisper's `open`: the real one, until `fault` is set ("full": writes fail with ENOSPC after the open;
    "read-only": opening for writing fails with EROFS)."""

    def __init__(self) -> None:
        self.fault: str | None = None
        self.refused = 0

    def __call__(self, path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if self.fault == "read-only" and mode != "rb":
            self.refused += 1
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        fh = builtins.open(path, mode, *args, **kwargs)  # noqa: SIM115 (an opener: whisper closes it)
        return _Full(fh, self) if self.fault == "full" and mode != "rb" else fh


class _Full:
    def __init__(self, fh: Any, disk: FaultyDisk) -> None:
        self._fh, self._disk = fh, disk

    def write(self, data: bytes) -> int:
        self._disk.refused += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self) -> _Full:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def events(start: int, stop: int) -> list[RawEvent]:
    out = []
    for i in range(start, stop):
        host, step = i % HOSTS, i // HOSTS
        msg = StatsMsg("wspapp", f"host{host}", {}, [Metric(MetricType.GAUGE, "seq", i)],
                       send_time=(BASE + step) * 1000)
        out.append(RawEvent.from_event(msg.to_lwes()[0], sender_ip="10.0.0.9", listener="udp"))
    return out


def stored(root: Path) -> dict[tuple[str, int], float]:
    """(file, timestamp) -> value for every point in every whisper file under `root`."""
    out = {}
    for path in root.rglob("*.wsp"):
        (start, _end, step), values = whisper.fetch(str(path), BASE - 10, BASE + PER_HOST + 10)
        for n, value in enumerate(values):
            if value is not None:
                out[(path.name, start + n * step)] = value
    return out


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_whisper_rides_out_a_full_or_read_only_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     fault: str) -> None:
    disk = FaultyDisk()
    monkeypatch.setattr(whisper, "open", disk, raising=False)
    root = tmp_path / "wsp"
    values, problems = parse_options(WhisperBackend.options, {"root": str(root), "retentions": "1s:1d",
                                                             "layout": "file"})
    assert problems == []
    runner = BackendRunner("whisper", lambda: WhisperBackend("whisper", values, ServerContext()),
                           flush_interval=0.1, backoff_min=0.01, linger=0.001, batch_size=50)
    runner.start()
    try:
        runner.offer_many(events(0, 200))
        wait_for(lambda: runner.counters()["backend.points_written"] == 200, what="the first 200 points")
        disk.fault = fault
        for start in range(200, 500, 50):
            runner.offer_many(events(start, start + 50))
            time.sleep(0.02)
        # A series first seen during the outage: its file cannot be made yet (a cut-short one is removed).
        fresh = StatsMsg("wspapp", "host0", {}, [Metric(MetricType.GAUGE, "fresh", TOTAL)], send_time=BASE * 1000)
        runner.offer_many([RawEvent.from_event(fresh.to_lwes()[0], sender_ip="10.0.0.9", listener="udp")])
        wait_for(lambda: runner.depth == 0 and runner.counters()["backend.buffered_points"] == 301,
                 what="301 points buffered")
        during = runner.counters()
        assert during["backend.points_written"] == 200 and during["restarts"] == 0
        for path in root.rglob("*.wsp"):
            whisper.info(str(path))  # every file on disk is whole
        time.sleep(0.5)  # retries meet the fault and back off; nothing is lost or restarted
        assert runner.counters()["restarts"] == 0 and disk.refused >= 2
        disk.fault = None
        runner.offer_many(events(500, TOTAL))
        wait_for(lambda: runner.counters()["backend.points_written"] == TOTAL + 1, timeout=40, what="every point")
        after = runner.counters()
    finally:
        runner.stop()
    points = stored(root)
    assert len(points) == TOTAL + 1
    assert sorted(points.values()) == list(range(TOTAL + 1))
    assert (after["backend.dropped"], after["backend.buffered_points"], after["restarts"], after["failed"],
            after["backend.errors"]) == (0, 0, 0, 0, 0)
    assert after["backend.outages"] >= 1 and after["backend.outage_seconds"] > 0
    print(f"\nwhisper, {fault} disk: {len(points)} of {TOTAL + 1} points kept, {during['backend.buffered_points']} "
          f"buffered, {after['backend.dropped']} dropped, {after['restarts']} restarts, outage "
          f"{after['backend.outage_seconds']} s")
