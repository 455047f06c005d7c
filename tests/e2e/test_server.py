"""End to end: the real mondemand-server process, real UDP, real files."""

from __future__ import annotations

import signal
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

from mondemand.lwes import Event, LwesType, encode
from tests.conftest import ROOT
from tests.e2e.harness import (
    BIN,
    ServerProcess,
    check_config,
    emit,
    free_port,
    random_group,
    read_json_lines,
    send_udp,
    wait_for,
)


@pytest.fixture
def run_server(tmp_path):
    servers: list[ServerProcess] = []

    def start(config: str) -> ServerProcess:
        server = ServerProcess(tmp_path, config)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_unicast_stats_reach_the_print_backend_with_receipt_headers(tmp_path, run_server):
    port = free_port()
    out = tmp_path / "events.jsonl"
    server = run_server(f"""
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {port}

[backend:out]
type = print
format = json
path = {out}

[route:all]
events = *
backends = out
""")
    emit("-p", str(port), "--count", "3", "stats", "--prog-id", "myapp", "--counter", "requests=600",
         "--gauge", "queue=17", "-c", "host=web01")
    lines = wait_for(lambda: len(read_json_lines(out)) == 3 and read_json_lines(out), what="3 printed events")
    for line in lines:
        assert line["name"] == "MonDemand::StatsMsg"
        attrs = line["attrs"]
        assert attrs["prog_id"] == "myapp"
        assert {attrs[f"k{i}"]: attrs[f"v{i}"] for i in range(attrs["num"])} == {"requests": 600, "queue": 17}
        assert attrs["SenderIP"] == "127.0.0.1"
        assert attrs["ReceiptTime"] == line["receipt_time"] > 1_700_000_000_000
    status = server.status()
    assert status["router"]["events_received"] == 3
    assert status["backends"]["out"]["events_processed"] == 3
    assert server.stop() == 0


def test_multicast_listener_on_loopback(tmp_path, run_server):
    group, port = random_group(), free_port()
    out = tmp_path / "events.jsonl"
    run_server(f"""
[listener:mcast]
type = lwes-udp
address = {group}
port = {port}
interface = 127.0.0.1

[backend:out]
type = print
format = json
path = {out}

[route:all]
events = *
backends = out
""")
    emit("-H", group, "-p", str(port), "--interface", "127.0.0.1", "--ttl", "1",
         "log", "--prog-id", "svc", "--priority", "error", "--message", "disk full")
    [line] = wait_for(lambda: read_json_lines(out), what="a multicast event")
    assert line["name"] == "MonDemand::LogMsg"
    assert line["attrs"]["m0"] == "disk full"


def test_routes_fan_out_by_name_glob_and_star(tmp_path, run_server):
    port = free_port()
    files = {name: tmp_path / f"{name}.jsonl" for name in ("stats", "logs", "mondemand", "everything")}
    backends = "".join(f"\n[backend:{n}]\ntype = print\nformat = json\npath = {p}\n" for n, p in files.items())
    server = run_server(f"""
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {port}
{backends}
[route:stats]
events = MonDemand::StatsMsg
backends = stats

[route:logs]
events = MonDemand::LogMsg
backends = logs

[route:mondemand]
events = MonDemand::*
backends = mondemand

[route:everything]
events = *
backends = everything, stats
""")
    emit("-p", str(port), "stats", "--prog-id", "a", "--counter", "n=1")
    emit("-p", str(port), "log", "--prog-id", "a", "--priority", "info", "--message", "hello")
    emit("-p", str(port), "raw", "Custom::Thing", "x=uint16:7")
    wait_for(lambda: len(read_json_lines(files["everything"])) == 3, what="3 events in everything")

    def names(name: str) -> list[str]:
        return sorted(line["name"] for line in read_json_lines(files[name]))

    # Each backend has its own worker: wait for every file, not only the first one.
    for name, count in (("stats", 3), ("logs", 1), ("mondemand", 2)):
        wait_for(lambda name=name, count=count: len(names(name)) >= count, what=f"{count} events in {name}")
    # The StatsMsg matches two routes that both name `stats`: delivered once.
    assert names("stats") == ["Custom::Thing", "MonDemand::LogMsg", "MonDemand::StatsMsg"]
    assert names("logs") == ["MonDemand::LogMsg"]
    assert names("mondemand") == ["MonDemand::LogMsg", "MonDemand::StatsMsg"]
    assert names("everything") == ["Custom::Thing", "MonDemand::LogMsg", "MonDemand::StatsMsg"]
    assert server.status()["router"]["no_route"] == 0


