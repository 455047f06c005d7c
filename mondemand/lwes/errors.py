"""Exceptions raised by the LWES codec."""

from __future__ import annotations


class LwesError(Exception):
    """Base class for every LWES codec error."""


class LwesDecodeError(LwesError):
    """Bytes that are not a valid LWES event.

    `kind` is a stable class name (`truncated`, `length-overflow`, `bad-type-id`,
    `count-mismatch`, `duplicate-attribute`, `too-large`, `malformed`) that
    listeners use as a counter key; `offset` is where in the datagram the
    problem was found.
    """

    def __init__(self, kind: str, offset: int, reason: str) -> None:
        super().__init__(f"{kind} at offset {offset}: {reason}")
        self.kind = kind
        self.offset = offset
        self.reason = reason


class LwesEncodeError(LwesError, ValueError):
    """An event that cannot be written: a value out of range, a name too long, too big a datagram."""


class EsfError(LwesError):
    """An ESF file that does not parse."""


class ValidationError(LwesError):
    """An event that does not match its ESF declaration; `problems` lists every mismatch."""

    def __init__(self, event_name: str, problems: list[str]) -> None:
        super().__init__(f"{event_name}: " + "; ".join(problems))
        self.event_name = event_name
        self.problems = problems
