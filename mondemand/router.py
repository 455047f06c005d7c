"""`Router`: fan each received event out to backends by event name.

A target is a `BackendRunner` (a backend in this process) or a
`mondemand.workers.RemoteTarget` (backends in a worker process); both take
batches with `offer_many`. Routes are evaluated in file order and every matching route delivers (a
backend gets an event once even when several routes name it). A route's
`events` are exact names, globs (`MonDemand::*`) or `*` for every event,
mondemand's or not. The name -> backends answer is cached, so the per-event
cost is one `peek_name` (done by the listener) and one dict lookup.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from mondemand.envelope import RawEvent
from mondemand.runner import BackendRunner

log = logging.getLogger("mondemand.router")
_name = attrgetter("name")

#: The five event names MonDemand clients send.
MONDEMAND_EVENTS = (
    "MonDemand::StatsMsg",
    "MonDemand::LogMsg",
    "MonDemand::TraceMsg",
    "MonDemand::PerfMsg",
    "MonDemand::AnnotationMsg",
)


@dataclass(frozen=True)
class Route:
    """Events matching any of `events` (restricted to `listeners` if given) go to `backends`."""

    name: str
    events: tuple[str, ...]
    backends: tuple[str, ...]
    listeners: tuple[str, ...] = ()
    stop: bool = False

    def matches(self, event_name: str, listener: str) -> bool:
        if self.listeners and listener not in self.listeners:
            return False
        return any(p == "*" or p == event_name or fnmatch.fnmatchcase(event_name, p) for p in self.events)


class DispatchCounters:
    """Counters of one dispatching thread (a listener's), summed for reports."""

    __slots__ = ("dispatched", "no_route", "received")

    def __init__(self) -> None:
        self.received = 0
        self.dispatched = 0
        self.no_route = 0


class Router:
    """Holds the routes and the backend runners they name."""

    _CACHE_MAX = 4096

    def __init__(self, routes: Sequence[Route], runners: dict[str, BackendRunner]) -> None:
        self.routes = tuple(routes)
        self.runners = runners
        self._cache: dict[tuple[str, str], tuple[BackendRunner, ...]] = {}
        self._counters: dict[str, DispatchCounters] = {}
        self._counters_lock = threading.Lock()
        self._unrouted_names: set[str] = set()
        self.decode_errors = 0

    def counters_for(self, source: str) -> DispatchCounters:
        """The counters a dispatching thread (`source`) increments; one object per source."""
        with self._counters_lock:
            c = self._counters.get(source)
            if c is None:
                c = self._counters[source] = DispatchCounters()
            return c

    def targets(self, event_name: str, listener: str = "") -> tuple[BackendRunner, ...]:
        """The runners an event of this name from this listener goes to (cached)."""
        key = (event_name, listener)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        chosen: dict[str, BackendRunner] = {}
        for route in self.routes:
            if route.matches(event_name, listener):
                for b in route.backends:
                    chosen.setdefault(b, self.runners[b])
                if route.stop:
                    break
        result = _merge_remote(tuple(chosen.values()))
        if len(self._cache) >= self._CACHE_MAX:
            self._cache.clear()
        self._cache[key] = result
        if not result and event_name not in self._unrouted_names and len(self._unrouted_names) < 1000:
            self._unrouted_names.add(event_name)
            log.warning("no route for events named %r (counted from now on, not logged again)", event_name)
        return result

    def dispatcher(self, source: str) -> Callable[[list[RawEvent]], None]:
        """A `deliver(batch)` function for one listener thread, with its own counters and cache.

        Listeners hand over everything one socket drain produced in one call:
        events are grouped by name, and each backend's queue takes each group
        with one `offer_many`, so the per-event cost is a lookup and an append.
        """
        counters = self.counters_for(source)
        cache: dict[str, tuple[BackendRunner, ...]] = {}  # this source's own: keyed by name alone
        targets = self.targets
        cache_max = self._CACHE_MAX

        def deliver(batch: list[RawEvent]) -> None:
            counters.received += len(batch)
            if not batch:
                return
            names = set(map(_name, batch))
            if len(names) == 1:  # the common case, one stream of StatsMsg: no loop over the events
                groups = {batch[0].name: batch}
            else:
                groups = {}
                for raw in batch:
                    group = groups.get(raw.name)
                    if group is None:
                        groups[raw.name] = [raw]
                    else:
                        group.append(raw)
            for name, events in groups.items():
                runners = cache.get(name)
                if runners is None:
                    runners = targets(name, source)
                    if len(cache) >= cache_max:
                        cache.clear()
                    cache[name] = runners
                if not runners:
                    counters.no_route += len(events)
                    continue
                for runner in runners:
                    runner.offer_many(events)
                counters.dispatched += len(events)

        return deliver

    def totals(self) -> dict[str, int]:
        """events_received, events_dispatched, no_route and dispatcher_errors over all sources."""
        with self._counters_lock:
            all_counters = list(self._counters.values())
        received = sum(c.received for c in all_counters)
        dispatched = sum(c.dispatched for c in all_counters)
        no_route = sum(c.no_route for c in all_counters)
        return {
            "events_received": received,
            "events_dispatched": dispatched,
            "no_route": no_route,
            "decode_errors": self.decode_errors,
            "dispatcher_errors": no_route + self.decode_errors,
        }


def _merge_remote(targets: tuple[Any, ...]) -> tuple[Any, ...]:
    """One target per worker process: backends sharing a worker get a batch in one frame (masks or-ed)."""
    merged: dict[int, Any] = {}
    out: list[Any] = []
    for target in targets:
        worker = getattr(target, "worker", None)
        if worker is None:
            out.append(target)
            continue
        previous = merged.get(id(worker))
        if previous is None:
            merged[id(worker)] = target
            out.append(target)
        else:
            combined = type(target)(worker, previous.mask | target.mask)
            out[out.index(previous)] = combined
            merged[id(worker)] = combined
    return tuple(out)
