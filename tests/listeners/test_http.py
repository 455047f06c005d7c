"""The `lwes-http` listener on a real loopback port: every answer it gives, and what it delivers."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mondemand.listeners.errors import ListenerError
from mondemand.listeners.http import LwesHttpListener

from mondemand.envelope import RawEvent
from mondemand.lwes import Event, LwesType, encode
from mondemand.options import parse_options
from mondemand.plugin_api import ServerContext


class Collector:
    """A `deliver` callback that keeps every batch; raises instead when `fail` is set."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.batches: list[list[RawEvent]] = []
        self._lock = threading.Lock()

    def __call__(self, batch: list[RawEvent]) -> None:
        if self.fail:
            raise RuntimeError("router refused")
        with self._lock:
            self.batches.append(list(batch))


def make_listener(name: str = "http-test", **options: str) -> LwesHttpListener:
    values, problems = parse_options(LwesHttpListener.options, {"port": "0", **options})
    assert problems == []
    return LwesHttpListener(name, values, ServerContext())


@pytest.fixture
def start_listener() -> Iterator[Callable[..., LwesHttpListener]]:
    started: list[LwesHttpListener] = []

    def start(deliver: Callable[[list[RawEvent]], None], **options: str) -> LwesHttpListener:
        listener = make_listener(**options)
        listener.start(deliver)
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()


def request(listener: LwesHttpListener, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """One request on a fresh connection: (status, headers, decoded JSON body)."""
    host, port = listener.bound_address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, dict(resp.getheaders()), json.loads(payload) if payload else None
    finally:
        conn.close()


def big_event() -> bytes:
    """About 100 KB: too large for one UDP datagram, the reason this listener exists."""
    event = Event("MonDemand::TraceMsg")
    event.set("mondemand.prog_id", LwesType.STRING, "bigapp")
    event.set("part1", LwesType.STRING, "a" * 50_000)
    event.set("part2", LwesType.STRING, "b" * 50_000)
    return encode(event, max_size=1 << 20)


@pytest.mark.parametrize("path", ["/events", "/tcp"])
def test_post_of_a_100kb_event_is_accepted_and_delivered(start_listener, path):
    got = Collector()
    listener = start_listener(got, address="127.0.0.1")
    body = big_event()
    assert len(body) > 100_000
    status, _, answer = request(listener, "POST", path, body)
    assert status == 202
    assert answer == {"accepted": "MonDemand::TraceMsg", "bytes": len(body)}
    [[raw]] = got.batches
    assert raw.data == body
    assert (raw.name, raw.listener, raw.sender_ip) == ("MonDemand::TraceMsg", "http-test", "127.0.0.1")
    assert raw.event["part2"] == "b" * 50_000
    assert raw.event.receipt_time == raw.receipt_ms
    assert listener.counters() == {"received": 1, "malformed": 0, "errors": 0, "bytes": len(body), "too_large": 0}


def test_empty_body_is_400_and_counted_malformed(start_listener):
    got = Collector()
    listener = start_listener(got)
    status, _, answer = request(listener, "POST", "/events", b"")
    assert status == 400
    assert "empty body" in answer["error"]
    assert got.batches == []
    assert listener.counters()["malformed"] == 1


def test_unreadable_event_is_400_and_counted_malformed(start_listener):
    got = Collector()
    listener = start_listener(got)
    status, _, answer = request(listener, "POST", "/events", b"\x09abc")
    assert status == 400
    assert "unreadable LWES event" in answer["error"]
    assert got.batches == []
    counters = listener.counters()
    assert (counters["received"], counters["malformed"]) == (1, 1)


def test_other_path_is_404(start_listener):
    got = Collector()
    listener = start_listener(got)
    status, _, answer = request(listener, "POST", "/elsewhere", encode(Event("E")))
    assert status == 404
    assert "/elsewhere" in answer["error"]
    assert request(listener, "GET", "/elsewhere")[0] == 404
    assert got.batches == []


def test_get_on_events_is_405_with_allow_header(start_listener):
    listener = start_listener(Collector())
    status, headers, answer = request(listener, "GET", "/events")
    assert status == 405
    assert headers["Allow"] == "POST"
    assert "GET" in answer["error"]


def test_body_over_max_body_is_413(start_listener):
    got = Collector()
    listener = start_listener(got, max_body="1k")
    body = encode(Event("E").set("s", LwesType.STRING, "x" * 2000))
    status, _, answer = request(listener, "POST", "/events", body)
    assert status == 413
    assert "1024" in answer["error"]
    assert got.batches == []
    assert listener.counters()["too_large"] == 1
    # A body that fits still goes through.
    assert request(listener, "POST", "/events", encode(Event("Small")))[0] == 202
    assert len(got.batches) == 1


def test_deliver_that_raises_is_500_and_counted(start_listener):
    failing = Collector(fail=True)
    listener = start_listener(failing)
    status, _, answer = request(listener, "POST", "/events", encode(Event("E")))
    assert status == 500
    assert "could not be routed" in answer["error"]
    assert listener.counters()["errors"] == 1
    failing.fail = False
    assert request(listener, "POST", "/events", encode(Event("E")))[0] == 202
    assert len(failing.batches) == 1


def test_chunked_body_is_accepted(start_listener):
    got = Collector()
    listener = start_listener(got)
    body = encode(Event("Chunked").set("n", LwesType.UINT16, 5))
    host, port = listener.bound_address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("POST", "/events", body=iter([body[:5], body[5:]]), encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        assert conn.getresponse().status == 202
    finally:
        conn.close()
    [[raw]] = got.batches
    assert raw.data == body


def test_stop_closes_the_port_and_port_in_use_is_a_listener_error():
    first = make_listener("first")
    first.start(Collector())
    port = first.bound_address[1]
    second = make_listener("second", port=str(port))
    try:
        with pytest.raises(ListenerError, match=rf"listener 'second' on http://127\.0\.0\.1:{port}: cannot listen"):
            second.start(Collector())
    finally:
        first.stop()
    second.start(Collector())  # the port is free again
    second.stop()
