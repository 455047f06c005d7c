"""`statsd`: receive statsd and DogStatsD lines over UDP or TCP and turn them into MonDemand stats.

Lines (`name:value|type[|@rate][|#tag:v,tag2]`, several per datagram, newline
separated) are pre-aggregated per `flush_interval` the way a mondemand client
does it, then handed to the router as ``MonDemand::StatsMsg`` events, so every
backend (files, rrd, agg, prometheus, graphite...) stores them unchanged:

- ``c`` counters: ``value / rate`` added to a running total per series, sent
  as a cumulative mondemand counter every flush while the series lives (the
  mondemand convention: backends and `agg` compute the deltas). A new counter
  series is also reported once at 0 at the start of the interval it appeared
  in, so that the deltas count its first interval;
- ``g`` gauges: the last value; ``+N``/``-N`` add to the current value (to
  0 for a gauge not seen yet), so a negative value is set by ``0`` then ``-N``
  in one datagram; resent every flush while the series lives;
- ``ms``, ``h``, ``d`` timers, histograms and distributions: one statset per
  flush (count, sum, min, max, avg, median and percentiles from
  `mondemand.sketch`), plus the sketch itself as a ``sketch`` metric (what
  `agg` merges across hosts); a sampled value counts ``1/rate`` times;
- ``s`` sets: the number of distinct values seen in the flush, as a gauge.

Values travel as integers on the mondemand wire, so fractions are rounded
when sent (sums and totals are kept exact until then). The series is (prog_id,
host, context, name, type): prog_id is the name's first dot-separated
component (``prog_id = first_component``), a DogStatsD tag (``prog_id_tag``) or
a fixed name; the host is the sender's IP unless a ``host`` tag says
otherwise; the other tags become context pairs (a tag without a value gets
the value ``true``). docs/statsd.md has the whole story.

The per-line path is plain string operations and dict updates: no regex, no
object per metric, no logging. A line that cannot be read is counted
(`bad_lines`) and logged at most once per 10 s with a sample; the rest of
its datagram is kept. Series unseen for `expire_after` are forgotten;
beyond `max_series` live series new ones are dropped and counted
(`overflow`), logged rate-limited with the sender.
"""

from __future__ import annotations

import contextlib
import math
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from mondemand.listeners.errors import ListenerError
from mondemand.listeners.udp import plain_ip, stop_receiving
from mondemand.listeners.udpauth import TENANT_OPTION, PortGate, has_quotas

from mondemand.cardinality import CardinalityGuard, CardinalityLimits, cardinality_options
from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.httplimits import stream_limit_options
from mondemand.lwes import encode
from mondemand.messages import Metric, MetricType, Statset, StatsMsg
from mondemand.messages.stats import STATS_MSG
from mondemand.options import DAY, Option
from mondemand.plugin_api import Listener, ServerContext
from mondemand.runner import RateLimitedLog
from mondemand.sketch import Sketch

__all__ = ["StatsdAggregator", "StatsdListener", "format_line", "parse_line"]

FIRST_COMPONENT = "first_component"
#: Value given to a DogStatsD tag without ``:value``.
TAG_WITHOUT_VALUE = "true"
#: Tags renamed on the way in: a `stat` context pair marks a server-made aggregate (docs/aggregation.md).
RESERVED_TAGS = {"stat": "tag_stat"}
#: Percentile fields of a statset and their quantile.
PERCENTILES = (("median", 0.5), ("pctl_75", 0.75), ("pctl_90", 0.90), ("pctl_95", 0.95), ("pctl_98", 0.98),
               ("pctl_99", 0.99))
#: Metric type name of the sketch sent next to each timer statset (what `agg` merges).
SKETCH_TYPE = "sketch"
#: Timer samples buffered per series before they are folded into its sketch.
FOLD_AT = 4096
#: Datagrams read in one drain before the thread checks its timers again.
MAX_BURST = 4096
#: Longest TCP line kept; a longer one is a bad line.
MAX_TCP_LINE = 65536
#: Seconds between looks for TCP connections past line_timeout or idle_timeout.
TCP_SWEEP = 0.25
STOP_TIMEOUT = 5.0
#: Largest value a mondemand counter or gauge carries.
INT64_MAX = (1 << 63) - 1
#: Values at or beyond this magnitude are bad lines: the mondemand wire carries int64.
MAX_VALUE = 9.2e18

