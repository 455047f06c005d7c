"""The `lwes-udp` listener on real loopback sockets: stamping, bad input, multicast, bursts, shutdown."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mondemand.listeners.errors import ListenerError
from mondemand.listeners.udp import LwesUdpListener

from mondemand.envelope import RawEvent
from mondemand.lwes import Event, LwesType, add_headers, encode
from mondemand.options import parse_options
from mondemand.plugin_api import ServerContext
from tests.e2e.harness import random_group, wait_for

BURST = 20_000


class Collector:
    """A `deliver` callback that keeps every batch it is given."""

    def __init__(self) -> None:
        self.batches: list[list[RawEvent]] = []
        self._lock = threading.Lock()

    def __call__(self, batch: list[RawEvent]) -> None:
        with self._lock:
            self.batches.append(list(batch))

    @property
    def events(self) -> list[RawEvent]:
        with self._lock:
            return [raw for batch in self.batches for raw in batch]

    def wait(self, n: int, timeout: float = 10.0) -> list[RawEvent]:
        wait_for(lambda: len(self.events) >= n, timeout, f"{n} events")
        return self.events


def make_listener(name: str = "udp-test", **options: str) -> LwesUdpListener:
    values, problems = parse_options(LwesUdpListener.options, {"address": "127.0.0.1", "port": "0", **options})
    assert problems == []
    return LwesUdpListener(name, values, ServerContext())


@pytest.fixture
def start_listener() -> Iterator[Callable[..., LwesUdpListener]]:
    """Start listeners for a test and stop every one of them afterwards."""
    started: list[LwesUdpListener] = []

    def start(deliver: Callable[[list[RawEvent]], None], name: str = "udp-test", **options: str) -> LwesUdpListener:
        listener = make_listener(name, **options)
        listener.start(deliver)
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()


def datagram(name: str = "Test::Event", **attrs: Any) -> bytes:
    event = Event(name)
    for key, value in attrs.items():
        event.set(key, LwesType.STRING if isinstance(value, str) else LwesType.UINT32, value)
    return encode(event)


def sender(bind_port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", bind_port))
    return sock


def test_unicast_event_is_stamped_with_receipt_time_and_sender(start_listener):
    got = Collector()
    listener = start_listener(got, name="front")
    host, port = listener.bound_address
    assert (host, listener.describe()) == ("127.0.0.1", f"udp://127.0.0.1:{port}")
    with sender() as sock:
        before = int(time.time() * 1000)
        sock.sendto(datagram(who="alice", n=7), (host, port))
        [raw] = got.wait(1)
        after = int(time.time() * 1000)
        sender_port = sock.getsockname()[1]
    assert (raw.name, raw.listener) == ("Test::Event", "front")
    assert (raw.sender_ip, raw.sender_port) == ("127.0.0.1", sender_port)
    assert before <= raw.receipt_ms <= after
    event = raw.event
    assert (event["who"], event["n"]) == ("alice", 7)
    assert (event.receipt_time, event.sender_ip, event.sender_port) == (raw.receipt_ms, "127.0.0.1", sender_port)
    assert raw.original_headers() == (raw.receipt_ms, "127.0.0.1", sender_port)
    assert listener.counters() == {"received": 1, "malformed": 0, "errors": 0, "bytes": len(raw.data)}


def test_event_that_already_carries_headers_keeps_them(start_listener):
    got = Collector()
    listener = start_listener(got)
    forwarded = add_headers(datagram(n=1), 1_700_000_000_123, "10.1.2.3", 34567)
    with sender() as sock:
        sock.sendto(forwarded, listener.bound_address)
        [raw] = got.wait(1)
        real_port = sock.getsockname()[1]
    assert raw.data == forwarded
    assert (raw.sender_ip, raw.sender_port) == ("127.0.0.1", real_port)
    assert raw.original_headers() == (1_700_000_000_123, "10.1.2.3", 34567)
    assert (raw.event.receipt_time, raw.event.sender_ip, raw.event.sender_port) == (
        1_700_000_000_123, "10.1.2.3", 34567)


def test_malformed_datagrams_are_counted_and_receiving_goes_on(start_listener):
    got = Collector()
    listener = start_listener(got)
    reported: list[tuple[bytes, str]] = []
    listener.on_malformed = lambda data, ip, port, exc: reported.append((data, exc.kind))
    with sender() as sock:
        sock.sendto(b"", listener.bound_address)  # no name at all
        sock.sendto(b"\x09abc", listener.bound_address)  # name runs past the end
        sock.sendto(datagram(n=3), listener.bound_address)
        [raw] = got.wait(1)
    wait_for(lambda: listener.counters()["received"] == 3, what="three datagrams read")
    assert raw.event["n"] == 3
    assert listener.counters()["malformed"] == 2
    assert listener.counters()["errors"] == 0
    assert reported == [(b"", "truncated"), (b"\x09abc", "length-overflow")]


def test_deliver_that_raises_is_counted_and_receiving_goes_on(start_listener):
    got = Collector()
    calls = 0

    def deliver(batch: list[RawEvent]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("router exploded")
        got(batch)

    listener = start_listener(deliver)
    with sender() as sock:
        sock.sendto(datagram(n=1), listener.bound_address)
        wait_for(lambda: listener.counters()["errors"] == 1, what="the failed delivery to be counted")
        sock.sendto(datagram(n=2), listener.bound_address)
        [raw] = got.wait(1)
    assert raw.event["n"] == 2
    assert listener.counters()["received"] == 2
    assert listener.counters()["errors"] == 1


def multicast_sender() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    return sock


def test_two_multicast_listeners_on_one_group_and_port_each_get_every_event(start_listener):
    group = random_group()
    first, second = Collector(), Collector()
    a = start_listener(first, name="mcast-a", address=group, interface="127.0.0.1")
    port = a.bound_address[1]
    b = start_listener(second, name="mcast-b", address=group, port=str(port), interface="127.0.0.1")
    assert a.describe() == f"udp+multicast://{group}:{port}@127.0.0.1"
    assert b.bound_address == (group, port)
    with multicast_sender() as sock:
        for i in range(50):
            sock.sendto(datagram(i=i), (group, port))
    for got in (first, second):
        assert [raw.event["i"] for raw in got.wait(50)] == list(range(50))
    assert a.counters()["received"] == b.counters()["received"] == 50


def test_unicast_to_the_port_does_not_reach_a_multicast_listener(start_listener):
    group = random_group()
    got = Collector()
    listener = start_listener(got, address=group, interface="127.0.0.1")
    port = listener.bound_address[1]
    with sender() as sock:
        sock.sendto(datagram(kind="unicast"), ("127.0.0.1", port))
    with multicast_sender() as sock:
        sock.sendto(datagram(kind="multicast"), (group, port))
    [raw] = got.wait(1)
    assert raw.event["kind"] == "multicast"
    assert listener.counters()["received"] == 1


def test_stop_returns_promptly_and_closes_the_port():
    listener = make_listener()
    listener.start(Collector())
    port = listener.bound_address[1]
    started = time.monotonic()
    listener.stop()
    assert time.monotonic() - started < 2.0
    # The listener's socket had SO_REUSEADDR; a plain bind succeeds only if it is gone.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", port))
    assert not any(t.name == "listener-udp-test" for t in threading.enumerate())


def test_burst_of_20000_events_is_received_without_loss(start_listener):
    got = Collector()
    listener = start_listener(got, receive_buffer="16MiB")
    # Linux reports twice the usable size; about 1 KiB of it is charged per small
    # datagram. When the kernel grants less than a whole burst needs (no
    # CAP_NET_ADMIN and a small rmem_max), send in slices that fit and let the
    # listener catch up in between, so that the count stays exact.
    fits = listener.receive_buffer_granted // 1024 * 3 // 4
    step = max(50, min(BURST, fits))
    sent = 0
    with sender() as sock:
        address = listener.bound_address
        while sent < BURST:
            for i in range(sent, min(sent + step, BURST)):
                sock.sendto(datagram(i=i), address)
            sent = min(sent + step, BURST)
            wait_for(lambda n=sent: listener.counters()["received"] >= n, 30, f"{sent} datagrams read")
    events = got.wait(BURST, 30)
    assert len(events) == BURST
    assert sorted(raw.event["i"] for raw in events) == list(range(BURST))
    assert listener.counters()["received"] == BURST
    assert listener.counters()["malformed"] == listener.counters()["errors"] == 0
    if step == BURST:
        assert len(got.batches) < BURST  # drained in batches, not one call per datagram


def test_port_in_use_raises_listener_error_naming_listener_and_address(start_listener):
    first = start_listener(Collector(), name="first", reuse_port="false")
    port = first.bound_address[1]
    second = make_listener("second", port=str(port), reuse_port="false")
    try:
        with pytest.raises(ListenerError) as info:
            second.start(Collector())
    finally:
        second.stop()  # harmless when it never started
    message = str(info.value)
    assert "'second'" in message and f"127.0.0.1:{port}" in message
    assert "bind" in message
    assert info.value.listener == "second"


def test_port_held_by_a_plain_socket_raises_listener_error():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        listener = make_listener("busy", port=str(port), reuse_port="false")
        with pytest.raises(ListenerError, match=rf"listener 'busy' on udp://127\.0\.0\.1:{port}: cannot bind"):
            listener.start(Collector())


def ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_ipv6_loopback(start_listener):
    got = Collector()
    if not ipv6_loopback_works():
        # Without IPv6 the listener must still fail cleanly, naming the address.
        with pytest.raises(ListenerError, match=r"udp://\[::1\]"):
            make_listener("v6", address="::1").start(got)
        return
    listener = start_listener(got, name="v6", address="::1")
    port = listener.bound_address[1]
    assert listener.describe() == f"udp://[::1]:{port}"
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::1", 0))
        sock.sendto(datagram(n=6), ("::1", port))
        [raw] = got.wait(1)
        sender_port = sock.getsockname()[1]
    assert (raw.sender_ip, raw.sender_port) == ("::1", sender_port)
    event = raw.event
    assert event["n"] == 6
    # SenderIP is an IPv4 type: an IPv6 sender leaves it out rather than lie.
    assert "SenderIP" not in event
    assert event.sender_port == sender_port
