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
from typing import Any

from mondemand.backends.textfiles import DatedTextBackend, escape_field, format_context, valid_ms

from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.messages import MetricType, Statset
from mondemand.messages.stats_fast import CONTEXT, StatsRecord
from mondemand.rollup import ROLLUP_OPTIONS, RollupOwner, partial_context

_COUNTER, _GAUGE, _STATSET = MetricType.COUNTER.value, MetricType.GAUGE.value, MetricType.STATSET.value


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
    options = DatedTextBackend.options + ROLLUP_OPTIONS

    def start(self) -> None:
        super().start()
        self.rollup = self.make_rollup(self.config)
        self.stats_sent_count = 0
        self.unwritten_metrics = 0
        #: (host, prog_id, context) -> (escaped head columns, escaped context column); senders repeat them.
        self._columns: dict[tuple[str, str, tuple[tuple[str, str], ...]], tuple[str, str]] = {}

    def handle(self, batch: list[RawEvent]) -> None:
        for raw in batch:
            record = raw.stats
            if record is None:
                self.skipped_events += 1
                continue
            try:
                stripped = partial_context(record[CONTEXT]) if self.rollup is not None else None
                if stripped is None:
                    self._add_record(raw, record)
                else:
                    for minute in self.rollup.add(record, stripped, raw.receipt_ms):  # type: ignore[union-attr]
                        self._add_record(None, minute)
            except Exception as exc:  # bad data in this event: it alone is dropped
                self.reject(raw, exc)
        self.write_pending()

    def flush(self) -> None:
        """Write the partial minutes that are over, then close idle files."""
        if self.rollup is not None:
            self._add_minutes(self.rollup.due())
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
