"""Alert rules and their ok/firing state machine, with no I/O and no clock of its own.

A `Rule` is one `[alert:NAME]` section. A `RuleState` keeps, for each series
the rule matches (prog_id, host, metric name and context; or prog_id and host
for `not_seen`), whether it is ok or firing, and returns a `Transition` for
every change (and every `repeat` while firing). Callers pass times in (wall
clock seconds), so the machine is tested with synthetic times; docs/alerts.md
defines the semantics.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from mondemand.cardinality import CardinalityGuard, CardinalityLimits
from mondemand.messages import Statset

log = logging.getLogger("mondemand.alerts")

OK = "ok"
FIRING = "firing"
#: Rule kinds: a value over/under a limit, a series that stopped, a program/host that stopped.
THRESHOLD, NO_DATA, NOT_SEEN = "threshold", "no_data", "not_seen"
#: Which number of a metric a rule compares: auto = gauge value, counter rate, statset avg.
STATS = ("auto", "value", "rate", *Statset.FIELDS)
_GLOB = re.compile(r"[*?\[]")
#: What marks a server-made aggregate series (the agg backend's output): host `all`, a `stat` context pair.
AGGREGATE_HOST = "all"
AGGREGATE_KEY = "stat"


def is_aggregate(host: str, context: Mapping[str, str]) -> bool:
    """True for a server-made aggregate series (host ``all`` or a ``stat`` context pair)."""
    return host == AGGREGATE_HOST or AGGREGATE_KEY in context


class RuleError(ValueError):
    """A rule or notifier setting that cannot work; `key` is the routes.ini key at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class Selector:
    """Which series a rule watches: prog_id and metric-name globs, a host glob and context globs."""

    prog_id: str
    name: str | None = None
    host: str = "*"
    context: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, metric: str, host: str = "*", context: tuple[str, ...] | list[str] = ()) -> Selector:
        """`metric` is `PROG_ID:NAME` (globs allowed) or a bare `PROG_ID`; `context` holds `key=glob` items."""
        prog_id, sep, name = metric.strip().partition(":")
        if not prog_id or (sep and not name):
            raise RuleError("metric", f"expected PROG_ID:NAME or PROG_ID, globs allowed (got {metric!r})")
        pairs = []
        for item in context:
            key, sep_, glob = item.partition("=")
            if not sep_ or not key:
                raise RuleError("context", f"expected key=glob items (got {item!r})")
            pairs.append((key, glob))
        return cls(prog_id, name or None, host.strip() or "*", tuple(pairs))

    def matches_source(self, prog_id: str, host: str) -> bool:
        return fnmatchcase(prog_id, self.prog_id) and fnmatchcase(host, self.host)

    def matches_metric(self, name: str, context: Mapping[str, str]) -> bool:
        if self.name is not None and not fnmatchcase(name, self.name):
            return False
        return all(key in context and fnmatchcase(context[key], glob) for key, glob in self.context)

    @property
    def names_aggregates(self) -> bool:
        """True when the rule asks for aggregate series by name: host ``all`` or a ``stat`` context filter."""
        return self.host == AGGREGATE_HOST or any(key == AGGREGATE_KEY for key, _ in self.context)

    @property
    def exact_source(self) -> bool:
        """True when prog_id and host name one source (no glob characters)."""
        return not _GLOB.search(self.prog_id) and not _GLOB.search(self.host)

    def __str__(self) -> str:
        text = self.prog_id + (f":{self.name}" if self.name else "")
        if self.host != "*":
            text += f" host={self.host}"
        return text + "".join(f" {k}={v}" for k, v in self.context)


