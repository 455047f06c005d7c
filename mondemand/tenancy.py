"""Isolation of tenants: each routed storage backend built once per tenant, each tenant routed to its own.

With `[tenant:NAME]` sections, every backend that stores or summarises
(a type with a `root`, `path`, `state_file` or `checkpoint` option, or one
that injects, as `agg` does) gets one copy per tenant, named `BACKEND@TENANT`,
whose paths are moved under the tenant's folder: `root = var/stats` becomes
`var/stats/TENANT`, `state_file = var/alerts.json` becomes
`var/TENANT/alerts.json`. Each tenant has a `Router` of its own over the same
routes with those copies in place of the originals, so a tenant's event only
reaches its own copies; the agg copy of a tenant summarises that tenant alone
and injects its aggregates as that tenant. Backends that forward (`lwes`) are
shared: they see the tenant on each event. The dashboard is shared too and keeps
one view per tenant behind a login (backends/dashboard/auth.py); `prometheus`
labels each series with its `tenant` and serves them to an admin key only.
Events without a tenant (listeners without keys or signatures) take the
original backends, exactly as without tenants.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

from mondemand.envelope import RawEvent
from mondemand.plugin_api import ServerContext
from mondemand.router import Route, Router

SEP = "@"
#: Options naming a directory: the tenant's name is appended.
DIR_OPTIONS = ("root", "graphite_root")
#: Options naming a file: the file moves into a folder named after the tenant beside it.
FILE_OPTIONS = ("path", "state_file", "checkpoint")
#: Backend types that handle tenants' events in one shared instance (they read `RawEvent.tenant`).
SHARED_TYPES = frozenset({"lwes", "sink", "dashboard", "prometheus"})


def tenant_of(backend: str) -> str:
    """The tenant of a backend copy's name (`agg@acme` -> `acme`), "" for an original."""
    return backend.partition(SEP)[2]


def per_tenant(section: Any) -> bool:
    """True when a backend section is copied per tenant (it stores files or injects)."""
    names = {o.name for o in getattr(section.cls, "options", ())}
    return bool(names & {*DIR_OPTIONS, *FILE_OPTIONS}) or bool(getattr(section.cls, "injects", False))


def tenant_options(options: dict[str, Any], tenant: str) -> dict[str, Any]:
    """A copy of a backend's options with every path moved under the tenant's folder."""
    out = dict(options)
    for key in DIR_OPTIONS:
        if out.get(key):
            out[key] = str(Path(out[key]) / tenant)
    for key in FILE_OPTIONS:
        value = out.get(key)
        if value and value not in ("-", "auto", "off"):
            path = Path(value)
            out[key] = str(path.parent / tenant / path.name)
    return out


def expand(config: Any) -> tuple[dict[str, Any], dict[str, list[Route]]]:
    """(every backend section including the tenant copies, each tenant's routes)."""
    backends = dict(config.backends)
    if not config.tenants:
        return backends, {}
    copied = {name for name, section in config.backends.items() if per_tenant(section)}
    routes: dict[str, list[Route]] = {}
    for tenant in config.tenants:
        for name in sorted(copied):
            section = config.backends[name]
            runner = dict(section.runner)
            runner.setdefault("process", None)
            if not runner["process"]:
                runner["process"] = getattr(section.cls, "default_process", None) or name
            options = tenant_options(section.options, tenant)
            rules = config.tenants[tenant].alert_rules
            if rules and "rules" in options and section.type_name == "alerts":
                options["rules"] = list(rules)  # the tenant's own rules, and through them its notifiers
            backends[f"{name}{SEP}{tenant}"] = dataclasses.replace(
                section, name=f"{name}{SEP}{tenant}", options=options, runner=runner)
        mine = []
        for route in config.routes:
            targets = tuple(f"{b}{SEP}{tenant}" if b in copied else b for b in route.backends
                            if b in copied or config.backends[b].type_name in SHARED_TYPES)
            mine.append(dataclasses.replace(route, backends=targets))
        routes[tenant] = mine
    return backends, routes


