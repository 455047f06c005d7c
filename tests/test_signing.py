"""Signed LWES datagrams (mondemand/signing.py) and the client that signs them, against a real UDP socket."""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct
import time

import pytest
from mondemand.client import Client, process

from mondemand.lwes import Event, LwesType, decode, encode
from mondemand.signing import (
    BAD_SIGNATURE,
    EXPIRED,
    REPLAY_FULL,
    REPLAYED,
    SIGNATURE_OVERHEAD,
    UNKNOWN_KEY,
    UNSIGNED,
    Verifier,
    sign,
    split,
)
from mondemand.tenants import Tenants, TenantSpec, hash_key


@pytest.fixture
def tenants(tmp_path) -> Tenants:
    (tmp_path / "a.keys").write_text("a hmac:secret-of-tenant-a-0001\n")
    (tmp_path / "b.keys").write_text(f"b-web {hash_key('bearer-of-b')}\nb hmac:secret-of-tenant-b-0002\n")
    return Tenants({"a": TenantSpec("a", tmp_path / "a.keys", ()), "b": TenantSpec("b", tmp_path / "b.keys", ())})


def event(n: int = 3) -> bytes:
    ev = Event("Demo::Thing")
    for i in range(n):
        ev.set(f"k{i}", LwesType.STRING, f"value {i}")
    return encode(ev)


def now_ms() -> int:
    return int(time.time() * 1000)


def test_the_signature_is_the_documented_hmac_over_all_but_the_last_64_bytes():
    data = event()
    signed = sign(data, "a", b"secret-of-tenant-a-0001", 1_700_000_000_123)
    assert struct.unpack_from(">H", signed, 1 + signed[0])[0] == 4  # the count includes `auth`
    start, value = split(signed)
    assert signed[start:start + 8] == b"\x04auth\x05" + struct.pack(">H", len(value))
    assert value.startswith(b"v1:a:1700000000123:")
    mac = hmac.new(b"secret-of-tenant-a-0001", signed[:-64], hashlib.sha256).hexdigest().encode()
    assert value.endswith(mac) and len(signed) - len(data) <= SIGNATURE_OVERHEAD
    decoded = decode(signed)
    assert decoded.attrs["auth"][1] == value.decode() and decoded.attrs["k2"][1] == "value 2"


def test_verify_returns_the_tenant_and_the_event_as_it_was_before_signing(tenants):
    verifier = Verifier(tenants)
    data = event()
    assert verifier.verify(sign(data, "b", b"secret-of-tenant-b-0002"), now_ms()) == ("b", data)
    assert verifier.counters()["verified"] == 1


def test_each_bad_datagram_is_refused_for_its_reason_and_counted(tenants):
    verifier = Verifier(tenants, window=30)
    now = now_ms()
    good = sign(event(), "a", b"secret-of-tenant-a-0001", now)
    tampered = bytearray(good)
    tampered[5] ^= 0x20
    assert verifier.verify(event(), now) == UNSIGNED
    assert verifier.verify(bytes(tampered), now) == BAD_SIGNATURE
    assert verifier.verify(sign(event(), "a", b"the-wrong-secret-xxxxx", now), now) == BAD_SIGNATURE
    assert verifier.verify(sign(event(), "zz", b"secret-of-tenant-a-0001", now), now) == UNKNOWN_KEY
    assert verifier.verify(sign(event(), "a", b"secret-of-tenant-a-0001", now - 31_000), now) == EXPIRED
    assert verifier.verify(sign(event(), "a", b"secret-of-tenant-a-0001", now + 31_000), now) == EXPIRED
    assert verifier.verify(good, now)[0] == "a"
    assert verifier.verify(good, now) == REPLAYED
    # b's secret cannot sign as a
    assert verifier.verify(sign(event(), "a", b"secret-of-tenant-b-0002", now), now) == BAD_SIGNATURE
    assert verifier.counters() == {"verified": 1, UNSIGNED: 1, BAD_SIGNATURE: 3, UNKNOWN_KEY: 1, EXPIRED: 2,
                                   REPLAYED: 1, REPLAY_FULL: 0, "remembered_signatures": 1}


def test_the_replay_memory_is_bounded_and_forgets_only_what_the_window_would_refuse(tenants):
    verifier = Verifier(tenants, window=1, max_remembered=1000)
    start = now_ms()
    secret = b"secret-of-tenant-a-0001"
    for i in range(1000):
        numbered = encode(Event("Demo::N", {"i": (LwesType.INT32, i)}))
        assert verifier.verify(sign(numbered, "a", secret, start), start)[0] == "a"
    full = sign(encode(Event("Demo::N", {"i": (LwesType.INT32, -1)})), "a", secret, start)
    assert verifier.verify(full, start) == REPLAY_FULL  # nothing remembered may be forgotten yet
    later = start + 1500  # every remembered signature is now past the window: forgotten, and room is made
    fresh = sign(encode(Event("Demo::N", {"i": (LwesType.INT32, -2)})), "a", secret, later)
    assert verifier.verify(fresh, later)[0] == "a"
    assert verifier.counters()["remembered_signatures"] == 1


