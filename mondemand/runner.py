"""`BackendRunner`: one backend behind its own bounded queue and worker thread.

Listeners call `offer`/`offer_many` from their threads; they never block. The
queue is bounded in events (`queue_size`) and in bytes (`queue_bytes`: each
event counts its datagram plus `EVENT_OVERHEAD`); an event that does not fit is
dropped for this backend only and counted in `dropped` (and, when the bytes were
the limit, in `dropped_bytes_limit` too). The worker takes batches, decodes them
if the backend asks for it, calls `handle`, and flushes periodically.

Bad data costs the bad event only. A backend reports an event it cannot
process with `Backend.reject` (or raises `RejectEvent` naming it); the runner
counts it in `rejected` and logs it rate-limited (sender, event name, reason).
When `handle` raises anything else, the runner splits the batch in halves and
hands each half over again, down to single events: an event that raises on its
own is rejected, the others are processed (the contract: a `handle` that
raises has left no partial effect).

The restart rule: a backend is *broken*, not fed bad data, when

- every event of a batch of at least 2 events fails on its own, or
- `BROKEN_STREAK` events in a row failed on their own with no successful
  `handle` between them (a broken backend fed batches of one event), or
- `flush`, `reopen` or `start` raises.

A broken backend's events of that batch count as `failed`, and the instance is
replaced after a growing back-off (`backoff_min` doubling up to `backoff_max`)
while the queue keeps accepting: the runner calls `abandon()` on the broken
instance (not `close()`, so it emits nothing), builds a new one, calls its
`takeover(previous)` and then `start()`. agg uses that to keep its open
intervals, so a restart neither loses nor repeats an aggregate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from mondemand.envelope import RawEvent
from mondemand.lwes import LwesDecodeError
from mondemand.plugin_api import Backend, RejectEvent

log = logging.getLogger("mondemand.runner")

#: Bytes a queued event costs besides its datagram's payload: the RawEvent (104 with its slots), the bytes
#: object's header (33), its receipt-time, sender and port objects and the deque slot. Measured with
#: tracemalloc over 4 000 listener-made RawEvents: 275 by the pure-Python drain (its own time, address and
#: port objects per event), 197 by the compiled one (those shared within a burst); the larger, rounded up.
EVENT_OVERHEAD = 280
#: Events in a row that fail on their own, with no successful `handle` between them, that mark a backend broken.
BROKEN_STREAK = 10
#: Most characters of a rejection's reason in the log.
REASON_MAX = 200

_data = attrgetter("data")


class RateLimitedLog:
    """Log at most one line per `interval` seconds per key; count what was suppressed."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def error(self, key: str, message: str, *args: Any, exc_info: bool | BaseException = False) -> None:
        """An ERROR line, unless `key` logged one less than `interval` seconds ago."""
        self._log(logging.ERROR, key, message, args, exc_info)

    def warning(self, key: str, message: str, *args: Any, exc_info: bool | BaseException = False) -> None:
        """A WARNING line, unless `key` logged one less than `interval` seconds ago."""
        self._log(logging.WARNING, key, message, args, exc_info)

    def _log(self, level: int, key: str, message: str, args: tuple[Any, ...],
             exc_info: bool | BaseException) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        suppressed = self._suppressed.pop(key, 0)
        self._last[key] = now
        if suppressed:
            message += f" ({suppressed} similar suppressed)"
        self.logger.log(level, message, *args, exc_info=exc_info)


