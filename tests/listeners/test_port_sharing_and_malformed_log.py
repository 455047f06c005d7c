"""A unicast port is shared only when asked; multicast always shares; malformed input is logged, rate-limited."""

from __future__ import annotations

import logging
import subprocess
import time

import pytest
from mondemand.listeners.errors import ListenerError

from tests.e2e.harness import BIN, ServerProcess, free_port, random_group, wait_for
from tests.listeners import test_http as http_helpers
from tests.listeners.test_udp import Collector, datagram, make_listener, multicast_sender, sender, start_listener

__all__ = ["start_listener"]  # the fixture, imported for the tests below


def test_second_unicast_listener_on_a_taken_port_fails_and_the_first_keeps_its_traffic(start_listener):
    got = Collector()
    first = start_listener(got, name="first")  # reuse_port left at its default
    port = first.bound_address[1]
    second = make_listener("second", port=str(port))
    try:
        with pytest.raises(ListenerError) as info:
            second.start(Collector())
    finally:
        second.stop()
    message = str(info.value)
    assert f"listener 'second' on udp://127.0.0.1:{port}: cannot bind: Address already in use" in message
    assert "reuse_port = true" in message
    with sender() as sock:
        sock.sendto(datagram(n=1), first.bound_address)
    assert [raw.event["n"] for raw in got.wait(1)] == [1]


def test_unicast_port_is_shared_when_both_listeners_ask(start_listener):
    first = start_listener(Collector(), name="first", reuse_port="true")
    port = first.bound_address[1]
    second = start_listener(Collector(), name="second", port=str(port), reuse_port="true")
    assert second.bound_address == ("127.0.0.1", port)


def test_multicast_port_is_shared_even_with_reuse_port_false(start_listener):
    group = random_group()
    first, second = Collector(), Collector()
    a = start_listener(first, name="mcast-a", address=group, interface="127.0.0.1", reuse_port="false")
    port = a.bound_address[1]
    start_listener(second, name="mcast-b", address=group, port=str(port), interface="127.0.0.1",
                   reuse_port="false")
    with multicast_sender() as sock:
        sock.sendto(datagram(i=7), (group, port))
    for got in (first, second):
        assert [raw.event["i"] for raw in got.wait(1)] == [7]


def test_a_second_server_on_a_taken_unicast_port_exits_with_a_clear_error(tmp_path):
    port = free_port()
    config = f"""
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {port}

[backend:out]
type = sink

[route:all]
events = *
backends = out
"""
    (tmp_path / "one").mkdir()
    first = ServerProcess(tmp_path / "one", config)
    try:
        second = tmp_path / "two.ini"
        second.write_text(config)
        result = subprocess.run([str(BIN / "mondemand-server"), "-c", str(second)], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 1
        assert (f"error: [listener:main] failed to start: listener 'main' on udp://127.0.0.1:{port}: "
                "cannot bind: Address already in use") in result.stderr
        assert first.proc.poll() is None
    finally:
        assert first.stop() == 0


def malformed_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "malformed" in r.getMessage()]


def test_malformed_datagrams_are_logged_once_per_interval_with_sender_length_reason_and_bytes(start_listener, caplog):
    caplog.set_level(logging.INFO, logger="mondemand.listener.bad-input")
    got = Collector()
    listener = start_listener(got, name="bad-input")
    with sender() as sock:
        me = sock.getsockname()
        sock.sendto(b"\x09abc", listener.bound_address)
        sock.sendto(b"", listener.bound_address)
        sock.sendto(b"\x40" + bytes(range(30)), listener.bound_address)
        wait_for(lambda: listener.counters()["malformed"] == 3, what="three malformed datagrams")
        [first] = malformed_lines(caplog)
        assert first == (f"listener bad-input: malformed datagram from 127.0.0.1:{me[1]}, 4 bytes: length-overflow "
                         "at offset 0: event name of 9 bytes runs past the end; first bytes: 09 61 62 63")
        listener._malformed_log.interval = 0.3  # instead of waiting 10 s
        time.sleep(0.35)
        sock.sendto(b"\x40" + bytes(range(30)), listener.bound_address)
        wait_for(lambda: len(malformed_lines(caplog)) == 2, what="the next line after the interval")
    second = malformed_lines(caplog)[1]
    assert ", 31 bytes: length-overflow" in second
    assert second.endswith("; first bytes: 40 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e"
                           " (2 more malformed not logged)")
    assert got.events == []


def test_malformed_http_bodies_are_logged_rate_limited(caplog):
    caplog.set_level(logging.INFO, logger="mondemand.listener.http-test")
    listener = http_helpers.make_listener()
    listener.start(Collector())
    try:
        for _ in range(3):
            status, _, _ = http_helpers.request(listener, "POST", "/events", b"\x09abc")
            assert status == 400
    finally:
        listener.stop()
    [line] = malformed_lines(caplog)
    assert line.startswith("listener http-test: malformed body from 127.0.0.1:")
    assert ", 4 bytes: length-overflow" in line and line.endswith("; first bytes: 09 61 62 63")
