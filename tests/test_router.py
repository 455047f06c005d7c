"""`Router`: which backends get which events, and what is counted."""

from __future__ import annotations

import pytest

from mondemand.envelope import RawEvent
from mondemand.lwes import Event, LwesType, encode
from mondemand.plugin_api import Backend, ServerContext
from mondemand.router import Route, Router
from mondemand.runner import BackendRunner


class Recorder(Backend):
    """Keeps the names and `seq` values of what it handles, in a list the test owns."""

    def __init__(self, name: str, seen: list[tuple[str, int]]) -> None:
        super().__init__(name, {}, ServerContext())
        self.seen = seen

    def handle(self, batch: list[RawEvent]) -> None:
        self.seen.extend((raw.name, raw.event["seq"]) for raw in batch)


def runners(*names: str) -> dict[str, BackendRunner]:
    """Runners that are never started: what the router queues stays visible as `depth`."""
    return {name: BackendRunner(name, lambda name=name: Recorder(name, [])) for name in names}


def raw(name: str, seq: int = 0, listener: str = "main") -> RawEvent:
    return RawEvent(encode(Event(name).set("seq", LwesType.UINT32, seq)), 1, "127.0.0.1", 9, listener)


def names_of(targets: tuple[BackendRunner, ...]) -> list[str]:
    return [r.name for r in targets]


def test_exact_names():
    router = Router([Route("r", ("MonDemand::StatsMsg",), ("a",))], runners("a"))
    assert names_of(router.targets("MonDemand::StatsMsg", "main")) == ["a"]
    assert names_of(router.targets("MonDemand::StatsMsgX", "main")) == []
    assert names_of(router.targets("MonDemand::LogMsg", "main")) == []


def test_star_matches_every_event_mondemand_or_not():
    router = Router([Route("all", ("*",), ("a",))], runners("a"))
    for name in ("MonDemand::StatsMsg", "System::Heartbeat", "Anything"):
        assert names_of(router.targets(name, "main")) == ["a"]


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("MonDemand::*", ["MonDemand::StatsMsg", "MonDemand::LogMsg"], ["System::Heartbeat", "mondemand::StatsMsg"]),
        ("MonDemand::?ogMsg", ["MonDemand::LogMsg"], ["MonDemand::LogMsgs", "MonDemand::StatsMsg"]),
        ("*::Heartbeat", ["System::Heartbeat"], ["System::Startup"]),
        ("Ad::[CI]*", ["Ad::Click", "Ad::Impression"], ["Ad::View"]),
    ],
)
def test_globs(pattern, matching, not_matching):
    router = Router([Route("r", (pattern,), ("a",))], runners("a"))
    for name in matching:
        assert names_of(router.targets(name)) == ["a"], name
    for name in not_matching:
        assert names_of(router.targets(name)) == [], name


def test_every_matching_route_delivers_and_a_backend_gets_an_event_once():
    routes = [
        Route("stats", ("MonDemand::StatsMsg",), ("a", "b")),
        Route("mondemand", ("MonDemand::*",), ("b", "c")),
        Route("all", ("*",), ("a",)),
    ]
    found = runners("a", "b", "c")
    router = Router(routes, found)
    assert names_of(router.targets("MonDemand::StatsMsg")) == ["a", "b", "c"]
    assert names_of(router.targets("MonDemand::LogMsg")) == ["b", "c", "a"]
    assert names_of(router.targets("Other")) == ["a"]
    deliver = router.dispatcher("main")
    deliver([raw("MonDemand::StatsMsg")])
    assert {name: r.depth for name, r in found.items()} == {"a": 1, "b": 1, "c": 1}


def test_stop_hides_matched_events_from_later_routes():
    routes = [
        Route("stats", ("MonDemand::StatsMsg",), ("a",), stop=True),
        Route("rest", ("*",), ("b",)),
    ]
    router = Router(routes, runners("a", "b"))
    assert names_of(router.targets("MonDemand::StatsMsg")) == ["a"]
    assert names_of(router.targets("MonDemand::LogMsg")) == ["b"]


def test_listeners_restrict_a_route():
    routes = [
        Route("udp-only", ("*",), ("a",), listeners=("udp",)),
        Route("http-stats", ("MonDemand::StatsMsg",), ("b",), listeners=("http", "other")),
    ]
    found = runners("a", "b")
    router = Router(routes, found)
    assert names_of(router.targets("MonDemand::StatsMsg", "udp")) == ["a"]
    assert names_of(router.targets("MonDemand::StatsMsg", "http")) == ["b"]
    assert names_of(router.targets("MonDemand::StatsMsg", "internal")) == []
    router.dispatcher("udp")([raw("MonDemand::StatsMsg", listener="udp")])
    router.dispatcher("http")([raw("MonDemand::StatsMsg", listener="http"), raw("MonDemand::LogMsg")])
    assert (found["a"].depth, found["b"].depth) == (1, 1)


def test_unrouted_names_are_counted():
    found = runners("a")
    router = Router([Route("stats", ("MonDemand::StatsMsg",), ("a",))], found)
    deliver = router.dispatcher("main")
    deliver([raw("MonDemand::StatsMsg"), raw("Nobody::Wants"), raw("Nobody::Wants"), raw("Also::Unwanted")])
    deliver([raw("MonDemand::StatsMsg"), raw("Nobody::Wants")])
    router.dispatcher("other")([raw("Nobody::Wants")])
    assert found["a"].depth == 2
    assert router.totals() == {
        "events_received": 7,
        "events_dispatched": 2,
        "no_route": 5,
        "decode_errors": 0,
        "dispatcher_errors": 5,
    }
    assert router.counters_for("main").no_route == 4
    assert router.counters_for("other").no_route == 1


def test_events_reach_started_backends_in_order():
    seen_a: list[tuple[str, int]] = []
    seen_b: list[tuple[str, int]] = []
    found = {
        "a": BackendRunner("a", lambda: Recorder("a", seen_a)),
        "b": BackendRunner("b", lambda: Recorder("b", seen_b)),
    }
    routes = [Route("stats", ("MonDemand::StatsMsg",), ("a",)), Route("all", ("*",), ("b",))]
    router = Router(routes, found)
    for runner in found.values():
        runner.start()
    deliver = router.dispatcher("main")
    batch = [raw("MonDemand::StatsMsg" if i % 3 else "MonDemand::LogMsg", i) for i in range(30)]
    deliver(batch[:10])
    deliver(batch[10:])
    for runner in found.values():
        runner.stop(timeout=10)
    assert seen_a == [("MonDemand::StatsMsg", i) for i in range(30) if i % 3]
    # b gets every event; within one name the arrival order is kept.
    assert sorted(seen_b, key=lambda item: item[1]) == [(r.name, i) for i, r in enumerate(batch)]
    for name in ("MonDemand::StatsMsg", "MonDemand::LogMsg"):
        assert [i for n, i in seen_b if n == name] == [i for i, r in enumerate(batch) if r.name == name]
