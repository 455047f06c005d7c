"""Bounded in-memory live state of the dashboard: who reports, current values, recent errors.

`LiveState` is fed by the dashboard backend's worker thread (`record`, once
per batch) and read by the web thread (`processes`, `series`, `errors`), so
every public method takes one lock. Recording is cheap on purpose: it appends
samples and updates a few fields; averages, rates and "stopped reporting" are
worked out when a page asks, against the time of asking, so they age even
when nothing arrives.

Everything is bounded: at most `max_series` series and `max_hosts`
(prog_id, host) pairs are tracked (more are counted in ``dropped_series`` /
``dropped_hosts``), each series keeps at most `max_samples` samples of the
last `window` seconds, and the error stream keeps the last `max_errors` lines.
`prune` forgets series and hosts not heard from for `forget_after` seconds.
With guards (`mondemand.cardinality`), a new series or host must also be
admitted for its sender and prog_id (refusals in ``refused_series`` /
``refused_hosts``), so that one flooding source cannot fill either table.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mondemand.client.partials import BOT10_SUFFIX, PARTIAL_CONTEXT_KEY, TOP10_SUFFIX, tail_size

from mondemand.cardinality import CardinalityGuard, guard_sender
from mondemand.messages.log import LogMsg, Priority
from mondemand.messages.stats import Metric, MetricType, StatsMsg

from ..series import AGG_CONTEXT_KEY, SeriesKey, series_from_stats

__all__ = ["PROCESS_STATS", "ErrorLine", "HostLive", "LiveState", "SeriesLive", "moving_average", "window_rate"]

#: The client's process statistics (client/procstats.py) shown in the process panel.
PROCESS_STATS = frozenset(("process_uptime_s", "process_rss_bytes", "process_cpu_pct", "process_threads",
                           "process_log_errors", "process_log_warnings"))


def moving_average(samples: Iterable[tuple[float, float]], now: float, window: float) -> float | None:
    """Mean of the sample values whose time lies in ``(now - window, now]``; None when there are none."""
    total = 0.0
    count = 0
    cutoff = now - window
    for t, v in samples:
        if cutoff < t <= now:
            total += v
            count += 1
    return total / count if count else None


def window_rate(samples: Iterable[tuple[float, float]], now: float, window: float) -> float | None:
    """Per-second growth of a running total over ``(now - window, now]``; None with fewer than two samples.

    Samples are taken in time order; a drop of the total (a restarted
    program) starts the measurement again from the lower value, as a
    DERIVE data source with a minimum of 0 would.
    """
    cutoff = now - window
    inside = sorted((t, v) for t, v in samples if cutoff < t <= now)
    if len(inside) < 2:
        return None
    grown = 0.0
    for (_, before), (_, after) in itertools.pairwise(inside):
        if after >= before:
            grown += after - before
    span = inside[-1][0] - inside[0][0]
    return grown / span if span > 0 else None


@dataclass(slots=True)
class SeriesLive:
    """What is known now of one series: its latest value and the samples of the last window."""

    key: SeriesKey
    value: float
    timestamp: float
    received: float
    samples: deque[tuple[float, float]]
    #: The sender its cardinality guard counted it for (None: this server, or no guard).
    sender: str | None = None
    #: `LiveState.version` when a sample last arrived: the stream sends the rows that changed since its last frame.
    changed: int = 0


@dataclass(slots=True)
class HostLive:
    """One (prog_id, host) pair that has reported: when it was first and last heard from."""

    prog_id: str
    host: str
    first_seen: float
    last_seen: float
    stats_events: int = 0
    log_events: int = 0
    sender: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorLine:
    """One error or warning log line, numbered in arrival order (`seq` starts at 1)."""

    seq: int
    time: float
    received: float
    prog_id: str
    host: str
    priority: Priority
    file: str
    line: int
    message: str
    repeat: int
    context: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict for the page."""
        return {
            "seq": self.seq, "time": self.time, "received": self.received, "prog_id": self.prog_id,
            "host": self.host, "priority": self.priority.label, "level": int(self.priority), "file": self.file,
            "line": self.line, "message": self.message, "repeat": self.repeat, "context": dict(self.context),
        }


