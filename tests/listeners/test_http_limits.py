"""The limits of `lwes-http` on a real loopback port: body timeout, max_connections, backpressure; fd planning."""

from __future__ import annotations

import http.client
import socket
import threading
import time

import pytest

from mondemand import fdlimit
from mondemand.lwes import Event, LwesType, encode
from tests.listeners.test_http import Collector, request, start_listener  # noqa: F401  (fixture)


def test_body_slower_than_body_timeout_is_408_and_counted(start_listener):  # noqa: F811
    listener = start_listener(Collector(), body_timeout="500ms")
    host, port = listener.bound_address
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        start = time.monotonic()
        answer = s.recv(4096)
        elapsed = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408")
    assert 0.4 < elapsed < 3
    assert listener.surface_counters()["timeouts"] == 1


def test_headers_slower_than_header_timeout_are_cut_off(start_listener):  # noqa: F811
    listener = start_listener(Collector(), header_timeout="500ms")
    host, port = listener.bound_address
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"POST /events HTTP/1.1\r\n")
        start = time.monotonic()
        assert s.recv(4096) == b""
        assert time.monotonic() - start < 2
    assert listener.surface_counters()["timeouts"] == 1


def test_connections_beyond_max_connections_get_503_and_are_counted(start_listener):  # noqa: F811
    listener = start_listener(Collector(), max_connections="3")
    host, port = listener.bound_address
    held = [socket.create_connection((host, port), timeout=5) for _ in range(3)]
    try:
        time.sleep(0.2)
        with socket.create_connection((host, port), timeout=5) as extra:
            assert extra.recv(4096).startswith(b"HTTP/1.1 503")
        assert listener.surface_counters()["refused"] == 1
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    assert request(listener, "POST", "/events", encode(Event("E")))[0] == 202  # room again


def test_router_that_cannot_keep_up_gets_503_with_retry_after_not_a_buffer(start_listener):  # noqa: F811
    release = threading.Event()

    def slow_deliver(batch):
        release.wait(10)

    listener = start_listener(slow_deliver, max_buffered="64k", max_body="48k")
    body = encode(Event("Big").set("s", LwesType.STRING, "x" * 40_000))
    host, port = listener.bound_address
    first = http.client.HTTPConnection(host, port, timeout=10)
    first.request("POST", "/events", body=body)
    time.sleep(0.3)  # the first body is waiting for the router
    status, headers, answer = request(listener, "POST", "/events", body)
    assert "waiting" in answer["error"]
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert listener.surface_counters()["busy"] == 1
    release.set()
    assert first.getresponse().status == 202
    first.close()
    assert request(listener, "POST", "/events", body)[0] == 202


def test_plan_connections_cuts_to_half_of_what_the_limit_leaves(monkeypatch):
    monkeypatch.setattr(fdlimit, "soft_limit", lambda: 256)
    monkeypatch.setattr(fdlimit, "_connections", 0)
    granted = fdlimit.plan_connections({"[http]": 256, "[listener:h]": 256})
    assert granted == {"[http]": 32, "[listener:h]": 32}
    assert fdlimit.reserved() == 512
    monkeypatch.setattr(fdlimit, "soft_limit", lambda: 65536)
    assert fdlimit.plan_connections({"[http]": 1000, "[listener:h]": 256}) == {"[http]": 1000, "[listener:h]": 256}
    assert fdlimit.reserved() == fdlimit.BASE_RESERVED + 1256
    assert fdlimit.descriptor_share(1 << 20, "t") == (65536 - 1384) // 2


@pytest.mark.parametrize("key", ["header_timeout", "body_timeout", "idle_timeout", "max_connections"])
def test_limit_options_have_upper_bounds(key):
    from mondemand.listeners.http import LwesHttpListener

    [opt] = [o for o in LwesHttpListener.options if o.name == key]
    assert opt.maximum is not None and opt.minimum is not None and opt.minimum > 0
