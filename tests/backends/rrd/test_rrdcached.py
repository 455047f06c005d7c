"""The rrdcached protocol client against a real daemon."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import rrdtool
from mondemand.backends.rrd.rrdcached import (
    Address,
    RrdcachedClient,
    RrdcachedCommandError,
    RrdcachedError,
    classify,
    parse_address,
    timestamp_conflict,
)

from tests.backends.rrd.rrd_helpers import BASE, Rrdcached


@pytest.mark.parametrize(("text", "address"), [
    ("unix:/run/rrdcached.sock", Address(path="/run/rrdcached.sock")),
    ("/run/rrdcached.sock", Address(path="/run/rrdcached.sock")),
    ("cache.example", Address(host="cache.example", port=42217)),
    ("10.0.0.1:4242", Address(host="10.0.0.1", port=4242)),
    ("[::1]:4242", Address(host="::1", port=4242)),
    ("[::1]", Address(host="::1", port=42217)),
])
def test_addresses(text: str, address: Address) -> None:
    assert parse_address(text) == address
    assert parse_address(str(address)) == address


@pytest.mark.parametrize("text", ["", "unix:", ":80", "host:0", "host:99999", "host:http"])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


@pytest.fixture(params=["unix", "tcp"])
def daemon(request: pytest.FixtureRequest) -> Rrdcached:
    return request.getfixturevalue(f"rrdcached_{request.param}")


def _rrd(path: Path) -> str:
    rrdtool.create(str(path), "--start", str(BASE), "--step", "60", "DS:value:GAUGE:900:U:U", "RRA:LAST:0.5:1:100")
    return str(path)


def test_batch_reports_each_refused_command_by_index(daemon: Rrdcached, tmp_path: Path) -> None:
    good = _rrd(tmp_path / "good.rrd")
    missing = str(tmp_path / "missing.rrd")
    with RrdcachedClient(daemon.address) as client:
        assert client.ping()
        errors = client.batch([
            f"UPDATE {good} {BASE + 60}:1",
            f"UPDATE {good} {BASE + 60}:2",  # duplicate time
            f"UPDATE {missing} {BASE + 60}:1",
            f"UPDATE {good} {BASE + 120}:3",
            f"UPDATE {good} {BASE + 90}:4",  # late
        ])
        assert sorted(errors) == [1, 2, 4]
        assert classify(errors[1]) == "timestamp" and timestamp_conflict(errors[1]) == (BASE + 60, BASE + 60)
        assert classify(errors[2]) == "no_file"
        assert timestamp_conflict(errors[4]) == (BASE + 90, BASE + 120)
        assert client.batch([]) == {}
        assert client.last(good) == BASE + 120
        assert client.stats()["UpdatesReceived"] >= 2
        client.flush(good)
    assert rrdtool.lastupdate(good)["ds"]["value"] == 3.0


def test_refused_command_raises_and_the_connection_stays_usable(daemon: Rrdcached, tmp_path: Path) -> None:
    with RrdcachedClient(daemon.address) as client:
        with pytest.raises(RrdcachedCommandError) as info:
            client.update(str(tmp_path / "nope.rrd"), f"{BASE}:1")
        assert classify(info.value.message) == "no_file"
        path = _rrd(tmp_path / "a.rrd")
        client.update(path, f"{BASE + 60}:5")
        assert client.forget(path)  # the daemon knew it (and drops the queued value)
        assert not client.forget(path)
        with pytest.raises(ValueError):
            client.command("PING\nFLUSHALL")


def test_unreachable_daemon_and_a_dropped_connection_raise_rrdcached_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RrdcachedError, match="cannot connect"):
        RrdcachedClient(f"127.0.0.1:{port}", timeout=1).ping()

    daemon = Rrdcached(tmp_path)
    client = RrdcachedClient(daemon.address, timeout=2)
    assert client.ping()
    daemon.stop()
    with pytest.raises(RrdcachedError):
        client.ping()
    assert not client.connected
    with pytest.raises(RrdcachedError):
        client.ping()  # tries to connect again, and fails cleanly
