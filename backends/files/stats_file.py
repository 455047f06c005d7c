"""`stats_file` backend: every stats metric as a tab-separated line in a per-day, per-program, per-host file.

Path: `<root>/YYYY/MM/DD/<prog_id>/<host>` (UTC). Line (docs/files.md):

    YYYY/MM/DD HH:MM:SS <TAB> host <TAB> prog_id <TAB> type <TAB> name <TAB> value <TAB> context

A counter or gauge gives one line with type `counter` or `gauge`; a statset
gives one line per sub-statistic it carries, the type column naming it
(`count`, `sum`, `min`, ...). The time is the message's `collect_time` for
statsets and its `send_time` for the rest, the ReceiptTime when that is
missing, as the reference formatter does. The date directories follow the
same time, so one message may touch two days' files around midnight. Context
pairs are written sorted by key, whatever order they were sent in.

DaTtSs partials (a `partial_interval_ms` context) are rolled up first
(`mondemand.rollup`): one line per field of each source's 1-minute partial,
stamped at the minute's start, without the interval key in the context.
"""

from __future__ import annotations

import time
from operator import add as add_str
from typing import Any

from mondemand.backends.files.textfiles import MAX_TIME_MS, DatedTextBackend, escape_field, format_context, valid_ms

from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.messages import MetricType, Statset
from mondemand.messages.stats_fast import CONTEXT, StatsRecord
from mondemand.options import Option
from mondemand.rollup import ROLLUP_OPTIONS, RollupOwner, partial_context

_COUNTER, _GAUGE, _STATSET = MetricType.COUNTER.value, MetricType.GAUGE.value, MetricType.STATSET.value
_PLAIN = (_COUNTER, _GAUGE)
#: Shapes whose line parts are kept; beyond, they are forgotten and rebuilt.
_PLANS_MAX = 16384
#: A batch this long means the backend is busy: its lines may wait for `write_interval`.
BUSY_BATCH = 256


def fallback_ms(raw: RawEvent | None, receipt_time: int | None) -> int:
    """The ReceiptTime to use when a message has no usable time of its own (now, if even that is unusable)."""
    if valid_ms(receipt_time):
        return receipt_time  # type: ignore[return-value]
    if raw is not None and valid_ms(raw.receipt_ms):
        return raw.receipt_ms
    return int(time.time() * 1000)


