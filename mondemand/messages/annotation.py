"""MonDemand::AnnotationMsg: a marker on the graphs (a deploy, an incident).

Wire layout (wire-format §4.7): `id`, `timestamp` (int64 from C, uint64 from
Erlang; both are read, int64 is written), `description`, optional `text`,
`tag_num` (uint16, written only when there are tags) with `tag<i>`, then the
context block. Annotations have no host convention: a `host` context pair
stays in the context.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mondemand.lwes import Event, LwesType
from mondemand.messages.context import read_context, write_context
from mondemand.messages.errors import MessageError
from mondemand.messages.fields import check_event_name, check_int, check_str, get_count, get_indexed, get_int, get_str

ANNOTATION_MSG = "MonDemand::AnnotationMsg"


@dataclass
class AnnotationMsg:
    """A decoded MonDemand::AnnotationMsg; `timestamp` is in ms since the epoch, `text` None when not sent."""

    id: str
    timestamp: int
    description: str
    text: str | None = None
    tags: list[str] = field(default_factory=list)
    context: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_str(self.id, "id", ANNOTATION_MSG)
        check_str(self.description, "description", ANNOTATION_MSG)
        if isinstance(self.timestamp, bool) or not isinstance(self.timestamp, int):
            raise MessageError(f"timestamp must be an int (ms), got {self.timestamp!r}", ANNOTATION_MSG)
        if self.text is not None:
            check_str(self.text, "text", ANNOTATION_MSG)
        self.tags = list(self.tags)
        for tag in self.tags:
            check_str(tag, "tag", ANNOTATION_MSG)
        if len(self.tags) > 0xFFFF:
            raise MessageError(f"{len(self.tags)} tags exceed 65535", ANNOTATION_MSG)
        self.context = dict(self.context)

    @classmethod
    def from_lwes(cls, event: Event) -> AnnotationMsg:
        """Decode `event`; id, timestamp and description are required."""
        check_event_name(event, ANNOTATION_MSG)
        ident = get_str(event, "id")
        timestamp = get_int(event, "timestamp")
        description = get_str(event, "description")
        num = get_count(event, "tag_num", 0)
        tags = [get_indexed(event, f"tag{i}", num, get_str, "tag_num") for i in range(num)]
        return cls(ident, timestamp, description, get_str(event, "text", None), tags, read_context(event))

    def to_lwes(self) -> Event:
        """Encode as one event (timestamp as int64)."""
        event = Event(ANNOTATION_MSG)
        event.set("id", LwesType.STRING, self.id)
        event.set("timestamp", LwesType.INT64, check_int(self.timestamp, LwesType.INT64, "timestamp", ANNOTATION_MSG))
        event.set("description", LwesType.STRING, self.description)
        if self.text is not None:
            event.set("text", LwesType.STRING, self.text)
        if self.tags:
            event.set("tag_num", LwesType.UINT16, len(self.tags))
            for i, tag in enumerate(self.tags):
                event.set(f"tag{i}", LwesType.STRING, tag)
        return write_context(event, self.context)
