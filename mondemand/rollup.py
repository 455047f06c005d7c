"""Server-side minute roll-up of DaTtSs partials, shared by the rrd, whisper and stats_file backends.

A `mondemand.client.process` sends a partial every 5 s: per metric a statset
(COUNT, SUM, MIN, MAX) plus the `NAME.bot10_sum`/`NAME.top10_sum` gauges, in a
StatsMsg whose context carries `partial_interval_ms`. Storing each partial
as a sample is wrong (RRD averages the twelve of a minute, whisper keeps the
last). `MinuteRollup` keeps, per (host, prog_id, context without the interval
key), the minute being filled, and turns it into one 1-minute partial:

- COUNT and SUM add, MIN and MAX take the extremes, AVG = SUM / COUNT;
- BOT10 and TOP10 are COUNT-weighted (`Summary.add_tails`, as agg combines hosts);
- sketches are merged when every partial of the minute has one;
- counters and gauges sent beside the partials keep the minute's last value.

A partial belongs to the minute of its `collect_time` (the client stamps the
start of the interval it covers), else of its `send_time`, else of its
receipt: the rule the `agg` backend uses, so a per-host minute and the
minute's aggregate are the same samples (docs/aggregation.md, "Time alignment").

A minute is emitted once it is over by `lateness`: when a later partial of
the same source is at least `lateness` past the minute's end (clients send in
order, so a backfill closes its minutes as it goes), or when the server's
clock is past that and nothing arrived for the minute for `lateness`. `drain`
emits everything still open (at close). Partials for a minute already
emitted are counted as `late` and left out. The output is a plain
`StatsRecord` stamped at the minute's start (send and collect time), without
the interval key: the marker is not part of series identity.

Partials whose fields disagree (COUNT 0 with a SUM, MIN > MAX, BOT10/TOP10
outside [MIN, MAX]) raise `PartialMismatch` from `add` before anything of the
event is kept; the backend rejects the event.
"""

from __future__ import annotations

import time
from typing import Any

from mondemand.client.partials import BOT10_SUFFIX, PARTIAL_CONTEXT_KEY, SKETCH_TYPE, TOP10_SUFFIX, tail_size
from mondemand.messages.stats_fast import StatsRecord
from mondemand.options import HOUR, Option

__all__ = ["BOT10_MEAN", "ROLLUP_OPTIONS", "TOP10_MEAN", "MinuteRollup", "PartialMismatch", "partial_context"]

MINUTE = 60
#: Gauges next to the rolled-up statset holding the minute's BOT10 / TOP10 means (the names agg emits too).
BOT10_MEAN = ".bot10"
TOP10_MEAN = ".top10"
#: Statset fields must lie strictly within +-2**64, as `mondemand.summary` requires.
_LIMIT = 1 << 64
#: Rounding slack of the wire: the tails are integer sums, MIN/MAX rounded integers.
_SLACK = 0.5
#: A source with nothing open and silent this long is forgotten (its "already emitted" mark with it).
_FORGET = 3600.0

#: Options every backend that rolls partials up declares.
ROLLUP_OPTIONS = (
    Option("rollup", "bool", True,
           help="store DaTtSs partials (partial_interval_ms context) as one 1-minute partial per source"),
    Option("rollup_lateness", "duration", 15.0, minimum=0, maximum=HOUR,
           help="how long after a minute ends its partials are still taken before it is stored"),
)

_STATSET, _GAUGE, _COUNTER = "statset", "gauge", "counter"
_EMPTY_TAIL = (None, None, None, None, None, None, None)

Source = tuple[str, str, tuple[tuple[str, str], ...]]  # host, prog_id, context without the interval key


class PartialMismatch(ValueError):
    """A partial whose fields contradict each other; the event is rejected and nothing of it is kept."""


_contexts: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...] | None] = {}


def partial_context(context: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...] | None:
    """The context without the interval key when `context` marks partials, else None (cached)."""
    try:
        return _contexts[context]
    except KeyError:
        pass
    stripped = None
    if any(k == PARTIAL_CONTEXT_KEY for k, _ in context):
        stripped = tuple(p for p in context if p[0] != PARTIAL_CONTEXT_KEY)
    if len(_contexts) >= 65536:
        _contexts.clear()
    _contexts[context] = stripped
    return stripped


