"""Errors the built-in listeners raise when they cannot start."""

from __future__ import annotations


class ListenerError(RuntimeError):
    """A listener could not open, bind or join its socket; the message names the listener and address."""

    def __init__(self, listener: str, address: str, reason: str) -> None:
        super().__init__(f"listener {listener!r} on {address}: {reason}")
        self.listener = listener
        self.address = address
        self.reason = reason
