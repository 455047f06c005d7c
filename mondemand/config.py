"""Load and validate `routes.ini`.

Sections: `[server]`, `[http]`, `[listener:NAME]`, `[backend:NAME]` and
`[route:NAME]`. Each listener and backend section names a registered `type`
whose declared options validate the rest of the section. Every problem is
collected and reported together, each naming the file, section and key.
"""

from __future__ import annotations

import configparser
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mondemand.httplimits import check_tls, is_loopback, limit_options
from mondemand.options import DAY, GIB, TIB, Option, parse_options, split_list
from mondemand.plugins import PluginHost
from mondemand.portcheck import udp_conflicts
from mondemand.router import Route
from mondemand.tenants import TENANT_OPTIONS, TenantSpec, build_table, parse_inline, read_keys_file

SERVER_OPTIONS = (
    Option("log_level", "str", "info", choices=("debug", "info", "warning", "error"), help="logging threshold"),
    Option("hostname", "str", None, help="host name used on the server's own stats (default: this machine's)"),
    Option("stats_interval", "duration", 60.0, minimum=0.05, maximum=DAY, help="self-metrics period"),
    Option("stats_prog_id", "str", "mondemand_server", help="prog_id of the self-metrics"),
    Option("stats_channel", "address", None, help="also send self-metrics to this LWES host:port"),
    Option("drain_timeout", "duration", 30.0, maximum=DAY, help="how long shutdown waits for each backend's queue"),
    Option("workers", "bool", True,
           help="run backends in worker processes (their `process` option); false keeps all in one process"),
    Option("worker_nice", "int", 5, minimum=0, maximum=19,
           help="niceness added to worker processes, so that the receiving main process wins the CPU"),
    Option("worker_queue_bytes", "size", 16 << 20, minimum=1 << 16, maximum=64 * GIB,
           help="bytes queued in the main process for one worker before its batches are dropped"),
    Option("memory_budget", "size", 1 << 30, minimum=1, maximum=TIB,
           help="most bytes all backend queues together may hold (the sum of their queue_bytes)"),
)
HTTP_OPTIONS = (
    Option("address", "str", "127.0.0.1", help="bind address of the status/HTTP port (loopback by default)"),
    Option("port", "port", 20602, help="port of /status and the plugins' HTTP resources; 0 = any free port"),
    *limit_options(),
)
#: Keys every backend section accepts besides its type's own.
RUNNER_OPTIONS = (
    Option("type", "str", required=True),
    Option("queue_size", "int", 100_000, minimum=1, help="events queued before this backend drops"),
    Option("queue_bytes", "size", 64 << 20, minimum=1 << 20, maximum=64 * GIB,
           help="bytes queued (datagrams plus a fixed overhead per event) before this backend drops"),
    Option("batch_size", "int", 1000, minimum=1, help="most events handed to the backend at once"),
    Option("flush_interval", "duration", 1.0, minimum=0.01, maximum=DAY, help="period of the backend's flush"),
    Option("backoff_min", "duration", 0.1, maximum=DAY, help="first wait before restarting a failed backend"),
    Option("backoff_max", "duration", 30.0, maximum=DAY, help="longest wait between restarts"),
    Option("process", "str", None,
           help="worker process to run in: backends naming the same one share it; main = the main process"),
)
ROUTE_OPTIONS = (
    Option("events", "list", required=True, help="event names, globs, or * for every event"),
    Option("backends", "list", required=True, help="backend sections that receive the matching events"),
    Option("listeners", "list", (), help="only events from these listeners (default: all)"),
    Option("stop", "bool", False, help="later routes do not see events this route matched"),
)
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """An invalid configuration; `problems` holds one line per mistake."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class PluginSection:
    """A `[listener:NAME]` or `[backend:NAME]` section, validated against its type."""

    kind: str
    name: str
    type_name: str
    cls: type
    options: dict[str, Any]
    runner: dict[str, Any] = field(default_factory=dict)


@dataclass
class ServerConfig:
    """Everything `routes.ini` says, validated."""

    path: Path
    server: dict[str, Any]
    http: dict[str, Any] | None
    listeners: dict[str, PluginSection]
    backends: dict[str, PluginSection]
    routes: list[Route]
    warnings: list[str] = field(default_factory=list)
    #: Plugin-declared sections (`register_section_types`): kind -> NAME -> validated options.
    sections: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: `[tenant:NAME]` sections (service mode, mondemand/tenants.py); empty: single-tenant, as before.
    tenants: dict[str, TenantSpec] = field(default_factory=dict)


def load_config(path: str | os.PathLike[str], host: PluginHost) -> ServerConfig:
    """Read and validate `path`; raises ConfigError listing every problem."""
    path = Path(path)
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(";", "#"), default_section="__no_defaults__", strict=True
    )
    try:
        with path.open(encoding="utf-8") as fh:
            parser.read_file(fh)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    except configparser.Error as exc:
        raise ConfigError([f"{path}: {' '.join(str(exc).split())}"]) from None
    return _Loader(path, parser, host).load()


class _Loader:
    def __init__(self, path: Path, parser: configparser.ConfigParser, host: PluginHost) -> None:
        self.path = path
        self.parser = parser
        self.host = host
        self.problems: list[str] = []
        #: "backend:NAME" sections already reported as invalid, so routes naming them are not reported again.
        self.invalid: set[str] = set()
        self.route_sections = 0

    def problem(self, section: str, key: str | None, message: str) -> None:
        where = f"[{section}] {key}" if key else f"[{section}]"
        self.problems.append(f"{self.path.name}: {where}: {message}")

    def raw(self, section: str) -> dict[str, str]:
        values = {}
        for key, value in self.parser.items(section):
            values[key] = self.expand(section, key, value)
        return values

    def expand(self, section: str, key: str, value: str) -> str:
        def sub(m: re.Match[str]) -> str:
            if m.group(1) not in os.environ:
                self.problem(section, key, f"environment variable {m.group(1)} is not set")
                return ""
            return os.environ[m.group(1)]

        return _ENV.sub(sub, value)

    def options(self, section: str, schema: tuple[Option, ...], raw: dict[str, str]) -> dict[str, Any]:
        values, problems = parse_options(schema, raw)
        for p in problems:
            self.problem(section, p.key, p.message)
        if "tls_certificate" in values or "tls_key" in values:  # an HTTP surface (mondemand/httplimits.py)
            for key, message in check_tls(values, self.path.parent.resolve()):
                self.problem(section, key, message)
        return values

    def load(self) -> ServerConfig:
        server: dict[str, Any] | None = None
        http: dict[str, Any] | None = None
        listeners: dict[str, PluginSection] = {}
        backends: dict[str, PluginSection] = {}
        routes: list[Route] = []
        tenants: dict[str, TenantSpec] = {}
        sections: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in self.host.section_types}
        for section in self.parser.sections():
            kind, sep, name = section.partition(":")
            kind = kind.strip()
            name = name.strip()
            if kind in ("server", "http") and not sep:
                values = self.options(section, SERVER_OPTIONS if kind == "server" else HTTP_OPTIONS, self.raw(section))
                if kind == "server":
                    server = values
                else:
                    http = values
                continue
            if kind == "tenant" and sep and _NAME.match(name):
                spec = self.tenant_section(section, name)
                if spec is not None:
                    tenants[name] = spec
                continue
            known = ("listener", "backend", "route", "tenant", *self.host.section_types)
            if kind not in known or not sep:
                extra = "".join(f", [{k}:NAME]" for k in sorted(self.host.section_types))
                self.problem(section, None, "unknown section; expected [server], [http], [listener:NAME], "
                             f"[backend:NAME], [route:NAME], [tenant:NAME]{extra}")
                continue
            if not _NAME.match(name):
                self.problem(section, None, "names may hold only letters, digits, '_', '.' and '-'")
                continue
            if kind in self.host.section_types:
                sections[kind][name] = self.options(section, self.host.section_types[kind], self.raw(section))
                continue
            if kind == "route":
                self.route_sections += 1
                values = self.options(section, ROUTE_OPTIONS, self.raw(section))
                # A key that failed to parse is missing from values (and reported): no Route then.
                if all(values.get(o.name) is not None for o in ROUTE_OPTIONS):
                    routes.append(Route(name, tuple(values["events"]), tuple(values["backends"]),
                                        tuple(values["listeners"]), values["stop"]))
                continue
            parsed = self.plugin_section(section, kind, name)
            if parsed is not None:
                (listeners if kind == "listener" else backends)[name] = parsed
            else:
                self.invalid.add(f"{kind}:{name}")

        if server is None:
            server = self.options("server", SERVER_OPTIONS, {})
        if not server.get("hostname"):
            server["hostname"] = socket.gethostname()
        if not listeners:
            self.problems.append(f"{self.path.name}: no [listener:NAME] section; the server would receive nothing")
        warnings = self.check_routes(routes, listeners, backends)
        self.check_ports(listeners)
        self.check_budget(server, backends, len(tenants))
        for parsed in (*listeners.values(), *backends.values()):
            self.check_across(parsed, sections)
        for name, parsed in listeners.items():
            if parsed.options.get("signatures", "off") != "off" and not tenants:
                self.problem(f"listener:{name}", "signatures", "needs [tenant:NAME] sections whose keys_file holds "
                             "hmac: keys")
        for name, parsed in listeners.items():
            tenant = parsed.options.get("tenant")
            if not tenant:
                continue
            if tenant not in tenants:
                self.problem(f"listener:{name}", "tenant", f"no [tenant:{tenant}] section")
            elif parsed.options.get("signatures", "off") != "off":
                self.problem(f"listener:{name}", "tenant", "excludes signatures: a signed event names its own "
                             "tenant")
        for name, spec in tenants.items():
            for rule in spec.alert_rules:
                if rule not in sections.get("alert", {}):
                    self.problem(f"tenant:{name}", "alert_rules", f"no [alert:{rule}] section")
        if tenants:
            warnings += self.check_clear_keys(http, listeners, backends)
            _table, problems = build_table(tenants)
            self.problems += [f"{self.path.name}: {p}" for p in problems]
        if self.problems:
            raise ConfigError(self.problems)
        return ServerConfig(self.path, server, http, listeners, backends, routes, warnings, sections, tenants)

    def check_clear_keys(self, http: dict[str, Any] | None, listeners: dict[str, PluginSection],
                         backends: dict[str, PluginSection]) -> list[str]:
        """Warnings for surfaces that take keys (`carries_keys`, the status port) in plain HTTP off loopback."""
        surfaces = [("http", http)] if http is not None else []
        surfaces += [(f"{p.kind}:{n}", p.options) for group in (listeners, backends) for n, p in group.items()
                     if getattr(p.cls, "carries_keys", False)]
        found = []
        for section, options in surfaces:
            address = str(options.get("address") or "")
            if "tls_certificate" in options and not options["tls_certificate"] and not is_loopback(address):
                found.append(f"{self.path.name}: [{section}] listens on {address} without TLS (tls_certificate) "
                             "while tenants' keys cross it in clear text")
        return found

    def tenant_section(self, section: str, name: str) -> TenantSpec | None:
        """A `[tenant:NAME]` section: its options, its inline key hashes and its keys file (read to check it)."""
        values = self.options(section, TENANT_OPTIONS, self.raw(section))
        if len(values) < len(TENANT_OPTIONS):
            return None
        inline, problems = parse_inline(list(values["keys"]))
        for p in problems:
            self.problem(section, "keys", p)
        keys_file = None
        if values["keys_file"]:
            keys_file = Path(values["keys_file"])
            if not keys_file.is_absolute():
                keys_file = self.path.parent.resolve() / keys_file
            _entries, file_problems = read_keys_file(keys_file)
            for p in file_problems:
                self.problem(section, "keys_file", p)
        elif not inline:
            self.problem(section, "keys_file", "a tenant needs keys: keys_file or keys")
        if problems:
            return None
        return TenantSpec(name, keys_file, tuple(inline), values["admin"], values["max_series"],
                          values["max_events_per_second"], values["max_bytes_per_second"],
                          values["max_log_lines_per_minute"], tuple(values["alert_rules"]))

    def plugin_section(self, section: str, kind: str, name: str) -> PluginSection | None:
        raw = self.raw(section)
        types = self.host.listener_types if kind == "listener" else self.host.backend_types
        type_name = raw.pop("type", "").strip()
        if not type_name:
            self.problem(section, "type", f"required option missing (known {kind} types: {', '.join(sorted(types))})")
            return None
        cls = types.get(type_name)
        if cls is None:
            missing = self.host.unavailable.get(f"{kind}:{type_name}")
            if missing is not None:
                self.problem(section, "type", str(missing))
            else:
                self.problem(section, "type", f"unknown {kind} type {type_name!r} (known: {', '.join(sorted(types))})")
            return None
        runner: dict[str, Any] = {}
        if kind == "backend":
            common = {o.name for o in RUNNER_OPTIONS} - {"type"}
            runner_raw = {k: raw.pop(k) for k in list(raw) if k in common}
            runner = self.options(section, RUNNER_OPTIONS[1:], runner_raw)
        options = self.options(section, tuple(getattr(cls, "options", ())), raw)
        check = getattr(cls, "check_options", None)
        if check is not None and set(options) >= {o.name for o in getattr(cls, "options", ())}:
            try:
                found = list(check(options))
            except Exception as exc:  # a plugin's bug must not turn --check into a traceback
                self.problem(section, None, f"{type_name}.check_options failed: {exc!r}")
                found = []
            for p in found:
                self.problem(section, p.key, p.message)
        return PluginSection(kind, name, type_name, cls, options, runner)

    def check_ports(self, listeners: dict[str, PluginSection]) -> None:
        """Two listeners receiving on one UDP port (mondemand/portcheck.py) is an error naming both."""
        endpoints = {}
        for name, section in listeners.items():
            endpoint = getattr(section.cls, "udp_endpoint", None)
            if endpoint is None or not {"address", "port"} <= set(section.options):
                continue  # not a UDP listener, or its address/port is reported already
            endpoints[name] = endpoint(section.options)
        for first, second, reason in udp_conflicts(endpoints):
            self.problem(f"listener:{second}", "port", f"[listener:{first}] and [listener:{second}] "
                         f"use the same UDP port: {reason}")

    def check_budget(self, server: dict[str, Any], backends: dict[str, PluginSection], tenants: int = 0) -> None:
        """The backends' queue_bytes, and the main process's queue for each worker, must fit in memory_budget.

        In service mode a backend copied per tenant (mondemand/tenancy.py) has a queue per copy too.
        """
        from mondemand.tenancy import per_tenant

        budget = server.get("memory_budget")
        sizes = {name: b.runner.get("queue_bytes") for name, b in backends.items()}
        if budget is None or any(v is None for v in sizes.values()):
            return  # a bad value is reported already
        copies = {name: 1 + tenants if tenants and per_tenant(b) else 1 for name, b in backends.items()}
        total = sum(size * copies[name] for name, size in sizes.items())
        parts = [f"{name} {_mib(size)}" + (f" x {copies[name]} (one per tenant and the original)"
                                            if copies[name] > 1 else "") for name, size in sizes.items()]
        if server.get("workers", True):
            processes = {b.runner.get("process") or getattr(b.cls, "default_process", None) or name
                         for name, b in backends.items()} - {"main"}
            link = server.get("worker_queue_bytes") or 0
            total += link * len(processes)
            if processes:
                parts.append(f"{len(processes)} worker queues of {_mib(link)}")
        if total > budget:
            self.problem("server", "memory_budget", f"is {_mib(budget)} but the queues add up to "
                         f"{_mib(total)} ({', '.join(parts)}); raise it or lower queue_bytes")
    def check_across(self, parsed: PluginSection, sections: dict[str, dict[str, dict[str, Any]]]) -> None:
        """The type's `check_config`: what its start would refuse across sections (alerts -> notifiers)."""
        check = getattr(parsed.cls, "check_config", None)
        if check is None or {o.name for o in getattr(parsed.cls, "options", ())} - set(parsed.options):
            return  # no check, or the section's own options are already reported
        try:
            found = check(parsed.name, parsed.options, sections, self.path.parent.resolve())
        except Exception as exc:
            self.problem(f"{parsed.kind}:{parsed.name}", None, f"check_config of type {parsed.type_name!r} raised "
                         f"{exc!r}")
            return
        for p in found:
            self.problem(p.section, p.key, p.message)

    def check_routes(
        self, routes: list[Route], listeners: dict[str, PluginSection], backends: dict[str, PluginSection]
    ) -> list[str]:
        used: set[str] = set()
        for route in routes:
            section = f"route:{route.name}"
            for b in route.backends:
                if b not in backends and f"backend:{b}" not in self.invalid:
                    self.problem(section, "backends", f"no [backend:{b}] section")
                used.add(b)
            for lname in route.listeners:
                if lname not in listeners and f"listener:{lname}" not in self.invalid:
                    self.problem(section, "listeners", f"no [listener:{lname}] section")
            if not route.events:
                self.problem(section, "events", "empty")
            if not route.backends:
                self.problem(section, "backends", "empty")
        if not routes and not self.route_sections:
            self.problems.append(f"{self.path.name}: no [route:NAME] section; nothing would be delivered")
        return [f"{self.path.name}: [backend:{b}] is not used by any route" for b in backends if b not in used]


def _mib(size: int) -> str:
    return f"{size / (1 << 20):g} MiB"


__all__ = ["ConfigError", "PluginSection", "ServerConfig", "load_config", "split_list"]
