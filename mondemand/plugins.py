"""`PluginHost`: discover plugins through entry points and collect the types they register.

Entry points are loaded one at a time, and each hook implementation is called
on its own, so one broken plugin is reported and the others still load (plain
`load_setuptools_entrypoints` stops at the first import error, and a raising
hook stops a pluggy broadcast). Pluggy is used at start-up only.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import Distribution, EntryPoint, PackageNotFoundError, entry_points, requires
from typing import Any

import pluggy

from mondemand import DISTRIBUTION, hookspecs

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


@dataclass(frozen=True)
class MissingDependency:
    """A listener or backend type that cannot be used because a module it imports is not installed."""

    kind: str
    type_name: str
    module: str
    hint: str

    def __str__(self) -> str:
        return f"{self.kind} type {self.type_name!r} needs the {self.module} module: {self.hint}"


_REQ_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_REQ_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def install_hint(module: str, dist: Distribution | None = None) -> str:
    """The `pip install` that provides `module`: a mondemand-server extra, else the plugin's own requirement."""
    wanted = _normalize(module.partition(".")[0])
    try:
        own = requires(DISTRIBUTION) or []
    except PackageNotFoundError:
        own = []
    for req in own:
        name, extra = _REQ_NAME.match(req), _REQ_EXTRA.search(req)
        if name and extra and _normalize(name.group(1)) == wanted:
            return f"pip install '{DISTRIBUTION}[{extra.group(1)}]'"
    for req in (dist.requires or []) if dist is not None else []:
        name = _REQ_NAME.match(req)
        if name and _normalize(name.group(1)) == wanted:
            return f"pip install '{req.partition(';')[0].strip()}'"
    return f"pip install {module.partition('.')[0]}"


def missing_modules(modules: Iterable[str]) -> list[str]:
    """Those of `modules` that cannot be imported (not installed, or blocked by a None in sys.modules)."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing


@dataclass
class PluginHost:
    """A pluggy manager plus the listener and backend types plugins registered."""

    pm: pluggy.PluginManager = field(default_factory=lambda: _new_manager())
    listener_types: dict[str, type] = field(default_factory=dict)
    backend_types: dict[str, type] = field(default_factory=dict)
    section_types: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    problems: list[PluginProblem] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)
    #: "backend:rrd" -> why that type is missing and how to install it.
    unavailable: dict[str, MissingDependency] = field(default_factory=dict)
    #: Log each problem as it is found; the command-line tools turn this off and print them once themselves.
    log_problems: bool = True
    _dists: dict[str, Distribution | None] = field(default_factory=dict, repr=False)

    @classmethod
    def discover(
        cls, *, builtins_only: bool = False, blocked: Iterable[str] = (), log_problems: bool = True
    ) -> PluginHost:
        """Load every entry point of the plugin groups (only mondemand's own with `builtins_only`).

        Names in `blocked` and in $MONDEMAND_DISABLE_PLUGINS (comma-separated)
        are skipped.
        """
        host = cls(log_problems=log_problems)
        skip = set(blocked) | {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
        seen: set[tuple[str, str, str]] = set()
        for group in ENTRY_POINT_GROUPS:
            for ep in entry_points(group=group):
                if ep.name in skip or (builtins_only and not _is_builtin(ep)) or (group, ep.name, ep.value) in seen:
                    continue  # a stale *.egg-info beside the installed metadata lists the same entry point again
                seen.add((group, ep.name, ep.value))
                host.load_entry_point(ep)
        host.collect_types()
        return host

    def load_entry_point(self, ep: EntryPoint) -> None:
        """Import and register one entry point, recording a problem instead of raising."""
        label = f"{ep.group}:{ep.name}"
        dist = getattr(ep, "dist", None)
        self._dists[label] = dist
        try:
            plugin = ep.load()
        except ImportError as exc:
            missing = _missing_dependency(ep, exc, dist)
            if missing is None:
                self._problem(label, f"failed to load {ep.value}: {exc!r}")
            else:
                self.unavailable[f"{missing.kind}:{missing.type_name}"] = missing
                self._problem(label, str(missing))
            return
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
                absent = missing_modules(getattr(cls, "requires_modules", ()))
                if absent:
                    missing = MissingDependency(kind, type_name, absent[0],
                                                install_hint(absent[0], self._dists.get(plugin)))
                    self.unavailable[f"{kind}:{type_name}"] = missing
                    self._problem(plugin, str(missing))
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
        if self.log_problems:
            log.error("%s", problem)


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("mondemand")
    pm.add_hookspecs(hookspecs)
    return pm


_KINDS = {"mondemand.listeners": "listener", "mondemand.backends": "backend"}


def _missing_dependency(ep: EntryPoint, exc: ImportError, dist: Distribution | None) -> MissingDependency | None:
    """The dependency an entry point's import lacked; None when the plugin's own module is what is missing."""
    module = getattr(exc, "name", None)
    if not isinstance(exc, ModuleNotFoundError) or not module or ep.group not in _KINDS:
        return None
    if module.partition(".")[0] == ep.module.partition(".")[0]:  # the plugin's own package is broken
        return None
    return MissingDependency(_KINDS[ep.group], ep.name, module, install_hint(module, dist))


def _is_builtin(ep: EntryPoint) -> bool:
    return ep.value.startswith("mondemand.")
