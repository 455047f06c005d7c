"""The exception raised for MonDemand content that does not follow its schema."""

from __future__ import annotations


class MessageError(ValueError):
    """A MonDemand event (or message object) whose content breaks the schema.

    Raised for a missing required attribute, a count (`num`, `ctxt_num`,
    `tag_num`) that promises more entries than the event holds, an attribute of
    the wrong LWES type, or a value a message cannot carry. `event_name` is the
    event concerned when known; `reason` is the bare explanation.
    """

    def __init__(self, reason: str, event_name: str | None = None) -> None:
        super().__init__(f"{event_name}: {reason}" if event_name else reason)
        self.reason = reason
        self.event_name = event_name


class StatsetFormatError(MessageError):
    """A statset string that is not 11 colon-separated integers or empty fields."""