#: statsd type -> the aggregator's kind: counter, gauge, timer (statset), set.
_KINDS = {"c": "c", "g": "g", "ms": "t", "h": "t", "d": "t", "s": "s"}
_INF = math.inf


def parse_line(line: str) -> tuple[str, str, str, float, str]:
    """Split one statsd/DogStatsD line into (name, value text, type, sample rate, tags text).

    The value text is not converted (a gauge keeps its sign, a set member its
    text, DogStatsD packs several values as ``v1:v2``). Unknown ``|`` fields
    (DogStatsD's ``|c:container`` and ``|T<timestamp>``) are ignored.
    ValueError says what is wrong with a line that cannot be read.
    """
    name, sep, rest = line.partition(":")
    if not sep:
        raise ValueError("no ':' after the name")
    if not name:
        raise ValueError("empty name")
    value, sep, rest = rest.partition("|")
    if not sep:
        raise ValueError("no '|type'")
    if not value:
        raise ValueError("empty value")
    kind, sep, rest = rest.partition("|")
    if kind not in _KINDS:
        raise ValueError(f"unknown type {kind[:10]!r}")
    rate = 1.0
    tags = ""
    while sep:
        field, sep, rest = rest.partition("|")
        first = field[:1]
        if first == "@":
            rate = float(field[1:])
            if not 0.0 < rate <= 1.0:  # also refuses nan
                raise ValueError(f"sample rate {field[1:20]!r} is not in (0, 1]")
        elif first == "#":
            tags = field[1:]
    return name, value, kind, rate, tags


def format_line(name: str, value: str, kind: str, rate: float = 1.0, tags: str = "") -> str:
    """The line `parse_line` reads back as (name, value, kind, rate, tags)."""
    line = f"{name}:{value}|{kind}"
    if rate != 1.0:
        line += f"|@{rate!r}"
    if tags:
        line += f"|#{tags}"
    return line


def _number(text: str) -> float:
    value = float(text)
    if not -MAX_VALUE < value < MAX_VALUE:  # also refuses inf and nan
        raise ValueError(f"value {text[:20]!r} is not a finite number within an int64")
    return value


def _clamp(value: float) -> int:
    return max(-INT64_MAX, min(INT64_MAX, round(value)))


class _Series:
    """One output series: where it goes and when it was last seen (built once per series, not per line)."""

    __slots__ = ("aliases", "group", "kind", "last_seen", "name", "new")

    def __init__(self, kind: str, name: str, group: tuple[str, str, tuple[tuple[str, str], ...]]) -> None:
        self.kind = kind
        self.name = name
        self.group = group  # (prog_id, host, sorted context)
        self.last_seen = 0.0
        self.aliases: list[tuple[str, str, str]] = []
        self.new = True