def test_client_signs_udp_events_that_the_server_side_verifies(tenants):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        client = Client("shop", host="web1", transports=[f"udp://127.0.0.1:{port}"], tenant="a",
                        key="secret-of-tenant-a-0001", flush_interval=3600)
        client.increment("orders", 3)
        assert client.flush() == 1
        dattss = process("api", transports=[f"udp://127.0.0.1:{port}"], user="b", auth="secret-of-tenant-b-0002",
                         interval=3600)
        dattss.agg("query", "153ms")
        assert dattss.flush() == 1
        first, second = sock.recv(65535), sock.recv(65535)
        client.close()
        dattss.close()
    verifier = Verifier(tenants)
    tenant, data = verifier.verify(first, now_ms())
    assert tenant == "a" and decode(data).attrs["prog_id"][1] == "shop" and "auth" not in decode(data).attrs
    tenant, data = verifier.verify(second, now_ms())
    assert tenant == "b" and decode(data).attrs["prog_id"][1] == "api"


def test_client_refuses_a_key_without_a_key_id():
    with pytest.raises(ValueError, match="needs a tenant or key_id"):
        Client("shop", transports=["udp://127.0.0.1:9"], key="some-secret-value-1")


def test_tenants_keep_hashes_only_and_quota_refusals_take_nothing(tmp_path):
    (tmp_path / "q.keys").write_text(f"q-web {hash_key('bearer-q')}\n")
    table = Tenants({"q": TenantSpec("q", tmp_path / "q.keys", (), max_events_per_second=5, max_series=2)})
    assert table.authenticate("bearer-q") == "q" and table.authenticate("bearer-") is None
    assert "bearer-q" not in repr(table.status()) and not table.is_admin("bearer-q")
    assert table.admit("q", 5, 10) == 0.0
    wait = table.admit("q", 1, 10)
    assert 0 < wait <= 1.0 and table.over_quota["q"] == 1
    assert table.admit_series("q", ["x", "y"]) and table.admit_series("q", ["x"])
    assert not table.admit_series("q", ["z"])
    (tmp_path / "q.keys").write_text("broken line\n")
    assert table.reload() and table.authenticate("bearer-q") == "q"  # the old keys stay


@pytest.mark.parametrize("secret", [b"short-secret-16b", b"s" * 64, b"a-secret-longer-than-one-block-" * 4])
def test_mac_hex_is_rfc2104_hmac_sha256(secret):
    from mondemand.signing import mac_hex

    for message in (b"", b"x", bytes(range(256)) * 3):
        assert mac_hex(secret, message) == hmac.new(secret, message, hashlib.sha256).hexdigest()
        assert mac_hex(secret, memoryview(message)) == hmac.new(secret, message, hashlib.sha256).hexdigest()


def test_the_example_of_wire_format_md_section_9_byte_for_byte():
    data = encode(Event("Demo::Thing", {"k": (LwesType.STRING, "v")}))
    signed = sign(data, "acme", b"s3cret-s3cret-s3cret", 1_700_000_000_123)
    head = b"\x0bDemo::Thing\x00\x02" + b"\x01k\x05\x00\x01v" + b"\x04auth\x05\x00\x56" + b"v1:acme:1700000000123:"
    assert signed[:-64] == head
    assert signed[-64:] == hmac.new(b"s3cret-s3cret-s3cret", head, hashlib.sha256).hexdigest().encode()


def test_the_gate_refuses_a_statsmsg_that_would_take_its_tenant_over_max_series(tmp_path):
    from mondemand.listeners.udpauth import DatagramGate

    from mondemand.messages import Metric, MetricType, StatsMsg

    (tmp_path / "s.keys").write_text("s hmac:series-limited-secret-01\n")
    tenants = Tenants({"s": TenantSpec("s", tmp_path / "s.keys", (), max_series=3)})
    gate = DatagramGate(tenants, "required", 60.0, 1000)
    secret = b"series-limited-secret-01"

    def stats(*names: str) -> bytes:
        msg = StatsMsg("app", "h", {}, [Metric(MetricType.GAUGE, n, 1) for n in names])
        return sign(encode(msg.to_lwes()[0]), "s", secret)

    assert gate.check(stats("a", "b"), now_ms())[1] == "s"
    assert gate.check(stats("a", "c"), now_ms())[1] == "s"  # 3 live series
    assert gate.check(stats("d"), now_ms()) is None  # a fourth
    assert gate.check(stats("b", "c"), now_ms())[1] == "s"  # known ones still pass
    assert gate.counters()["over_quota"] == 1 and tenants.status()["s"]["live_series"] == 3


def test_any_bytes_at_all_are_refused_with_a_reason_never_an_exception(tenants):
    import random

    rng = random.Random(15)
    verifier = Verifier(tenants)
    good = sign(event(), "a", b"secret-of-tenant-a-0001", now_ms())
    samples = [good[:i] for i in range(len(good))]  # every truncation
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300))) for _ in range(500)]
    samples += [b"\x04auth\x05" + bytes([0, k]) + b"v1:a:1:" + b"0" * 64 for k in range(0, 120, 7)]
    for data in samples:
        assert isinstance(verifier.verify(data, now_ms()), str)
