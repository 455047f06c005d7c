"""The plugin hooks. They run at start-up only, never on the per-event path.

A plugin is a module (or object) with `@mondemand.hookimpl` functions,
announced through the `mondemand.listeners` or `mondemand.backends` entry-point
groups; the built-in listeners and backends register the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("mondemand")
hookimpl = pluggy.HookimplMarker("mondemand")


@hookspec
def register_listener_types(register: Callable[[str, type], None]) -> None:
    """Call `register(type_name, ListenerClass)` for each listener type the plugin provides."""


@hookspec
def register_backend_types(register: Callable[[str, type], None]) -> None:
    """Call `register(type_name, BackendClass)` for each backend type the plugin provides."""


@hookspec
def register_section_types(register: Callable[[str, tuple[Any, ...]], None]) -> None:
    """Call `register(kind, options)` so that `routes.ini` accepts `[kind:NAME]` sections validated by `options`.

    The validated sections reach plugins as `ServerContext.sections[kind][NAME]`
    (the alerts plugin declares `[alert:NAME]` this way).
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add click subcommands to the `mondemand` command group."""


@hookspec
def server_started(server: Any) -> None:
    """The server is receiving: every listener and backend has started."""


@hookspec
def server_stopping(server: Any) -> None:
    """The server is about to stop listening and drain its backends."""
