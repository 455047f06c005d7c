"""MonDemand::StatsMsg: counters, gauges and statsets from one program.

Wire layout (wire-format §4.2): `prog_id`, optional `send_time`/`collect_time`
(int64 ms, Erlang), `num` (uint16), then per metric `t<i>` (type name),
`k<i>` (name) and `v<i>` (int64, or the statset string), then the context
block. Clients put at most 512 metrics in one event and send several events
when there are more; `StatsMsg.to_lwes` does the same and also keeps every
event under the datagram limit.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mondemand.lwes import RECEIPT_TIME, SENDER_IP, SENDER_PORT, Event, LwesType
from mondemand.lwes.types import MAX_DATAGRAM
from mondemand.messages.context import UNKNOWN_HOST, context_size, read_context_and_host, split_host, write_context
from mondemand.messages.errors import MessageError, StatsetFormatError
from mondemand.messages.fields import (
    attr_size,
    check_event_name,
    check_int,
    check_ip,
    check_str,
    get_count,
    get_indexed,
    get_int,
    get_str,
    string_size,
    value_size,
)

STATS_MSG = "MonDemand::StatsMsg"
#: Most metrics the Erlang and Java clients put in one event.
DEFAULT_MAX_METRICS = 512

_INT_FIELD = re.compile(r"-?[0-9]+")
_EVENT_OVERHEAD = 1 + len(STATS_MSG) + 2  # name length byte, name, attribute count


class MetricType(enum.StrEnum):
    """The `t<i>` of a metric. UNKNOWN also stands for any type name this library does not know."""

    COUNTER = "counter"
    GAUGE = "gauge"
    STATSET = "statset"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Statset:
    """A statset summary: 11 optional integers, sent as `count:sum:min:max:avg:median:pctl_75:...:pctl_99`."""

    count: int | None = None
    sum: int | None = None
    min: int | None = None
    max: int | None = None
    avg: int | None = None
    median: int | None = None
    pctl_75: int | None = None
    pctl_90: int | None = None
    pctl_95: int | None = None
    pctl_98: int | None = None
    pctl_99: int | None = None

    FIELDS: ClassVar[tuple[str, ...]] = (
        "count", "sum", "min", "max", "avg", "median",
        "pctl_75", "pctl_90", "pctl_95", "pctl_98", "pctl_99",
    )  # fmt: skip

    def __post_init__(self) -> None:
        for name in self.FIELDS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise StatsetFormatError(f"statset field {name} must be an int or None, got {value!r}")

    @classmethod
    def parse(cls, text: str) -> Statset:
        """Read the wire form: exactly 11 colon-separated decimal integers, an empty field meaning None.

        Raises StatsetFormatError (a MessageError) for anything else.
        """
        if not isinstance(text, str):
            raise StatsetFormatError(f"statset must be a string, got {type(text).__name__}")
        parts = text.split(":")
        if len(parts) != len(cls.FIELDS):
            raise StatsetFormatError(f"statset {text[:80]!r} has {len(parts)} fields; it needs {len(cls.FIELDS)}")
        values: list[int | None] = []
        for name, part in zip(cls.FIELDS, parts, strict=True):
            if part == "":
                values.append(None)
            elif _INT_FIELD.fullmatch(part):
                values.append(int(part))
            else:
                raise StatsetFormatError(f"statset field {name} is {part[:40]!r}, not an integer")
        return cls(*values)

    def format(self) -> str:
        """The wire form, the inverse of `parse`."""
        return ":".join("" if v is None else str(v) for v in (getattr(self, name) for name in self.FIELDS))


@dataclass(slots=True)
class Metric:
    """One metric: its type, name and value.

    `value` is an int for counters and gauges and a `Statset` for statsets (a
    statset string is parsed). An UNKNOWN metric keeps whatever value it was
    sent with; `type_name` is the type string as sent (e.g. "histogram", or
    "unknown") and `value_type` the LWES type of the value (inferred from the
    Python value when omitted). For known types both are normalised: type_name
    is the type's own name and value_type is None.
    """

    type: MetricType
    name: str
    value: Any
    type_name: str | None = None
    value_type: LwesType | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.type, MetricType):
            text = check_str(self.type, "metric type")
            try:
                self.type = MetricType(text)
            except ValueError:
                self.type, self.type_name = MetricType.UNKNOWN, self.type_name or text
        check_str(self.name, "metric name")
        if self.type is MetricType.UNKNOWN:
            self.type_name = check_str(self.type_name or MetricType.UNKNOWN.value, "metric type name")
            if self.value_type is None:
                self.value_type = _infer_type(self.name, self.value)
            return
        self.type_name, self.value_type = self.type.value, None
        if self.type is MetricType.STATSET:
            if isinstance(self.value, str):
                self.value = Statset.parse(self.value)
            elif not isinstance(self.value, Statset):
                raise MessageError(f"statset metric {self.name!r} needs a Statset, got {type(self.value).__name__}")
        elif isinstance(self.value, bool) or not isinstance(self.value, int):
            raise MessageError(f"{self.type.value} metric {self.name!r} needs an int, got {self.value!r}")

    @property
    def is_known_type(self) -> bool:
        """False when the type name is one this library does not recognise (e.g. "histogram")."""
        return self.type is not MetricType.UNKNOWN or self.type_name == MetricType.UNKNOWN.value

    def wire_value(self) -> tuple[LwesType, Any]:
        """(LWES type, value) of `v<i>`."""
        if self.type is MetricType.STATSET:
            return LwesType.STRING, self.value.format()
        if self.type is MetricType.UNKNOWN:
            assert self.value_type is not None
            return self.value_type, self.value
        return LwesType.INT64, check_int(self.value, LwesType.INT64, f"metric {self.name!r}", STATS_MSG)


def _infer_type(name: str, value: Any) -> LwesType:
    if isinstance(value, bool):
        return LwesType.BOOLEAN
    if isinstance(value, int):
        return LwesType.INT64 if value < 1 << 63 else LwesType.UINT64
    if isinstance(value, float):
        return LwesType.DOUBLE
    if isinstance(value, str):
        return LwesType.STRING
    if isinstance(value, Statset):
        raise MessageError(f"metric {name!r}: a Statset value needs the statset type")
    raise MessageError(f"metric {name!r}: give value_type for a {type(value).__name__} value")


@dataclass
class StatsMsg:
    """A decoded MonDemand::StatsMsg.

    `host` comes from the `host` context pair ("unknown" without one) and is
    never part of `context`. `receipt_time`, `sender_ip` and `sender_port` are
    the listener headers when the event carried them.
    """

    prog_id: str
    host: str = UNKNOWN_HOST
    context: dict[str, str] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    send_time: int | None = None
    collect_time: int | None = None
    receipt_time: int | None = None
    sender_ip: str | None = None
    sender_port: int | None = None

    def __post_init__(self) -> None:
        check_str(self.prog_id, "prog_id", STATS_MSG)
        self.host, self.context = split_host(check_str(self.host, "host", STATS_MSG), self.context)
        self.metrics = list(self.metrics)
        if self.sender_ip is not None:
            self.sender_ip = check_ip(self.sender_ip, "sender_ip", STATS_MSG)

    @property
    def unknown_types(self) -> list[str]:
        """Type names this library does not recognise, as sent, each once, in order of appearance."""
        return list(dict.fromkeys(m.type_name for m in self.metrics if not m.is_known_type))  # type: ignore[misc]

    @classmethod
    def from_lwes(cls, event: Event) -> StatsMsg:
        """Decode `event`; MessageError when it is not a well-formed StatsMsg."""
        check_event_name(event, STATS_MSG)
        prog_id = get_str(event, "prog_id")
        num = get_count(event, "num")
        metrics = [_read_metric(event, i, num) for i in range(num)]
        host, context = read_context_and_host(event)
        sender_ip = event.attrs.get(SENDER_IP)
        if sender_ip is not None and sender_ip[0] is not LwesType.IP_ADDR:
            raise MessageError(f"attribute {SENDER_IP!r} must be an ip_addr, got {sender_ip[0].type_name}", event.name)
        return cls(
            prog_id=prog_id,
            host=host,
            context=context,
            metrics=metrics,
            send_time=get_int(event, "send_time", None),
            collect_time=get_int(event, "collect_time", None),
            receipt_time=get_int(event, RECEIPT_TIME, None),
            sender_ip=None if sender_ip is None else sender_ip[1],
            sender_port=get_int(event, SENDER_PORT, None),
        )

    def to_lwes(self, max_metrics: int = DEFAULT_MAX_METRICS, max_size: int = MAX_DATAGRAM) -> list[Event]:
        """Encode as one or more events of at most `max_metrics` metrics and `max_size` encoded bytes.

        Metrics keep their order and are numbered from 0 in each event; every
        event repeats prog_id, times, context and headers. A message without
        metrics gives one event with num = 0. MessageError when a value cannot
        be sent or one metric alone does not fit in `max_size`.
        """
        if not 1 <= max_metrics <= 0xFFFF:
            raise MessageError(f"max_metrics must be 1..65535, got {max_metrics}", STATS_MSG)
        fixed = _EVENT_OVERHEAD + attr_size("prog_id", string_size(self.prog_id)) + attr_size("num", 2)
        fixed += sum(attr_size(k, 8) for k, v in self._times() if v is not None)
        fixed += context_size(self.context, self.host) + self._headers_size()
        if fixed > max_size:
            raise MessageError(f"prog_id, context and headers alone take {fixed} bytes, over {max_size}", STATS_MSG)

        wire = [(m, *m.wire_value()) for m in self.metrics]
        chunks: list[list[tuple[Metric, LwesType, Any]]] = []
        chunk: list[tuple[Metric, LwesType, Any]] = []
        size = fixed
        for metric, typ, value in wire:
            cost = _metric_size(len(chunk), metric, typ, value)
            if chunk and (len(chunk) >= max_metrics or size + cost > max_size):
                chunks.append(chunk)
                chunk, size = [], fixed
                cost = _metric_size(0, metric, typ, value)
            if size + cost > max_size:
                raise MessageError(
                    f"metric {metric.name[:40]!r} needs {cost} bytes; with the common attributes "
                    f"({fixed} bytes) it cannot fit in {max_size}",
                    STATS_MSG,
                )
            chunk.append((metric, typ, value))
            size += cost
        chunks.append(chunk)
        return [self._event(c) for c in chunks]

    def _times(self) -> list[tuple[str, int | None]]:
        return [("send_time", self.send_time), ("collect_time", self.collect_time)]

    def _headers_size(self) -> int:
        return (
            (attr_size(RECEIPT_TIME, 8) if self.receipt_time is not None else 0)
            + (attr_size(SENDER_IP, 4) if self.sender_ip is not None else 0)
            + (attr_size(SENDER_PORT, 2) if self.sender_port is not None else 0)
        )

    def _event(self, chunk: list[tuple[Metric, LwesType, Any]]) -> Event:
        event = Event(STATS_MSG).set("prog_id", LwesType.STRING, self.prog_id)
        for key, value in self._times():
            if value is not None:
                event.set(key, LwesType.INT64, check_int(value, LwesType.INT64, key, STATS_MSG))
        event.set("num", LwesType.UINT16, len(chunk))
        for i, (metric, typ, value) in enumerate(chunk):
            event.set(f"t{i}", LwesType.STRING, metric.type_name)
            event.set(f"k{i}", LwesType.STRING, metric.name)
            event.set(f"v{i}", typ, value)
        write_context(event, self.context, self.host)
        if self.receipt_time is not None:
            event.set(RECEIPT_TIME, LwesType.INT64, check_int(self.receipt_time, LwesType.INT64, "receipt_time"))
        if self.sender_ip is not None:
            event.set(SENDER_IP, LwesType.IP_ADDR, self.sender_ip)
        if self.sender_port is not None:
            event.set(SENDER_PORT, LwesType.UINT16, check_int(self.sender_port, LwesType.UINT16, "sender_port"))
        return event


def _metric_size(i: int, metric: Metric, typ: LwesType, value: Any) -> int:
    assert metric.type_name is not None
    return (
        attr_size(f"t{i}", string_size(metric.type_name))
        + attr_size(f"k{i}", string_size(metric.name))
        + attr_size(f"v{i}", value_size(typ, value))
    )


def _read_metric(event: Event, i: int, num: int) -> Metric:
    type_name = get_indexed(event, f"t{i}", num, get_str)
    name = get_indexed(event, f"k{i}", num, get_str)
    key = f"v{i}"
    try:
        kind = MetricType(type_name)
    except ValueError:
        kind = MetricType.UNKNOWN
    if kind is MetricType.UNKNOWN:
        get_indexed(event, key, num, lambda e, k: None)
        typ, raw = event.attrs[key]
        return Metric(MetricType.UNKNOWN, name, raw, type_name=type_name, value_type=typ)
    if kind is MetricType.STATSET:
        text = get_indexed(event, key, num, get_str)
        try:
            return Metric(kind, name, Statset.parse(text))
        except StatsetFormatError as exc:
            raise StatsetFormatError(f"{key} (metric {name!r}): {exc.reason}", event.name) from None
    return Metric(kind, name, get_indexed(event, key, num, get_int))