@dataclass
class LiveState:
    """The dashboard's live view of the traffic; see the module docstring for the bounds."""

    window: float = 60.0
    stale_after: float = 180.0
    forget_after: float = 86400.0
    max_series: int = 20_000
    max_hosts: int = 5_000
    max_samples: int = 600
    max_errors: int = 100
    #: Lines at this priority or more severe (numerically lower) go to the error stream.
    max_priority: Priority = Priority.WARNING
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: Who may add series and hosts (mondemand.cardinality); None: only max_series and max_hosts bound them.
    guard: CardinalityGuard | None = None
    host_guard: CardinalityGuard | None = None

    def __post_init__(self) -> None:
        self._series: dict[SeriesKey, SeriesLive] = {}
        #: the same series by prog_id: a page follows one program, and reading it must not cost every series
        self._by_prog: dict[str, dict[SeriesKey, SeriesLive]] = {}
        self._hosts: dict[tuple[str, str], HostLive] = {}
        self._errors: deque[ErrorLine] = deque(maxlen=self.max_errors)
        self._seq = 0
        #: (sender, datagram) of the message being recorded, for the guards
        self._sender: str | None = None
        self._token: object = None
        #: Goes up whenever anything recorded changes what a page would show.
        self.version = 0
        self.counts: dict[str, int] = dict.fromkeys(
            ("stats_messages", "log_messages", "other_messages", "samples", "error_lines", "dropped_series",
             "dropped_hosts", "forgotten_series", "forgotten_hosts", "refused_series", "refused_hosts"), 0)

    # -- writing (the backend's worker thread) -----------------------------------------

    def record(self, messages: Iterable[tuple[Any, float]],
               reject: Callable[[int, Exception], None] | None = None) -> None:
        """Take (message, receipt time in seconds[, raw event]) of one batch; other message types are counted only.

        The raw event, when given, names the sender and datagram the guards count new series for.
        A message with bad data (a value no float holds) is left out and, with `reject`, reported by its index.
        """
        with self.lock:
            for index, item in enumerate(messages):
                msg, received = item[0], item[1]
                if len(item) > 2:
                    raw = item[2]
                    self._sender, self._token = guard_sender(raw.sender_ip, raw.listener), raw
                try:
                    if isinstance(msg, StatsMsg):
                        self._add_stats(msg, received)
                    elif isinstance(msg, LogMsg):
                        self._add_log(msg, received)
                    else:
                        self.counts["other_messages"] += 1
                except Exception as exc:
                    if reject is None:
                        raise
                    reject(index, exc)
            self.version += 1

    def _touch(self, prog_id: str, host: str, received: float) -> HostLive | None:
        entry = self._hosts.get((prog_id, host))
        if entry is None:
            if len(self._hosts) >= self.max_hosts:
                self.counts["dropped_hosts"] += 1
                return None
            if self.host_guard is not None and not self.host_guard.admit(self._sender, prog_id, self._token):
                self.counts["refused_hosts"] += 1
                return None
            entry = self._hosts[(prog_id, host)] = HostLive(prog_id, host, received, received, sender=self._sender)
        elif received > entry.last_seen:
            entry.last_seen = received
        return entry

    def _add_stats(self, msg: StatsMsg, received: float) -> None:
        if PARTIAL_CONTEXT_KEY in msg.context:
            msg = as_minute_shape(msg)
        points = list(series_from_stats(msg, now=received))
        for point in points:
            float(point.value)  # OverflowError, before anything changes, for a value the page could not average
        self.counts["stats_messages"] += 1
        host = self._touch(msg.prog_id, msg.host, received)
        if host is not None:
            host.stats_events += 1
        series = self._series
        version = self.version
        for key, timestamp, value in points:
            entry = series.get(key)
            if entry is None:
                if len(series) >= self.max_series:
                    self.counts["dropped_series"] += 1
                    continue
                if self.guard is not None and not self.guard.admit(self._sender, key.prog_id, self._token):
                    self.counts["refused_series"] += 1
                    continue
                entry = series[key] = SeriesLive(key, value, timestamp, received, deque(maxlen=self.max_samples),
                                                 self._sender)
                self._by_prog.setdefault(key.prog_id, {})[key] = entry
            elif timestamp >= entry.timestamp:
                entry.value, entry.timestamp, entry.received = value, timestamp, received
            entry.changed = version
            samples = entry.samples
            samples.append((timestamp, value))
            cutoff = received - self.window
            while len(samples) > 2 and samples[0][0] <= cutoff:  # the last two stay: the process panel's rates
                samples.popleft()
            self.counts["samples"] += 1

    def _add_log(self, msg: LogMsg, received: float) -> None:
        self.counts["log_messages"] += 1
        host = self._touch(msg.prog_id, msg.host, received)
        if host is not None:
            host.log_events += 1
        when = msg.send_time / 1000 if msg.send_time is not None else received
        context = tuple(sorted(msg.context.items()))
        for line in msg.lines:
            if line.priority > self.max_priority:
                continue
            self._seq += 1
            self._errors.append(ErrorLine(self._seq, when, received, msg.prog_id, msg.host, line.priority,
                                          line.file, line.line, line.message, line.repeat, context))
            self.counts["error_lines"] += 1

    def prune(self, now: float) -> None:
        """Forget series and hosts last heard from more than `forget_after` seconds ago."""
        cutoff = now - self.forget_after
        with self.lock:
            old = [k for k, s in self._series.items() if s.received < cutoff]
            for k in old:
                entry = self._series.pop(k)
                of_prog = self._by_prog.get(k.prog_id)
                if of_prog is not None:
                    of_prog.pop(k, None)
                    if not of_prog:
                        del self._by_prog[k.prog_id]
                if self.guard is not None:
                    self.guard.release(entry.sender, k.prog_id)
            gone = [k for k, h in self._hosts.items() if h.last_seen < cutoff]
            for k in gone:
                host = self._hosts.pop(k)
                if self.host_guard is not None:
                    self.host_guard.release(host.sender, host.prog_id)
            self.counts["forgotten_series"] += len(old)
            self.counts["forgotten_hosts"] += len(gone)
            if old or gone:
                self.version += 1

    # -- reading (the web thread) -------------------------------------------------------

    def status(self, last_seen: float, now: float) -> str:
        """``live`` while the last report is at most `stale_after` seconds old, then ``stopped``."""
        return "live" if now - last_seen <= self.stale_after else "stopped"

    def processes(self, now: float) -> list[dict[str, Any]]:
        """Every prog_id with its hosts, each with last-seen time, age and status; live programs first.

        A host whose client sends process statistics (`Client(process_stats=True)`)
        also gets `process`: uptime, memory, CPU and errors and warnings per minute.
        """
        with self.lock:
            hosts = list(self._hosts.values())
            per_prog: dict[str, int] = {}
            health: dict[tuple[str, str], dict[str, tuple[float, list[tuple[float, float]]]]] = {}
            for s in self._series.values():
                per_prog[s.key.prog_id] = per_prog.get(s.key.prog_id, 0) + 1
                if s.key.name in PROCESS_STATS and s.key.metric_type in ("gauge", "counter"):
                    health.setdefault((s.key.prog_id, s.key.host), {})[s.key.name] = (s.value, list(s.samples))
        programs: dict[str, dict[str, Any]] = {}
        for h in sorted(hosts, key=lambda h: (h.prog_id, h.host)):
            prog = programs.setdefault(h.prog_id, {"prog_id": h.prog_id, "hosts": [], "last_seen": 0.0,
                                                   "series": per_prog.get(h.prog_id, 0)})
            prog["hosts"].append({
                "host": h.host, "first_seen": h.first_seen, "last_seen": h.last_seen,
                "age": max(0.0, now - h.last_seen), "status": self.status(h.last_seen, now),
                "stats_events": h.stats_events, "log_events": h.log_events,
                "process": self._health(health.get((h.prog_id, h.host)), now),
            })
            prog["last_seen"] = max(prog["last_seen"], h.last_seen)
        result = list(programs.values())
        for prog in result:
            prog["status"] = self.status(prog["last_seen"], now)
            prog["live_hosts"] = sum(1 for h in prog["hosts"] if h["status"] == "live")
        result.sort(key=lambda p: (p["status"] != "live", p["prog_id"]))
        return result

    def _health(self, stats: dict[str, tuple[float, list[tuple[float, float]]]] | None,
                now: float) -> dict[str, Any] | None:
        """The process panel's numbers from the client's process_* series; None when it sends none."""
        if not stats:
            return None
        out: dict[str, Any] = {}
        for name, label in (("process_uptime_s", "uptime_s"), ("process_rss_bytes", "rss_bytes"),
                            ("process_cpu_pct", "cpu_pct"), ("process_threads", "threads")):
            if name in stats:
                out[label] = stats[name][0]
        # Cumulative counters: the increase between the last two reports, per minute (None before a second
        # report, or after a restart, when the count went down).
        for name, label in (("process_log_errors", "errors_per_min"), ("process_log_warnings", "warnings_per_min")):
            if name in stats:
                samples = sorted(stats[name][1])[-2:]
                rate = None
                if len(samples) == 2 and samples[1][0] > samples[0][0] and samples[1][1] >= samples[0][1]:
                    rate = round((samples[1][1] - samples[0][1]) * 60 / (samples[1][0] - samples[0][0]), 2)
                out[label] = rate
        return out

    def series(self, prog_id: str, now: float, changed_since: int | None = None) -> list[dict[str, Any]]:
        """The series of `prog_id`: value, 1-minute average (counters: rate per second), age and status.

        Sorted by metric name and context, aggregates (namespace ``agg``)
        before the per-host series of the same metric. With `changed_since`
        (a `version`), only the series that took a sample since then.
        """
        with self.lock:
            rows = [(s.key, s.value, s.timestamp, s.received, list(s.samples))
                    for s in self._by_prog.get(prog_id, {}).values()
                    if changed_since is None or s.changed >= changed_since]
        result = []
        for key, value, timestamp, received, samples in rows:
            row = series_json(key)
            row.update(value=value, timestamp=timestamp, received=received, age=max(0.0, now - received),
                       status=self.status(received, now), samples_in_window=sum(
                           1 for t, _ in samples if now - self.window < t <= now))
            if key.is_counter:
                row["rate"] = window_rate(samples, now, self.window)
                row["average"] = None
            else:
                row["average"] = moving_average(samples, now, self.window)
                row["rate"] = None
            result.append(row)
        result.sort(key=series_order)
        return result

    def errors(self, after: int = 0) -> list[dict[str, Any]]:
        """The kept error and warning lines numbered above `after`, oldest first."""
        with self.lock:
            return [e.to_json() for e in self._errors if e.seq > after]

    @property
    def last_error_seq(self) -> int:
        """Number of the newest error line (0 before the first)."""
        return self._seq

    def sizes(self) -> dict[str, int]:
        """How much is held: series, hosts, error lines."""
        with self.lock:
            return {"series": len(self._series), "hosts": len(self._hosts), "errors": len(self._errors)}


