"""MonDemand::PerfMsg: timed spans of one request.

Wire layout (wire-format §4.6): `id`, `caller_label`, `num` (uint16), then per
timing `label<i>` (string), `start<i>` and `end<i>` (int64 ms since the
epoch), then the context block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mondemand.lwes import Event, LwesType
from mondemand.messages.context import UNKNOWN_HOST, read_context_and_host, split_host, write_context
from mondemand.messages.errors import MessageError
from mondemand.messages.fields import check_event_name, check_int, check_str, get_count, get_indexed, get_int, get_str

PERF_MSG = "MonDemand::PerfMsg"


@dataclass(slots=True)
class Timing:
    """One span: a label and its start and end in ms since the epoch."""

    label: str
    start: int
    end: int

    def __post_init__(self) -> None:
        check_str(self.label, "timing label", PERF_MSG)
        check_int(self.start, LwesType.INT64, f"start of {self.label!r}", PERF_MSG)
        check_int(self.end, LwesType.INT64, f"end of {self.label!r}", PERF_MSG)

    @property
    def duration(self) -> int:
        """end - start, in ms."""
        return self.end - self.start


@dataclass
class PerfMsg:
    """A decoded MonDemand::PerfMsg; `host` is lifted out of the context."""

    id: str
    caller_label: str
    timings: list[Timing] = field(default_factory=list)
    host: str = UNKNOWN_HOST
    context: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_str(self.id, "id", PERF_MSG)
        check_str(self.caller_label, "caller_label", PERF_MSG)
        self.host, self.context = split_host(check_str(self.host, "host", PERF_MSG), self.context)
        self.timings = list(self.timings)
        if len(self.timings) > 0xFFFF:
            raise MessageError(f"{len(self.timings)} timings exceed 65535", PERF_MSG)

    @classmethod
    def from_lwes(cls, event: Event) -> PerfMsg:
        """Decode `event`; MessageError when it is not a well-formed PerfMsg."""
        check_event_name(event, PERF_MSG)
        ident = get_str(event, "id")
        caller_label = get_str(event, "caller_label")
        num = get_count(event, "num")
        timings = [
            Timing(
                get_indexed(event, f"label{i}", num, get_str),
                get_indexed(event, f"start{i}", num, get_int),
                get_indexed(event, f"end{i}", num, get_int),
            )
            for i in range(num)
        ]
        host, context = read_context_and_host(event)
        return cls(ident, caller_label, timings, host, context)

    def to_lwes(self) -> Event:
        """Encode as one event."""
        event = Event(PERF_MSG)
        event.set("id", LwesType.STRING, self.id)
        event.set("caller_label", LwesType.STRING, self.caller_label)
        event.set("num", LwesType.UINT16, len(self.timings))
        for i, timing in enumerate(self.timings):
            event.set(f"label{i}", LwesType.STRING, timing.label)
            event.set(f"start{i}", LwesType.INT64, timing.start)
            event.set(f"end{i}", LwesType.INT64, timing.end)
        return write_context(event, self.context, self.host)