class StatsdAggregator:
    """statsd lines in, `StatsMsg`s out: the listener's state without its sockets (tests drive it directly).

    `feed(text, ip)` takes the lines of one datagram; `flush(now)` returns the
    messages for the interval that just ended. Not thread-safe: one thread
    feeds and flushes.
    """

    def __init__(
        self,
        *,
        prog_id: str = FIRST_COMPONENT,
        prog_id_tag: str = "",
        fallback_prog_id: str = "statsd",
        expire_after: float = 300.0,
        max_series: int = 100_000,
        relative_accuracy: float = 0.01,
        sketches: bool = True,
        on_bad_line: Callable[[str, str, str], None] | None = None,
        on_overflow: Callable[[str, str], None] | None = None,
        start: float | None = None,
        guard: CardinalityGuard | None = None,
    ) -> None:
        self.prog_id = prog_id
        self.prog_id_tag = prog_id_tag
        self.fallback_prog_id = fallback_prog_id
        self.expire_after = expire_after
        self.max_series = max_series
        self.relative_accuracy = relative_accuracy
        self.sketches = sketches
        self.on_bad_line = on_bad_line
        self.on_overflow = on_overflow
        #: who may add series (mondemand.cardinality): per sender IP and prog_id; None: only max_series
        self.guard = guard
        #: the datagram (text) being fed, for the guard's per-datagram limit
        self._datagram: str | None = None
        #: (kind, ip, name, tags) as sent -> series id; several spellings (tag order) may share one series.
        self._aliases: dict[tuple[str, str, str, str], int] = {}
        #: (kind, prog_id, host, context, name) -> series id.
        self._canonical: dict[tuple[Any, ...], int] = {}
        self._series: dict[int, _Series] = {}
        self._next_id = 0
        # This interval's data, by series id.
        self._counts: dict[int, float] = {}
        self._gauge_sets: dict[int, float] = {}
        self._gauge_deltas: dict[int, float] = {}
        self._timers: dict[int, list[float]] = {}
        self._weighted: dict[int, list[tuple[float, float]]] = {}
        self._sketch: dict[int, Sketch] = {}
        self._sets: dict[int, set[str]] = {}
        # State kept across intervals.
        self._totals: dict[int, float] = {}
        self._gauges: dict[int, float] = {}
        self._interval_start = time.time() if start is None else start
        self.lines = 0
        self.bad_lines = 0
        self.overflow = 0
        self.refused = 0
        self.expired = 0

    @property
    def live_series(self) -> int:
        """Spellings of series currently known (what `max_series` bounds)."""
        return len(self._aliases)

    # -- the per-line path -----------------------------------------------------

    def feed(self, text: str, ip: str) -> None:
        """Aggregate every line of `text` (one datagram or TCP chunk) sent from `ip`; bad lines are counted."""
        aliases = self._aliases
        counts = self._counts
        timers = self._timers
        kinds = _KINDS
        self._datagram = text
        for line in text.split("\n"):
            if not line or line == "\r":
                continue
            if line[-1] == "\r":
                line = line[:-1]
            self.lines += 1
            try:
                # The common `name:value|type` inline; anything else (rate, tags, errors) through parse_line.
                name, _, rest = line.partition(":")
                value, _, kind = rest.partition("|")
                k = kinds.get(kind)
                if k is not None and name and value:
                    rate, tags = 1.0, ""
                else:
                    name, value, kind, rate, tags = parse_line(line)
                    k = kinds[kind]
                # The value is read before the series is looked up: a bad value creates no series.
                if k == "c":
                    inc = (sum(_number(v) for v in value.split(":")) if ":" in value else _number(value)) / rate
                    sid = aliases.get((k, ip, name, tags))
                    if sid is None and (sid := self._new_series(k, ip, name, tags)) is None:
                        continue
                    counts[sid] = counts.get(sid, 0.0) + inc
                elif k == "t":
                    values = [_number(v) for v in value.split(":")] if ":" in value else [_number(value)]
                    sid = aliases.get((k, ip, name, tags))
                    if sid is None and (sid := self._new_series(k, ip, name, tags)) is None:
                        continue
                    if rate == 1.0:
                        samples = timers.get(sid)
                        if samples is None:
                            samples = timers[sid] = []
                        samples.extend(values)
                        if len(samples) >= FOLD_AT:
                            self._fold(sid, samples, ())
                    else:
                        weight = 1.0 / rate
                        pairs = self._weighted.setdefault(sid, [])
                        pairs.extend((v, weight) for v in values)
                        if len(pairs) >= FOLD_AT:
                            self._fold(sid, (), pairs)
                elif k == "g":
                    updates = [(v[0] in "+-", _number(v)) for v in value.split(":")]
                    sid = aliases.get((k, ip, name, tags))
                    if sid is None and (sid := self._new_series(k, ip, name, tags)) is None:
                        continue
                    for is_delta, number in updates:
                        if is_delta:
                            self._gauge_deltas[sid] = self._gauge_deltas.get(sid, 0.0) + number
                        else:
                            self._gauge_sets[sid] = number
                            self._gauge_deltas.pop(sid, None)
                else:
                    sid = aliases.get((k, ip, name, tags))
                    if sid is None and (sid := self._new_series(k, ip, name, tags)) is None:
                        continue
                    members = self._sets.get(sid)
                    if members is None:
                        members = self._sets[sid] = set()
                    members.update(value.split(":"))
            except (ValueError, OverflowError, IndexError) as exc:
                self.bad_lines += 1
                if self.on_bad_line is not None:
                    self.on_bad_line(line, ip, str(exc))

    def _fold(self, sid: int, samples: Any, weighted: Any) -> None:
        """Move buffered timer samples into the series' sketch (bounded memory however many arrive)."""
        sketch = self._sketch.get(sid)
        if sketch is None:
            sketch = self._sketch[sid] = Sketch(self.relative_accuracy)
        add = sketch.add
        for v in samples:
            add(v)
        for v, w in weighted:
            add(v, w)
        if samples:
            samples.clear()
        if weighted:
            weighted.clear()

    def _new_series(self, kind: str, ip: str, name: str, tags: str) -> int | None:
        """The id for a spelling not seen yet (a new series, or a new spelling of one); None over max_series."""
        if len(self._aliases) >= self.max_series:
            self.overflow += 1
            if self.on_overflow is not None:
                self.on_overflow(name, ip)
            return None
        context: dict[str, str] = {}
        if tags:
            for tag in tags.split(","):
                if not tag:
                    continue
                key, sep, val = tag.partition(":")
                if key:
                    context[RESERVED_TAGS.get(key, key)] = val if sep else TAG_WITHOUT_VALUE
        prog_id = None
        if self.prog_id_tag:
            prog_id = context.pop(self.prog_id_tag, None) or None
        metric = name
        if prog_id is None:
            if self.prog_id == FIRST_COMPONENT:
                head, dot, tail = name.partition(".")
                if dot and head and tail:
                    prog_id, metric = head, tail
                else:
                    prog_id = self.fallback_prog_id
            else:
                prog_id = self.prog_id
        if self.guard is not None and not self.guard.admit(ip, prog_id, self._datagram):
            self.refused += 1
            return None
        host = context.pop("host", None) or ip
        group = (prog_id, host, tuple(sorted(context.items())))
        canonical = (kind, *group, metric)
        sid = self._canonical.get(canonical)
        if sid is None:
            sid = self._next_id
            self._next_id += 1
            self._canonical[canonical] = sid
            self._series[sid] = _Series(kind, metric, group)
        series = self._series[sid]
        series.aliases.append((kind, ip, name, tags))
        self._aliases[(kind, ip, name, tags)] = sid
        return sid

    # -- the flush ---------------------------------------------------------------

    def flush(self, now: float | None = None) -> list[StatsMsg]:
        """The messages for the interval ending `now` (seconds): counters, gauges, statsets and sets.

        A new counter series comes first, at 0 and stamped with the interval's
        start (at least 1 s before `now`), in messages of their own. Series idle for `expire_after` are forgotten.
        """
        now = time.time() if now is None else now
        now_ms = int(now * 1000)
        # At least a second before the totals, so that second-resolution stores see two distinct updates.
        start_ms = min(int(self._interval_start * 1000), now_ms - 1000)
        self._interval_start = now
        series = self._series
        counts, self._counts = self._counts, {}
        gauge_sets, self._gauge_sets = self._gauge_sets, {}
        gauge_deltas, self._gauge_deltas = self._gauge_deltas, {}
        timers, self._timers = self._timers, {}
        weighted, self._weighted = self._weighted, {}
        sketches, self._sketch = self._sketch, {}
        sets, self._sets = self._sets, {}
        for touched in (counts, gauge_sets, gauge_deltas, timers, weighted, sketches, sets):
            for sid in touched:
                series[sid].last_seen = now
        totals = self._totals
        for sid, inc in counts.items():
            total = totals.get(sid, 0.0) + inc
            if not -INT64_MAX <= total <= INT64_MAX:
                total = inc  # a total no int64 holds starts again: backends see a counter reset
            totals[sid] = total
        gauges = self._gauges
        for sid in gauge_sets.keys() | gauge_deltas.keys():
            value = gauge_sets.get(sid)
            if value is None:
                value = gauges.get(sid, 0.0)
            gauges[sid] = max(-INT64_MAX, min(INT64_MAX, value + gauge_deltas.get(sid, 0.0)))
        self._expire(now)

        Group = tuple[str, str, tuple[tuple[str, str], ...]]
        groups: dict[Group, list[Metric]] = {}
        baseline: dict[Group, list[Metric]] = {}
        for sid, total in totals.items():
            s = series[sid]
            if s.new:
                s.new = False
                baseline.setdefault(s.group, []).append(Metric(MetricType.COUNTER, s.name, 0))
            groups.setdefault(s.group, []).append(Metric(MetricType.COUNTER, s.name, _clamp(total)))
        for sid, value in gauges.items():
            s = series[sid]
            groups.setdefault(s.group, []).append(Metric(MetricType.GAUGE, s.name, _clamp(value)))
        for sid in timers.keys() | weighted.keys() | sketches.keys():
            s = series[sid]
            metrics = groups.setdefault(s.group, [])
            metrics.extend(self._statset(s.name, timers.get(sid, ()), weighted.get(sid, ()), sketches.get(sid)))
        for sid, s in series.items():
            if s.kind == "s":  # idle sets report 0 distinct values until they expire
                members = sets.get(sid)
                groups.setdefault(s.group, []).append(Metric(MetricType.GAUGE, s.name, len(members or ())))

        out = [StatsMsg(prog, host, dict(ctx), metrics, send_time=start_ms)
               for (prog, host, ctx), metrics in baseline.items()]
        out += [StatsMsg(prog, host, dict(ctx), metrics, send_time=now_ms)
                for (prog, host, ctx), metrics in groups.items()]
        return out

    def _statset(self, name: str, samples: Any, weighted: Any, sketch: Sketch | None) -> list[Metric]:
        if sketch is None:
            sketch = Sketch(self.relative_accuracy)
        add = sketch.add
        for v in samples:
            add(v)
        for v, w in weighted:
            add(v, w)
        count = sketch.count
        fields: dict[str, int] = {
            "count": _clamp(count), "sum": _clamp(sketch.sum), "min": _clamp(sketch.min),
            "max": _clamp(sketch.max), "avg": _clamp(sketch.sum / count),
        }
        for field, q in PERCENTILES:
            fields[field] = _clamp(sketch.quantile(q))  # type: ignore[arg-type]
        metrics = [Metric(MetricType.STATSET, name, Statset(**fields))]
        if self.sketches:
            metrics.append(Metric(MetricType.UNKNOWN, name, sketch.to_text(), type_name=SKETCH_TYPE))
        return metrics

    def _expire(self, now: float) -> None:
        limit = now - self.expire_after
        for sid in [sid for sid, s in self._series.items() if s.last_seen < limit]:
            s = self._series.pop(sid)
            for alias in s.aliases:
                self._aliases.pop(alias, None)
                if self.guard is not None:
                    self.guard.release(alias[1], s.group[0])
            self._canonical.pop((s.kind, *s.group, s.name), None)
            self._totals.pop(sid, None)
            self._gauges.pop(sid, None)
            self.expired += 1


