"""MonDemand messages: typed views of the MonDemand::* LWES events.

    >>> from mondemand.messages import Metric, MetricType, StatsMsg, from_lwes
    >>> msg = StatsMsg("myapp", host="web01", metrics=[Metric(MetricType.COUNTER, "requests", 3)])
    >>> [event] = msg.to_lwes()
    >>> from_lwes(event) == msg
    True

Decoders raise `MessageError` for content that breaks a schema; `from_lwes`
returns None for events that are not MonDemand messages.
"""

from __future__ import annotations

from mondemand.lwes import Event
from mondemand.messages.annotation import ANNOTATION_MSG, AnnotationMsg
from mondemand.messages.context import UNKNOWN_HOST, read_context, read_context_and_host, write_context
from mondemand.messages.errors import MessageError, StatsetFormatError
from mondemand.messages.log import LOG_MSG, LogLine, LogMsg, Priority
from mondemand.messages.perf import PERF_MSG, PerfMsg, Timing
from mondemand.messages.stats import DEFAULT_MAX_METRICS, STATS_MSG, Metric, MetricType, Statset, StatsMsg
from mondemand.messages.trace import TRACE_MSG, TraceMsg

#: Any decoded MonDemand message.
Message = StatsMsg | LogMsg | TraceMsg | PerfMsg | AnnotationMsg

#: Event name -> message class.
MESSAGE_TYPES: dict[str, type[Message]] = {
    STATS_MSG: StatsMsg,
    LOG_MSG: LogMsg,
    TRACE_MSG: TraceMsg,
    PERF_MSG: PerfMsg,
    ANNOTATION_MSG: AnnotationMsg,
}


def from_lwes(event: Event) -> Message | None:
    """Decode `event` into its message class by name; None for a non-MonDemand event.

    Raises MessageError when a MonDemand event is malformed.
    """
    cls = MESSAGE_TYPES.get(event.name)
    return None if cls is None else cls.from_lwes(event)


def to_events(message: Message) -> list[Event]:
    """The events that carry `message` (several only for a large StatsMsg)."""
    events = message.to_lwes()
    return events if isinstance(events, list) else [events]


__all__ = [
    "ANNOTATION_MSG",
    "DEFAULT_MAX_METRICS",
    "LOG_MSG",
    "MESSAGE_TYPES",
    "PERF_MSG",
    "STATS_MSG",
    "TRACE_MSG",
    "UNKNOWN_HOST",
    "AnnotationMsg",
    "LogLine",
    "LogMsg",
    "Message",
    "MessageError",
    "Metric",
    "MetricType",
    "PerfMsg",
    "Priority",
    "StatsMsg",
    "Statset",
    "StatsetFormatError",
    "Timing",
    "TraceMsg",
    "from_lwes",
    "read_context",
    "read_context_and_host",
    "to_events",
    "write_context",
]