class StatsFileBackend(RollupOwner, DatedTextBackend):
    """Append each metric of each StatsMsg to `<root>/YYYY/MM/DD/<prog_id>/<host>`."""

    type_name = "stats_file"
    needs = "stats"
    options = (
        *DatedTextBackend.options,
        *ROLLUP_OPTIONS,
        Option("write_interval", "duration", 1.0, minimum=0.0, maximum=60.0,
               help="under load (batches of 256 events or more), lines wait up to this long and are written "
                    "with one write per file; 0: written at the end of every batch"),
        Option("write_buffer_bytes", "size", 16 << 20, minimum=0, maximum=1 << 30,
               help="lines waiting for write_interval are written as soon as they reach this size"),
    )

    def start(self) -> None:
        super().start()
        self.rollup = self.make_rollup(self.config)
        self.stats_sent_count = 0
        self.unwritten_metrics = 0
        self.write_interval = float(self.config.get("write_interval", 1.0))
        self.write_buffer = int(self.config.get("write_buffer_bytes", 16 << 20))
        self._next_write = 0.0
        #: (host, prog_id, context) -> (escaped head columns, escaped context column); senders repeat them.
        self._columns: dict[tuple[str, str, tuple[tuple[str, str], ...]], tuple[str, str]] = {}
        #: False: every event through `_add_record` (tests and benchmarks compare both ways)
        self.use_plans = True
        self.max_plans = _PLANS_MAX
        #: (prog_id, host, context, types, names) -> the shape's plan (`_plan`), or None when it has none
        self._plans: dict[tuple[Any, ...], list[Any] | None] = {}

    def handle(self, batch: list[RawEvent]) -> None:
        add = self._add_planned if self.use_plans else self._add_record
        plans = self._plans if self.use_plans else {}
        clock = self.clock
        pending = self._pending
        sent = chars = 0
        for raw in batch:
            record = raw.stats
            if record is None:
                self.skipped_events += 1
                continue
            # `_add_planned` inline for a known shape (never a partial: those do not reach `_plan`).
            plan = plans.get((record[0], record[1], record[2], record[6], record[7]))
            if plan is not None:
                send_time = record[3]
                if type(send_time) is int and 0 < send_time < MAX_TIME_MS:
                    day, stamp = clock(send_time // 1000)
                    if plan[6] is pending and day == plan[3]:
                        parts, line_end, lines, entry = plan[0], plan[1], plan[2], plan[5]
                        try:
                            block = stamp + (line_end + stamp).join(map(add_str, parts, map(format, record[8])))
                        except Exception as exc:  # bad data in this event: it alone is dropped
                            self.reject(raw, exc)
                            continue
                        entry[0].append(block + line_end[:-1])
                        entry[1] += lines
                        sent += lines
                        chars += len(block) + len(line_end)
                        continue
            try:
                stripped = partial_context(record[CONTEXT]) if self.rollup is not None else None
                if stripped is None:
                    add(raw, record)
                else:
                    for minute in self.rollup.add(record, stripped, raw.receipt_ms):  # type: ignore[union-attr]
                        self._add_record(None, minute)
            except Exception as exc:  # bad data in this event: it alone is dropped
                self.reject(raw, exc)
        self.stats_sent_count += sent
        self.pending_chars += chars
        # A busy server's batches are full: gathering a second of lines turns ~one write per event (each host
        # its own file) into one write per file per second.
        now = time.monotonic()
        if (len(batch) < BUSY_BATCH or now >= self._next_write or self.pending_chars >= self.write_buffer
                or not self.write_interval):
            self.write_pending()
            self._next_write = now + self.write_interval

    def flush(self) -> None:
        """Write the partial minutes that are over and the lines waiting, then close idle files."""
        if self.rollup is not None:
            self._add_minutes(self.rollup.due())
        self.write_pending()
        super().flush()

    def close(self) -> None:
        if self.rollup is not None:
            self._add_minutes(self.rollup.drain())
        super().close()

    def _add_minutes(self, minutes: list[StatsRecord]) -> None:
        for minute in minutes:
            self._add_record(None, minute)
        self.write_pending()

    def _add_record(self, raw: RawEvent | None, record: StatsRecord) -> None:
        prog_id, host, context, send_time, collect_time, receipt_time, types, names, values = record
        fallback = fallback_ms(raw, receipt_time)
        send_ms = send_time if valid_ms(send_time) else fallback
        collect_ms = collect_time if valid_ms(collect_time) else fallback
        columns = self._columns.get((host, prog_id, context))
        if columns is None:
            columns = self._learn_columns(host, prog_id, context)
        head, context_column = columns
        # At most two times per event (statsets: collect_time, the rest: send_time): each one path and prefix.
        plain: list[str] = []
        statsets: list[str] = []
        for kind, name, value in zip(types, names, values, strict=True):
            name = escape_field(name)
            if kind == _STATSET:
                for field, field_value in zip(Statset.FIELDS, value, strict=True):
                    if field_value is not None:
                        statsets.append(f"{field}\t{name}\t{field_value}\t{context_column}")
            elif kind in (_COUNTER, _GAUGE):
                plain.append(f"{kind}\t{name}\t{value}\t{context_column}")
            elif not _is_number(value):
                self.unwritten_metrics += 1
                continue
            else:
                plain.append(f"{escape_field(kind)}\t{name}\t{value}\t{context_column}")
            self.stats_sent_count += 1
        # Only once every line of the event is formatted: a bad event leaves no partial lines behind.
        for ms, lines in ((send_ms, plain), (collect_ms, statsets)):
            if lines:
                day, stamp = self.clock(ms // 1000)
                prefix = stamp + head
                self.add_lines(self.path_for(day, prog_id, host), [prefix + line for line in lines])

    def _add_planned(self, raw: RawEvent | None, record: StatsRecord) -> None:
        """`_add_record` for a shape seen before: its lines are one join of the shape's line parts and the values.

        Shapes of counters and gauges only; anything else goes through
        `_add_record`, which stays the definition (tests compare the files).
        """
        prog_id, host, context, send_time, _collect, receipt_time, types, names, values = record
        plan_key = (prog_id, host, context, types, names)
        plan = self._plans.get(plan_key, False)
        if plan is False:
            plan = self._plan(plan_key)
        if plan is None:
            self._add_record(raw, record)
            return
        send_ms = send_time if valid_ms(send_time) else fallback_ms(raw, receipt_time)
        day, stamp = self.clock(send_ms // 1000)
        parts, line_end, lines, cached_day, path = plan[:5]
        if day != cached_day:
            path = self.path_for(day, prog_id, host)
            if path is not None:
                plan[3], plan[4] = day, path
        # Each line: stamp, the shape's constant columns, the value, the context column.
        block = stamp + (line_end + stamp).join(map(add_str, parts, map(format, values))) + line_end[:-1]
        self.add_block(path, block, lines)
        self.stats_sent_count += lines
        if path is not None and day == plan[3]:
            # The file's pending entry, while this batch's pending dict lasts (`write_pending` replaces it).
            plan[5], plan[6] = self._pending[path], self._pending

    def _plan(self, plan_key: tuple[Any, ...]) -> list[Any] | None:
        """[line parts, line end, lines, day, path, pending entry, pending dict] of a shape of counters and gauges.

        None for any other shape.

        A line part is everything between the time stamp and the value (host,
        prog_id, type, name), the line end the context column and the LF;
        `format(value)` is what the f-string of `_add_record` writes for a
        number. The pending entry is the file's [blocks, lines] in the pending
        dict named beside it, valid while that dict is the current one.
        Bounded, cleared when full.
        """
        prog_id, host, context, types, names = plan_key
        plan: list[Any] | None = None
        if types and all(kind in _PLAIN for kind in types):
            columns = self._columns.get((host, prog_id, context)) or self._learn_columns(host, prog_id, context)
            head, context_column = columns
            parts = tuple(f"{head}{kind}\t{escape_field(name)}\t" for kind, name in zip(types, names, strict=True))
            plan = [parts, f"\t{context_column}\n", len(types), None, None, None, None]
        if len(self._plans) >= self.max_plans:
            self._plans.clear()
        self._plans[plan_key] = plan
        return plan

    def _learn_columns(self, host: str, prog_id: str, context: tuple[tuple[str, str], ...]) -> tuple[str, str]:
        columns = (f"\t{escape_field(host)}\t{escape_field(prog_id)}\t", format_context(dict(context), self.delimiter))
        if len(self._columns) >= 16384:
            self._columns.clear()
        self._columns[(host, prog_id, context)] = columns
        return columns

    def counters(self) -> dict[str, float]:
        rollup = self.rollup.counters() if getattr(self, "rollup", None) is not None else {}
        return {**super().counters(), "stats_sent_count": self.stats_sent_count,
                "unwritten_metrics": self.unwritten_metrics, **rollup}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@hookimpl
def register_backend_types(register) -> None:
    register("stats_file", StatsFileBackend)
