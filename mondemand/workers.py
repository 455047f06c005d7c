"""Backend worker processes: each runs some backends on a core of its own.

The main process receives and routes; CPU-heavy backends (the summariser,
storage) run in worker processes so that they neither starve the listener of
the interpreter nor share one core. `WorkerProcess` is the main side of one
worker: it forks the worker, queues batches for it (bounded in bytes, drops
counted per backend), writes them down a pipe from a thread of its own, and
reads back what the worker sends: injected events (aggregates), counters,
answers to HTTP requests. `run_worker` is the worker's side: the backends
behind ordinary `BackendRunner`s, fed from the pipe.

docs/architecture.md draws the processes and queues.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mondemand.envelope import RawEvent
from mondemand.ipc import (
    HEADER,
    FrameError,
    FrameReader,
    FrameWriter,
    encode_batch,
    encode_message,
    grow_pipe,
)
from mondemand.plugin_api import Backend, ServerContext
from mondemand.runner import BackendRunner
from mondemand.tenancy import tenant_context

log = logging.getLogger("mondemand.workers")

#: How often a worker sends its backends' counters to the main process.
COUNTER_PERIOD = 0.5
#: How long the main process waits for a worker's backends to start.
START_TIMEOUT = 60.0
#: After a batch of fewer events than this, with no other frame read yet, the worker's reader waits
#: LINGER seconds before reading on (the pipe holds 1 MiB meanwhile).
LINGER_BELOW = 512
LINGER = 0.005
#: Allocations between two collections of the youngest generation in a server process (Python's default: 700).
GC_THRESHOLD = 50_000
#: How long an HTTP request proxied to a worker may take.
HTTP_TIMEOUT = 10.0


class WorkerStartError(Exception):
    """A worker's backend failed to start; the message names the backend."""


@dataclass
class BackendSpec:
    """What a worker needs to build one backend: everything but the server context."""

    name: str
    cls: type[Backend]
    options: Mapping[str, Any]
    runner: Mapping[str, Any] = field(default_factory=dict)

    @property
    def injects(self) -> bool:
        return bool(getattr(self.cls, "injects", False))


@dataclass
class WorkerSettings:
    """What a worker's `ServerContext` carries besides `inject`."""

    hostname: str
    config_dir: Path
    sections: Mapping[str, Any]
    #: How long each backend may take to drain its queue at shutdown.
    drain_timeout: float = 30.0
    #: Niceness the worker adds to itself: when the cores are short, the main process (the socket) goes first.
    nice: int = 0
    #: Service mode: the `mondemand.tenants.Tenants` (inherited by the fork; keys files re-read on reopen).
    tenants: Any = None


_memo = threading.local()


def _payload(name: str, events: list[RawEvent]) -> bytes:
    """The batch's payload (`mondemand.ipc`); the same list sent to several workers is encoded once."""
    last = getattr(_memo, "last", None)
    if last is not None and last[0] is events:
        return last[1]
    payload = encode_batch(name, events)
    _memo.last = (events, payload)
    return payload


def _encodable(raw: RawEvent) -> bool:
    try:
        encode_batch(raw.name, [raw])
    except ValueError:
        return False
    return True


