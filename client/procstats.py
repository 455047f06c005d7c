"""Process statistics for `Client(process_stats=True)`, read through `psutil` on Linux, macOS and Windows.

Gauges: `process_uptime_s` (since the process started, from psutil's create
time), `process_rss_bytes`, `process_cpu_pct` (CPU time over wall time since
the previous reading, 100 = one core busy), `process_open_fds` (open file
descriptors on POSIX, open handles on Windows; left out where psutil cannot
tell), `process_threads`. Counters (cumulative): `process_log_errors`,
`process_log_warnings`, counted by a `logging.Handler` on the root logger.
The dashboard's process panel reads these (docs/dashboard.md).
"""

from __future__ import annotations

import logging
import os
import time

import psutil

__all__ = ["LogCounter", "ProcessStats"]


class LogCounter(logging.Handler):
    """Counts ERROR-and-above and WARNING records it sees; emits nothing."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.errors = 0
        self.warnings = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Count the record (the handler's own lock serialises this)."""
        if record.levelno >= logging.ERROR:
            self.errors += 1
        elif record.levelno >= logging.WARNING:
            self.warnings += 1


def _handles(proc: psutil.Process) -> int | None:
    """Open file descriptors (POSIX) or handles (Windows); None where psutil cannot read them."""
    try:
        if hasattr(proc, "num_fds"):
            return proc.num_fds()
        if hasattr(proc, "num_handles"):
            return proc.num_handles()
    except (psutil.Error, OSError):
        pass
    return None


class ProcessStats:
    """Reads the gauges; one instance per client so CPU % covers the time since its previous reading."""

    def __init__(self) -> None:
        self.log_counter = LogCounter()
        self._reset()

    def _reset(self) -> None:
        self.proc = psutil.Process()
        try:
            self.created = self.proc.create_time()
        except (psutil.Error, OSError):
            self.created = time.time()
        self._last_wall = time.monotonic()
        self._last_cpu = self._cpu()

    def _cpu(self) -> float:
        try:
            times = self.proc.cpu_times()
            return times.user + times.system
        except (psutil.Error, OSError):
            return time.process_time()

    def install(self) -> None:
        """Start counting log records on the root logger."""
        logging.getLogger().addHandler(self.log_counter)

    def uninstall(self) -> None:
        """Stop counting log records."""
        logging.getLogger().removeHandler(self.log_counter)

    def reset_after_fork(self) -> None:
        """A forked child is another process: its own uptime, CPU window and log counts."""
        self._reset()
        self.log_counter.errors = self.log_counter.warnings = 0

    def read(self) -> tuple[dict[str, int], dict[str, int]]:
        """(gauges, counters) as they are now."""
        wall, cpu = time.monotonic(), self._cpu()
        elapsed = wall - self._last_wall
        cpu_pct = 100.0 * (cpu - self._last_cpu) / elapsed if elapsed > 0 else 0.0
        # CPU time advances in clock ticks (10 ms): over a short window one tick can read as many cores' worth.
        cpu_pct = min(max(cpu_pct, 0.0), 100.0 * (os.cpu_count() or 1))
        self._last_wall, self._last_cpu = wall, cpu
        gauges = {"process_uptime_s": max(0, round(time.time() - self.created)), "process_cpu_pct": round(cpu_pct)}
        try:
            with self.proc.oneshot():
                gauges["process_rss_bytes"] = self.proc.memory_info().rss
                gauges["process_threads"] = self.proc.num_threads()
        except (psutil.Error, OSError):
            pass
        handles = _handles(self.proc)
        if handles is not None:
            gauges["process_open_fds"] = handles
        counters = {"process_log_errors": self.log_counter.errors, "process_log_warnings": self.log_counter.warnings}
        return gauges, counters
