"""`PluginHost`: discover plugins through entry points and collect the types they register.

Entry points are loaded one at a time, and each hook implementation is called
on its own, so one broken plugin is reported and the others still load (plain
`load_setuptools_entrypoints` stops at the first import error, and a raising
hook stops a pluggy broadcast). Pluggy is used at start-up only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from mondemand import hookspecs

log = logging.getLogger("mondemand.plugins")

ENTRY_POINT_GROUPS = ("mondemand.listeners", "mondemand.backends")
DISABLE_ENV = "MONDEMAND_DISABLE_PLUGINS"


@dataclass
class PluginProblem:
    """A plugin that failed to load or to register; reported, never fatal."""

    plugin: str
    message: str

    def __str__(self) -> str:
        return f"plugin {self.plugin}: {self.message}"


@dataclass
class PluginHost:
    """A pluggy manager plus the listener and backend types plugins registered."""

    pm: pluggy.PluginManager = field(default_factory=lambda: _new_manager())
    listener_types: dict[str, type] = field(default_factory=dict)
    backend_types: dict[str, type] = field(default_factory=dict)
    section_types: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    problems: list[PluginProblem] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)

    @classmethod
    def discover(cls, *, builtins_only: bool = False, blocked: Iterable[str] = ()) -> PluginHost:
        """Load every entry point of the plugin groups (only mondemand's own with `builtins_only`).

        Names in `blocked` and in $MONDEMAND_DISABLE_PLUGINS (comma-separated)
        are skipped.
        """
        host = cls()
        skip = set(blocked) | {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
        for group in ENTRY_POINT_GROUPS:
            for ep in entry_points(group=group):
                if ep.name in skip or (builtins_only and not _is_builtin(ep)):
                    continue
                host.load_entry_point(ep)
        host.collect_types()
        return host

    def load_entry_point(self, ep: EntryPoint) -> None:
        """Import and register one entry point, recording a problem instead of raising."""
        label = f"{ep.group}:{ep.name}"
        try:
            plugin = ep.load()
        except Exception as exc:
            self._problem(label, f"failed to load {ep.value}: {exc!r}")
            return
        self.register(plugin, label)

    def register(self, plugin: Any, name: str) -> None:
        """Register a plugin object or module (tests use this to add in-process plugins)."""
        if self.pm.has_plugin(name) or self.pm.is_registered(plugin):
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            self._problem(name, f"rejected: {exc}")

    def collect_types(self) -> None:
        """Call the register hooks of each plugin separately and gather the types."""
        self._collect("register_listener_types", self.listener_types, "listener")
        self._collect("register_backend_types", self.backend_types, "backend")
        self._collect("register_section_types", self.section_types, "section")

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin, isolating failures."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as exc:
                self._problem(impl.plugin_name, f"{hook} raised {exc!r}")

    def _collect(self, hook: str, registry: dict[str, Any], kind: str) -> None:
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            plugin = impl.plugin_name

            def register(type_name: str, cls: Any, plugin: str = plugin) -> None:
                previous = self.origins.get(f"{kind}:{type_name}")
                if previous is not None and previous != plugin:
                    self._problem(plugin, f"{kind} type {type_name!r} is already provided by {previous}; ignored")
                    return
                registry[type_name] = cls
                self.origins[f"{kind}:{type_name}"] = plugin

            try:
                impl.function(register=register)
            except Exception as exc:
                self._problem(plugin, f"{hook} raised {exc!r}")

    def _problem(self, plugin: str, message: str) -> None:
        problem = PluginProblem(plugin, message)
        self.problems.append(problem)
        log.error("%s", problem)


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("mondemand")
    pm.add_hookspecs(hookspecs)
    return pm


def _is_builtin(ep: EntryPoint) -> bool:
    return ep.value.startswith("mondemand.")