def test_unrouted_and_malformed_datagrams_are_counted_and_the_listener_survives(tmp_path, run_server):
    port = free_port()
    out = tmp_path / "events.jsonl"
    server = run_server(f"""
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {port}

[backend:out]
type = print
format = json
path = {out}

[route:stats]
events = MonDemand::StatsMsg
backends = out
""")
    send_udp(b"\x40short", port)  # name runs past the end: unreadable
    send_udp(b"\x13MonDemand::StatsMsg\x00\x01\x01a\x42\x00", port)  # routable name, undecodable body
    for _ in range(5):
        send_udp(encode(Event("Other::Event").set("x", LwesType.UINT16, 1)), port)
    emit("-p", str(port), "stats", "--prog-id", "ok", "--gauge", "g=1")
    wait_for(lambda: read_json_lines(out), what="the good event after the bad ones")
    status = wait_for(lambda: (s := server.status())["router"]["decode_errors"] == 1 and s, what="decode error")
    router = status["router"]
    assert router["malformed"] == 1
    assert router["no_route"] == 5
    assert router["dispatcher_errors"] == 1 + 1 + 5
    assert [line["attrs"]["prog_id"] for line in read_json_lines(out)] == ["ok"]
    # Counted, not logged once per packet.
    assert server.log().count("Other::Event") <= 1


def test_sigterm_drains_and_sighup_reopens(tmp_path, run_server):
    port = free_port()
    out = tmp_path / "events.jsonl"
    server = run_server(f"""
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {port}

[backend:out]
type = print
format = json
path = {out}
flush_interval = 30s

[route:all]
events = *
backends = out
""")
    emit("-p", str(port), "--count", "200", "stats", "--prog-id", "before", "--counter", "n=1")
    wait_for(lambda: server.status()["backends"]["out"]["events_processed"] == 200, what="200 processed")
    rotated = tmp_path / "events.jsonl.1"
    server.signal(signal.SIGHUP)
    wait_for(lambda: out.exists() and len(read_json_lines(out)) == 200, what="flush on reopen")
    out.rename(rotated)
    server.signal(signal.SIGHUP)
    wait_for(lambda: out.exists(), what="a new file after SIGHUP")
    emit("-p", str(port), "--count", "50", "stats", "--prog-id", "after", "--counter", "n=1")
    wait_for(lambda: server.status()["backends"]["out"]["events_processed"] == 250, what="250 processed")
    # flush_interval is 30 s: only the shutdown's flush can write these lines now.
    assert server.stop() == 0
    assert [line["attrs"]["prog_id"] for line in read_json_lines(rotated)] == ["before"] * 200
    assert [line["attrs"]["prog_id"] for line in read_json_lines(out)] == ["after"] * 50
    assert "stopped" in server.log()


def test_self_metrics_are_routed_as_stats_messages(tmp_path, run_server):
    port = free_port()
    out = tmp_path / "events.jsonl"
    server = run_server(f"""
[server]
stats_interval = 0.3s
hostname = router01

[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {port}

[backend:out]
type = print
format = json
path = {out}

[backend:drop]
type = sink

[route:stats]
events = MonDemand::StatsMsg
backends = out, drop
""")
    emit("-p", str(port), "--count", "4", "stats", "--prog-id", "app", "--counter", "n=1")

    def backend_stats():
        for line in read_json_lines(out):
            a = line["attrs"]
            if a["prog_id"] == "mondemand_server" and a.get("ctxt_v0") == "drop":
                metrics = {a[f"k{i}"]: a[f"v{i}"] for i in range(a["num"])}
                if metrics.get("events_processed", 0) >= 4:
                    return a, metrics
        return None

    attrs, metrics = wait_for(backend_stats, what="self-metrics for the sink backend")
    assert {attrs[f"ctxt_k{i}"]: attrs[f"ctxt_v{i}"] for i in range(attrs["ctxt_num"])} == {
        "backend": "drop", "host": "router01"}
    assert metrics["dropped"] == 0
    assert "queue_depth" in metrics
    assert server.status()["backends"]["drop"]["backend.discarded"] >= 4


def test_http_ingest_accepts_events_larger_than_udp(tmp_path, run_server):
    ingest = free_port(socket.SOCK_STREAM)
    out = tmp_path / "events.jsonl"
    run_server(f"""
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
    big = "x" * 100_000
    body = encode(Event("MonDemand::TraceMsg").set("mondemand.message", LwesType.LONG_STRING, big), max_size=1 << 20)
    req = urllib.request.Request(f"http://127.0.0.1:{ingest}/tcp", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 202
    [line] = wait_for(lambda: read_json_lines(out), what="the 100 KB event")
    assert line["attrs"]["mondemand.message"] == big
    bad = urllib.request.Request(f"http://127.0.0.1:{ingest}/tcp", data=b"\x50", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(bad, timeout=5)
    assert info.value.code == 400


def run_check(tmp_path, config: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "check.ini"
    path.write_text(config)
    return check_config(path)


def test_check_reports_every_bad_key_by_section(tmp_path):
    result = run_check(tmp_path, """
[listener:main]
type = lwes-udp
port = 99999
colour = blue

[backend:out]
type = rrdd

[route:r]
events = *
backends = out, missing
""")
    assert result.returncode == 2
    err = result.stderr
    assert "[listener:main] port:" in err
    assert "[listener:main] colour: unknown option" in err
    assert "[backend:out] type: unknown backend type 'rrdd'" in err and "print" in err
    assert "[route:r] backends: no [backend:missing] section" in err


def test_check_accepts_the_shipped_examples():
    for example in sorted((ROOT / "examples").glob("*.ini")):
        result = subprocess.run([str(BIN / "mondemand-server"), "-c", str(example), "--check"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{example}: {result.stderr}"
        assert "ok:" in result.stdout
