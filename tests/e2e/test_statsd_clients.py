"""Real statsd clients (Python `statsd`, `datadog`'s DogStatsd, node's hot-shots) into a real mondemand-server.

The server's `statsd` listeners (UDP and TCP) flush every second into a
`stats_file` backend; the tests read the files back.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import statsd
from datadog.dogstatsd.base import DogStatsd
from mondemand.backends.files.textfiles import unescape_field

from tests.e2e.harness import ServerProcess, free_port, wait_for

#: Where `make setup` installs the npm packages the tests use (hot-shots); installed here if missing.
NPM_PREFIX = Path(sys.prefix) / "npm"
HOT_SHOTS = "hot-shots@10"

CONFIG = """
[listener:statsd]
type = statsd
address = 127.0.0.1
port = {udp}
flush_interval = 1s

[listener:statsd_tcp]
type = statsd
protocol = tcp
address = 127.0.0.1
port = {tcp}
flush_interval = 1s
prog_id_tag = service

[backend:stats]
type = stats_file
root = {root}

[route:stats]
events = MonDemand::StatsMsg
backends = stats
"""


def stored(root: Path) -> dict[tuple[str, str, str, str, str], str]:
    """(prog_id, host, type, name, context) -> the last value written for it."""
    out: dict[tuple[str, str, str, str, str], str] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            _stamp, host, prog, kind, name, value, context = line.split("\t")
            out[(unescape_field(prog), unescape_field(host), kind, unescape_field(name), context)] = value
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("statsd")
    udp, tcp = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    proc = ServerProcess(tmp, CONFIG.format(udp=udp, tcp=tcp, root=tmp / "stats"))
    proc.udp, proc.tcp, proc.root = udp, tcp, tmp / "stats"  # type: ignore[attr-defined]
    yield proc
    assert proc.stop() == 0, proc.log()


def wait_values(root: Path, expected: dict[tuple[str, str, str, str, str], str]) -> None:
    def check():
        got = stored(root)
        return all(got.get(k) == v for k, v in expected.items())

    try:
        wait_for(check, timeout=20, what="the values in the stats files")
    except AssertionError:
        got = stored(root)
        missing = {k: (v, got.get(k)) for k, v in expected.items() if got.get(k) != v}
        raise AssertionError(f"expected (want, got): {missing}") from None


def test_python_statsd_client_udp_and_tcp(server):
    client = statsd.StatsClient("127.0.0.1", server.udp, prefix="pyapp")
    for _ in range(5):
        client.incr("orders")
    client.incr("orders", 10, rate=1)
    client.gauge("queue", 12)
    client.gauge("queue", -2, delta=True)
    for ms in (10, 20, 30, 40):
        client.timing("latency", ms)
    for user in ("ann", "bob", "ann"):
        client.set("users", user)
    with client.pipeline() as pipe:  # several lines in one datagram
        pipe.incr("piped", 3)
        pipe.gauge("piped_gauge", 9)
    tcp = statsd.TCPStatsClient("127.0.0.1", server.tcp, prefix="tcpapp")
    tcp.incr("hits", 7)
    tcp.timing("took", 250)
    tcp.close()
    wait_values(server.root, {
        ("pyapp", "127.0.0.1", "counter", "orders", ""): "15",
        ("pyapp", "127.0.0.1", "gauge", "queue", ""): "10",
        ("pyapp", "127.0.0.1", "count", "latency", ""): "4",
        ("pyapp", "127.0.0.1", "sum", "latency", ""): "100",
        ("pyapp", "127.0.0.1", "min", "latency", ""): "10",
        ("pyapp", "127.0.0.1", "max", "latency", ""): "40",
        ("pyapp", "127.0.0.1", "gauge", "users", ""): "2",
        ("pyapp", "127.0.0.1", "counter", "piped", ""): "3",
        ("pyapp", "127.0.0.1", "gauge", "piped_gauge", ""): "9",
        ("tcpapp", "127.0.0.1", "counter", "hits", ""): "7",
        ("tcpapp", "127.0.0.1", "sum", "took", ""): "250",
    })  # fmt: skip


def test_datadog_dogstatsd_tags(server):
    client = DogStatsd(host="127.0.0.1", port=server.udp, disable_telemetry=True, origin_detection_enabled=False,
                       constant_tags=["env:prod"])
    client.increment("ddapp.checkouts", 4, tags=["region:eu", "canary"])
    client.increment("ddapp.checkouts", 2, tags=["canary", "region:eu"], sample_rate=0.5)
    client.gauge("ddapp.temperature", 21, tags=["host:rack7"])
    for v in (5, 15):
        client.histogram("ddapp.size", v)
    client.distribution("ddapp.dist", 100)
    client.timing("ddapp.render", 30)
    client.close_socket()
    # Sampled at 0.5, a counter line of 2 is sent at random; its value then counts 4 (2 / 0.5).
    got = {}

    def checkouts():
        got.update(stored(server.root))
        return got.get(("ddapp", "127.0.0.1", "counter", "checkouts", "canary=true-env=prod-region=eu"))

    wait_for(checkouts, timeout=20, what="the checkouts counter")
    wait_values(server.root, {
        ("ddapp", "rack7", "gauge", "temperature", "env=prod"): "21",
        ("ddapp", "127.0.0.1", "count", "size", "env=prod"): "2",
        ("ddapp", "127.0.0.1", "sum", "size", "env=prod"): "20",
        ("ddapp", "127.0.0.1", "count", "dist", "env=prod"): "1",
        ("ddapp", "127.0.0.1", "max", "render", "env=prod"): "30",
    })  # fmt: skip
    total = stored(server.root)[("ddapp", "127.0.0.1", "counter", "checkouts", "canary=true-env=prod-region=eu")]
    assert total in ("4", "8")


def hot_shots_dir() -> Path:
    """node_modules with hot-shots: the one `make setup` made, else installed now (npm registry)."""
    if not (NPM_PREFIX / "node_modules" / "hot-shots").is_dir():
        npm = shutil.which("npm")
        assert npm, "npm is needed (Debian package npm; make setup installs it)"
        subprocess.run([npm, "install", "--prefix", str(NPM_PREFIX), "--no-audit", "--no-fund", "--omit=optional",
                        HOT_SHOTS], check=True, capture_output=True, timeout=300)
    return NPM_PREFIX / "node_modules"


def test_hot_shots_from_node(server, tmp_path):
    modules = hot_shots_dir()
    script = tmp_path / "send.js"
    script.write_text(textwrap.dedent(f"""
        const StatsD = require({str(modules / "hot-shots")!r});
        const fail = e => {{ console.error(e); process.exit(2); }};
        const c = new StatsD({{host: '127.0.0.1', port: {server.udp}, prefix: 'nodeapp.',
                              globalTags: {{team: 'web'}}, errorHandler: fail}});
        c.increment('requests', 3);
        c.increment('requests');
        c.gauge('heap', 512);
        c.timing('handler', 42);
        c.histogram('payload', 7, ['kind:json']);
        c.set('visitors', 'v1');
        c.set('visitors', 'v2');
        c.close(err => {{ if (err) {{ console.error(err); process.exit(1); }} }});
    """))
    node = shutil.which("node") or shutil.which("nodejs")
    assert node, "node is needed (Debian package nodejs; make setup installs it)"
    result = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    wait_values(server.root, {
        ("nodeapp", "127.0.0.1", "counter", "requests", "team=web"): "4",
        ("nodeapp", "127.0.0.1", "gauge", "heap", "team=web"): "512",
        ("nodeapp", "127.0.0.1", "sum", "handler", "team=web"): "42",
        ("nodeapp", "127.0.0.1", "count", "payload", "kind=json-team=web"): "1",
        ("nodeapp", "127.0.0.1", "gauge", "visitors", "team=web"): "2",
    })  # fmt: skip


def test_bad_lines_are_counted_at_status(server):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"okapp.fine:1|c\nthis is not statsd\nokapp.worse:abc|g", ("127.0.0.1", server.udp))
    wait_values(server.root, {("okapp", "127.0.0.1", "counter", "fine", ""): "1"})
    counters = server.status()["listeners"]["statsd"]
    assert counters["bad_lines"] >= 2 and counters["lines"] >= counters["bad_lines"]
