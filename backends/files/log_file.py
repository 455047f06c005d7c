"""`log_file` backend: every line of every LogMsg as a tab-separated line in a per-day, per-program, per-host file.

Path: `<root>/YYYY/MM/DD/<prog_id>/<host>` (UTC date of the ReceiptTime, as
the reference does). Line (docs/files.md):

    YYYY/MM/DD HH:MM:SS <TAB> priority <TAB> file:line <TAB> message [<TAB> repeats N times] <TAB> context

`repeats N times` is there only for a line sent with a repeat count above 1.
"""

from __future__ import annotations

from mondemand.backends.files.stats_file import fallback_ms
from mondemand.backends.files.textfiles import DatedTextBackend, escape_field, format_context

from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.messages import LogMsg


class LogFileBackend(DatedTextBackend):
    """Append each line of each LogMsg to `<root>/YYYY/MM/DD/<prog_id>/<host>`."""

    type_name = "log_file"

    def start(self) -> None:
        super().start()
        self.log_lines = 0

    def handle(self, batch: list[RawEvent]) -> None:
        for raw in batch:
            msg = raw.message
            if not isinstance(msg, LogMsg):
                self.skipped_events += 1
                continue
            try:
                self._add_message(raw, msg)
            except Exception as exc:  # bad data in this event: it alone is dropped
                self.reject(raw, exc)
        self.write_pending()

    def _add_message(self, raw: RawEvent, msg: LogMsg) -> None:
        day, stamp = self.clock(fallback_ms(raw, raw.event.receipt_time) // 1000)
        path = self.path_for(day, msg.prog_id, msg.host)
        context = format_context(msg.context, self.delimiter)
        for line in msg.lines:
            text = escape_field(line.message)
            if line.repeat > 1:
                text += f"\trepeats {line.repeat} times"
            where = escape_field(f"{line.file}:{line.line}")
            self.add_line(path, f"{stamp}\t{line.priority.label}\t{where}\t{text}\t{context}")
            self.log_lines += 1

    def counters(self) -> dict[str, float]:
        return {**super().counters(), "log_lines": self.log_lines}


@hookimpl
def register_backend_types(register) -> None:
    register("log_file", LogFileBackend)
