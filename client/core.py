"""`Client`: the mondemand-style emitter with client-side pre-aggregation.

Counters, gauges, statset samples and log lines are kept in memory and sent
once per `flush_interval` by a background thread, so a busy program sends a
handful of datagrams a minute however many calls it makes. Traces, perf
timings and annotations are sent at once. See docs/client.md.
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mondemand.client.procstats import ProcessStats
from mondemand.client.samples import ALL_FIELDS, DEFAULT_CAPACITY, SampleSet, check_fields
from mondemand.client.transports import DEFAULT_URL, Transport, TransportError, transport_from_url

from mondemand.lwes import MAX_DATAGRAM, Event, LwesType, encode
from mondemand.messages import (
    DEFAULT_MAX_METRICS,
    AnnotationMsg,
    LogLine,
    LogMsg,
    Metric,
    MetricType,
    PerfMsg,
    Priority,
    StatsMsg,
    Timing,
    TraceMsg,
)
from mondemand.messages.fields import attr_size, string_size
from mondemand.signing import SIGNATURE_OVERHEAD, sign
from mondemand.tenants import KEY_ID

#: Bytes reserved per log line besides its file and message (keys, line, priority, repeat, trace id).
_LINE_OVERHEAD = 6 * 12 + 4 + 4 + 2 + 8
#: Longest log message kept; longer ones are cut so that one line always fits in a datagram.
MAX_LOG_MESSAGE = 60_000
_MAX_REPEAT = 0xFFFF
#: Largest single event encoded for any transport (16 MiB, the lwes-http listener's default max_body).
_MAX_EVENT = 16 << 20


class ClientError(Exception):
    """Misuse of the client: a call after close, an event no transport can carry."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _check_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    return value