class RemoteTarget:
    """What the router offers batches to for backends living in a worker (`mask`: which of them)."""

    __slots__ = ("mask", "worker")

    def __init__(self, worker: WorkerProcess, mask: int) -> None:
        self.worker = worker
        self.mask = mask

    def offer_many(self, events: list[RawEvent]) -> int:
        """Queue the batch for the worker; never blocks. Returns how many were queued.

        A batch goes as one frame, or in parts when its frame would take
        more than half of `link_bytes`, so that a burst of big datagrams is
        not dropped whole by a link that could take most of it.
        """
        if not events:
            return 0
        try:
            payload = _payload(events[0].name, events)
        except ValueError:  # an event the link cannot carry (a receipt time or port out of range) costs itself only
            good = [raw for raw in events if _encodable(raw)]
            self.worker._count_dropped(self.mask, len(events) - len(good))
            if not good:
                return 0
            payload = encode_batch(good[0].name, good)
            events = good
        limit = self.worker.link_bytes // 2
        if len(payload) > limit and len(events) > 1:
            parts = min(len(events), -(-len(payload) // limit))
            step = -(-len(events) // parts)
            return sum(self.offer_many(events[i:i + step]) for i in range(0, len(events), step))
        return self.worker.offer(payload, self.mask, len(events))

    def __repr__(self) -> str:
        return f"RemoteTarget({self.worker.name!r}, mask={self.mask:#x})"


class WorkerProcess:
    """The main process's side of one worker process."""

    def __init__(
        self,
        name: str,
        specs: list[BackendSpec],
        settings: WorkerSettings,
        inject: Callable[[RawEvent], None],
        *,
        link_bytes: int = 16 << 20,
        on_decode_errors: Callable[[int], None] | None = None,
    ) -> None:
        if not specs:
            raise ValueError("a worker needs at least one backend")
        if len(specs) > 32:
            raise ValueError("at most 32 backends share one worker")
        self.name = name
        self.specs = specs
        self.settings = settings
        self.inject = inject
        self.link_bytes = link_bytes
        self.on_decode_errors = on_decode_errors
        self.injects = any(s.injects for s in specs)
        self.pid = 0
        self.http_prefixes: list[str] = []
        self._writer: FrameWriter | None = None
        self._reader: FrameReader | None = None
        #: Frames (header included) waiting for the writer thread: (frame, mask, events; 0 control, -1 stop).
        self._queue: deque[tuple[bytes, int, int]] = deque()
        self._queued_bytes = 0
        self._writing = False
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._stopping = False
        self._ended = threading.Event()
        self._threads: list[threading.Thread] = []
        self._counters: dict[str, dict[str, float]] = {}
        self._counters_seq = 0
        self._poll_seq = 0
        self._counters_changed = threading.Condition()
        self._decode_errors_seen = 0
        self._http_waiting: dict[int, list[Any]] = {}
        self._http_next = 0
        self._pending_injects: list[tuple[Any, ...]] = []
        #: Per backend index: batches' events dropped here because the link was over `link_bytes` or down.
        self.link_dropped = [0] * len(specs)
        self.restarts = 0
        self.exit_status: int | None = None

    # -- targets ---------------------------------------------------------------

    def target(self, backend: str) -> RemoteTarget:
        """The router's target for one of this worker's backends."""
        for i, spec in enumerate(self.specs):
            if spec.name == backend:
                return RemoteTarget(self, 1 << i)
        raise KeyError(backend)

    def offer(self, payload: bytes, mask: int, count: int) -> int:
        """Send or queue a batch for the backends in `mask`; over `link_bytes` it is dropped and counted.

        When nothing waits before it, the frame goes straight into the pipe
        (non-blocking): the writer thread is woken only for what the pipe
        cannot take at once.
        """
        header = HEADER.pack(len(payload), mask)
        size = len(payload) + HEADER.size
        with self._lock:
            if self._stopping or self._queued_bytes + size > self.link_bytes:
                self._count_dropped(mask, count)
                return 0
            queue = self._queue
            if not queue and not self._writing and self._writer is not None:
                try:
                    written = os.writev(self._writer.fd, (header, payload))
                except OSError:  # full (EAGAIN) or broken: the writer thread deals with it
                    written = 0
                if written == size:
                    return count
                frame = (header + payload)[written:]
            else:
                frame = header + payload
            queue.append((frame, mask, count))
            self._queued_bytes += len(frame)
            if len(queue) == 1:
                self._ready.notify()
        return count

    def _count_dropped(self, mask: int, count: int) -> None:
        i = 0
        while mask:
            if mask & 1:
                self.link_dropped[i] += count
            mask >>= 1
            i += 1

    @property
    def queued_bytes(self) -> int:
        """Bytes of batches waiting in this process for the worker."""
        return self._queued_bytes

    @property
    def started(self) -> bool:
        """True once the worker said its backends run and the link threads are going."""
        return bool(self._threads)

    @property
    def running(self) -> bool:
        """True while the worker process is alive and reading."""
        return self.started and not self._ended.is_set()

    # -- life cycle --------------------------------------------------------------

    def fork(self) -> None:
        """Start the worker process; call `wait_ready` next. Fork before the main process starts threads."""
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        grow_pipe(down_w)
        grow_pipe(up_w)
        os.set_blocking(down_w, False)  # the main process never waits on a full pipe (FrameWriter polls)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                _die_with(parent)
                os.close(down_w)
                os.close(up_r)
                status = run_worker(self.name, self.specs, self.settings, down_r, up_w)
            except BaseException:  # whatever happens, the child must not return into the parent's code
                logging.getLogger("mondemand.workers").exception("worker %s failed", self.name)
            finally:
                logging.shutdown()
                os._exit(status)
        os.close(down_r)
        os.close(up_w)
        self.pid = pid
        self._writer = FrameWriter(down_w)
        self._reader = FrameReader(up_r)

    def wait_ready(self) -> None:
        """Read until the worker says its backends started; WorkerStartError naming the one that failed."""
        assert self._reader is not None
        while True:
            try:
                frame = self._reader.read()
            except FrameError as exc:
                raise WorkerStartError(f"worker {self.name}: {exc}") from None
            if frame is None:
                self._reap()
                raise WorkerStartError(f"worker {self.name} exited while starting (status {self.exit_status})")
            message = frame[1]
            kind = message[0]
            if kind == "ready":
                self.http_prefixes = list(message[1])
                return
            if kind == "failed":
                self._reap()
                raise WorkerStartError(message[1])
            if kind == "inject":
                self._pending_injects.append(message)
            elif kind == "counters":
                self._take_counters(message)

    def start_threads(self) -> None:
        """Begin writing batches to the worker and reading what it sends back."""
        for target, what in ((self._write_loop, "to"), (self._read_loop, "from")):
            thread = threading.Thread(target=target, name=f"worker-{self.name}-{what}", daemon=True)
            thread.start()
            self._threads.append(thread)
        for message in self._pending_injects:
            self._take_injects(message)
        self._pending_injects.clear()

    def stop(self, timeout: float = 30.0) -> None:
        """Send what is queued, then ask the worker to drain, flush and close its backends; wait for it."""
        with self._lock:
            if not self._stopping:
                self._queue.append((b"", 0, -1))  # the stop marker, behind every queued batch
                self._stopping = True
                self._ready.notify()
        if not self._ended.wait(timeout):
            log.error("worker %s did not finish within %.0f s; killing it", self.name, timeout)
            self._kill()
            self._ended.wait(5)
        for thread in self._threads:
            thread.join(5)
        self._reap()

    def kill(self) -> None:
        """End the worker at once (start-up failed elsewhere)."""
        self._kill()
        self._reap()

    def _kill(self) -> None:
        if self.pid > 0:  # never kill(0, ...): that is this whole process group
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)

    def _reap(self) -> None:
        if self.pid and self.exit_status is None:
            try:
                _pid, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                return
            self.exit_status = os.waitstatus_to_exitcode(status)

    def reopen(self) -> None:
        """SIGHUP: the worker's backends reopen their files."""
        self._control(("reopen",))

    def _control(self, message: tuple[Any, ...]) -> None:
        frame = encode_message(message)
        with self._lock:
            if self._stopping:
                return
            self._queue.append((frame, 0, 0))
            self._ready.notify()

    # -- threads -----------------------------------------------------------------

    def _write_loop(self) -> None:
        writer = self._writer
        assert writer is not None
        queue = self._queue
        broken = False
        while True:
            with self._lock:
                self._writing = False
                while not queue:
                    self._ready.wait()
                frame, mask, count = queue.popleft()
                if count > 0:
                    self._queued_bytes -= len(frame)
                self._writing = True  # `offer` must not write past this frame meanwhile
            if count < 0:  # stop marker
                if not broken:
                    with contextlib.suppress(OSError):
                        writer.send(("stop",))
                writer.close()
                return
            if broken:
                self._count_dropped(mask, count)
                continue
            try:
                writer.write(frame)
            except OSError as exc:
                broken = True
                self._count_dropped(mask, count)
                log.error("worker %s: cannot write to it: %s; its batches are dropped and counted", self.name, exc)

    def _read_loop(self) -> None:
        reader = self._reader
        assert reader is not None
        ended = False
        try:
            while True:
                try:
                    frame = reader.read()
                except FrameError as exc:
                    log.error("worker %s: %s", self.name, exc)
                    break
                if frame is None:
                    break
                message = frame[1]
                kind = message[0]
                if kind == "inject":
                    self._take_injects(message)
                elif kind == "counters":
                    self._take_counters(message)
                elif kind == "http":
                    self._take_http(message)
                elif kind == "end":
                    ended = True
        finally:
            reader.close()
            if not ended and not self._stopping:
                self._reap()
                log.error("worker %s (backends %s) ended unexpectedly with status %s; its backends stop "
                          "receiving", self.name, ", ".join(s.name for s in self.specs), self.exit_status)
            with self._lock:
                self._stopping = True
                for _, mask, count in self._queue:
                    if count > 0:
                        self._count_dropped(mask, count)
                self._queue.clear()
                self._queued_bytes = 0
                self._queue.append((b"", 0, -1))
                self._ready.notify()
            self._ended.set()
            for waiter in list(self._http_waiting.values()):
                waiter[0].set()

    def _take_injects(self, message: tuple[Any, ...]) -> None:
        for data, ms, ip, port, listener, name, tenant in message[1]:
            try:
                self.inject(RawEvent(data, ms, ip, port, listener, name, tenant))
            except Exception:
                log.exception("worker %s: routing an injected event failed", self.name)

    def _take_counters(self, message: tuple[Any, ...]) -> None:
        errors = int(message[2])
        if errors > self._decode_errors_seen and self.on_decode_errors is not None:
            self.on_decode_errors(errors - self._decode_errors_seen)
        self._decode_errors_seen = max(errors, self._decode_errors_seen)
        with self._counters_changed:
            self._counters = message[1]
            self._counters_seq = max(self._counters_seq, int(message[3]))
            self._counters_changed.notify_all()

    def _take_http(self, message: tuple[Any, ...]) -> None:
        waiter = self._http_waiting.get(message[1])
        if waiter is not None:
            waiter[1] = (message[2], message[3])
            waiter[0].set()

    # -- what the main process asks -------------------------------------------------

    def poll_counters(self) -> int:
        """Ask the worker for fresh counters now; `wait_counters` with the returned number waits for them."""
        with self._lock:
            self._poll_seq += 1
            seq = self._poll_seq
        self._control(("poll", seq))
        return seq

    def wait_counters(self, seq: int, timeout: float = 1.0) -> bool:
        """Wait until the answer to poll `seq` arrived; False after `timeout` (the last counters stand)."""
        deadline = time.monotonic() + timeout
        with self._counters_changed:
            while self._counters_seq < seq and not self._ended.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._counters_changed.wait(min(left, 0.1))
        return True

    def counters(self, backend: str) -> dict[str, float]:
        """The backend's counters as last reported, plus what the link itself dropped."""
        index = next(i for i, s in enumerate(self.specs) if s.name == backend)
        values = dict(self._counters.get(backend, {}))
        values["dropped"] = values.get("dropped", 0) + self.link_dropped[index]
        values["link_dropped"] = self.link_dropped[index]
        values["worker_pid"] = self.pid
        return values

    def http_get(self, path: str, query: Mapping[str, str]) -> tuple[int, Any]:
        """Ask the worker's HTTP handler for `path` and wait for its answer."""
        with self._lock:
            self._http_next += 1
            request_id = self._http_next
        waiter: list[Any] = [threading.Event(), None]
        self._http_waiting[request_id] = waiter
        try:
            self._control(("http", request_id, path, dict(query)))
            if not waiter[0].wait(HTTP_TIMEOUT) or waiter[1] is None:
                return 504, {"error": f"worker {self.name} did not answer"}
            return waiter[1]
        finally:
            self._http_waiting.pop(request_id, None)


# -- the worker's side ---------------------------------------------------------------


def run_worker(name: str, specs: list[BackendSpec], settings: WorkerSettings, down_fd: int, up_fd: int) -> int:
    """Run `specs`' backends fed from `down_fd` until told to stop (or the main process is gone)."""
    # The main process decides when to stop and in which order; Ctrl-C and
    # SIGTERM reach the whole process group, so the worker leaves them to it.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    if settings.nice:
        with contextlib.suppress(OSError):
            os.nice(settings.nice)
    with contextlib.suppress(Exception):
        import setproctitle  # type: ignore[import-not-found]

        setproctitle.setproctitle(f"mondemand-server worker {name}")
    writer = FrameWriter(up_fd)
    reader = FrameReader(down_fd)
    decode_errors = [0]

    def inject(raw: RawEvent) -> None:
        with contextlib.suppress(OSError):  # the main process is gone: nothing can be routed any more
            writer.send(("inject", [(raw.data, raw.receipt_ms, raw.sender_ip, raw.sender_port, raw.listener,
                                     raw.name, raw.tenant)]))

    def count_decode_error(raw: RawEvent, exc: Exception) -> None:
        if not getattr(exc, "counted", False):
            exc.counted = True  # type: ignore[attr-defined]
            decode_errors[0] += 1

    context = ServerContext(inject=inject, hostname=settings.hostname, config_dir=settings.config_dir,
                            sections=settings.sections, tenants=settings.tenants)
    runners: list[BackendRunner] = []
    for spec in specs:
        runners.append(BackendRunner(spec.name, _factory(spec, context), on_decode_error=count_decode_error,
                                     **dict(spec.runner)))
    started: list[BackendRunner] = []
    for runner in runners:
        try:
            runner.start()
        except Exception as exc:
            writer.send(("failed", f"[backend:{runner.name}] failed to start: {exc}"))
            for other in started:
                other.stop(timeout=5)
            return 1
        started.append(runner)
    writer.send(("ready", list(context.http_routes)))
    relax_gc()

    stop_pushing = threading.Event()

    def push_counters(seq: int = 0) -> None:
        with contextlib.suppress(OSError):
            writer.send(("counters", {r.name: r.counters() for r in runners}, decode_errors[0], seq))

    def pusher() -> None:
        while not stop_pushing.wait(COUNTER_PERIOD):
            push_counters()

    threading.Thread(target=pusher, name="counters", daemon=True).start()

    def answer_http(request_id: int, path: str, query: dict[str, str]) -> None:
        handler = None
        for prefix, candidate in context.http_routes.items():
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                handler = candidate
                break
        try:
            status, body = (404, {"error": f"no resource at {path}"}) if handler is None else handler(path, query)
        except Exception as exc:
            logging.getLogger("mondemand.workers").exception("HTTP handler for %s failed", path)
            status, body = 500, {"error": repr(exc)}
        with contextlib.suppress(OSError):
            writer.send(("http", request_id, status, body))

    while True:
        try:
            frame = reader.read()
        except FrameError as exc:
            log.error("worker %s: %s; stopping", name, exc)
            break
        if frame is None:
            break
        mask, message = frame
        kind = message[0]
        if kind == "batch":
            events = message[1]
            i = 0
            while mask:
                if mask & 1:
                    runners[i].offer_many(events)
                mask >>= 1
                i += 1
            if len(events) < LINGER_BELOW and not reader.buffered:
                # Keeping up: let the pipe gather a few batches rather than wake for each one.
                time.sleep(LINGER)
        elif kind == "stop":
            break
        elif kind == "poll":
            push_counters(message[1])
        elif kind == "reopen":
            if settings.tenants is not None:
                settings.tenants.reload()  # the main process logs the problems of a bad keys file
            for runner in runners:
                runner.request_reopen()
        elif kind == "http":
            threading.Thread(target=answer_http, args=message[1:], daemon=True).start()
    # Backends that inject (the summariser's last intervals) stop first, while the others still run.
    for runner in sorted(runners, key=lambda r: not getattr(r.backend, "injects", False)):
        runner.stop(timeout=settings.drain_timeout)
    stop_pushing.set()
    push_counters()
    with contextlib.suppress(OSError):
        writer.send(("end",))
    writer.close()
    reader.close()
    return 0


def relax_gc() -> None:
    """Collect cycles less often: the per-event path allocates plenty but makes no cycles.

    What start-up built is moved out of the collector's sight (`gc.freeze`),
    and the young generation is collected every GC_THRESHOLD allocations
    instead of 700, so a busy process does not walk its objects many times a second.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


def _die_with(parent: int) -> None:
    """Have the kernel kill this worker when the main process dies, as kill -9 of the server means.

    (Linux's PR_SET_PDEATHSIG; elsewhere the worker notices the closed pipe and drains instead.)
    """
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the main process died before the request took effect
        os._exit(1)


def _factory(spec: BackendSpec, context: ServerContext) -> Callable[[], Backend]:
    context = tenant_context(spec.name, context)  # a tenant's copy injects as that tenant
    return lambda: spec.cls(spec.name, spec.options, context)