class _PrefixedRoutes(MutableMapping[str, Any]):
    """A tenant copy's view of the server's HTTP routes: what it registers lands under /tenant/NAME."""

    def __init__(self, routes: dict[str, Any], prefix: str) -> None:
        self.routes = routes
        self.prefix = prefix

    def __getitem__(self, key: str) -> Any:
        return self.routes[self.prefix + key]

    def __setitem__(self, key: str, value: Any) -> None:
        cut = len(self.prefix)
        self.routes[self.prefix + key] = lambda path, query: value(path[cut:], query)  # the handler sees its own path

    def __delitem__(self, key: str) -> None:
        del self.routes[self.prefix + key]

    def __iter__(self) -> Iterator[str]:
        return (k[len(self.prefix):] for k in list(self.routes) if k.startswith(self.prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def tenant_context(backend: str, context: ServerContext) -> ServerContext:
    """The context a backend copy gets: it injects as its tenant and serves HTTP under /tenant/NAME."""
    tenant = tenant_of(backend)
    if not tenant:
        return context
    inject = context.inject

    def inject_as_tenant(raw: RawEvent) -> None:
        raw.tenant = tenant
        inject(raw)

    return dataclasses.replace(context, inject=inject_as_tenant,
                               http_routes=_PrefixedRoutes(context.http_routes, f"/tenant/{tenant}"))  # type: ignore[arg-type]


class TenantRouting:
    """The per-tenant routers beside the server's own, and the dispatchers that choose between them."""

    def __init__(self, router: Router, routes: dict[str, list[Route]], targets: dict[str, Any]) -> None:
        self.router = router
        self.routers = {tenant: Router(tenant_routes, targets) for tenant, tenant_routes in routes.items()}
        self.unknown_tenant = 0

    def dispatcher(self, source: str) -> Callable[[list[RawEvent]], None]:
        """`deliver(batch)` for one source: the plain router's when there are no tenants."""
        plain = self.router.dispatcher(source)
        if not self.routers:
            return plain
        delivers = {tenant: r.dispatcher(source) for tenant, r in self.routers.items()}
        delivers[""] = plain

        def deliver(batch: list[RawEvent]) -> None:
            tenant = batch[0].tenant
            if all(raw.tenant == tenant for raw in batch):
                groups = {tenant: batch}
            else:
                groups = {}
                for raw in batch:
                    groups.setdefault(raw.tenant, []).append(raw)
            for tenant, events in groups.items():
                target = delivers.get(tenant)
                if target is None:
                    self.unknown_tenant += len(events)
                else:
                    target(events)

        return deliver

    def totals(self) -> dict[str, int]:
        """The router's totals plus every tenant router's."""
        totals = self.router.totals()
        for router in self.routers.values():
            for key, value in router.totals().items():
                if key != "decode_errors":
                    totals[key] += value
        if self.routers:
            totals["unknown_tenant"] = self.unknown_tenant  # cannot happen: listeners know only configured tenants
        totals["dispatcher_errors"] = totals["no_route"] + totals["decode_errors"] + self.unknown_tenant
        return totals


def http_access(tenants: Any, request: Any) -> Any:
    """None when the status port may answer `request`; else the 401 to send.

    With tenants every resource needs the admin key, except `/tenant/NAME/...`
    (a tenant copy's resources, such as its alerts), which that tenant's keys open too.
    """
    from mondemand.httpserve import request_key, unauthorized

    key = request_key(request)
    if tenants.is_internal(key):
        return None
    tenant = tenants.authenticate(key)
    if tenant is not None and tenants.specs[tenant].admin:
        return None
    parts = request.path.split("/")
    if tenant is not None and len(parts) > 2 and parts[1] == "tenant" and parts[2] == tenant:
        return None
    return unauthorized("an admin key" if tenant is None or parts[1:2] != ["tenant"] else "this tenant's key")
