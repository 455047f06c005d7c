"""What a listener or backend plugin implements, and what the server gives it.

A backend is a small synchronous class: `start`, `handle(batch)`, `flush`,
`close`, plus its own counters. It knows nothing of threads or queues: the
server runs each backend in its own worker with its own bounded queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mondemand.envelope import RawEvent
from mondemand.options import Option, OptionError


@dataclass
class ServerContext:
    """Services the server lends to plugins.

    `inject` routes an event built in-process (aggregates, self-metrics) as if
    it had been received; `http_routes` lets a plugin add GET handlers to the
    server's HTTP port (path prefix -> handler(path, query) -> (status, JSON-able)).
    """

    inject: Callable[[RawEvent], None] = lambda raw: None
    hostname: str = "localhost"
    config_dir: Path = field(default_factory=Path.cwd)
    http_routes: dict[str, Callable[[str, Mapping[str, str]], tuple[int, Any]]] = field(default_factory=dict)
    #: Plugin-declared `routes.ini` sections, validated: kind -> NAME -> options (e.g. sections["alert"]).
    sections: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)


class Backend:
    """Base class for backends.

    `needs` says what `handle` reads: "raw" (bytes and sender only), "event"
    (the decoded LWES event), "message" (the typed MonDemand message) or
    "stats" (`RawEvent.stats`, the plain record of a StatsMsg; other events
    are passed on undecoded). For all but "raw" the worker decodes first,
    counts undecodable events and leaves them out, so `handle` sees only good ones.
    """

    type_name: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()
    needs: ClassVar[str] = "raw"
    #: True for backends that route events of their own (`ServerContext.inject`): they stop first at shutdown.
    injects: ClassVar[bool] = False

    def __init__(self, name: str, config: Mapping[str, Any], context: ServerContext) -> None:
        self.name = name
        # Defaults of declared options fill what `config` leaves out (a backend built directly, in tests or tools).
        self.config = {opt.name: opt.default for opt in self.options if not opt.required}
        self.config.update(config)
        self.context = context
        self.log = logging.getLogger(f"mondemand.backend.{name}")

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[OptionError]:
        """Problems between options that are each valid (e.g. copies > destinations); checked at load."""
        return []

    def start(self) -> None:
        """Open files or connections; called in the worker before the first batch."""

    def handle(self, batch: list[RawEvent]) -> None:
        """Process events in arrival order. An exception counts as an error and restarts the backend."""
        raise NotImplementedError

    def flush(self) -> None:
        """Write out anything buffered; called periodically and before `close`."""

    def close(self) -> None:
        """Release everything; the backend is not used afterwards."""

    def reopen(self) -> None:
        """Reopen files after log rotation (SIGHUP)."""

    def counters(self) -> dict[str, float]:
        """The backend's own counters, reported with the server's self-metrics."""
        return {}


class Listener:
    """Base class for listeners: receive datagrams and hand them over as `RawEvent`s.

    `start(deliver)` begins receiving on the listener's own thread(s).
    `deliver(batch)` takes a list of RawEvents (best: everything one drain of
    the socket produced) and never blocks; call it from one thread at a time
    (each listener gets its own `deliver`). `stop` returns once receiving has ended.
    """

    type_name: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, name: str, config: Mapping[str, Any], context: ServerContext) -> None:
        self.name = name
        self.config = dict(config)
        self.context = context
        self.log = logging.getLogger(f"mondemand.listener.{name}")

    def start(self, deliver: Callable[[list[RawEvent]], None]) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        """Where it listens, for logs and /status (e.g. udp://127.0.0.1:20402)."""
        return self.name

    def counters(self) -> dict[str, float]:
        """received, malformed, bytes and the like."""
        return {}
