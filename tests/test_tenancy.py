"""mondemand/tenancy.py: per-tenant copies and their paths, tenant routers, contexts, the tenant over the link."""

from __future__ import annotations

from mondemand.envelope import RawEvent
from mondemand.ipc import decode_batch, encode_batch
from mondemand.lwes import Event, LwesType, encode
from mondemand.plugin_api import ServerContext
from mondemand.router import Route, Router
from mondemand.tenancy import TenantRouting, tenant_context, tenant_of, tenant_options


class Collect:
    """A router target that keeps what it is offered."""

    def __init__(self) -> None:
        self.events: list[RawEvent] = []

    def offer_many(self, events: list[RawEvent]) -> int:
        self.events += events
        return len(events)


def raw(tenant: str = "", name: str = "Demo::E") -> RawEvent:
    event = RawEvent(encode(Event(name, {"n": (LwesType.INT32, 1)})), 1, "127.0.0.1", 9, "udp")
    event.tenant = tenant
    return event


def test_paths_move_under_the_tenant_folder():
    options = {"root": "var/stats", "graphite_root": "", "path": "-", "state_file": "../var/alerts.json",
               "checkpoint": "auto", "other": "var/keep"}
    assert tenant_options(options, "acme") == {
        "root": "var/stats/acme", "graphite_root": "", "path": "-", "state_file": "../var/acme/alerts.json",
        "checkpoint": "auto", "other": "var/keep"}
    assert tenant_options({"path": "out/events.txt", "checkpoint": "off"}, "b") == {
        "path": "out/b/events.txt", "checkpoint": "off"}
    assert tenant_of("agg@acme") == "acme" and tenant_of("agg") == ""


def test_each_tenant_reaches_only_its_copies_and_untenanted_events_the_originals():
    targets = {name: Collect() for name in ("files", "files@a", "files@b", "fwd")}
    routes = [Route("r", ("*",), ("files", "fwd"))]
    router = Router(routes, targets)
    tenant_routes = {t: [Route("r", ("*",), (f"files@{t}", "fwd"))] for t in ("a", "b")}
    routing = TenantRouting(router, tenant_routes, targets)
    deliver = routing.dispatcher("udp")
    deliver([raw("a"), raw(""), raw("b"), raw("a")])
    deliver([raw("b")])
    deliver([raw("nobody")])
    assert [e.tenant for e in targets["files@a"].events] == ["a", "a"]
    assert [e.tenant for e in targets["files@b"].events] == ["b", "b"]
    assert [e.tenant for e in targets["files"].events] == [""]
    assert sorted(e.tenant for e in targets["fwd"].events) == ["", "a", "a", "b", "b"]
    totals = routing.totals()
    assert totals["events_received"] == 5 and totals["unknown_tenant"] == 1 and totals["dispatcher_errors"] == 1


def test_without_tenants_the_dispatcher_is_the_routers_own():
    targets = {"s": Collect()}
    router = Router([Route("r", ("*",), ("s",))], targets)
    deliver = TenantRouting(router, {}, targets).dispatcher("udp")
    deliver([raw()])
    assert len(targets["s"].events) == 1 and "unknown_tenant" not in TenantRouting(router, {}, targets).totals()


def test_a_copys_context_injects_as_its_tenant_and_serves_under_tenant_prefix():
    injected: list[RawEvent] = []
    context = ServerContext(inject=injected.append)
    copy = tenant_context("alerts@acme", context)
    assert tenant_context("alerts", context) is context
    copy.inject(raw(""))
    assert injected[0].tenant == "acme"
    copy.http_routes["/alerts"] = lambda path, query: (200, {"path": path})
    assert list(context.http_routes) == ["/tenant/acme/alerts"] and list(copy.http_routes) == ["/alerts"]
    assert context.http_routes["/tenant/acme/alerts"]("/tenant/acme/alerts/x", {}) == (200, {"path": "/alerts/x"})
    del copy.http_routes["/alerts"]
    assert not context.http_routes


def test_the_tenant_travels_over_the_worker_link():
    events = [raw("acme"), raw("")]
    back = decode_batch(encode_batch("Demo::E", events))
    assert [e.tenant for e in back] == ["acme", ""] and back[0].data == events[0].data
