"""What a listener or backend plugin implements, and what the server gives it.

A backend is a small synchronous class: `start`, `handle(batch)`, `flush`,
`close`, plus its own counters. It knows nothing of threads or queues: the
server runs each backend in its own worker with its own bounded queue.

A data error in one event costs that event only: `handle` reports the event
with `self.reject(raw, reason)` and goes on (or raises `RejectEvent`), and the
runner counts it as `rejected`. When a replacement instance is built after a
failure, `takeover(previous)` lets it adopt the broken instance's state and
`abandon()` (instead of `close()`) ends the broken one without its final output.
docs/writing-a-backend.md describes the contract.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mondemand.envelope import RawEvent
from mondemand.options import Option, OptionError, SectionProblem


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
    #: Service mode: the server's `mondemand.tenants.Tenants`, None without `[tenant:NAME]` sections.
    tenants: Any = None


class RejectEvent(Exception):
    """Raised from `handle` to say: `raw` cannot be processed; the events before it are done, none after it is.

    The runner counts `raw` as rejected and hands the rest of the batch to `handle` again.
    """

    def __init__(self, raw: RawEvent, reason: object) -> None:
        super().__init__(reason)
        self.raw = raw
        self.reason = reason


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
    #: Where the backend runs when its section says no `process`: None = a worker process of its own,
    #: "main" = the main process (only for backends that cost next to nothing per event).
    default_process: ClassVar[str | None] = None
    #: Set by the runner on each instance: takes every event given to `reject` (counted, logged rate-limited).
    reject_hook: Callable[[RawEvent, object], None] | None = None
    #: Modules `start` imports that may not be installed (an extra's): a type whose modules are missing is
    #: reported once at plugin load, with the `pip install` that fixes it, and refused by the config loader.
    requires_modules: ClassVar[tuple[str, ...]] = ()

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

    @classmethod
    def check_config(
        cls, name: str, options: Mapping[str, Any], sections: Mapping[str, Mapping[str, Mapping[str, Any]]],
        config_dir: Path,
    ) -> list[SectionProblem]:
        """Problems between this section and others (plugin-declared `sections`); checked at load, so by --check."""
        return []

    def start(self) -> None:
        """Open files or connections; called in the worker before the first batch."""

    def handle(self, batch: list[RawEvent]) -> None:
        """Process events in arrival order; report an event it cannot process with `reject` and go on.

        An exception from `handle` makes the runner hand the halves of the
        batch over again until it has found the events that fail on their own
        (bisection), so `handle` must not leave partial effects of a batch it
        raises from. A backend that fails on every event is restarted.
        """
        raise NotImplementedError

    def reject(self, raw: RawEvent, reason: object) -> None:
        """Drop `raw`, one event `handle` cannot process (bad data); `reason` is the exception or a text.

        The runner counts it in `rejected` and logs it (rate-limited) with its
        sender and name. Called on the worker thread, only for bad events.
        """
        hook = self.reject_hook
        if hook is not None:
            hook(raw, reason)
        else:
            self.log.debug("%s: rejected %s from %s:%s: %r", self.name, raw.name, raw.sender_ip, raw.sender_port,
                           reason)

    def takeover(self, previous: Backend) -> None:
        """Adopt what `previous` (a broken instance of the same section) held; called before `start`.

        The runner calls it on the instance that replaces a failed one, after
        `previous.abandon()`. The default adopts nothing. A backend whose
        `close` emits accumulated state (agg's open intervals) takes that
        state over here, so that a restart neither loses nor repeats it.
        """

    def abandon(self) -> None:
        """End an instance that failed and is being replaced; its state may be taken over by the replacement.

        Release files, sockets and threads as `close` does, but emit nothing
        the replacement will emit (the default is `close`; agg overrides it).
        """
        self.close()

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

    def sockets(self) -> list[Any]:
        """The datagram sockets it reads, so the server can report the kernel's drops on them."""
        return []

    def describe(self) -> str:
        """Where it listens, for logs and /status (e.g. udp://127.0.0.1:20402)."""
        return self.name

    def counters(self) -> dict[str, float]:
        """received, malformed, bytes and the like."""
        return {}
