"""Two [listener:...] sections on one UDP port are a config error naming both sections and `port`."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
from mondemand.listeners.udp import LwesUdpListener

from mondemand.config import ConfigError, load_config
from mondemand.lwes import Event, encode
from mondemand.plugin_api import ServerContext
from mondemand.plugins import PluginHost
from mondemand.portcheck import UdpEndpoint, conflict
from tests.e2e.harness import BIN, free_port, wait_for

HOST = PluginHost.discover(builtins_only=True)
REST = "\n[backend:s]\ntype = sink\n\n[route:r]\nevents = *\nbackends = s\n"


def listener(name: str, port: int, address: str = "0.0.0.0", interface: str | None = None,
             extra: str = "") -> str:
    """A lwes-udp section."""
    text = f"\n[listener:{name}]\ntype = lwes-udp\naddress = {address}\nport = {port}\n"
    if interface is not None:
        text += f"interface = {interface}\n"
    return text + extra


def check(tmp_path, text: str) -> list[str]:
    path = tmp_path / "routes.ini"
    path.write_text(text + REST)
    try:
        load_config(path, HOST)
    except ConfigError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize(("a", "b"), [
    (("127.0.0.1",), ("127.0.0.1",)),
    (("0.0.0.0",), ("127.0.0.1",)),
    (("127.0.0.1",), ("0.0.0.0",)),
    (("::",), ("127.0.0.1",)),
    (("::ffff:127.0.0.1",), ("127.0.0.1",)),
    (("0.0.0.0", None, "reuse_port = false\n"), ("239.5.1.1", "127.0.0.1")),
    (("::",), ("239.5.1.1", "127.0.0.1")),
    (("239.5.1.1", "127.0.0.1"), ("239.5.1.1", "127.0.0.1")),
], ids=["same-address", "wildcard-first", "wildcard-second", "ipv6-wildcard", "mapped",
        "wildcard-without-reuse-and-group", "ipv6-wildcard-and-group", "same-group-same-interface"])
def test_colliding_listeners_are_an_error_naming_both_and_port(tmp_path, a, b):
    port = 20555
    problems = check(tmp_path, listener("one", port, *a) + listener("two", port, *b))
    assert len(problems) == 1, problems
    assert problems[0].startswith("routes.ini: [listener:two] port: [listener:one] and [listener:two] use the "
                                  "same UDP port: ")


def test_reuse_port_does_not_make_a_unicast_collision_legal(tmp_path):
    text = listener("one", 20555, "127.0.0.1", extra="reuse_port = true\n")
    text += listener("two", 20555, "127.0.0.1", extra="reuse_port = true\n")
    assert len(check(tmp_path, text)) == 1


@pytest.mark.parametrize(("a", "b"), [
    (("127.0.0.1", None, 20555), ("127.0.0.1", None, 20556)),
    (("127.0.0.1", None, 0), ("127.0.0.1", None, 0)),
    (("127.0.0.1", None, 20555), ("127.0.0.2", None, 20555)),
    (("239.5.1.1", "127.0.0.1", 20555), ("239.5.1.2", "127.0.0.1", 20555)),
    (("239.5.1.1", "127.0.0.1", 20555), ("239.5.1.1", "10.1.2.3", 20555)),
    (("239.5.1.1", "127.0.0.1", 20555), ("127.0.0.1", None, 20555)),
    (("239.5.1.1", "127.0.0.1", 20555), ("0.0.0.0", None, 20555, "reuse_port = true\n")),
], ids=["other-port", "port-0", "other-address", "other-group", "other-interface", "group-and-specific-unicast",
        "group-and-wildcard-unicast"])
def test_listeners_that_can_share_are_fine(tmp_path, a, b):
    def section(name, spec):
        address, interface, port, *extra = spec
        return listener(name, port, address, interface, *extra)

    assert check(tmp_path, section("one", a) + section("two", b)) == []


def test_a_wildcard_unicast_beside_a_group_needs_reuse_port(tmp_path):
    text = listener("one", 20555, "239.5.1.1", "127.0.0.1") + listener("two", 20555, "0.0.0.0")
    [problem] = check(tmp_path, text)
    assert "[listener:two] port" in problem and "reuse_port = true" in problem


def test_three_on_one_port_name_each_pair(tmp_path):
    text = listener("a", 20555, "127.0.0.1") + listener("b", 20555, "127.0.0.1") + listener("c", 20555)
    problems = check(tmp_path, text)
    assert [p.split(": ")[1] for p in problems] == ["[listener:b] port", "[listener:c] port", "[listener:c] port"]


def test_check_subprocess_exits_2_and_the_server_does_not_start(tmp_path):
    port = free_port()
    path = tmp_path / "routes.ini"
    path.write_text(listener("one", port, "127.0.0.1") + listener("two", port) + REST)
    for args in (["--check"], []):
        result = subprocess.run([str(BIN / "mondemand-server"), "-c", str(path), *args], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert (f"error: routes.ini: [listener:two] port: [listener:one] and [listener:two] use the same UDP port: "
                f"0.0.0.0:{port} includes 127.0.0.1:{port}") in result.stderr


def test_the_collision_is_real_two_reuse_port_sockets_split_the_datagrams():
    """Why it is an error: with SO_REUSEPORT both bind, and each gets only part of the traffic."""
    socks = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", socks[0].getsockname()[1] if socks else 0))
        s.setblocking(False)
        socks.append(s)
    port = socks[0].getsockname()[1]
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(32)]
    try:
        for sender in senders:  # the kernel picks a socket by the sender's address and port
            sender.sendto(b"x", ("127.0.0.1", port))
        counts = []
        for s in socks:
            n = 0
            while True:
                try:
                    s.recv(16)
                except BlockingIOError:
                    break
                n += 1
            counts.append(n)
        assert sum(counts) == 32 and min(counts) > 0, counts
    finally:
        for s in socks + senders:
            s.close()


def test_conflict_function_directly():
    assert conflict(UdpEndpoint("127.0.0.1", 1), UdpEndpoint("127.0.0.1", 2)) is None
    assert "received twice" in conflict(UdpEndpoint("239.1.1.1", 9, True, "0.0.0.0"),
                                        UdpEndpoint("239.1.1.1", 9, True, "0.0.0.0"))
    assert conflict(UdpEndpoint("0.0.0.0", 9), UdpEndpoint("::1", 9)) is None  # an IPv4 wildcard takes no IPv6


def test_a_wildcard_listener_beside_a_multicast_one_gets_only_its_unicast_datagrams():
    """Why 0.0.0.0 beside a group on one port is allowed (examples/colo.ini): IP_MULTICAST_ALL = 0."""
    port = free_port()
    got = {"apps": 0, "group": 0}
    apps = LwesUdpListener("apps", {"address": "0.0.0.0", "port": port, "reuse_port": True}, ServerContext())
    group = LwesUdpListener("group", {"address": "239.255.77.7", "port": port, "interface": "127.0.0.1"},
                            ServerContext())
    apps.start(lambda batch: got.__setitem__("apps", got["apps"] + len(batch)))
    group.start(lambda batch: got.__setitem__("group", got["group"] + len(batch)))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    try:
        data = encode(Event("Test::Event", {}))
        for _ in range(5):
            sender.sendto(data, ("239.255.77.7", port))
        for _ in range(3):
            sender.sendto(data, ("127.0.0.1", port))
        wait_for(lambda: got == {"apps": 3, "group": 5}, timeout=5, what=f"3 unicast and 5 multicast, got {got}")
        time.sleep(0.2)
        assert got == {"apps": 3, "group": 5}
    finally:
        sender.close()
        apps.stop()
        group.stop()