class Client:
    """Emit stats, logs, traces, perf timings and annotations for one program.

    Thread-safe: every recording call takes one lock for a few dict updates.
    Fork-safe: a child process starts with nothing pending (it never re-sends
    its parent's counters) and starts its own flush thread on first use.
    """

    def __init__(
        self,
        prog_id: str,
        host: str | None = None,
        context: Mapping[str, str] | None = None,
        transports: Sequence[Transport | str] | None = None,
        flush_interval: float = 60.0,
        max_metrics: int = DEFAULT_MAX_METRICS,
        statset_fields: Sequence[str] = ALL_FIELDS,
        sample_capacity: int = DEFAULT_CAPACITY,
        process_stats: bool = False,
        tenant: str | None = None,
        key: str | None = None,
        key_id: str | None = None,
    ) -> None:
        """`tenant` and `key` (service mode, docs/service.md): UDP events are signed with the key under the key
        id `key_id` (default: the tenant's name); HTTP transports send it as `Authorization: Bearer`."""
        if not isinstance(prog_id, str) or not prog_id:
            raise ValueError("prog_id must be a non-empty string")
        if flush_interval <= 0:
            raise ValueError(f"flush_interval must be positive, got {flush_interval}")
        if not 1 <= max_metrics <= 0xFFFF:
            raise ValueError(f"max_metrics must be 1..65535, got {max_metrics}")
        self.prog_id = prog_id
        self.host = host if host is not None else socket.gethostname()
        self.context = dict(context or {})
        specs = [DEFAULT_URL] if transports is None else list(transports)
        if not specs:
            raise ValueError("give at least one transport")
        self.transports = [transport_from_url(t) if isinstance(t, str) else t for t in specs]
        #: (key id, secret) UDP events are signed with; None: unsigned.
        self._signer: tuple[str, bytes] | None = None
        self._max_datagram = MAX_DATAGRAM
        if key is not None:
            kid = key_id or tenant
            if not kid or not KEY_ID.match(kid):
                raise ValueError("a key needs a tenant or key_id of 1 to 32 letters, digits, '_', '.' or '-'")
            self._signer = (kid, key.encode())
            self._max_datagram = MAX_DATAGRAM - SIGNATURE_OVERHEAD
            for transport in self.transports:
                if not transport.datagram:
                    transport.key = key
        self.flush_interval = flush_interval
        self.max_metrics = max_metrics
        self.statset_fields = check_fields(tuple(statset_fields))
        self.sample_capacity = sample_capacity
        self.process_stats = ProcessStats() if process_stats else None
        if self.process_stats is not None:
            self.process_stats.install()
        #: Events delivered to at least one transport, and events that could not be (the thread never raises).
        self.events_sent = 0
        self.send_errors = 0
        self.last_error: str | None = None
        self._closed = False
        self._transports_closed = False
        self._init_state()
        _LIVE_CLIENTS.add(self)

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._counters: dict[str, int] = {}
        self._gauges: dict[str, int] = {}
        self._samples: dict[str, SampleSet] = {}
        self._logs: dict[tuple[Any, ...], LogLine] = {}
        self._full_logs: list[LogLine] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    # -- recording ---------------------------------------------------------

    def increment(self, name: str, by: int = 1) -> None:
        """Add `by` to the counter `name` (counters are cumulative, as in every mondemand client)."""
        if isinstance(by, bool) or not isinstance(by, int):
            raise TypeError(f"increment of {name!r}: by must be an int, got {type(by).__name__}")
        with self._lock:
            self._start_locked()
            self._counters[name] = self._counters.get(name, 0) + by

    def set_gauge(self, name: str, value: int) -> None:
        """Set the gauge `name`; the last value set before a flush is sent (and again on later flushes)."""
        value = round(_check_number(value, f"gauge {name!r}"))
        with self._lock:
            self._start_locked()
            self._gauges[name] = value

    def add_sample(self, name: str, value: float) -> None:
        """Add one sample to the statset `name`; its summary is sent at the next flush, then it starts anew."""
        value = _check_number(value, f"sample of {name!r}")
        with self._lock:
            self._start_locked()
            samples = self._samples.get(name)
            if samples is None:
                samples = self._samples[name] = SampleSet(self.sample_capacity)
            samples.add(value)

    def log(
        self,
        priority: Priority | int | str,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        trace_id: int | None = None,
    ) -> None:
        """Queue a log line; identical lines (same priority, message, place, trace id) before a flush become one.

        `file` and `line` default to the caller's.
        """
        if isinstance(priority, str):
            priority = Priority.from_name(priority)
        priority = Priority(priority)
        if file is None or line is None:
            caller = sys._getframe(1)
            file = os.path.basename(caller.f_code.co_filename) if file is None else file
            line = caller.f_lineno if line is None else line
        raw = message.encode("utf-8", "surrogateescape")
        if len(raw) > MAX_LOG_MESSAGE:
            message = raw[:MAX_LOG_MESSAGE].decode("utf-8", "ignore") + "...[cut]"
        key = (priority, message, file, line, trace_id)
        with self._lock:
            self._start_locked()
            entry = self._logs.get(key)
            if entry is None:
                self._logs[key] = LogLine(file, line, priority, message, 1, trace_id)
            elif entry.repeat < _MAX_REPEAT:
                entry.repeat += 1
            else:
                self._full_logs.append(entry)
                self._logs[key] = LogLine(file, line, priority, message, 1, trace_id)

    def trace(self, owner: str, trace_id: str | int, message: str, **fields: Any) -> None:
        """Send a TraceMsg now; `fields` become string attributes. Too large for UDP means HTTP transports."""
        msg = TraceMsg(
            self.prog_id, str(trace_id), owner, self.host, message,
            {key: str(value) for key, value in fields.items()}, _now_ms(),
        )  # fmt: skip
        self._send_event(msg.to_lwes())

    def perf(self, id: str, label: str, start: int, end: int, caller_label: str | None = None) -> None:
        """Send a PerfMsg now with one timing `label` from `start` to `end` (ms since the epoch)."""
        msg = PerfMsg(id, caller_label or self.prog_id, [Timing(label, start, end)], self.host, self.context)
        self._send_event(msg.to_lwes())

    def annotation(
        self,
        id: str,
        description: str,
        text: str | None = None,
        tags: Iterable[str] = (),
        timestamp: int | None = None,
    ) -> None:
        """Send an AnnotationMsg now (a deploy, an incident); `timestamp` defaults to now, in ms."""
        msg = AnnotationMsg(id, _now_ms() if timestamp is None else timestamp, description, text, list(tags),
                            self.context)
        self._send_event(msg.to_lwes())

    # -- flushing ----------------------------------------------------------

    def flush(self) -> int:
        """Send everything pending now; returns the number of events sent. Never raises for a send failure."""
        self._check_fork()
        with self._flush_lock:
            if self._transports_closed:
                return 0
            with self._lock:
                counters = dict(self._counters)
                gauges = dict(self._gauges)
                samples, self._samples = self._samples, {}
                lines = self._full_logs + list(self._logs.values())
                self._logs, self._full_logs = {}, []
                extra = self._take_extra_locked()
            if self.process_stats is not None:
                extra_gauges, extra_counters = self.process_stats.read()
                gauges.update(extra_gauges)
                counters.update(extra_counters)
            events = self.stats_events(counters, gauges, samples, self._extra_metrics(extra),
                                       collect_time=self._collect_time()) + self.log_events(lines)
            return sum(self._deliver(encode(event)) for event in events)

    def stats_events(
        self,
        counters: Mapping[str, int],
        gauges: Mapping[str, int],
        samples: Mapping[str, SampleSet],
        extra: Sequence[Metric] = (),
        collect_time: int | None = None,
    ) -> list[Event]:
        """StatsMsg events for these values, split under max_metrics and the datagram size; none when empty.

        `collect_time` (ms) is the start of the interval the values cover, when the caller knows it.
        """
        metrics = [Metric(MetricType.COUNTER, k, v) for k, v in counters.items()]
        metrics += [Metric(MetricType.GAUGE, k, v) for k, v in gauges.items()]
        metrics += [Metric(MetricType.STATSET, k, s.statset(self.statset_fields)) for k, s in samples.items()]
        metrics += extra
        if not metrics:
            return []
        msg = StatsMsg(self.prog_id, self.host, self.context, metrics, send_time=_now_ms(), collect_time=collect_time)
        return msg.to_lwes(max_metrics=self.max_metrics, max_size=self._max_datagram)

    def log_events(self, lines: list[LogLine]) -> list[Event]:
        """LogMsg events for `lines`, as few as fit in datagrams."""
        fixed = 200 + string_size(self.prog_id) + string_size(self.host)
        fixed += sum(attr_size("ctxt_k00", string_size(k)) + string_size(v) + 12 for k, v in self.context.items())
        events: list[Event] = []
        chunk: list[LogLine] = []
        size = fixed
        for line in lines:
            cost = _LINE_OVERHEAD + string_size(line.file) + string_size(line.message)
            if chunk and (size + cost > self._max_datagram or len(chunk) >= 0xFFFF):
                events.append(LogMsg(self.prog_id, self.host, self.context, chunk, _now_ms()).to_lwes())
                chunk, size = [], fixed
            chunk.append(line)
            size += cost
        if chunk:
            events.append(LogMsg(self.prog_id, self.host, self.context, chunk, _now_ms()).to_lwes())
        return events

    def close(self) -> None:
        """Stop the flush thread, send what is pending, close the transports. Calls after close raise."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() and self._pid == os.getpid():
            thread.join()
        self.flush()
        if self.process_stats is not None:
            self.process_stats.uninstall()
        with self._flush_lock:
            self._transports_closed = True
            for transport in self.transports:
                transport.close()
        _LIVE_CLIENTS.discard(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------

    def _take_extra_locked(self) -> Any:
        """Subclasses take their pending data here, while the lock is held."""
        return None

    def _collect_time(self) -> int | None:
        """The collect_time of the StatsMsg of this flush (subclasses that know the interval start); None."""
        return None

    def _extra_metrics(self, taken: Any) -> list[Metric]:
        """Subclasses turn what `_take_extra_locked` took into metrics, without the lock."""
        return []

    def _start_locked(self) -> None:
        """Start the flush thread on first use (again in a forked child); the caller holds the lock."""
        if self._thread is None:
            if self._closed:
                raise ClientError(f"client {self.prog_id!r} is closed")
            self._thread = threading.Thread(target=self._run, name=f"mondemand-flush-{self.prog_id}", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._wake.wait(self.flush_interval):
            try:
                self.flush()
            except Exception as exc:  # a bad value must not end the thread; it is reported instead
                self.send_errors += 1
                self.last_error = f"flush failed: {exc}"

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            self._after_fork()

    def _after_fork(self) -> None:
        """In a forked child: drop the parent's pending data and threads; locks may have been held, so new ones."""
        self._init_state()
        if self.process_stats is not None:
            self.process_stats.reset_after_fork()

    def _send_event(self, event: Event) -> None:
        if self._closed:
            raise ClientError(f"client {self.prog_id!r} is closed")
        for key, (typ, value) in list(event.attrs.items()):
            if typ is LwesType.STRING and len(value.encode("utf-8", "surrogateescape")) > 0xFFFF:
                event.set(key, LwesType.LONG_STRING, value)  # a string attribute holds at most 64 KiB
        data = encode(event, max_size=_MAX_EVENT)
        if self._deliver(data) == 0:
            raise ClientError(self.last_error or f"{event.name} was not sent")

    def _deliver(self, data: bytes) -> int:
        """Send to the datagram transports, or to the others when it is too large or there are none; 1 if sent."""
        payload = sign(data, *self._signer) if self._signer is not None else data
        targets = [t for t in self.transports if t.datagram and len(payload) <= t.max_size]
        if not targets:
            payload = data  # HTTP transports carry the key in a header instead
            targets = [t for t in self.transports if not t.datagram and len(data) <= t.max_size]
        if not targets:
            self.send_errors += 1
            self.last_error = f"no transport carries an event of {len(data)} bytes"
            return 0
        sent = 0
        for transport in targets:
            try:
                transport.send(payload)
                sent = 1
            except TransportError as exc:
                self.send_errors += 1
                self.last_error = str(exc)
        self.events_sent += sent
        return sent


_LIVE_CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()


def _reset_clients_in_child() -> None:
    for client in list(_LIVE_CLIENTS):
        client._after_fork()


def _close_clients_at_exit() -> None:
    """Send what is pending when the interpreter exits; the daemon flush threads would just stop."""
    for client in list(_LIVE_CLIENTS):
        if client._pid == os.getpid():
            try:
                client.close()
            except Exception as exc:  # exiting anyway: report, do not mask the program's own exit
                print(f"mondemand.client: closing {client.prog_id!r} at exit failed: {exc}", file=sys.stderr)


os.register_at_fork(after_in_child=_reset_clients_in_child)
atexit.register(_close_clients_at_exit)
