"""Process statistics for `Client(process_stats=True)`, from the standard library and /proc only.

Gauges: `process_uptime_s`, `process_rss_bytes`, `process_cpu_pct` (CPU time
over wall time since the previous reading, 100 = one core busy),
`process_open_fds`, `process_threads`. Counters (cumulative):
`process_log_errors`, `process_log_warnings`, counted by a `logging.Handler`
on the root logger. On systems without /proc, RSS falls back to the peak RSS of
`resource.getrusage` and the fd gauge is left out.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
import time

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


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


def rss_bytes() -> int:
    """Resident set size now (/proc/self/statm), else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def open_fds() -> int | None:
    """Open file descriptors (/proc/self/fd), None where that is unavailable."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def thread_count() -> int:
    """OS threads of the process (/proc/self/status), else the Python threads."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return threading.active_count()


class ProcessStats:
    """Reads the gauges; one instance per client so CPU % covers the time since its previous reading."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.log_counter = LogCounter()
        self._last_wall = self.started
        self._last_cpu = time.process_time()

    def install(self) -> None:
        """Start counting log records on the root logger."""
        logging.getLogger().addHandler(self.log_counter)

    def uninstall(self) -> None:
        """Stop counting log records."""
        logging.getLogger().removeHandler(self.log_counter)

    def reset_after_fork(self) -> None:
        """A forked child starts its own uptime, CPU window and log counts."""
        self.started = self._last_wall = time.monotonic()
        self._last_cpu = time.process_time()
        self.log_counter.errors = self.log_counter.warnings = 0

    def read(self) -> tuple[dict[str, int], dict[str, int]]:
        """(gauges, counters) as they are now."""
        wall, cpu = time.monotonic(), time.process_time()
        elapsed = wall - self._last_wall
        cpu_pct = 100.0 * (cpu - self._last_cpu) / elapsed if elapsed > 0 else 0.0
        self._last_wall, self._last_cpu = wall, cpu
        gauges = {
            "process_uptime_s": round(wall - self.started),
            "process_rss_bytes": rss_bytes(),
            "process_cpu_pct": round(cpu_pct),
            "process_threads": thread_count(),
        }
        fds = open_fds()
        if fds is not None:
            gauges["process_open_fds"] = fds
        counters = {"process_log_errors": self.log_counter.errors, "process_log_warnings": self.log_counter.warnings}
        return gauges, counters