class MinuteRollup:
    """Open minutes of every partial source; `add` folds one record in, `due`/`drain` give finished minutes.

    Not thread-safe: its backend owns it. State is plain dicts and lists.
    """

    def __init__(self, lateness: float = 15.0, sketch_class: Any = None) -> None:
        self.lateness_ms = int(lateness * 1000)
        self.lateness = float(lateness)
        self.sketch_class = sketch_class
        #: source -> minute start (s) -> [last arrival (wall s), {name: accumulator}, [names in order]]
        self.open: dict[Source, dict[int, list[Any]]] = {}
        #: source -> [latest event ms seen, last minute emitted (s) or None, last arrival wall s]
        self.sources: dict[Source, list[Any]] = {}
        self.counts: dict[str, int] = dict.fromkeys(("partials", "late_partials", "minutes", "bad_sketches"), 0)

    # -- intake ------------------------------------------------------------------

    def add(self, record: StatsRecord, stripped: tuple[tuple[str, str], ...], receipt_ms: int | None,
            now: float | None = None) -> list[StatsRecord]:
        """Fold one partials record in; returns the minutes of its source this closes (by event time).

        `stripped` is `partial_context(record[CONTEXT])`. PartialMismatch, with
        nothing kept, when its fields disagree.
        """
        prog_id, host, _context, send, collect, received, types, names, values = record
        now = time.time() if now is None else now
        ms = collect if collect is not None else send if send is not None else received
        if ms is None:
            ms = receipt_ms if receipt_ms is not None else int(now * 1000)
        gauges = {n: v for t, n, v in zip(types, names, values, strict=True) if t == _GAUGE}
        checked = self._check(types, names, values, gauges)
        source = (host, prog_id, stripped)
        state = self.sources.get(source)
        if state is None:
            state = self.sources[source] = [ms, None, now]
        minute = ms // 1000 // MINUTE * MINUTE
        if state[1] is not None and minute <= state[1]:
            self.counts["late_partials"] += 1
            return []
        minutes = self.open.get(source)
        if minutes is None:
            minutes = self.open[source] = {}
        bucket = minutes.get(minute)
        if bucket is None:
            bucket = minutes[minute] = [now, {}, []]
        bucket[0] = now
        state[2] = now
        accs: dict[str, list[Any]] = bucket[1]
        order: list[tuple[str, str]] = bucket[2]
        skip = checked[1]
        for kind, name, value in zip(types, names, values, strict=True):
            if kind == _STATSET:
                tail = checked[0].get(name, _EMPTY_TAIL)
                acc = accs.get("s" + name)
                if acc is None:
                    acc = accs["s" + name] = [0, 0, None, None, 0, 0.0, 0.0, [], True]
                    order.append((_STATSET, name))
                count, total, low, high = value[0], value[1], value[2], value[3]
                acc[0] += count
                acc[1] += total or 0
                if low is not None and (acc[2] is None or low < acc[2]):
                    acc[2] = low
                if high is not None and (acc[3] is None or high > acc[3]):
                    acc[3] = high
                if tail[0] is not None:
                    acc[4] += count
                    acc[5] += count * tail[0]
                    acc[6] += count * tail[1]
            elif kind in (_GAUGE, _COUNTER):
                if name in skip:
                    continue
                key = kind[0] + name
                acc = accs.get(key)
                if acc is None:
                    accs[key] = [ms, value]
                    order.append((kind, name))
                elif ms >= acc[0]:
                    acc[0], acc[1] = ms, value
            elif kind == SKETCH_TYPE and isinstance(value, str):
                acc = accs.get("s" + name)
                if acc is not None:
                    acc[7].append(value)
        self._mark_sketchless(accs, types, names)
        self.counts["partials"] += 1
        if ms > state[0]:
            state[0] = ms
        return self._close(source, lambda m: (m + MINUTE) * 1000 + self.lateness_ms <= state[0])

    def _mark_sketchless(self, accs: dict[str, list[Any]], types: tuple[str, ...], names: tuple[str, ...]) -> None:
        """A statset of this partial without a sketch beside it: the minute can no longer merge sketches."""
        with_sketch = {n for t, n in zip(types, names, strict=True) if t == SKETCH_TYPE}
        for t, n in zip(types, names, strict=True):
            if t == _STATSET and n not in with_sketch:
                accs["s" + n][8] = False

    @staticmethod
    def _check(types: tuple[str, ...], names: tuple[str, ...], values: tuple[Any, ...],
               gauges: dict[str, Any]) -> tuple[dict[str, tuple[float, float]], set[str]]:
        """(BOT10/TOP10 means per statset, the tail gauges consumed); PartialMismatch for contradictions."""
        tails: dict[str, tuple[float, float]] = {}
        consumed: set[str] = set()
        for kind, name, value in zip(types, names, values, strict=True):
            if kind != _STATSET:
                continue
            count, total, low, high = value[0], value[1], value[2], value[3]
            for field in (count, total, low, high):
                if field is not None and not -_LIMIT < field < _LIMIT:
                    raise PartialMismatch(f"partial {name!r}: a field is beyond 64 bits")
            if count is None or count < 0:
                raise PartialMismatch(f"partial {name!r}: no COUNT, or a negative one")
            if count == 0:
                if total or low is not None or high is not None:
                    raise PartialMismatch(f"partial {name!r}: COUNT 0 with a SUM, MIN or MAX")
                continue
            if low is not None and high is not None and low > high:
                raise PartialMismatch(f"partial {name!r}: MIN {low} > MAX {high}")
            bot, top = gauges.get(name + BOT10_SUFFIX), gauges.get(name + TOP10_SUFFIX)
            if bot is None or top is None:
                continue
            k = tail_size(count)
            bot_mean, top_mean = bot / k, top / k
            for label, mean in (("BOT10", bot_mean), ("TOP10", top_mean)):
                if (low is not None and mean < low - _SLACK) or (high is not None and mean > high + _SLACK):
                    raise PartialMismatch(f"partial {name!r}: {label} {mean:g} outside [MIN {low}, MAX {high}]")
            tails[name] = (bot_mean, top_mean)
            consumed.update((name + BOT10_SUFFIX, name + TOP10_SUFFIX))
        return tails, consumed

    # -- output ------------------------------------------------------------------

    def due(self, now: float | None = None) -> list[StatsRecord]:
        """Minutes over by `lateness` on the server's clock and idle for `lateness`; forgets silent sources."""
        now = time.time() if now is None else now
        out: list[StatsRecord] = []
        for source in list(self.open):
            minutes = self.open[source]
            out += self._close(source, lambda m, ms=minutes: m + MINUTE + self.lateness <= now
                               and now - ms[m][0] >= self.lateness)
        for source in [s for s, st in self.sources.items() if s not in self.open and now - st[2] > _FORGET]:
            del self.sources[source]
        return out

    def drain(self) -> list[StatsRecord]:
        """Every open minute, finished or not (at close)."""
        out: list[StatsRecord] = []
        for source in list(self.open):
            out += self._close(source, lambda m: True)
        return out

    def _close(self, source: Source, ready: Any) -> list[StatsRecord]:
        minutes = self.open.get(source)
        if not minutes:
            return []
        out: list[StatsRecord] = []
        for minute in sorted(minutes):
            if not ready(minute):
                break  # in order: a later minute never goes out before an earlier one
            out.append(self._record(source, minute, minutes.pop(minute)))
            self.sources[source][1] = minute
        if not minutes:
            del self.open[source]
        self.counts["minutes"] += len(out)
        return out

    def _record(self, source: Source, minute: int, bucket: list[Any]) -> StatsRecord:
        host, prog_id, context = source
        accs: dict[str, list[Any]] = bucket[1]
        types: list[str] = []
        names: list[str] = []
        values: list[Any] = []
        for kind, name in bucket[2]:
            if kind == _STATSET:
                count, total, low, high, tail_count, bot_w, top_w, sketches, all_sketched = accs["s" + name]
                percentiles: list[Any] = [None] * 6
                sketch_text = self._merge(sketches) if all_sketched and sketches else None
                if sketch_text is not None:
                    percentiles = list(sketch_text[1])
                avg = total / count if count else None
                types.append(_STATSET)
                names.append(name)
                values.append((count, total, low, high, avg, *percentiles))
                if tail_count:
                    types += [_GAUGE, _GAUGE]
                    names += [name + BOT10_MEAN, name + TOP10_MEAN]
                    values += [bot_w / tail_count, top_w / tail_count]
                if sketch_text is not None:
                    types.append(SKETCH_TYPE)
                    names.append(name)
                    values.append(sketch_text[0])
            else:
                types.append(kind)
                names.append(name)
                values.append(accs[kind[0] + name][1])
        ms = minute * 1000
        return (prog_id, host, context, ms, ms, None, tuple(types), tuple(names), tuple(values))

    def _merge(self, texts: list[str]) -> tuple[str, tuple[Any, ...]] | None:
        """(merged sketch text, its six percentiles) of the minute's sketches, None when one does not decode."""
        cls = self.sketch_class
        if cls is None:
            try:
                from mondemand.sketch import Sketch
            except ImportError:
                return None
            cls = self.sketch_class = Sketch
        try:
            merged = cls.from_text(texts[0])
            for text in texts[1:]:
                merged.merge(cls.from_text(text))
        except Exception:  # a sketch that does not decode: the minute has no percentiles
            self.counts["bad_sketches"] += 1
            return None
        quantiles = tuple(None if (v := merged.quantile(q)) is None else round(v)
                          for q in (0.5, 0.75, 0.90, 0.95, 0.98, 0.99))
        return merged.to_text(), quantiles

    def counters(self) -> dict[str, int]:
        """partials, late_partials, minutes, bad_sketches and the open minutes."""
        return {**{f"rollup_{k}": v for k, v in self.counts.items()},
                "rollup_open_minutes": sum(len(m) for m in self.open.values())}


class RollupOwner:
    """What a storage backend that rolls partials up shares: building its roll-up, and handing it over.

    Mixed in before `Backend`: when the runner replaces a failed instance,
    `abandon` closes it without writing the open minutes and `takeover` gives
    them to the replacement, whose `start` builds its roll-up with
    `make_rollup` (the adopted one, if any).
    """

    rollup: MinuteRollup | None

    def make_rollup(self, config: Any) -> MinuteRollup | None:
        """The roll-up `start` keeps when `rollup` is on: the one taken over, else a new one."""
        if not config["rollup"]:
            return None
        return getattr(self, "_adopted_rollup", None) or MinuteRollup(float(config["rollup_lateness"]))

    def takeover(self, previous: Any) -> None:
        """Adopt a failed instance's open partial minutes (`abandon` left them unwritten)."""
        self._adopted_rollup = getattr(previous, "_handover", None) or getattr(previous, "rollup", None)

    def abandon(self) -> None:
        """Close without writing the open partial minutes: the replacement takes them over."""
        self._handover, self.rollup = self.rollup, None
        self.close()  # type: ignore[attr-defined]
