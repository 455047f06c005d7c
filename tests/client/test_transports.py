"""Transports: HTTP POSTs to an lwes-http listener and to a real mondemand-server, routing of large events."""

from __future__ import annotations

import socket

import pytest
from mondemand.client import Client, HttpTransport, TransportError, UdpTransport, transport_from_url

from mondemand.messages import MetricType
from tests.client.conftest import udp_listener
from tests.e2e.harness import ServerProcess, free_port, random_group, read_json_lines, wait_for


def test_large_trace_goes_over_http_and_small_events_over_udp(udp, http):
    (by_udp, udp_url), (by_http, http_url) = udp, http
    with Client("mixed", host="h", transports=[udp_url, http_url]) as client:
        client.trace("bob", "t-1", "big", blob="z" * 60_000, more="y" * 30_000)
        client.trace("bob", "t-2", "small")
        client.increment("n")
    [big] = by_http.wait(1)
    assert big.message.fields == {"blob": "z" * 60_000, "more": "y" * 30_000}
    names = [raw.name for raw in by_udp.wait(2)]
    assert names == ["MonDemand::TraceMsg", "MonDemand::StatsMsg"]
    assert by_udp.events()[0].message.trace_id == "t-2"
    assert len(by_http.events()) == 1


def test_http_only_client_sends_everything_over_http_to_a_real_server(tmp_path):
    ingest = free_port(socket.SOCK_STREAM)
    out = tmp_path / "events.jsonl"
    server = ServerProcess(tmp_path, f"""
[listener:http]
type = lwes-http
address = 127.0.0.1
port = {ingest}

[backend:out]
type = print
format = json
path = {out}

[route:all]
events = *
backends = out
""")
    try:
        with Client("posted", transports=[f"http://127.0.0.1:{ingest}"]) as client:
            client.increment("hits", by=12)
            client.log("info", "hello")
            client.trace("carol", 7, "x" * 100_000)
        lines = wait_for(lambda: len(read_json_lines(out)) >= 3 and read_json_lines(out), what="3 events")
    finally:
        server.stop()
    by_name = {line["name"]: line for line in lines}
    assert set(by_name) == {"MonDemand::StatsMsg", "MonDemand::LogMsg", "MonDemand::TraceMsg"}
    assert by_name["MonDemand::TraceMsg"]["attrs"]["mondemand.message"] == "x" * 100_000
    stats = by_name["MonDemand::StatsMsg"]["attrs"]
    assert (stats["prog_id"], stats["k0"], stats["v0"]) == ("posted", "hits", 12)
    assert client.send_errors == 0


def test_http_error_status_is_a_transport_error(http):
    _, url = http
    transport = HttpTransport(url.replace("/events", "/nowhere"))
    with pytest.raises(TransportError, match="answered 404"):
        transport.send(b"\x04Test\x00\x00")


def test_udp_transport_refuses_an_oversized_datagram_and_urls_are_checked(udp):
    _, url = udp
    transport = transport_from_url(url)
    assert isinstance(transport, UdpTransport)
    with pytest.raises(TransportError, match="do not fit"):
        transport.send(b"x" * 70_000)
    transport.close()
    with pytest.raises(ValueError, match="udp://host:port"):
        transport_from_url("udp://127.0.0.1")
    with pytest.raises(ValueError, match="http:// URL"):
        HttpTransport("ftp://x")
    assert HttpTransport("http://127.0.0.1:1").url == "http://127.0.0.1:1/events"


def test_multicast_transport_reaches_a_multicast_listener():
    group, port = random_group(), free_port()
    with udp_listener(address=group, port=str(port), interface="127.0.0.1") as (received, _):
        with Client("multi", transports=[UdpTransport(group, port, interface="127.0.0.1")]) as client:
            client.increment("m", by=2)
        [raw] = received.wait(1)
    assert {m.name: m.value for m in raw.message.metrics if m.type is MetricType.COUNTER} == {"m": 2}
