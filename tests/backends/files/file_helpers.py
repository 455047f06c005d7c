"""Helpers for the file backends' tests: build a backend the way the server does, and received events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mondemand.envelope import RawEvent
from mondemand.lwes import Event, encode
from mondemand.messages import to_events
from mondemand.options import parse_options
from mondemand.plugin_api import Backend, ServerContext

#: 2023-11-14 22:13:20 UTC.
T0 = 1_700_000_000_000


def make_backend(cls: type[Backend], root: Path, context: ServerContext | None = None, backend_name: str = "b",
                 **options: Any) -> Any:
    """`cls` with options parsed from strings as routes.ini would give them, started."""
    raw = {"root": str(root), **{k: str(v) for k, v in options.items()}}
    values, problems = parse_options(cls.options, raw)
    assert problems == []
    backend = cls(backend_name, values, context or ServerContext())
    backend.start()
    return backend


def received(item: Any, receipt_ms: int = T0, ip: str = "192.0.2.7", port: int = 4321,
             listener: str = "main") -> list[RawEvent]:
    """The datagrams a listener would hand over for a message or an event, stamped as received."""
    events = [item] if isinstance(item, Event) else to_events(item)
    return [RawEvent(encode(e), receipt_ms, ip, port, listener) for e in events]


def files_under(root: Path) -> list[Path]:
    """Every regular file below `root`, sorted, each checked to resolve inside `root`."""
    found = sorted(p for p in root.rglob("*") if p.is_file())
    for path in found:
        assert path.resolve().is_relative_to(root.resolve()), path
    return found
