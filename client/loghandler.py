"""`MondemandLogHandler`: Python `logging` records at WARNING and above sent as MonDemand `LogMsg` lines.

    >>> import logging
    >>> from mondemand.client import Client, MondemandLogHandler
    >>> client = Client("shop")                                          # doctest: +SKIP
    >>> logging.getLogger().addHandler(MondemandLogHandler(client))      # doctest: +SKIP

Each record goes through `Client.log`, so identical lines (same level,
message, file and line) within one flush are sent once with a repeat count.
On top of that the handler lets at most `max_lines` *distinct* lines through
per `Client.flush_interval`: a program logging a new message per request
cannot flood the server. What is held back is counted (`dropped`) and
reported by one warning line in the next window. The dashboard's error
stream shows the lines (docs/dashboard.md).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from mondemand.client.core import Client, ClientError

from mondemand.messages import Priority

__all__ = ["MondemandLogHandler", "priority_of"]


def priority_of(levelno: int) -> Priority:
    """The MonDemand priority of a logging level: CRITICAL -> crit, ERROR -> error, WARNING -> warning, ..."""
    if levelno >= logging.CRITICAL:
        return Priority.CRIT
    if levelno >= logging.ERROR:
        return Priority.ERROR
    if levelno >= logging.WARNING:
        return Priority.WARNING
    if levelno >= logging.INFO:
        return Priority.INFO
    return Priority.DEBUG


class MondemandLogHandler(logging.Handler):
    """Send log records of `level` and above through `client` as LogMsg lines, rate-limited and collapsed."""

    def __init__(self, client: Client, level: int = logging.WARNING, max_lines: int = 100) -> None:
        super().__init__(level=level)
        if max_lines < 1:
            raise ValueError(f"max_lines must be at least 1, got {max_lines}")
        self.client = client
        self.max_lines = max_lines
        #: Records held back by the rate limit, in all.
        self.dropped = 0
        self._window_start = time.monotonic()
        self._seen: set[tuple[Any, ...]] = set()
        self._held = 0
        self._busy = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record on the client (the handler's lock is held); never raises into the caller."""
        if getattr(self._busy, "on", False):
            return  # a record logged while we are sending one: no loops
        self._busy.on = True
        try:
            now = time.monotonic()
            if now - self._window_start >= self.client.flush_interval:
                self._new_window(now)
            priority = priority_of(record.levelno)
            message = self.format(record)
            key = (priority, message, record.filename, record.lineno)
            if key not in self._seen:
                if len(self._seen) >= self.max_lines:
                    self._held += 1
                    self.dropped += 1
                    return
                self._seen.add(key)
            self.client.log(priority, message, file=record.filename, line=record.lineno)
        except ClientError:
            pass  # the client is closed: the program is shutting down
        except Exception:
            self.handleError(record)
        finally:
            self._busy.on = False

    def _new_window(self, now: float) -> None:
        held, self._held = self._held, 0
        self._seen.clear()
        self._window_start = now
        if held:
            self.client.log(Priority.WARNING, f"{held} log lines held back: over {self.max_lines} distinct lines "
                            f"in {self.client.flush_interval:g}s", file="mondemand.client", line=0)
