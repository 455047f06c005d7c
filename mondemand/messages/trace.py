"""MonDemand::TraceMsg: one traced message with free-form string fields.

Wire layout (wire-format §4.5): string attributes `mondemand.prog_id`,
`mondemand.trace_id`, `mondemand.owner`, `mondemand.src_host`,
`mondemand.message`, an optional `send_time` (int64, Erlang), and any number
of further string=string pairs. There is no `num` and no context block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mondemand.lwes import RECEIPT_TIME, SENDER_IP, SENDER_PORT, Event, LwesType
from mondemand.lwes.event import ENCODING
from mondemand.messages.context import UNKNOWN_HOST
from mondemand.messages.errors import MessageError
from mondemand.messages.fields import STRING_TYPES, check_event_name, check_int, check_str, get_int, get_str

TRACE_MSG = "MonDemand::TraceMsg"

PROG_ID_KEY = "mondemand.prog_id"
TRACE_ID_KEY = "mondemand.trace_id"
OWNER_KEY = "mondemand.owner"
SRC_HOST_KEY = "mondemand.src_host"
MESSAGE_KEY = "mondemand.message"
SEND_TIME_KEY = "send_time"

#: Keys that are not trace fields: the fixed attributes, `enc` and the listener headers.
RESERVED_KEYS = frozenset(
    {PROG_ID_KEY, TRACE_ID_KEY, OWNER_KEY, SRC_HOST_KEY, MESSAGE_KEY, SEND_TIME_KEY,
     ENCODING, RECEIPT_TIME, SENDER_IP, SENDER_PORT}
)  # fmt: skip


@dataclass
class TraceMsg:
    """A decoded MonDemand::TraceMsg.

    `fields` holds every other attribute. A field sent with a non-string type
    (no known client does that) is kept as its `str()`.
    """

    prog_id: str
    trace_id: str
    owner: str
    src_host: str
    message: str
    fields: dict[str, str] = field(default_factory=dict)
    send_time: int | None = None

    def __post_init__(self) -> None:
        for name in ("prog_id", "trace_id", "owner", "src_host", "message"):
            check_str(getattr(self, name), name, TRACE_MSG)
        self.fields = dict(self.fields)
        for key, value in self.fields.items():
            check_str(key, "field name", TRACE_MSG)
            check_str(value, f"field {key!r}", TRACE_MSG)
            if key in RESERVED_KEYS:
                raise MessageError(f"{key!r} is reserved and cannot be a trace field", TRACE_MSG)
        if self.send_time is not None:
            check_int(self.send_time, LwesType.INT64, "send_time", TRACE_MSG)

    @classmethod
    def from_lwes(cls, event: Event) -> TraceMsg:
        """Decode `event`; prog_id, trace_id, owner and message are required, src_host defaults to "unknown"."""
        check_event_name(event, TRACE_MSG)
        fields = {
            key: value if typ in STRING_TYPES else str(value)
            for key, (typ, value) in event.attrs.items()
            if key not in RESERVED_KEYS
        }
        return cls(
            prog_id=get_str(event, PROG_ID_KEY),
            trace_id=get_str(event, TRACE_ID_KEY),
            owner=get_str(event, OWNER_KEY),
            src_host=get_str(event, SRC_HOST_KEY, UNKNOWN_HOST),
            message=get_str(event, MESSAGE_KEY),
            fields=fields,
            send_time=get_int(event, SEND_TIME_KEY, None),
        )

    def to_lwes(self) -> Event:
        """Encode as one event: the fixed attributes, send_time if set, then the fields in order."""
        event = Event(TRACE_MSG)
        event.set(PROG_ID_KEY, LwesType.STRING, self.prog_id)
        event.set(TRACE_ID_KEY, LwesType.STRING, self.trace_id)
        event.set(OWNER_KEY, LwesType.STRING, self.owner)
        event.set(SRC_HOST_KEY, LwesType.STRING, self.src_host)
        event.set(MESSAGE_KEY, LwesType.STRING, self.message)
        if self.send_time is not None:
            event.set(SEND_TIME_KEY, LwesType.INT64, self.send_time)
        for key, value in self.fields.items():
            event.set(key, LwesType.STRING, value)
        return event
