"""Real loopback listeners for the client tests, and a collector of what they receive."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest
from mondemand.listeners.http import LwesHttpListener
from mondemand.listeners.udp import LwesUdpListener

from mondemand.envelope import RawEvent
from mondemand.messages import StatsMsg
from mondemand.options import parse_options
from mondemand.plugin_api import ServerContext
from tests.e2e.harness import wait_for


class Received:
    """A `deliver` callback keeping every RawEvent, with helpers to wait for and decode them."""

    def __init__(self) -> None:
        self.raw: list[RawEvent] = []
        self._lock = threading.Lock()

    def __call__(self, batch: list[RawEvent]) -> None:
        with self._lock:
            self.raw.extend(batch)

    def events(self) -> list[RawEvent]:
        with self._lock:
            return list(self.raw)

    def wait(self, n: int, timeout: float = 10.0) -> list[RawEvent]:
        wait_for(lambda: len(self.events()) >= n, timeout, f"{n} events")
        return self.events()

    def stats(self) -> list[StatsMsg]:
        return [raw.message for raw in self.events() if raw.name == "MonDemand::StatsMsg"]


@contextlib.contextmanager
def udp_listener(**options: str) -> Iterator[tuple[Received, str]]:
    """A started lwes-udp listener (loopback unless `options` say otherwise): (received, "udp://host:port")."""
    received = Received()
    values, problems = parse_options(LwesUdpListener.options, {"address": "127.0.0.1", "port": "0", **options})
    assert problems == []
    listener = LwesUdpListener("client-test", values, ServerContext())
    listener.start(received)
    try:
        yield received, f"udp://{listener.address}:{listener.bound_address[1]}"
    finally:
        listener.stop()


@pytest.fixture
def udp() -> Iterator[tuple[Received, str]]:
    with udp_listener() as pair:
        yield pair


@pytest.fixture
def udp2() -> Iterator[tuple[Received, str]]:
    with udp_listener() as pair:
        yield pair


@pytest.fixture
def http() -> Iterator[tuple[Received, str]]:
    """A started lwes-http listener on loopback: (received, "http://127.0.0.1:<port>/events")."""
    received = Received()
    values, problems = parse_options(LwesHttpListener.options, {"port": "0"})
    assert problems == []
    listener = LwesHttpListener("client-http-test", values, ServerContext())
    listener.start(received)
    try:
        yield received, f"http://127.0.0.1:{listener.bound_address[1]}/events"
    finally:
        listener.stop()