@dataclass(frozen=True)
class Rule:
    """One validated `[alert:NAME]` section; see docs/alerts.md for each field."""

    name: str
    selector: Selector
    kind: str = THRESHOLD
    above: float | None = None
    below: float | None = None
    clear_above: float | None = None
    clear_below: float | None = None
    window: float = 0.0
    window_mode: str = "all"
    clear_window: float = 0.0
    timeout: float = 0.0
    repeat: float = 0.0
    stat: str = "auto"
    notify: tuple[str, ...] = ()
    max_series: int = 10_000
    #: who may add series to the rule's table (mondemand.cardinality); None: only max_series bounds it
    cardinality: CardinalityLimits | None = None

    def breaches(self, value: float) -> bool:
        """The value is over `above` or under `below`."""
        return (self.above is not None and value > self.above) or (self.below is not None and value < self.below)

    def clears(self, value: float) -> bool:
        """The value is back inside the clear thresholds (the hysteresis band is not enough)."""
        if self.clear_above is not None and value > self.clear_above:
            return False
        return not (self.clear_below is not None and value < self.clear_below)

    def condition(self, value: float | None) -> str:
        """Name of the condition a firing value meets: above, below, no_data or not_seen."""
        if self.kind != THRESHOLD:
            return self.kind
        return "above" if self.above is not None and value is not None and value > self.above else "below"


def rule_from_options(name: str, options: Mapping[str, Any]) -> Rule:
    """Build a Rule from an `[alert:NAME]` section's parsed options; RuleError names the key at fault."""
    selector = Selector.parse(options["metric"], options.get("host") or "*", tuple(options.get("context") or ()))
    above, below = options.get("above"), options.get("below")
    no_data, not_seen = options.get("no_data"), options.get("not_seen")
    kinds = [k for k, v in (("above/below", above if above is not None else below), ("no_data", no_data),
                            ("not_seen", not_seen)) if v is not None]
    if not kinds:
        raise RuleError("above", "a rule needs above and/or below, no_data, or not_seen")
    if len(kinds) > 1:
        raise RuleError(kinds[1].split("/")[0], f"cannot be combined with {kinds[0]}; use another [alert:...] section")
    hysteresis = float(options.get("hysteresis") or 0.0)
    clear_above, clear_below = options.get("clear_above"), options.get("clear_below")
    common = {"notify": tuple(options.get("notify") or ()), "repeat": float(options.get("repeat") or 0.0),
              "max_series": int(options.get("max_series") or 10_000),
              "cardinality": CardinalityLimits.from_options(options) if "series_per_sender" in options else None}
    if no_data is not None or not_seen is not None:
        for key in ("clear_above", "clear_below", "window", "clear_window"):
            if options.get(key):
                raise RuleError(key, f"applies to above/below rules only, not {kinds[0]}")
        if not_seen is not None:
            if selector.name not in (None, "*") or selector.context:
                raise RuleError("metric", "not_seen watches a prog_id (and host): give metric = PROG_ID")
            return Rule(name, Selector(selector.prog_id, None, selector.host), NOT_SEEN, timeout=not_seen, **common)
        if selector.name is None:
            raise RuleError("metric", "no_data needs PROG_ID:NAME")
        return Rule(name, selector, NO_DATA, timeout=no_data, **common)
    if selector.name is None:
        raise RuleError("metric", "above/below needs PROG_ID:NAME")
    if options.get("window_mode") == "avg" and not options.get("window"):
        raise RuleError("window", "window_mode = avg needs a window (e.g. window = 5m)")
    if above is not None and below is not None and below >= above:
        raise RuleError("below", f"must be under above ({below:g} >= {above:g})")
    if above is not None:
        clear_above = above - hysteresis if clear_above is None else clear_above
        if clear_above > above:
            raise RuleError("clear_above", f"must be at most above ({clear_above:g} > {above:g})")
    elif clear_above is not None:
        raise RuleError("clear_above", "needs above")
    if below is not None:
        clear_below = below + hysteresis if clear_below is None else clear_below
        if clear_below < below:
            raise RuleError("clear_below", f"must be at least below ({clear_below:g} < {below:g})")
    elif clear_below is not None:
        raise RuleError("clear_below", "needs below")
    if clear_above is not None and clear_below is not None and clear_below > clear_above:
        raise RuleError("hysteresis", "the clear band is empty: clear_below is over clear_above")
    return Rule(name, selector, THRESHOLD, above=above, below=below, clear_above=clear_above,
                clear_below=clear_below, window=float(options.get("window") or 0.0),
                window_mode=options.get("window_mode") or "all", clear_window=float(options.get("clear_window") or 0.0),
                stat=options.get("stat") or "auto", **common)