def as_minute_shape(msg: StatsMsg) -> StatsMsg:
    """A DaTtSs partials message in the shape the storage backends store its minute in.

    The interval key leaves the context (it is not part of series identity),
    and the BOT10/TOP10 sums become the means `NAME.bot10`/`NAME.top10`, so
    the live rows match the stored series the charts read.
    """
    counts = {m.name: m.value.count for m in msg.metrics if m.type is MetricType.STATSET}
    metrics = []
    for m in msg.metrics:
        suffix = next((s for s in (BOT10_SUFFIX, TOP10_SUFFIX) if m.name.endswith(s)), None)
        base = m.name[: -len(suffix)] if suffix else None
        if m.type is MetricType.GAUGE and base is not None and counts.get(base):
            mean_suffix = ".bot10" if suffix == BOT10_SUFFIX else ".top10"
            metrics.append(Metric(MetricType.GAUGE, base + mean_suffix, round(m.value / tail_size(counts[base]))))
        else:
            metrics.append(m)
    context = {k: v for k, v in msg.context.items() if k != PARTIAL_CONTEXT_KEY}
    return StatsMsg(msg.prog_id, msg.host, context, metrics, send_time=msg.send_time, collect_time=msg.collect_time)


def metric_context(key: SeriesKey) -> list[list[str]]:
    """The context pairs of `key` as JSON lists (the ``stat`` pair of aggregates included)."""
    return [[k, v] for k, v in key.context]


def series_json(key: SeriesKey) -> dict[str, Any]:
    """The identity fields of a series, as the page and the history API use them."""
    return {
        "id": key.digest(), "prog_id": key.prog_id, "name": key.name, "host": key.host, "type": key.metric_type,
        "kind": key.kind, "namespace": key.namespace, "context": metric_context(key),
        "stat": key.context_dict().get(AGG_CONTEXT_KEY),
    }


def series_order(row: dict[str, Any]) -> tuple[Any, ...]:
    """Metric name, then context without ``stat``, aggregates first, then host and type."""
    plain = [pair for pair in row["context"] if pair[0] != AGG_CONTEXT_KEY]
    return (row["name"], plain, row["namespace"] != "agg", row["host"], row["stat"] or "", row["type"])
