"""MonDemand::LogMsg: bundled log lines from one program.

Wire layout (wire-format §4.4): `prog_id`, optional `send_time` (int64, Erlang),
`num` (uint16), then per line an optional `trace_id<i>` (uint64), `f<i>` file,
`l<i>` line (uint32), `p<i>` priority (uint32, 0..8), `m<i>` message and
`r<i>` repeat count (uint16, written only when above 1, as the C client does;
read as 1 when missing), then the context block.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from mondemand.lwes import Event, LwesType
from mondemand.messages.context import UNKNOWN_HOST, read_context_and_host, split_host, write_context
from mondemand.messages.errors import MessageError
from mondemand.messages.fields import (
    check_event_name,
    check_int,
    check_str,
    get_count,
    get_indexed,
    get_int,
    get_str,
)

LOG_MSG = "MonDemand::LogMsg"


class Priority(enum.IntEnum):
    """Log priority, most severe first; the value is what `p<i>` carries."""

    EMERG = 0
    ALERT = 1
    CRIT = 2
    ERROR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7
    ALL = 8

    @property
    def label(self) -> str:
        """The lower-case name the clients print: "emerg", ..., "all"."""
        return self.name.lower()

    @classmethod
    def from_name(cls, text: str) -> Priority:
        """A priority from its name (any case) or its number; MessageError otherwise."""
        text = text.strip()
        if text.isdigit() and int(text) in cls._value2member_map_:
            return cls(int(text))
        try:
            return cls[text.upper()]
        except KeyError:
            names = ", ".join(p.label for p in cls)
            raise MessageError(f"unknown priority {text!r}; use one of {names} or 0..8") from None


@dataclass(slots=True)
class LogLine:
    """One log line; `repeat` counts identical lines folded into it (at least 1)."""

    file: str
    line: int
    priority: Priority
    message: str
    repeat: int = 1
    trace_id: int | None = None

    def __post_init__(self) -> None:
        check_str(self.file, "file")
        check_str(self.message, "message")
        check_int(self.line, LwesType.UINT32, "line")
        check_int(self.priority, LwesType.UINT32, "priority")
        try:
            self.priority = Priority(self.priority)
        except ValueError:
            raise MessageError(f"priority {self.priority} is not 0..8") from None
        if check_int(self.repeat, LwesType.UINT16, "repeat") < 1:
            raise MessageError(f"repeat must be at least 1, got {self.repeat}")
        if self.trace_id is not None:
            check_int(self.trace_id, LwesType.UINT64, "trace_id")


@dataclass
class LogMsg:
    """A decoded MonDemand::LogMsg; `host` is lifted out of the context as for stats."""

    prog_id: str
    host: str = UNKNOWN_HOST
    context: dict[str, str] = field(default_factory=dict)
    lines: list[LogLine] = field(default_factory=list)
    send_time: int | None = None

    def __post_init__(self) -> None:
        check_str(self.prog_id, "prog_id", LOG_MSG)
        self.host, self.context = split_host(check_str(self.host, "host", LOG_MSG), self.context)
        self.lines = list(self.lines)
        if len(self.lines) > 0xFFFF:
            raise MessageError(f"{len(self.lines)} lines exceed 65535", LOG_MSG)
        if self.send_time is not None:
            check_int(self.send_time, LwesType.INT64, "send_time", LOG_MSG)

    @classmethod
    def from_lwes(cls, event: Event) -> LogMsg:
        """Decode `event`; MessageError when it is not a well-formed LogMsg."""
        check_event_name(event, LOG_MSG)
        prog_id = get_str(event, "prog_id")
        num = get_count(event, "num")
        lines = [_read_line(event, i, num) for i in range(num)]
        host, context = read_context_and_host(event)
        return cls(prog_id, host, context, lines, get_int(event, "send_time", None))

    def to_lwes(self) -> Event:
        """Encode as one event."""
        event = Event(LOG_MSG).set("prog_id", LwesType.STRING, self.prog_id)
        if self.send_time is not None:
            event.set("send_time", LwesType.INT64, self.send_time)
        event.set("num", LwesType.UINT16, len(self.lines))
        for i, line in enumerate(self.lines):
            if line.trace_id is not None:
                event.set(f"trace_id{i}", LwesType.UINT64, line.trace_id)
            event.set(f"f{i}", LwesType.STRING, line.file)
            event.set(f"l{i}", LwesType.UINT32, line.line)
            event.set(f"p{i}", LwesType.UINT32, int(line.priority))
            event.set(f"m{i}", LwesType.STRING, line.message)
            if line.repeat > 1:
                event.set(f"r{i}", LwesType.UINT16, line.repeat)
        return write_context(event, self.context, self.host)


def _read_line(event: Event, i: int, num: int) -> LogLine:
    priority = get_indexed(event, f"p{i}", num, get_int)
    if priority not in Priority._value2member_map_:
        raise MessageError(f"p{i} = {priority} is not a priority (0..8)", event.name)
    repeat = get_int(event, f"r{i}", 1)
    if repeat < 1:
        raise MessageError(f"r{i} = {repeat}: a repeat count must be at least 1", event.name)
    trace_id = get_int(event, f"trace_id{i}", None)
    if trace_id is not None and trace_id < 0:
        raise MessageError(f"trace_id{i} = {trace_id} is negative", event.name)
    return LogLine(
        file=get_indexed(event, f"f{i}", num, get_str),
        line=get_indexed(event, f"l{i}", num, get_int),
        priority=Priority(priority),
        message=get_indexed(event, f"m{i}", num, get_str),
        repeat=repeat,
        trace_id=trace_id,
    )
