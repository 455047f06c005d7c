"""`agg` backend: per-interval summaries of every stats series across hosts (the `agg` namespace).

For each StatsMsg metric the summariser rewrites the context (``stat``
removed, every `aggregation_keys` key set to ``all``, host ``all``) and adds
the value to that series' `Summary` for the interval the event's own time
falls in:

- a gauge is one sample;
- a counter becomes the delta against the previous report of the same
  (host, prog_id, name, context); the first report after a restart (or after
  `expire_after` of silence) and a counter that went down give 0, as the
  reference does;
- a statset (a client's, or a lower tier's aggregate) is merged: count and sum
  add, min and max take extremes, sketches merge.

Once an interval is over by `lateness` seconds it is closed: every series in
it becomes a ``MonDemand::StatsMsg`` with host ``all``, context ``stat=…``,
collect_time = interval start, holding one statset per metric, and is routed
through the server again (so RRD, files or a forwarder store it). Events for a
closed interval are counted as late and left out, never put in the wrong one.
docs/aggregation.md has the whole story.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mondemand.backends.checkpoint import Checkpoint, CheckpointError, agg_state, restore_agg_state
from mondemand.backends.series import ProgIdFilter
from mondemand.client.partials import BOT10_SUFFIX, PARTIAL_CONTEXT_KEY, TOP10_SUFFIX, tail_size

from mondemand.cardinality import CardinalityGuard, CardinalityLimits, cardinality_options, guard_sender
from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.messages import MessageError, Metric, MetricType, StatsMsg
from mondemand.messages.stats_fast import PROG_ID, StatsRecord, record_from_msg
from mondemand.options import DAY, HOUR, Option
from mondemand.plugin_api import Backend, ServerContext
from mondemand.sketch import Sketch, SketchError
from mondemand.summary import PERCENTILE_FIELDS, Summary

__all__ = ["AGG_LISTENER_PREFIX", "AggBackend"]

#: Listener name stamped on the events a summariser injects; summarisers skip them (loop protection).
AGG_LISTENER_PREFIX = "agg:"
#: Context key of the aggregate kind; its presence marks an event as an aggregate.
STAT_KEY = "stat"
#: Context key of DaTtSs client partials (their interval); dropped so processes with different intervals merge.
PARTIAL_KEY = PARTIAL_CONTEXT_KEY
#: Gauges next to an emitted statset holding the combined BOT10 / TOP10 means of DaTtSs partials.
BOT10_MEAN = ".bot10"
TOP10_MEAN = ".top10"
SKETCH_TYPE = "sketch"
STAT_FIELDS = ("count", "sum", "min", "max", "avg", *PERCENTILE_FIELDS)
_COUNTER, _GAUGE, _STATSET = MetricType.COUNTER.value, MetricType.GAUGE.value, MetricType.STATSET.value
_PLAIN = (_GAUGE, _COUNTER)
#: Shapes (one per sender and metric set) whose plans are kept; beyond, the plans are forgotten and rebuilt.
_PLANS_MAX = 65536
#: Interval starts (s) below this get a `_window`: ms / 1000 is exact enough there that the floor never moves.
_WINDOW_LIMIT = 1 << 40

Key = tuple[str, tuple[tuple[str, str], ...], str]  # prog_id, output context (with stat), metric name


def _check_stats(fields: list[str]) -> None:
    bad = [f for f in fields if f not in STAT_FIELDS]
    if bad:
        raise ValueError(f"unknown statistic {bad[0]!r}; choose from {', '.join(STAT_FIELDS)}")
    if not fields:
        raise ValueError("give at least one statistic")


def _check_interval(seconds: float) -> None:
    if seconds != int(seconds) or 86400 % int(seconds):
        raise ValueError("must be a whole number of seconds that divides a day (e.g. 10s, 60s, 300s)")


def _check_accuracy(value: float) -> None:
    if not 0 < value < 1:
        raise ValueError("must be between 0 and 1")


class AggBackend(Backend):
    """Summarise stats per interval across hosts and re-inject the results as `agg` series."""

    type_name = "agg"
    needs = "stats"
    injects = True
    options = (
        Option("aggregation_keys", "list", [], help="context keys whose value becomes 'all' (e.g. cluster)"),
        Option("interval", "duration", 60.0, minimum=1, maximum=DAY, check=_check_interval,
               help="length of one summary"),
        Option("lateness", "duration", 30.0, minimum=0, maximum=DAY,
               help="how long after an interval ends events for it are still taken"),
        Option("max_future", "duration", 120.0, minimum=0, maximum=DAY,
               help="events timestamped further ahead of the server clock are counted and left out"),
        Option("time_source", "str", "event", choices=("event", "receipt"),
               help="bucket by the event's send/collect time, or by when the server received it"),
        Option("stats", "list", ["count", "sum", "min", "max"], check=_check_stats,
               help="statistics emitted per series; median and pctl_* need sketches"),
        Option("relative_accuracy", "float", 0.01, check=_check_accuracy, help="of the percentile sketches"),
        Option("max_series", "int", 1_000_000, minimum=1,
               help="live series (open summaries plus counter states) kept at most; beyond, new ones are dropped"),
        Option("expire_after", "duration", 900.0, minimum=1, help="a counter silent this long starts again at 0"),
        Option("max_metrics", "int", 512, minimum=1, help="metrics per emitted StatsMsg"),
        Option("whitelist", "list", [], help="prog_id globs to summarise (when set, only these)"),
        Option("blacklist", "list", [], help="prog_id globs never to summarise"),
        Option("checkpoint", "str", "auto",
               help="state file surviving a crash: 'auto' (NAME.agg-checkpoint in the config's directory), "
                    "a path (relative: to the config's directory) or 'off'"),
        Option("checkpoint_interval", "duration", 5.0, minimum=0.1, maximum=HOUR,
               help="how often the open intervals and counter states are saved"),
        Option("checkpoint_max_bytes", "int", 256 << 20, minimum=4096,
               help="largest checkpoint written (compressed); a bigger state is not saved (counted)"),
        *cardinality_options(per_sender=250_000, per_prog_id=500_000, per_datagram=1000, per_minute=0),
    )  # fmt: skip

    def __init__(self, name: str, config: Mapping[str, Any], context: ServerContext) -> None:
        super().__init__(name, config, context)
        self.interval = int(self.config["interval"])
        self.lateness = float(self.config["lateness"])
        self.max_future = float(self.config["max_future"])
        self.by_receipt = self.config["time_source"] == "receipt"
        self.fields = tuple(self.config["stats"])
        self.percentiles = any(f in PERCENTILE_FIELDS for f in self.fields)
        self.accuracy = float(self.config["relative_accuracy"])
        self.max_series = int(self.config["max_series"])
        self.expire_after = float(self.config["expire_after"])
        self.aggregation_keys = tuple(dict.fromkeys(self.config["aggregation_keys"]))
        self.filter = ProgIdFilter(self.config["whitelist"], self.config["blacklist"])
        self.listener_tag = AGG_LISTENER_PREFIX + name
        #: interval start (s) -> series -> summary
        self.buckets: dict[int, dict[Key, Summary]] = {}
        #: (host, prog_id, name, context) -> [last value, its time in ms, wall time last seen]; changed in place,
        #: so that the per-shape plans can hold them
        self.counter_state: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], list[Any]] = {}
        self.live = 0
        #: starts of intervals already emitted whose events could still arrive: they are late, never emitted twice
        self.emitted: set[int] = set()
        self.checkpoint: Checkpoint | None = None
        self._next_checkpoint = 0.0
        #: message context -> what it means here (`_shape`)
        self._shapes: dict[tuple[tuple[str, str], ...], tuple[Any, ...]] = {}
        self._next_expiry = 0.0
        #: False: every event through `add_record` (tests and benchmarks compare both ways)
        self.use_plans = True
        #: (prog_id, host, context, types, names) -> the shape's plan (`_plan`), or None when it has none
        self._plans: dict[tuple[Any, ...], list[Any] | None] = {}
        self.max_plans = _PLANS_MAX
        #: bumped whenever counter states go away (expiry): plans then fetch theirs again
        self._state_epoch = 0
        #: (first ms, end ms, start s) of an interval whose every time is taken at this batch's `now`
        self._window: tuple[int, int, int] | None = None
        #: who may add counter states and series (mondemand.cardinality); `_raw`: the event being added
        self.guard = CardinalityGuard(f"agg backend {name}", CardinalityLimits.from_options(self.config), self.log)
        self._raw: RawEvent | None = None
        self.stats: dict[str, int] = dict.fromkeys(
            ("messages", "samples", "own_skipped", "filtered", "late", "future", "out_of_order", "duplicates",
             "counter_resets", "overflow", "unknown_types", "bad_sketches", "percentiles_lost", "emitted_series",
             "emitted_events", "emit_errors", "expired", "checkpoint_errors", "restored_series", "refused"),
            0,
        )  # fmt: skip

    # -- intake ----------------------------------------------------------------

    def handle(self, batch: list[RawEvent]) -> None:
        self.handle_at(batch, time.time())

    def handle_at(self, batch: list[RawEvent], now: float) -> None:
        """`handle` with the server's wall clock given (`now`, seconds): replays and tests."""
        self._window = None
        allows = self.filter.allows
        stats = self.stats
        for raw in batch:
            if raw.listener.startswith(AGG_LISTENER_PREFIX):
                stats["own_skipped"] += 1
                continue
            record = raw.stats
            if record is None:
                continue
            if not allows(record[PROG_ID]):
                stats["filtered"] += 1
                continue
            self._raw = raw
            try:
                if self.use_plans:
                    self._add_planned(record, now, raw.receipt_ms)
                else:
                    self.add_record(record, now, raw.receipt_ms)
            except Exception as exc:  # bad data in this event (e.g. a value too large): it alone is dropped
                self.reject(raw, exc)
        self._raw = None

    def add(self, msg: StatsMsg, now: float, receipt_ms: int | None = None) -> None:
        """Fold one StatsMsg into the open intervals (`now`: the server's wall clock, seconds)."""
        self.add_record(record_from_msg(msg), now, receipt_ms)

    def add_record(self, record: StatsRecord, now: float, receipt_ms: int | None = None) -> None:
        """Fold one StatsMsg record (`RawEvent.stats`) into the open intervals; `receipt_ms` when it has none."""
        prog_id, host, context, send_ms, collect_ms, received, types, names, values = record
        stats = self.stats
        stats["messages"] += 1
        if received is None:
            received = receipt_ms if receipt_ms is not None else int(now * 1000)
        if self.by_receipt:
            plain_ms = statset_ms = received
        else:
            plain_ms = send_ms if send_ms is not None else received
            statset_ms = collect_ms if collect_ms is not None else plain_ms
        shape = self._shapes.get(context)
        if shape is None:
            shape = self._shape(context)
        own_context, gauge_context, statset_context, tail_mode = shape
        sketches: dict[str, str] = {}
        if self.percentiles:
            sketches = {name: value for kind, name, value in zip(types, names, values, strict=True)
                        if kind == SKETCH_TYPE and isinstance(value, str)}  # fmt: skip
        tails, consumed = self._tails(types, names, values, tail_mode) if tail_mode else (None, None)

        # The interval of each kind of time, found at its first use: (start, None) or (None, why not).
        plain: tuple[int | None, str | None] | None = None
        statset: tuple[int | None, str | None] | None = None
        plain_series = statset_series = None
        buckets = self.buckets
        counter_state = self.counter_state
        samples = 0
        for kind, name, value in zip(types, names, values, strict=True):
            if kind in _PLAIN:
                if consumed and kind == _GAUGE and name in consumed:
                    continue
                if plain is None:
                    plain = self._interval(plain_ms, now)
                    plain_series = buckets.get(plain[0])  # type: ignore[arg-type]
                bucket = plain[0]
                if bucket is None:
                    stats[plain[1]] += 1  # type: ignore[index]
                    continue
                if kind == _COUNTER:
                    key = (host, prog_id, name, own_context)
                    state = counter_state.get(key)
                    if state is None:
                        if not self._new_counter_state(key, value, plain_ms, now):
                            continue
                        value = 0
                    else:
                        last, last_ms, _seen = state
                        if plain_ms < last_ms:
                            stats["out_of_order"] += 1
                            continue
                        if plain_ms == last_ms and value == last:
                            stats["duplicates"] += 1
                            continue
                        state[0], state[1], state[2] = value, plain_ms, now
                        if value < last:
                            stats["counter_resets"] += 1
                            value = 0
                        else:
                            value -= last
                series_key = (prog_id, gauge_context, name)
                summary = plain_series.get(series_key) if plain_series is not None else None
                if summary is None:
                    summary = self._summary(bucket, series_key)
                    plain_series = buckets[bucket]
                    if summary is None:
                        continue
                summary.add(value)
                samples += 1
            elif kind == _STATSET:
                if statset is None:
                    statset = self._interval(statset_ms, now)
                    statset_series = buckets.get(statset[0])  # type: ignore[arg-type]
                bucket = statset[0]
                if bucket is None:
                    stats[statset[1]] += 1  # type: ignore[index]
                    continue
                series_key = (prog_id, statset_context, name)
                summary = statset_series.get(series_key) if statset_series is not None else None
                if summary is None:
                    summary = self._summary(bucket, series_key)
                    statset_series = buckets[bucket]
                    if summary is None:
                        continue
                summary.add_fields(value, self._sketch(sketches.get(name)) if sketches else None)
                if tails:
                    tail = tails.get(name)
                    if tail is not None:
                        summary.add_tails(value[0], *tail)
                samples += 1
            elif kind != SKETCH_TYPE:
                stats["unknown_types"] += 1
        stats["samples"] += samples

    def _add_planned(self, record: StatsRecord, now: float, receipt_ms: int | None) -> None:
        """`add_record` for a shape seen before: the keys, counter states and summaries come from its plan.

        Only the value work is done here. Whatever the plan cannot answer
        exactly (a new series or counter state, a new interval, a shape with
        statsets, sketches or DaTtSs tails) goes through `add_record`, which
        stays the definition: tests check that both give the same state.
        """
        prog_id, host, context, send_ms, _collect, received, types, names, values = record
        plans = self._plans
        plan_key = (prog_id, host, context, types, names)
        plan = plans.get(plan_key, False)
        if plan is False:
            plan = self._plan(plan_key)
        if plan is None:
            self.add_record(record, now, receipt_ms)
            return
        if received is None:
            received = receipt_ms if receipt_ms is not None else int(now * 1000)
        plain_ms = received if self.by_receipt or send_ms is None else send_ms
        stats = self.stats
        window = self._window
        if window is not None and window[0] <= plain_ms < window[1]:
            start = window[2]
        else:
            # As `_interval`, for the one kind of time a plain shape uses.
            seconds = plain_ms / 1000
            interval = self.interval
            start = int(seconds // interval) * interval
            if start + interval + self.lateness <= now or start in self.emitted:
                stats["messages"] += 1
                stats["late"] += len(values)
                return
            if seconds > now + self.max_future:
                stats["messages"] += 1
                stats["future"] += len(values)
                return
            if start + interval <= now + self.max_future and 0 <= start < _WINDOW_LIMIT:
                # Every time of this interval is taken, whatever its ms, until `now` changes (next batch).
                self._window = (start * 1000, (start + interval) * 1000, start)
        counter_keys, series_keys, cached_start, cached_series, summaries, states, epoch = plan
        series = self.buckets.get(start)
        if series is None:
            self.add_record(record, now, receipt_ms)
            return
        if cached_start != start or cached_series is not series:
            summaries = [series.get(key) for key in series_keys]
            if None in summaries:
                self.add_record(record, now, receipt_ms)
                return
            plan[2], plan[3], plan[4] = start, series, summaries
        if epoch != self._state_epoch or states is None:
            counter_state = self.counter_state
            states = [None if key is None else counter_state.get(key, False) for key in counter_keys]
            if False in states:
                self.add_record(record, now, receipt_ms)
                return
            plan[5], plan[6] = states, self._state_epoch
        stats["messages"] += 1
        samples = 0
        for state, summary, value in zip(states, summaries, values, strict=True):
            if state is not None:
                last, last_ms, _seen = state
                if plain_ms < last_ms:
                    stats["out_of_order"] += 1
                    continue
                if plain_ms == last_ms and value == last:
                    stats["duplicates"] += 1
                    continue
                state[0], state[1], state[2] = value, plain_ms, now
                if value < last:
                    stats["counter_resets"] += 1
                    value = 0
                else:
                    value -= last
            # Summary.add, inline.
            count = summary.count
            if count is None:
                summary.add(value)
            else:
                summary.count = count + 1
                total = summary.sum
                summary.sum = value if total is None else total + value
                low = summary.min
                if low is None or value < low:
                    summary.min = value
                high = summary.max
                if high is None or value > high:
                    summary.max = value
                if summary.sketch is not None:
                    summary.sketch.add(value)
            samples += 1
        stats["samples"] += samples

    def _plan(self, plan_key: tuple[Any, ...]) -> list[Any] | None:
        """What `_add_planned` keeps per shape, or None for a shape it leaves to `add_record`.

        A plan: the counter-state key per metric (None for a gauge), the series
        key per metric, then the interval start, its series dict, the summaries,
        the counter states and the state epoch they were fetched in, filled on
        first use. Plans hold no data of their own; bounded, cleared when full.
        """
        prog_id, host, context, types, names = plan_key
        own_context, gauge_context, _statset, tail_mode = self._shapes.get(context) or self._shape(context)
        plan: list[Any] | None = None
        if tail_mode is None and types and all(kind in _PLAIN for kind in types):
            counter_keys = tuple((host, prog_id, name, own_context) if kind == _COUNTER else None
                                 for kind, name in zip(types, names, strict=True))  # fmt: skip
            series_keys = tuple((prog_id, gauge_context, name) for name in names)
            plan = [counter_keys, series_keys, None, None, None, None, -1]
        if len(self._plans) >= self.max_plans:
            self._plans.clear()
        self._plans[plan_key] = plan
        return plan

    def _shape(self, context: tuple[tuple[str, str], ...]) -> tuple[Any, ...]:
        """What a message context means here: (own context, gauge and statset output contexts, tail mode).

        The own context (``stat`` and the partials' key dropped) keys counter
        states; the output contexts have every aggregation key set to ``all``
        and ``stat`` set to the incoming aggregate kind, or ``gauge`` /
        ``statset`` for raw data. Cached per context.
        """
        pairs = dict(context)
        incoming_stat = pairs.get(STAT_KEY)
        own_context = tuple(sorted((k, v) for k, v in context if k not in (STAT_KEY, PARTIAL_KEY)))
        rewritten = dict(own_context)
        for key in self.aggregation_keys:
            rewritten[key] = "all"
        gauge_context = tuple(sorted({**rewritten, STAT_KEY: incoming_stat or "gauge"}.items()))
        statset_context = tuple(sorted({**rewritten, STAT_KEY: incoming_stat or "statset"}.items()))
        tail_mode = "partial" if PARTIAL_KEY in pairs else "aggregate" if STAT_KEY in pairs else None
        shape = (own_context, gauge_context, statset_context, tail_mode)
        if len(self._shapes) >= 65536:
            self._shapes.clear()
        self._shapes[context] = shape
        return shape

    @staticmethod
    def _tails(types: tuple[str, ...], names: tuple[str, ...], values: tuple[Any, ...],
               mode: str) -> tuple[dict[str, tuple[float, float]], set[str]]:
        """BOT10/TOP10 means per statset name, and the gauges that carried them (not summarised as gauges).

        A client partial (`mode` "partial") sends the tail *sums*
        (`NAME.bot10_sum`, divided by k = ceil(count / 10)); a lower tier's
        aggregate sends the combined means (`NAME.bot10`). Either way they are
        merged COUNT-weighted (docs/client.md).
        """
        if mode == "partial":
            bot_suffix, top_suffix, per_tail = BOT10_SUFFIX, TOP10_SUFFIX, True
        else:
            bot_suffix, top_suffix, per_tail = BOT10_MEAN, TOP10_MEAN, False
        metrics = list(zip(types, names, values, strict=True))
        gauges = {name: value for kind, name, value in metrics if kind == _GAUGE}
        tails: dict[str, tuple[float, float]] = {}
        consumed: set[str] = set()
        for kind, name, value in metrics:
            if kind != _STATSET or not value[0]:
                continue
            bot_name, top_name = name + bot_suffix, name + top_suffix
            if bot_name in gauges and top_name in gauges:
                k = tail_size(value[0]) if per_tail else 1
                tails[name] = (gauges[bot_name] / k, gauges[top_name] / k)
                consumed.update((bot_name, top_name))
        return tails, consumed

    def _interval(self, ms: int, now: float) -> tuple[int | None, str | None]:
        """(start of the interval `ms` falls in, None), or (None, "late" / "future") when it is not taken."""
        seconds = ms / 1000
        start = int(seconds // self.interval) * self.interval
        if start + self.interval + self.lateness <= now or start in self.emitted:
            return None, "late"
        if seconds > now + self.max_future:
            return None, "future"
        return start, None

    def _new_counter_state(self, key: tuple[str, str, str, tuple[tuple[str, str], ...]], value: int, ms: int,
                           now: float) -> bool:
        """Start a counter's state at its first report; False (counted as overflow) at `max_series`."""
        if self.live >= self.max_series:
            self.stats["overflow"] += 1
            return False
        if not self._admit(key[1], True):
            return False
        self.counter_state[key] = [value, ms, now]
        self.live += 1
        return True

    def _summary(self, bucket: int, key: Key) -> Summary | None:
        series = self.buckets.get(bucket)
        if series is None:
            series = self.buckets[bucket] = {}
        summary = series.get(key)
        if summary is None:
            if self.live >= self.max_series:
                self.stats["overflow"] += 1
                return None
            # New to the guard: not in the previous interval, still open while lateness > 0 (with lateness 0
            # it is always emitted already, and every series would count as new each interval: not guarded).
            if self.lateness:
                previous = self.buckets.get(bucket - self.interval)
                if (previous is None or key not in previous) and not self._admit(key[0], False):
                    return None
            summary = series[key] = Summary(Sketch(self.accuracy) if self.percentiles else None)
            self.live += 1
        return summary

    def _admit(self, prog_id: str, live: bool) -> bool:
        """The guard's word on a new counter state (`live`) or a series not in the previous interval (rates only)."""
        raw = self._raw
        sender = guard_sender(raw.sender_ip, raw.listener) if raw is not None else None
        if self.guard.admit(sender, prog_id, raw, live=live):
            return True
        self.stats["refused"] += 1
        return False

    def _sketch(self, text: str | None) -> Sketch | None:
        if text is None:
            return None
        try:
            return Sketch.from_text(text)
        except SketchError:
            self.stats["bad_sketches"] += 1
            return None

    # -- output ----------------------------------------------------------------

    def flush(self, now: float | None = None) -> None:
        """Emit every interval that is over by `lateness`; expire silent counters."""
        now = time.time() if now is None else now
        closed = sorted(b for b in self.buckets if b + self.interval + self.lateness <= now)
        if closed or now >= self._next_checkpoint:
            self.emitted = {b for b in self.emitted if b + self.interval + self.lateness > now}
        series = [self.buckets.pop(bucket) for bucket in closed]
        if closed:
            self._release_plans()
        if closed or now >= self._next_checkpoint:
            # Saved before the emit: a crash between the two loses those intervals but never emits them twice.
            self.emitted.update(closed)
            self._save(now)
        for bucket, summaries in zip(closed, series, strict=True):
            self._emit(bucket, summaries, now)
        if now >= self._next_expiry:
            self._expire(now)
            self._next_expiry = now + min(self.expire_after, 60.0)

    def start(self) -> None:
        """Restore the checkpoint, if there is one (not after a takeover: the state came from the old instance)."""
        if self.checkpoint is not None or self.config["checkpoint"] == "off":
            return
        text = self.config["checkpoint"]
        path = Path(f"{self.name}.agg-checkpoint" if text == "auto" else text)
        checkpoint = Checkpoint(self.context.config_dir / path, int(self.config["checkpoint_max_bytes"]), self.log)
        if not checkpoint.acquire():
            return
        self.checkpoint = checkpoint
        state = checkpoint.load()
        if state is not None:
            self.stats["restored_series"] = restore_agg_state(self, state)
            self.log.info("restored %d open intervals and %d counter states from %s", len(self.buckets),
                          len(self.counter_state), checkpoint.path)

    def _save(self, now: float) -> None:
        """Write the checkpoint (a no-op without one); a failure is counted and logged, and removes the old one."""
        self._next_checkpoint = now + float(self.config["checkpoint_interval"])
        if self.checkpoint is None:
            return
        try:
            self.checkpoint.save(agg_state(self))
        except CheckpointError as exc:
            self.stats["checkpoint_errors"] += 1
            try:  # at least which intervals were emitted, so that a restart does not emit them again
                self.checkpoint.save({"interval": self.interval, "buckets": [], "counters": [],
                                      "emitted": sorted(self.emitted)})
                self.log.error("%s; saved only the emitted intervals (a restart starts without open ones)", exc)
            except CheckpointError as err:
                self.log.error("%s; the old checkpoint is removed (a restart starts empty)", err)
                try:
                    self.checkpoint.discard()
                except OSError as gone:
                    self.log.error("cannot remove checkpoint %s: %s", self.checkpoint.path, gone)

    def takeover(self, previous: Backend) -> None:
        """Adopt a failed instance's open intervals and counter states, so a restart neither loses nor repeats them.

        The runner calls `previous.abandon()` first, which emits nothing; this
        instance emits those intervals when they close (or at `close`).
        """
        if not isinstance(previous, AggBackend) or previous.interval != self.interval:
            return
        self.buckets, self.counter_state, self.live = previous.buckets, previous.counter_state, previous.live
        self.stats, self._next_expiry = previous.stats, previous._next_expiry
        self.emitted, self.checkpoint, previous.checkpoint = previous.emitted, previous.checkpoint, None

    def abandon(self) -> None:
        """Replaced after a failure: emit nothing; the replacement has taken over the open intervals."""

    def close(self) -> None:
        """Emit what is still open (those last intervals are partial) so a shutdown loses nothing."""
        now = time.time()
        closed = sorted(self.buckets)
        series = [self.buckets.pop(bucket) for bucket in closed]
        self._plans.clear()
        self.emitted.update(closed)
        self._save(now)
        if self.checkpoint is not None:
            self.checkpoint.close()
        for bucket, summaries in zip(closed, series, strict=True):
            self._emit(bucket, summaries, now)

    def _release_plans(self) -> None:
        """Let go of the closed intervals' summaries the plans hold (a silent sender's plan would keep them)."""
        buckets = self.buckets
        for plan in self._plans.values():
            if plan is not None and plan[2] is not None and buckets.get(plan[2]) is not plan[3]:
                plan[2] = plan[3] = plan[4] = None

    def _expire(self, now: float) -> None:
        limit = now - self.expire_after
        stale = [key for key, (_v, _ms, seen) in self.counter_state.items() if seen < limit]
        release = self.guard.release
        for key in stale:
            del self.counter_state[key]
            release(None, key[1])  # its sender is not kept: senders' counts age out (cardinality_idle)
        if stale:
            self._state_epoch += 1
        self.live -= len(stale)
        self.stats["expired"] += len(stale)

    def _emit(self, bucket: int, series: dict[Key, Summary], now: float) -> None:
        self.live -= len(series)
        grouped: dict[tuple[str, tuple[tuple[str, str], ...]], list[Metric]] = {}
        for (prog_id, context, name), summary in series.items():
            metrics = grouped.setdefault((prog_id, context), [])
            metrics.append(Metric(MetricType.STATSET, name, summary.statset(self.fields)))
            tails = summary.tails
            if tails is not None:
                metrics.append(Metric(MetricType.GAUGE, name + BOT10_MEAN, round(tails[0])))
                metrics.append(Metric(MetricType.GAUGE, name + TOP10_MEAN, round(tails[1])))
            if summary.sketch is not None:
                metrics.append(Metric(MetricType.UNKNOWN, name, summary.sketch.to_text(), type_name=SKETCH_TYPE))
            elif summary.percentiles_lost:
                self.stats["percentiles_lost"] += 1
        # send_time = collect_time = interval start: every metric of the summary (its statsets and the BOT10/TOP10
        # gauges) is stored in that interval's row and minute (docs/aggregation.md, "Time alignment").
        for (prog_id, context), metrics in grouped.items():
            msg = StatsMsg(prog_id, "all", dict(context), metrics, send_time=bucket * 1000, collect_time=bucket * 1000)
            try:
                events = msg.to_lwes(max_metrics=self.config["max_metrics"])
            except MessageError as exc:  # a name too long for a datagram
                self.stats["emit_errors"] += 1
                self.log.error("cannot emit the %s aggregate of %s: %s", prog_id, dict(context), exc)
                continue
            for event in events:
                self.context.inject(RawEvent.from_event(event, listener=self.listener_tag))
            self.stats["emitted_events"] += len(events)
            self.stats["emitted_series"] += sum(m.type is MetricType.STATSET for m in metrics)

    def counters(self) -> dict[str, float]:
        checkpoint = self.checkpoint
        return {**self.stats, **self.guard.counters(), "live_series": self.live, "open_intervals": len(self.buckets),
                "counter_states": len(self.counter_state),
                "checkpoints": checkpoint.saves if checkpoint is not None else 0,
                "checkpoint_bytes": checkpoint.last_bytes if checkpoint is not None else 0}  # fmt: skip


@hookimpl
def register_backend_types(register) -> None:
    register("agg", AggBackend)