def _check_prog_id(value: str) -> None:
    if not value:
        raise ValueError(f"give {FIRST_COMPONENT} or a prog_id")


class StatsdListener(Listener):
    """statsd/DogStatsD over UDP or TCP, pre-aggregated per flush into StatsMsg events."""

    type_name = "statsd"
    options = (
        Option("address", "str", "0.0.0.0", help="address to bind"),
        Option("port", "port", 8125, help="UDP or TCP port; 0 picks a free one"),
        Option("protocol", "str", "udp", choices=("udp", "tcp")),
        Option("flush_interval", "duration", 10.0, minimum=0.05, maximum=DAY,
               help="period of the pre-aggregation; aligned to the wall clock"),
        Option("prog_id", "str", FIRST_COMPONENT, check=_check_prog_id,
               help="first_component: the name's first dot-separated component; or a fixed prog_id"),
        Option("prog_id_tag", "str", "", help="take the prog_id from this DogStatsD tag when a line has it"),
        Option("fallback_prog_id", "str", "statsd", help="prog_id of a name without a dot (first_component)"),
        Option("expire_after", "duration", 300.0, minimum=0.05, maximum=30 * DAY,
               help="a series unseen this long is forgotten"),
        Option("max_series", "int", 100_000, minimum=1, help="live series at most; new ones beyond are dropped"),
        *cardinality_options(per_sender=20_000, per_prog_id=50_000, per_datagram=1000, per_minute=5000),
        *stream_limit_options(max_connections=1024, idle_timeout=300.0),
        Option("sketches", "bool", True, help="send each timer's sketch too, so that agg can merge percentiles"),
        Option("relative_accuracy", "float", 0.01, help="of the percentile sketches"),
        Option("receive_buffer", "size", 16 << 20, minimum=0, maximum=1 << 30, help="SO_RCVBUF to ask for (UDP)"),
        Option("max_datagram", "size", 65535, minimum=1, maximum=65535, help="largest datagram read"),
        TENANT_OPTION,
    )  # fmt: skip

    def __init__(self, name: str, config: Mapping[str, Any], context: ServerContext) -> None:
        super().__init__(name, config, context)
        settings = {opt.name: opt.default for opt in self.options} | self.config
        self.settings = settings
        self.address = str(settings["address"]).strip("[]")
        self.port = int(settings["port"])
        self.protocol = str(settings["protocol"])
        self.flush_interval = float(settings["flush_interval"])
        self.family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        self.ratelog = RateLimitedLog(self.log)
        self.aggregator = StatsdAggregator(
            prog_id=settings["prog_id"], prog_id_tag=settings["prog_id_tag"],
            fallback_prog_id=settings["fallback_prog_id"], expire_after=float(settings["expire_after"]),
            max_series=int(settings["max_series"]), relative_accuracy=float(settings["relative_accuracy"]),
            sketches=bool(settings["sketches"]), on_bad_line=self._bad_line, on_overflow=self._overflow,
            guard=CardinalityGuard(f"statsd listener {name}", CardinalityLimits.from_options(settings), self.log),
        )  # fmt: skip
        self.received = 0
        self.bytes = 0
        self.errors = 0
        self.events = 0
        self.flushes = 0
        self.connections = 0
        #: TCP: connections refused over max_connections, cut off mid-line (line_timeout), closed idle
        self.tcp_refused = 0
        self.tcp_timeouts = 0
        self.tcp_idle_closed = 0
        self.line_timeout = float(settings["line_timeout"])
        self.idle_timeout = float(settings["idle_timeout"])
        #: TCP only (None over UDP), so that the server plans it against the open-file limit with the HTTP ports
        self.max_connections: int | None = int(settings["max_connections"]) if self.protocol == "tcp" else None
        self._open = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._stopping = False
        self._bound: tuple[str, int] | None = None
        self._deliver: Callable[[list[RawEvent]], None] | None = None
        #: Service mode, `tenant = NAME`: every flushed event is NAME's; `gate` applies NAME's quotas.
        self.tenant = ""
        self.gate: PortGate | None = None
        tenants = context.tenants
        if settings["tenant"] and tenants is not None and settings["tenant"] in tenants.specs:
            self.tenant = str(settings["tenant"])
            if has_quotas(tenants.specs[self.tenant]):
                self.gate = PortGate(tenants, self.tenant)

    # -- life cycle ----------------------------------------------------------------

    def start(self, deliver: Callable[[list[RawEvent]], None]) -> None:
        """Bind the socket and start the thread that reads, aggregates and flushes."""
        where = self.describe()
        kind = socket.SOCK_DGRAM if self.protocol == "udp" else socket.SOCK_STREAM
        try:
            sock = socket.socket(self.family, kind)
        except OSError as exc:
            raise ListenerError(self.name, where, f"cannot create a socket: {exc}") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if kind == socket.SOCK_DGRAM and self.settings["receive_buffer"]:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, 33, int(self.settings["receive_buffer"]))  # SO_RCVBUFFORCE
                with contextlib.suppress(OSError):
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < int(self.settings["receive_buffer"]):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(self.settings["receive_buffer"]))
            sock.bind((self.address, self.port))
            if kind == socket.SOCK_STREAM:
                sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ListenerError(self.name, where, f"cannot bind: {exc.strerror or exc}") from None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._sock = sock
        self._bound = tuple(sock.getsockname()[:2])  # type: ignore[assignment]
        self._deliver = deliver
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"listener-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reading, flush what the current interval holds, close the socket."""
        stop_receiving(self)

    # -- description and counters --------------------------------------------------

    @property
    def bound_address(self) -> tuple[str, int]:
        """(host, port) bound: the real port after `start`."""
        return self._bound if self._bound is not None else (self.address, self.port)

    def sockets(self) -> list[socket.socket]:
        """The UDP socket, for the kernel's drop counters (none for TCP)."""
        return [self._sock] if self._sock is not None and self.protocol == "udp" else []

    def describe(self) -> str:
        """statsd+udp://host:port or statsd+tcp://host:port."""
        host, port = self.bound_address
        host = f"[{host}]" if ":" in host else host
        return f"statsd+{self.protocol}://{host}:{port}"

    def counters(self) -> dict[str, float]:
        """Datagrams (or TCP reads), lines, bad lines, live series, overflow, expired, events delivered."""
        agg = self.aggregator
        return {
            "received": self.received, "bytes": self.bytes, "lines": agg.lines, "bad_lines": agg.bad_lines,
            "series": agg.live_series, "overflow": agg.overflow, "expired": agg.expired, "events": self.events,
            "flushes": self.flushes, "errors": self.errors, "connections": self.connections, "refused": agg.refused,
            "open_connections": self._open, "tcp_refused": self.tcp_refused, "tcp_timeouts": self.tcp_timeouts,
            "tcp_idle_closed": self.tcp_idle_closed,
            **(agg.guard.counters() if agg.guard is not None else {}),
            **(self.gate.counters() if self.gate is not None else {}),
        }  # fmt: skip

    # -- reporting (never per line: rate-limited) -------------------------------------

    def _bad_line(self, line: str, ip: str, reason: str) -> None:
        self.ratelog.warning("bad_line", "listener %s: bad statsd line from %s (%s): %r; %d bad lines so far",
                             self.name, ip, reason, line[:200], self.aggregator.bad_lines)

    def _overflow(self, name: str, ip: str) -> None:
        self.ratelog.warning("overflow", "listener %s: %d live series (max_series); new series %r from %s dropped",
                             self.name, self.aggregator.live_series, name[:200], ip)

    # -- the thread -------------------------------------------------------------------

    def _next_flush(self, now: float) -> float:
        return (math.floor(now / self.flush_interval) + 1) * self.flush_interval

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        selector.register(sock, selectors.EVENT_READ, "sock")
        # TCP connection -> [unfinished line, sender IP, monotonic time of its last data, of the line's first byte]
        buffers: dict[socket.socket, list[Any]] = {}
        deadline = self._next_flush(time.time())
        next_sweep = time.monotonic() + TCP_SWEEP
        try:
            while not self._stopping:
                timeout = max(0.0, deadline - time.time())
                if buffers:
                    timeout = min(timeout, max(0.0, next_sweep - time.monotonic()))
                try:
                    ready = selector.select(timeout)
                except OSError as exc:
                    self.errors += 1
                    self.ratelog.error("select", "listener %s: select failed: %r", self.name, exc)
                    time.sleep(0.1)
                    ready = []
                for key, _ in ready:
                    try:
                        if key.data == "wake":
                            return
                        if key.data == "sock":
                            if self.protocol == "udp":
                                self._drain(sock)
                            else:
                                self._accept(sock, selector, buffers)
                        else:
                            self._read(key.fileobj, selector, buffers)  # type: ignore[arg-type]
                    except Exception as exc:  # a safety net: the thread must keep receiving
                        if self._stopping:
                            return
                        self.errors += 1
                        self.ratelog.error("receive", "listener %s: %r", self.name, exc, exc_info=exc)
                if buffers and time.monotonic() >= next_sweep:
                    self._sweep(selector, buffers)
                    next_sweep = time.monotonic() + TCP_SWEEP
                if time.time() >= deadline:
                    self._flush()
                    deadline = self._next_flush(time.time())
        finally:
            for conn, (pending, ip, _seen, _line) in list(buffers.items()):
                if pending:
                    self.aggregator.feed(pending.decode("utf-8", "replace"), ip)
                conn.close()
            selector.close()
            self._flush()

    def _drain(self, sock: socket.socket) -> None:
        recvfrom = sock.recvfrom
        size = int(self.settings["max_datagram"])
        feed = self.aggregator.feed
        mapped = self.family == socket.AF_INET6
        received = nbytes = 0
        try:
            for _ in range(MAX_BURST):
                try:
                    data, addr = recvfrom(size)
                except BlockingIOError:
                    break
                received += 1
                nbytes += len(data)
                feed(data.decode("utf-8", "replace"), plain_ip(addr[0]) if mapped else addr[0])
        finally:
            self.received += received
            self.bytes += nbytes

    def _accept(self, sock: socket.socket, selector: selectors.BaseSelector,
                buffers: dict[socket.socket, list[Any]]) -> None:
        for _ in range(64):
            try:
                conn, addr = sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # EMFILE and the like: the connection waits in the backlog
                self.errors += 1
                self.ratelog.error("accept", "listener %s: accept failed: %s", self.name, exc)
                return
            if len(buffers) >= (self.max_connections or 0):
                conn.close()
                self.tcp_refused += 1
                self.ratelog.warning("refused", "listener %s: %d connections open (max_connections); refusing %s",
                                     self.name, len(buffers), addr[0])
                continue
            conn.setblocking(False)
            self.connections += 1
            buffers[conn] = [bytearray(), plain_ip(addr[0]), time.monotonic(), None]
            selector.register(conn, selectors.EVENT_READ, "conn")
        self._open = len(buffers)

    def _sweep(self, selector: selectors.BaseSelector, buffers: dict[socket.socket, list[Any]]) -> None:
        """Close connections that dribble a line past `line_timeout` or send nothing for `idle_timeout`."""
        now = time.monotonic()
        for conn, (pending, ip, seen, line_start) in list(buffers.items()):
            if line_start is not None and now - line_start > self.line_timeout:
                self.tcp_timeouts += 1
                self.aggregator.lines += 1
                self.aggregator.bad_lines += 1
                self._bad_line(pending[:200].decode("utf-8", "replace"), ip,
                               f"line not finished within line_timeout ({self.line_timeout:g} s); connection closed")
            elif now - seen > self.idle_timeout:
                self.tcp_idle_closed += 1
            else:
                continue
            selector.unregister(conn)
            del buffers[conn]
            conn.close()
        self._open = len(buffers)

    def _read(self, conn: socket.socket, selector: selectors.BaseSelector,
              buffers: dict[socket.socket, list[Any]]) -> None:
        entry = buffers[conn]
        pending, ip = entry[0], entry[1]
        try:
            data = conn.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # closed: the last line needs no newline
            selector.unregister(conn)
            del buffers[conn]
            conn.close()
            self._open = len(buffers)
            if pending:
                self.aggregator.feed(pending.decode("utf-8", "replace"), ip)
            return
        self.received += 1
        self.bytes += len(data)
        now = time.monotonic()
        entry[2] = now
        if not pending:
            entry[3] = now  # a new line starts: it has line_timeout to end
        pending += data
        cut = pending.rfind(b"\n")
        if cut >= 0:
            self.aggregator.feed(pending[:cut].decode("utf-8", "replace"), ip)
            del pending[: cut + 1]
            entry[3] = now if pending else None
        if len(pending) > MAX_TCP_LINE:
            self.aggregator.lines += 1
            self.aggregator.bad_lines += 1
            self._bad_line(pending[:200].decode("utf-8", "replace"), ip, f"line longer than {MAX_TCP_LINE} bytes")
            pending.clear()
            entry[3] = None

    def _flush(self) -> None:
        deliver = self._deliver
        try:
            messages = self.aggregator.flush()
        except Exception as exc:
            self.errors += 1
            self.ratelog.error("flush", "listener %s: flush failed: %r", self.name, exc, exc_info=exc)
            return
        self.flushes += 1
        if not messages or deliver is None:
            return
        now_ms = int(time.time() * 1000)
        batch: list[RawEvent] = []
        tenant, gate = self.tenant, self.gate
        for msg in messages:
            ip = msg.host if _is_ipv4(msg.host) else "0.0.0.0"
            try:
                for event in msg.to_lwes():
                    data = encode(event)
                    if gate is not None and gate.check(data, now_ms) is None:
                        continue  # over the tenant's quota: counted in over_quota
                    batch.append(RawEvent(data, now_ms, ip, 0, self.name, STATS_MSG, tenant))
            except Exception as exc:  # one series that cannot be sent (a name too long) costs its message only
                self.errors += 1
                self.ratelog.error("encode", "listener %s: cannot send %s/%s: %s", self.name, msg.prog_id,
                                   msg.host, exc)
        if not batch:
            return
        try:
            deliver(batch)
            self.events += len(batch)
        except Exception as exc:
            self.errors += 1
            self.ratelog.error("deliver", "listener %s: delivering %d events failed: %r", self.name, len(batch),
                               exc)


def _is_ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts)


@hookimpl
def register_listener_types(register: Callable[[str, type], None]) -> None:
    """Register the `statsd` listener type."""
    register("statsd", StatsdListener)