def measure(stat: str, metric_type: str, value: Any, previous: tuple[float, float] | None,
            t: float) -> tuple[float | None, tuple[float, float] | None]:
    """(the number a rule compares, the counter reading to keep) for one metric value.

    Counters give a per-second rate against the previous reading (None for
    the first reading, a reset or no time elapsed); statsets give the chosen
    field (None when absent); `auto` means value for gauges, rate for
    counters and avg for statsets.
    """
    if isinstance(value, Statset):
        field_name = "avg" if stat in ("auto", "value", "rate") else stat
        got = getattr(value, field_name)
        return (None if got is None else float(got)), previous
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, previous
    number = float(value)
    if stat == "rate" or (stat == "auto" and metric_type == "counter"):
        if previous is None or t <= previous[0] or number < previous[1]:
            return None, (t, number)
        return (number - previous[1]) / (t - previous[0]), (t, number)
    return number, previous


@dataclass(frozen=True)
class Transition:
    """A change of state of one series (or a repeat reminder while firing)."""

    rule: str
    state: str
    previous: str
    time: float
    since: float
    value: float | None
    labels: Mapping[str, Any]
    condition: str
    summary: str
    repeat: bool = False


@dataclass
class Series:
    """What a rule knows about one series."""

    labels: dict[str, Any]
    first_seen: float
    #: None for a not_seen source named in the rule that has not reported since start-up.
    last_seen: float | None
    state: str = OK
    since: float = 0.0
    value: float | None = None
    breach_since: float | None = None
    clear_since: float | None = None
    last_notified: float | None = None
    counter: tuple[float, float] | None = None
    samples: deque[tuple[float, float]] = field(default_factory=deque)
    #: Admitted by the rule's guard for this sender (restored series were not): released when forgotten.
    counted: bool = False
    sender: str | None = None

    PERSISTED = ("labels", "first_seen", "last_seen", "state", "since", "value", "breach_since", "clear_since",
                 "last_notified", "counter")

    def to_json(self) -> dict[str, Any]:
        data = {key: getattr(self, key) for key in self.PERSISTED}
        data["counter"] = list(self.counter) if self.counter else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Series:
        """Rebuild from `to_json` output; ValueError/TypeError/KeyError on a malformed entry."""
        labels = data["labels"]
        if not isinstance(labels, dict) or not all(isinstance(labels.get(k), str) for k in ("prog_id", "host")) \
                or data["state"] not in (OK, FIRING):
            raise ValueError("malformed series entry")
        opt = [None if data.get(k) is None else float(data[k])
               for k in ("value", "breach_since", "clear_since", "last_notified", "last_seen")]
        counter = data.get("counter")
        return cls(labels=labels, first_seen=float(data["first_seen"]), last_seen=opt[4],
                   state=data["state"], since=float(data["since"]), value=opt[0], breach_since=opt[1],
                   clear_since=opt[2], last_notified=opt[3],
                   counter=(float(counter[0]), float(counter[1])) if counter else None)


def series_key(labels: Mapping[str, Any]) -> str:
    """A stable text key for a series (used in the state file)."""
    return json.dumps([labels.get("prog_id"), labels.get("host"), labels.get("metric"),
                       sorted((labels.get("context") or {}).items())], separators=(",", ":"))


def _fmt(value: float | None) -> str:
    if value is None:
        return "none"
    return f"{value:g}" if math.isfinite(value) else str(value)


def _describe(labels: Mapping[str, Any]) -> str:
    text = labels["prog_id"] + (f" {labels['metric']}" if labels.get("metric") else "")
    text += f" on {labels['host']}"
    context = labels.get("context") or {}
    return text + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(context.items())) + ")" if context else "")