class BackendRunner:
    """Owns one backend instance, its queue and its worker thread."""

    def __init__(
        self,
        name: str,
        factory: Callable[[], Backend],
        *,
        queue_size: int = 100_000,
        queue_bytes: int = 64 << 20,
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
        self.queue_bytes = queue_bytes
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
        # Guards `_bytes` and the drop counters: several listener threads offer at once.
        self._lock = threading.Lock()
        self._bytes = 0
        self._thread: threading.Thread | None = None
        self._reopen = False
        self._ratelog = RateLimitedLog(logging.getLogger(f"mondemand.backend.{name}"))
        # Counters: `dropped` and `dropped_bytes_limit` are written by listener
        # threads under the lock, the rest by the worker thread alone.
        self.processed = 0
        self.dropped = 0
        self.dropped_bytes_limit = 0
        self.errors = 0
        self.failed = 0
        self.rejected = 0
        self.decode_errors = 0
        self.restarts = 0
        self.process_seconds = 0.0
        self._streak = 0  # events in a row that failed on their own
        self.started = threading.Event()

    # -- producer side (listener threads) ---------------------------------

    def offer(self, raw: RawEvent) -> bool:
        """Queue `raw` unless the queue is full (in events or bytes); never blocks. True when queued."""
        size = len(raw.data) + EVENT_OVERHEAD
        queue = self._queue
        with self._lock:
            if len(queue) >= self.queue_size or self._stopping:
                self.dropped += 1
                return False
            if self._bytes + size > self.queue_bytes:
                self.dropped += 1
                self.dropped_bytes_limit += 1
                return False
            self._bytes += size
            queue.append(raw)
        wake = self._wake
        if not wake.is_set():
            wake.set()
        return True

    def offer_many(self, events: list[RawEvent]) -> int:
        """Queue as many of `events` as fit; the rest are dropped and counted. Returns how many were queued."""
        n = len(events)
        size = sum(map(len, map(_data, events))) + n * EVENT_OVERHEAD
        queue = self._queue
        with self._lock:
            room = 0 if self._stopping else self.queue_size - len(queue)
            if room >= n and self._bytes + size <= self.queue_bytes:
                self._bytes += size
                queue.extend(events)
                taken = n
            else:
                taken = self._offer_part(events, max(min(room, n), 0))
        if taken and not self._wake.is_set():
            self._wake.set()
        return taken

    def _offer_part(self, events: list[RawEvent], room: int) -> int:
        """The slow path of `offer_many` (called under the lock): queue the first events that fit."""
        budget = self.queue_bytes - self._bytes
        taken = used = 0
        for raw in events[:room]:
            size = len(raw.data) + EVENT_OVERHEAD
            if used + size > budget:
                break
            used += size
            taken += 1
        if taken:
            self._queue.extend(events[:taken])
            self._bytes += used
        self.dropped += len(events) - taken
        self.dropped_bytes_limit += room - taken
        return taken

    @property
    def depth(self) -> int:
        """Events waiting in the queue."""
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        """Bytes the waiting events count for (datagrams plus EVENT_OVERHEAD each)."""
        return self._bytes

    def has_room(self, events: int, nbytes: int) -> bool:
        """True when `events` more events of `nbytes` payload in all would be queued now (for back-pressure)."""
        return (len(self._queue) + events <= self.queue_size
                and self._bytes + nbytes + events * EVENT_OVERHEAD <= self.queue_bytes)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Build and start the backend, then the worker. Raises what the backend's start raises."""
        self.backend = self._build(None)
        self._thread = threading.Thread(target=self._run, name=f"backend-{self.name}", daemon=True)
        self._thread.start()
        self.started.set()

    def _build(self, previous: Backend | None) -> Backend:
        """A new instance, connected to this runner, with `previous`'s state taken over, started."""
        backend = self.factory()
        backend.reject_hook = self._note_reject
        if previous is not None:
            backend.takeover(previous)
        backend.start()
        return backend

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
                with self._lock:  # producers extend the queue under this lock: a whole-queue take is safe
                    if len(queue) <= self.batch_size:
                        batch = list(queue)
                        queue.clear()
                    else:
                        popleft = queue.popleft
                        batch = [popleft() for _ in range(self.batch_size)]
                n = len(batch)
                released = sum(map(len, map(_data, batch))) + n * EVENT_OVERHEAD
                with self._lock:
                    self._bytes -= released
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
            broken = self._handle(backend, batch)
        finally:
            self.process_seconds += time.perf_counter() - start
        if broken:
            self._restart()

    def _handle(self, backend: Backend, batch: list[RawEvent]) -> bool:
        """Hand `batch` over; when it raises, find the events that fail alone (bisection). True: backend broken."""
        exc, rest = self._attempt(backend, batch)
        if exc is None:
            return False
        failures: list[tuple[RawEvent, object]] = []
        if len(rest) == 1:
            failures.append((rest[0], exc))
            self._streak += 1
            untried: list[list[RawEvent]] = []
        else:
            mid = len(rest) // 2
            untried = [rest[mid:], rest[:mid]]  # a stack: the left half is tried first
        while untried and self._streak < BROKEN_STREAK:
            chunk = untried.pop()
            error, left = self._attempt(backend, chunk)
            if error is None:
                continue
            if len(left) == 1:
                failures.append((left[0], error))
                self._streak += 1
            else:
                mid = len(left) // 2
                untried += (left[mid:], left[:mid])
        if self._streak < BROKEN_STREAK and (len(rest) < 2 or len(failures) < len(rest)):
            for raw, error in failures:
                self._note_reject(raw, error)
            return False
        # Every event tried failed on its own: the backend is at fault, not the data.
        self.errors += 1
        self.failed += len(failures)
        untested = [raw for chunk in reversed(untried) for raw in chunk]
        if untested:
            self._requeue(untested)
        self._ratelog.error("handle", "backend %s is broken: %d events failed each on its own (lost), %d put back "
                            "for its replacement; restarting: %r", self.name, len(failures), len(untested), exc,
                            exc_info=exc)
        self._streak = 0
        return True

    def _requeue(self, events: list[RawEvent]) -> None:
        """Put `events` back at the head of the queue (a broken backend never tried them on their own)."""
        size = sum(map(len, map(_data, events))) + len(events) * EVENT_OVERHEAD
        with self._lock:
            self._bytes += size
            self._queue.extendleft(reversed(events))

    def _note_reject(self, raw: RawEvent, reason: object) -> None:
        """Count one rejected event and log it, rate-limited, with its sender, name and reason."""
        self.rejected += 1
        text = repr(reason) if isinstance(reason, BaseException) else str(reason)
        if len(text) > REASON_MAX:
            text = text[:REASON_MAX] + "..."
        self._ratelog.warning("rejected", "backend %s rejected %r from %s:%s: %s", self.name, raw.name,
                              raw.sender_ip, raw.sender_port, text)

    def _attempt(self, backend: Backend, events: list[RawEvent]) -> tuple[Exception | None, list[RawEvent]]:
        """`handle(events)`: (None, []) when it returned, else (the exception, the events it leaves undone).

        A `RejectEvent` naming one of `events` rejects that event, counts those before it as processed and
        hands the rest over again.
        """
        while events:
            rejected_before = self.rejected
            try:
                backend.handle(events)
            except RejectEvent as exc:
                index = next((i for i, raw in enumerate(events) if raw is exc.raw), None)
                if index is None:
                    return exc, events
                self.processed += max(index - (self.rejected - rejected_before), 0)
                self._streak = 0
                self._note_reject(events[index], exc.reason)
                events = events[index + 1:]
                continue
            except Exception as exc:
                return exc, events
            self.processed += max(len(events) - (self.rejected - rejected_before), 0)
            self._streak = 0
            break
        return None, []

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
        """Replace the broken instance, backing off while starts keep failing; the new one takes over its state.

        The broken instance is `abandon`ed (not closed: it emits nothing), then
        each new instance gets `takeover(previous)` before `start`. When
        stopping, one attempt is still made, so that state taken over is
        closed (emitted) by a working instance.
        """
        old, self.backend = self.backend, None
        if old is not None:
            try:
                old.abandon()
            except Exception as exc:
                self._ratelog.error("close", "backend %s failed to close: %r", self.name, exc)
        delay = self.backoff_min
        while True:
            self._sleep(delay)
            try:
                backend = self._build(old)
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
            "dropped_bytes_limit": self.dropped_bytes_limit,
            "errors": self.errors,
            "failed": self.failed,
            "rejected": self.rejected,
            "decode_errors": self.decode_errors,
            "restarts": self.restarts,
            "queue_depth": self.depth,
            "queued_bytes": self._bytes,
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
