"""`stats_file` backend: every stats metric as a tab-separated line in a per-day, per-program, per-host file.

Path: `<root>/YYYY/MM/DD/<prog_id>/<host>` (UTC). Line (docs/files.md):

    YYYY/MM/DD HH:MM:SS <TAB> host <TAB> prog_id <TAB> type <TAB> name <TAB> value <TAB> context

A counter or gauge gives one line with type `counter` or `gauge`; a statset
gives one line per sub-statistic it carries, the type column naming it
(`count`, `sum`, `min`, ...). The time is the message's `collect_time` for
statsets and its `send_time` for the rest, the ReceiptTime when that is
missing, as the reference formatter does. The date directories follow the
same time, so one message may touch two days' files around midnight.
"""

from __future__ import annotations

import time
from typing import Any

from mondemand.backends.textfiles import DatedTextBackend, escape_field, format_context, valid_ms

from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.messages import MetricType, Statset, StatsMsg


def fallback_ms(raw: RawEvent, receipt_time: int | None) -> int:
    """The ReceiptTime to use when a message has no usable time of its own (now, if even that is unusable)."""
    if valid_ms(receipt_time):
        return receipt_time  # type: ignore[return-value]
    if valid_ms(raw.receipt_ms):
        return raw.receipt_ms
    return int(time.time() * 1000)


class StatsFileBackend(DatedTextBackend):
    """Append each metric of each StatsMsg to `<root>/YYYY/MM/DD/<prog_id>/<host>`."""

    type_name = "stats_file"

    def start(self) -> None:
        super().start()
        self.stats_sent_count = 0
        self.unwritten_metrics = 0

    def handle(self, batch: list[RawEvent]) -> None:
        for raw in batch:
            msg = raw.message
            if not isinstance(msg, StatsMsg):
                self.skipped_events += 1
                continue
            try:
                self._add_message(raw, msg)
            except Exception as exc:  # bad data in this event: it alone is dropped
                self.reject(raw, exc)
        self.write_pending()

    def _add_message(self, raw: RawEvent, msg: StatsMsg) -> None:
        fallback = fallback_ms(raw, msg.receipt_time)
        send_ms = msg.send_time if valid_ms(msg.send_time) else fallback
        collect_ms = msg.collect_time if valid_ms(msg.collect_time) else fallback
        head = f"\t{escape_field(msg.host)}\t{escape_field(msg.prog_id)}\t"
        context = format_context(msg.context, self.delimiter)
        for metric in msg.metrics:
            ms = collect_ms if metric.type is MetricType.STATSET else send_ms
            day, stamp = self.clock(ms // 1000)
            path = self.path_for(day, msg.prog_id, msg.host)
            name = escape_field(metric.name)
            if metric.type is MetricType.STATSET:
                statset: Statset = metric.value
                for field in Statset.FIELDS:
                    value = getattr(statset, field)
                    if value is not None:
                        self.add_line(path, f"{stamp}{head}{field}\t{name}\t{value}\t{context}")
            elif metric.type is MetricType.UNKNOWN:
                if not _is_number(metric.value):
                    self.unwritten_metrics += 1
                    continue
                kind = escape_field(metric.type_name or MetricType.UNKNOWN.value)
                self.add_line(path, f"{stamp}{head}{kind}\t{name}\t{metric.value}\t{context}")
            else:
                self.add_line(path, f"{stamp}{head}{metric.type.value}\t{name}\t{metric.value}\t{context}")
            self.stats_sent_count += 1

    def counters(self) -> dict[str, float]:
        return {**super().counters(), "stats_sent_count": self.stats_sent_count,
                "unwritten_metrics": self.unwritten_metrics}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@hookimpl
def register_backend_types(register) -> None:
    register("stats_file", StatsFileBackend)
