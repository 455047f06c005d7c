"""`BackendRunner`: one backend behind its own bounded queue and worker thread.

Listeners call `offer` from their threads; it never blocks: a full queue drops
the event for this backend only and counts it. The worker takes batches,
decodes them if the backend asks for it, calls `handle`, and flushes
periodically. A backend that raises is counted, logged (rate-limited), closed
and built again after a growing back-off, while the queue keeps accepting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from mondemand.envelope import RawEvent
from mondemand.lwes import LwesDecodeError
from mondemand.plugin_api import Backend

log = logging.getLogger("mondemand.runner")


class RateLimitedLog:
    """Log at most one line per `interval` seconds per key; count what was suppressed."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def error(self, key: str, message: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        suppressed = self._suppressed.pop(key, 0)
        self._last[key] = now
        if suppressed:
            message += f" ({suppressed} similar suppressed)"
        self.logger.error(message, *args, exc_info=exc_info)


class BackendRunner:
    """Owns one backend instance, its queue and its worker thread."""

    def __init__(
        self,
        name: str,
        factory: Callable[[], Backend],
        *,
        queue_size: int = 100_000,
        batch_size: int = 1000,
        flush_interval: float = 1.0,
        backoff_min: float = 0.1,
        backoff_max: float = 30.0,
        linger: float = 0.005,
        on_decode_error: Callable[[RawEvent, LwesDecodeError], None] | None = None,
    ) -> None:
        self.name = name
        self.factory = factory
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.linger = linger
        self.on_decode_error = on_decode_error
        self.backend: Backend | None = None
        self._queue: deque[RawEvent] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._drop_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._reopen = False
        self._ratelog = RateLimitedLog(logging.getLogger(f"mondemand.backend.{name}"))
        # Counters: `dropped` is written by listener threads under a lock, the
        # rest by the worker thread alone.
        self.processed = 0
        self.dropped = 0
        self.errors = 0
        self.failed = 0
        self.decode_errors = 0
        self.restarts = 0
        self.process_seconds = 0.0
        self.started = threading.Event()

    # -- producer side (listener threads) ---------------------------------

    def offer(self, raw: RawEvent) -> bool:
        """Queue `raw` unless the queue is full; never blocks. True when queued."""
        queue = self._queue
        if len(queue) >= self.queue_size or self._stopping:
            with self._drop_lock:
                self.dropped += 1
            return False
        queue.append(raw)
        wake = self._wake
        if not wake.is_set():
            wake.set()
        return True

    def offer_many(self, events: list[RawEvent]) -> int:
        """Queue as many of `events` as fit; the rest are dropped and counted. Returns how many were queued."""
        queue = self._queue
        room = 0 if self._stopping else self.queue_size - len(queue)
        if room >= len(events):
            queue.extend(events)
            taken = len(events)
        else:
            taken = max(room, 0)
            if taken:
                queue.extend(events[:taken])
            with self._drop_lock:
                self.dropped += len(events) - taken
        if taken and not self._wake.is_set():
            self._wake.set()
        return taken

    @property
    def depth(self) -> int:
        """Events waiting in the queue."""
        return len(self._queue)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Build and start the backend, then the worker. Raises what the backend's start raises."""
        self.backend = self.factory()
        self.backend.start()
        self._thread = threading.Thread(target=self._run, name=f"backend-{self.name}", daemon=True)
        self._thread.start()
        self.started.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Drain the queue, flush and close the backend, and end the worker."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("backend %s did not drain within %.0f s; %d events left", self.name, timeout, self.depth)

    def request_reopen(self) -> None:
        """Ask the worker to call `reopen` on the backend (SIGHUP)."""
        self._reopen = True
        self._wake.set()

    # -- worker ------------------------------------------------------------

    def _run(self) -> None:
        queue = self._queue
        next_flush = time.monotonic() + self.flush_interval
        while True:
            if not queue:
                if self._stopping:
                    break
                self._wake.clear()
                if not queue and not self._stopping:
                    self._wake.wait(max(0.0, min(next_flush - time.monotonic(), 1.0)))
            if self._reopen:
                self._reopen = False
                self._call("reopen", lambda b: b.reopen())
            if queue:
                n = min(len(queue), self.batch_size)
                batch = [queue.popleft() for _ in range(n)]
                self._process(batch)
                if n < self.batch_size and not self._stopping:
                    # A short batch means we are keeping up: let events gather
                    # for a few ms instead of trading the GIL with the
                    # listener for every handful of them.
                    time.sleep(self.linger)
            now = time.monotonic()
            if now >= next_flush:
                self._call("flush", lambda b: b.flush())
                next_flush = now + self.flush_interval
        self._call("flush", lambda b: b.flush())
        self._call("close", lambda b: b.close())

    def _process(self, batch: list[RawEvent]) -> None:
        backend = self.backend
        if backend is None:
            self.failed += len(batch)
            return
        if backend.needs != "raw":
            batch = self._decoded(batch, backend.needs)
            if not batch:
                return
        start = time.perf_counter()
        try:
            backend.handle(batch)
        except Exception as exc:
            self.process_seconds += time.perf_counter() - start
            self.errors += 1
            self.failed += len(batch)
            self._ratelog.error("handle", "backend %s failed on a batch of %d: %r", self.name, len(batch), exc,
                                exc_info=True)
            self._restart()
            return
        self.process_seconds += time.perf_counter() - start
        self.processed += len(batch)

    def _decoded(self, batch: list[RawEvent], needs: str) -> list[RawEvent]:
        good = []
        for raw in batch:
            try:
                if needs == "stats":
                    raw.stats  # noqa: B018 - StatsMsg only (None for the rest, which pass undecoded)
                elif needs == "message":
                    raw.message  # noqa: B018 - decodes once, shared with other backends
                else:
                    raw.event  # noqa: B018
            except LwesDecodeError as exc:
                self.decode_errors += 1
                if self.on_decode_error is not None:
                    self.on_decode_error(raw, exc)
                continue
            except Exception as exc:  # a malformed MonDemand message
                self.decode_errors += 1
                self._ratelog.error("message", "backend %s: undecodable %s from %s: %s", self.name, raw.name,
                                    raw.sender_ip, exc)
                continue
            good.append(raw)
        return good

    def _call(self, what: str, fn: Callable[[Backend], None]) -> None:
        if self.backend is None:
            return
        try:
            fn(self.backend)
        except Exception as exc:
            self.errors += 1
            self._ratelog.error(what, "backend %s failed in %s: %r", self.name, what, exc, exc_info=True)
            if what != "close":
                self._restart()

    def _restart(self) -> None:
        """Close the broken instance and build a new one, backing off while starts keep failing."""
        old, self.backend = self.backend, None
        if old is not None:
            try:
                old.close()
            except Exception as exc:
                self._ratelog.error("close", "backend %s failed to close: %r", self.name, exc)
        delay = self.backoff_min
        while not self._stopping or self._queue:
            self._sleep(delay)
            try:
                backend = self.factory()
                backend.start()
            except Exception as exc:
                self.errors += 1
                self._ratelog.error("start", "backend %s failed to restart: %r", self.name, exc)
                delay = min(delay * 2, self.backoff_max)
                if self._stopping:
                    return
                continue
            self.backend = backend
            self.restarts += 1
            return

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(min(0.05, seconds))

    def counters(self) -> dict[str, float]:
        """Counters for /status and the self-metrics."""
        values: dict[str, float] = {
            "events_processed": self.processed,
            "dropped": self.dropped,
            "errors": self.errors,
            "failed": self.failed,
            "decode_errors": self.decode_errors,
            "restarts": self.restarts,
            "queue_depth": self.depth,
            "process_millis": int(self.process_seconds * 1000),
        }
        backend = self.backend
        if backend is not None:
            try:
                for key, value in backend.counters().items():
                    values[f"backend.{key}"] = value
            except Exception as exc:
                self._ratelog.error("counters", "backend %s failed to report counters: %r", self.name, exc)
        return values