class RuleState:
    """The series of one rule and their states.

    `observe` (a metric sample), `seen` (any message from a prog_id/host) and
    `tick` (the periodic check) return the transitions to notify. Nothing
    here reads the clock.
    """

    def __init__(self, rule: Rule, now: float, forget_after: float = 86_400.0) -> None:
        self.rule = rule
        self.started = now
        self.forget_after = forget_after
        self.series: dict[str, Series] = {}
        #: Series not tracked because the rule already had max_series.
        self.overflow = 0
        #: Series not tracked because their sender or prog_id had its share (`guard`).
        self.refused = 0
        self.guard = CardinalityGuard(f"alert {rule.name}", rule.cardinality, log) if rule.cardinality else None
        #: [sender, datagram] of the event being observed; the backend shares one list with all its rules.
        self.admission: list[Any] = [None, None]
        #: Set when the series set changed without a transition (a new series): worth persisting soon.
        self.dirty = False
        if rule.kind == NOT_SEEN and rule.selector.exact_source:
            # One named program on one named host: watched from start-up even before it first reports.
            self._add({"prog_id": rule.selector.prog_id, "host": rule.selector.host}, now, seen=False)

    # -- input ------------------------------------------------------------------

    def observe(self, prog_id: str, host: str, name: str, context: Mapping[str, str], metric_type: str,
                value: Any, t: float) -> list[Transition]:
        """One metric sample at time `t`; the caller has checked `selector.matches_source`."""
        rule = self.rule
        if rule.kind == NOT_SEEN or not rule.selector.matches_metric(name, context):
            return []
        if rule.kind == NO_DATA and is_aggregate(host, context) and not rule.selector.names_aggregates:
            return []  # aggregates arrive once a minute: a short no_data would fire on every one of them
        labels = {"prog_id": prog_id, "host": host, "metric": name, "context": dict(context)}
        series = self._series(labels, t)
        if series is None:
            return []
        series.last_seen = t if series.last_seen is None else max(series.last_seen, t)
        if rule.kind == NO_DATA:
            return self._back(series, t)
        number, series.counter = measure(rule.stat, metric_type, value, series.counter, t)
        if number is None:
            return []
        series.value = number
        if rule.window_mode == "avg":
            series.samples.append((t, number))
        return self._evaluate(series, t)

    def seen(self, prog_id: str, host: str, t: float) -> list[Transition]:
        """Any message from prog_id on host at time `t` (for not_seen rules)."""
        if self.rule.kind != NOT_SEEN:
            return []
        if host == AGGREGATE_HOST and not self.rule.selector.names_aggregates:
            return []  # the server's own aggregates, not a process
        series = self._series({"prog_id": prog_id, "host": host}, t)
        if series is None:
            return []
        series.last_seen = t if series.last_seen is None else max(series.last_seen, t)
        return self._back(series, t)

    def tick(self, now: float) -> list[Transition]:
        """The periodic check: windows that have elapsed, silences, repeats, forgetting."""
        rule = self.rule
        out: list[Transition] = []
        for key, series in list(self.series.items()):
            if rule.kind == THRESHOLD:
                if series.state == OK and now - (series.last_seen or now) > self.forget_after:
                    del self.series[key]
                    if series.counted and self.guard is not None:
                        self.guard.release(series.sender, series.labels["prog_id"])
                    self.dirty = True
                    continue
                out += self._evaluate(series, now)
            elif series.state == OK and now - self._silent_since(series) >= rule.timeout:
                out.append(self._move(series, FIRING, now, self._summary(series, now)))
            if series.state == FIRING and rule.repeat > 0 and series.last_notified is not None \
                    and now - series.last_notified >= rule.repeat:
                series.last_notified = now
                out.append(self._transition(series, FIRING, now, self._summary(series, now), series.value, repeat=True))
        return out

    # -- persistence ----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The series as JSON-able data (for the state file)."""
        return {key: series.to_json() for key, series in self.series.items()}

    def restore(self, data: Mapping[str, Any]) -> int:
        """Take series back from `snapshot` data; returns how many malformed entries were skipped."""
        bad = 0
        for key, entry in data.items():
            try:
                series = Series.from_json(entry)
            except (KeyError, TypeError, ValueError, IndexError):
                bad += 1
                continue
            series.first_seen = max(series.first_seen, self.started)  # an average window starts afresh
            self.series[key] = series
        return bad

    @property
    def firing(self) -> int:
        return sum(1 for s in self.series.values() if s.state == FIRING)

    # -- internals --------------------------------------------------------------------

    def _series(self, labels: dict[str, Any], t: float) -> Series | None:
        key = series_key(labels)
        series = self.series.get(key)
        if series is None:
            if len(self.series) >= self.rule.max_series:
                self.overflow += 1
                return None
            guard = self.guard
            if guard is not None:
                sender, token = self.admission
                if not guard.admit(sender, labels["prog_id"], token):
                    self.refused += 1
                    return None
                series = self._add(labels, t)
                series.counted, series.sender = True, sender
                return series
            series = self._add(labels, t)
        return series

    def _add(self, labels: dict[str, Any], t: float, seen: bool = True) -> Series:
        series = Series(labels=labels, first_seen=t, last_seen=t if seen else None, since=t)
        self.series[series_key(labels)] = series
        self.dirty = True
        return series

    def _silent_since(self, series: Series) -> float:
        """Silence counts from the last report, but not from before start-up (a restart gives grace)."""
        return self.started if series.last_seen is None else max(series.last_seen, self.started)

    def _back(self, series: Series, t: float) -> list[Transition]:
        if series.state != FIRING:
            return []
        return [self._move(series, OK, t, f"{_describe(series.labels)}: reporting again")]

    def _measure(self, series: Series, t: float) -> float | None:
        rule = self.rule
        if rule.window_mode != "avg":
            return series.value
        samples = series.samples
        while samples and samples[0][0] <= t - rule.window:
            samples.popleft()
        if not samples or t - series.first_seen < rule.window:
            return None  # the window is not full yet, or the series stopped reporting
        return sum(v for _, v in samples) / len(samples)

    def _evaluate(self, series: Series, t: float) -> list[Transition]:
        rule = self.rule
        value = self._measure(series, t)
        if value is None:
            return []
        if series.state == OK:
            if not rule.breaches(value):
                series.breach_since = None
                return []
            if series.breach_since is None:
                series.breach_since = t
            hold = rule.window if rule.window_mode == "all" else 0.0
            if t - series.breach_since < hold:
                return []
            return [self._move(series, FIRING, t, self._summary(series, t, value), value)]
        if not rule.clears(value):
            series.clear_since = None
            return []
        if series.clear_since is None:
            series.clear_since = t
        if t - series.clear_since < rule.clear_window:
            return []
        return [self._move(series, OK, t, self._summary(series, t, value, cleared=True), value)]

    def _summary(self, series: Series, t: float, value: float | None = None, cleared: bool = False) -> str:
        rule = self.rule
        what = _describe(series.labels)
        if rule.kind != THRESHOLD:
            silent = t - self._silent_since(series)
            return f"{what}: {'no data' if rule.kind == NO_DATA else 'not seen'} for {silent:.0f}s"
        value = series.value if value is None else value
        measure_text = f"average over {rule.window:g}s" if rule.window_mode == "avg" else "value"
        if cleared:
            band = " and ".join(f"{op} {_fmt(v)}" for op, v in (("<=", rule.clear_above), (">=", rule.clear_below))
                                if v is not None)
            return f"{what}: {measure_text} {_fmt(value)} is back ({band})"
        condition = rule.condition(value)
        limit = rule.above if condition == "above" else rule.below
        held = f" for {rule.window:g}s" if rule.window and rule.window_mode == "all" else ""
        return f"{what}: {measure_text} {_fmt(value)} is {condition} {_fmt(limit)}{held}"

    def _move(self, series: Series, state: str, t: float, summary: str, value: float | None = None) -> Transition:
        series.state = state
        series.since = t
        series.last_notified = t
        series.breach_since = series.clear_since = None
        return self._transition(series, state, t, summary, value)

    def _transition(self, series: Series, state: str, t: float, summary: str, value: float | None,
                    repeat: bool = False) -> Transition:
        previous = FIRING if repeat else (OK if state == FIRING else FIRING)
        if self.rule.kind != THRESHOLD:
            value = None
        condition = self.rule.condition(value) if state == FIRING else "clear"
        return Transition(self.rule.name, state, previous, t, series.since, value, dict(series.labels), condition,
                          summary, repeat)
