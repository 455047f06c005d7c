"""A small client for rrdcached's text protocol, over a Unix socket or TCP.

The protocol is line based: a command line in, a status line back. A status
``N message`` with N >= 0 is success followed by N more lines (HELP, STATS);
a negative N is an error whose text is the rest of the line. ``BATCH`` mode
takes any number of commands without answering them, up to a line holding
only ``.``; the daemon then replies ``N errors`` and N lines
``<command number> <message>`` (numbers count from 1). `RrdcachedClient.batch`
maps those back to the caller's 0-based command index, so that one rejected
update is reported for that update alone.

`classify` sorts error messages the way the reference client does
(reference-server.md §3.5), and `timestamp_conflict` reads the refused time and
the file's last update time out of an "illegal attempt to update" message
(librrd's own message has the same words, so direct writes use it too).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

__all__ = [
    "DEFAULT_PORT",
    "Address",
    "RrdcachedClient",
    "RrdcachedCommandError",
    "RrdcachedError",
    "classify",
    "parse_address",
    "timestamp_conflict",
]

#: rrdcached's default TCP port.
DEFAULT_PORT = 42217

_ILLEGAL = re.compile(r"illegal attempt to update using time (-?[0-9.]+) when last update time is (-?[0-9.]+)")


class RrdcachedError(OSError):
    """The daemon cannot be reached or broke the protocol; the connection is closed."""


class RrdcachedCommandError(Exception):
    """The daemon refused one command (negative status)."""

    def __init__(self, command: str, message: str) -> None:
        super().__init__(f"{command.split(' ', 1)[0]}: {message}")
        self.command = command
        self.message = message


@dataclass(frozen=True)
class Address:
    """Where rrdcached listens: a Unix socket path, or a TCP host and port."""

    path: str | None = None
    host: str | None = None
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        """The form rrdtool's ``--daemon`` option and RRDCACHED_ADDRESS accept."""
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str) -> Address:
    """Read ``unix:/path``, ``/path``, ``host``, ``host:port`` or ``[v6]:port``; ValueError otherwise."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError("unix: needs a socket path")
        return Address(path=path)
    if text.startswith("/"):
        return Address(path=text)
    if not text:
        raise ValueError("empty rrdcached address")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"no host in rrdcached address {text!r}")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad port in rrdcached address {text!r}")
    return Address(host=host, port=int(port) if port else DEFAULT_PORT)


def classify(message: str) -> str:
    """Error class of a daemon message: timestamp, no_file, name_too_long, permission or other."""
    if "illegal attempt to update" in message:
        return "timestamp"
    if message.startswith("No such file") or "stat failed with error 2." in message or "error 111." in message:
        return "no_file"
    if "error 36." in message or "name too long" in message.lower():
        return "name_too_long"
    if "Permission denied" in message or message.startswith("Cannot create") or "No permission" in message:
        return "permission"
    return "other"


def timestamp_conflict(message: str) -> tuple[int, int] | None:
    """(refused time, file's last update time) from an "illegal attempt to update" message, else None."""
    m = _ILLEGAL.search(message)
    return (int(float(m.group(1))), int(float(m.group(2)))) if m else None


class RrdcachedClient:
    """One connection to rrdcached; connects on first use and again after a failure.

    Any socket error or malformed reply closes the connection and raises
    RrdcachedError; the next call connects afresh.
    """

    def __init__(self, address: str | Address, timeout: float = 10.0) -> None:
        self.address = address if isinstance(address, Address) else parse_address(address)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader: BinaryIO | None = None

    # -- connection --------------------------------------------------------

    def connect(self) -> None:
        """Open the connection (a no-op when open)."""
        if self._sock is not None:
            return
        addr = self.address
        try:
            if addr.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(addr.path)
            else:
                sock = socket.create_connection((addr.host, addr.port), timeout=self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise RrdcachedError(f"cannot connect to rrdcached at {addr}: {exc}") from exc
        self._sock = sock
        self._reader = sock.makefile("rb")

    def close(self) -> None:
        """Close the connection, if open."""
        sock, reader = self._sock, self._reader
        self._sock = self._reader = None
        if reader is not None:
            reader.close()
        if sock is not None:
            sock.close()

    @property
    def connected(self) -> bool:
        """True while a connection is open."""
        return self._sock is not None

    def __enter__(self) -> RrdcachedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- wire ----------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self.close()
            raise RrdcachedError(f"sending to rrdcached at {self.address} failed: {exc}") from exc

    def _readline(self) -> str:
        assert self._reader is not None
        try:
            line = self._reader.readline()
        except OSError as exc:
            self.close()
            raise RrdcachedError(f"reading from rrdcached at {self.address} failed: {exc}") from exc
        if not line.endswith(b"\n"):
            self.close()
            raise RrdcachedError(f"rrdcached at {self.address} closed the connection")
        return line[:-1].decode("utf-8", "replace")

    def _status(self) -> tuple[int, str]:
        line = self._readline()
        head, _, message = line.partition(" ")
        try:
            return int(head), message
        except ValueError:
            self.close()
            raise RrdcachedError(f"unexpected reply from rrdcached: {line[:200]!r}") from None

    @staticmethod
    def _line(command: str) -> bytes:
        if "\n" in command or "\r" in command:
            raise ValueError("an rrdcached command cannot contain a line break")
        return command.encode("utf-8", "surrogateescape") + b"\n"

    # -- commands --------------------------------------------------------------

    def command(self, command: str) -> tuple[str, list[str]]:
        """Send one command; (status message, extra lines). RrdcachedCommandError when refused."""
        self._send(self._line(command))
        status, message = self._status()
        if status < 0:
            raise RrdcachedCommandError(command, message)
        return message, [self._readline() for _ in range(status)]

    def batch(self, commands: Iterable[str]) -> dict[int, str]:
        """Run `commands` in one BATCH; {0-based index: error message} for each command the daemon refused."""
        lines = [self._line(c) for c in commands]
        if not lines:
            return {}
        self._send(b"BATCH\n")
        status, message = self._status()
        if status < 0:
            raise RrdcachedError(f"rrdcached refused BATCH: {message}")
        self._send(b"".join(lines) + b".\n")
        count, _ = self._status()
        errors: dict[int, str] = {}
        for _ in range(max(count, 0)):
            line = self._readline()
            number, _, text = line.partition(" ")
            if not number.isdigit() or not 1 <= int(number) <= len(lines):
                self.close()
                raise RrdcachedError(f"unexpected BATCH error line from rrdcached: {line[:200]!r}")
            errors[int(number) - 1] = text
        return errors

    def ping(self) -> bool:
        """True when the daemon answers PONG."""
        message, _ = self.command("PING")
        return message == "PONG"

    def stats(self) -> dict[str, int]:
        """The daemon's STATS counters (UpdatesReceived, DataSetsWritten, QueueLength, ...)."""
        _, lines = self.command("STATS")
        result = {}
        for line in lines:
            name, _, value = line.partition(":")
            if value.strip().lstrip("-").isdigit():
                result[name.strip()] = int(value)
        return result

    def update(self, path: str, *values: str) -> None:
        """UPDATE `path` with ``timestamp:value`` strings; RrdcachedCommandError when refused."""
        self.command(" ".join(("UPDATE", path, *values)))

    def flush(self, path: str) -> None:
        """Write `path`'s queued values to disk now."""
        self.command(f"FLUSH {path}")

    def flush_all(self) -> None:
        """Write every queued value to disk now."""
        self.command("FLUSHALL")

    def forget(self, path: str) -> bool:
        """Drop the daemon's state for `path` (after it was deleted or re-created); False when it had none."""
        try:
            self.command(f"FORGET {path}")
        except RrdcachedCommandError:
            return False
        return True

    def last(self, path: str) -> int:
        """The daemon's last update time of `path`, queued values included."""
        message, _ = self.command(f"LAST {path}")
        return int(message.split()[0])
