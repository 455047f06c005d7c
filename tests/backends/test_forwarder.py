"""`lwes` forwarder: unchanged bytes, headers, extra context, filters, all/random/hash destinations."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from mondemand.backends.forwarder import LwesForwarder

from mondemand.envelope import RawEvent
from mondemand.hashring import HashRing
from mondemand.lwes import LwesType, decode, encode, read_headers
from mondemand.messages import LogLine, LogMsg, Metric, MetricType, Priority, StatsMsg, from_lwes
from mondemand.options import parse_options
from mondemand.plugin_api import ServerContext


class Receiver:
    """A real UDP socket on loopback collecting datagrams."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.3)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def drain(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(65535))
            except TimeoutError:
                return out


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    rs = [Receiver() for _ in range(3)]
    yield rs
    for r in rs:
        r.sock.close()


def forwarder(dests: list[Receiver], **options: str) -> LwesForwarder:
    values, problems = parse_options(LwesForwarder.options, {"destinations": ",".join(r.address for r in dests),
                                                             **options})  # fmt: skip
    assert problems == []
    backend = LwesForwarder("fwd", values, ServerContext())
    backend.start()
    return backend


def stats_raw(*names: str, prog: str = "app", sender: tuple[str, int] = ("10.1.2.3", 4567), **context: str):
    msg = StatsMsg(prog, "web1", context, [Metric(MetricType.GAUGE, n, i) for i, n in enumerate(names)],
                   send_time=1_700_000_000_000)  # fmt: skip
    return RawEvent(encode(msg.to_lwes()[0]), 1_700_000_000_123, *sender, "udp")


def test_events_go_out_unchanged_to_every_destination(receivers):
    fwd = forwarder(receivers)
    raw = stats_raw("a", "b")
    fwd.handle([raw])
    assert [r.drain() for r in receivers] == [[raw.data]] * 3
    assert fwd.counters()["forwarded"] == 3 and fwd.counters()["reencoded"] == 0


def test_include_headers_keeps_the_original_sender_and_receipt_time(receivers):
    fwd = forwarder(receivers[:1], include_headers="true")
    fwd.handle([stats_raw("a")])
    [data] = receivers[0].drain()
    assert read_headers(data) == (1_700_000_000_123, "10.1.2.3", 4567)


def test_extra_context_is_added_and_headers_kept_when_asked(receivers):
    fwd = forwarder(receivers[:1], extra_context="cluster=colo1", include_headers="true")
    log = LogMsg("app", "web1", {"dc": "x"}, [LogLine("a.py", 3, Priority.ERROR, "boom", 1, None)], 5)
    fwd.handle([stats_raw("a", dc="x"), RawEvent(encode(log.to_lwes()), 77, "10.9.9.9", 9, "udp")])
    stats_data, log_data = receivers[0].drain()
    stats, log_back = from_lwes(decode(stats_data)), from_lwes(decode(log_data))
    assert stats.context == {"dc": "x", "cluster": "colo1"} and log_back.context == {"dc": "x", "cluster": "colo1"}
    assert read_headers(stats_data) == (1_700_000_000_123, "10.1.2.3", 4567)
    assert read_headers(log_data) == (77, "10.9.9.9", 9)


def test_without_include_headers_reencoded_events_carry_none(receivers):
    fwd = forwarder(receivers[:1], extra_context="cluster=colo1")
    fwd.handle([stats_raw("a")])
    [data] = receivers[0].drain()
    assert read_headers(data) is None and "ReceiptTime" not in decode(data).attrs


def test_filter_aggregates_passes_only_stat_events(receivers):
    fwd = forwarder(receivers[:1], filter="aggregates")
    aggregate, per_host = stats_raw("a", stat="gauge"), stats_raw("a")
    log = LogMsg("app", "h", {}, [LogLine("f", 1, Priority.INFO, "m", 1, None)], 1)
    fwd.handle([aggregate, per_host, RawEvent(encode(log.to_lwes()), 1, "127.0.0.1", 1)])
    assert receivers[0].drain() == [aggregate.data]
    assert fwd.counters()["filtered"] == 2
    rest = forwarder(receivers[1:2], filter="raw")
    rest.handle([aggregate, per_host])
    assert receivers[1].drain() == [per_host.data]


def test_random_mode_sends_to_copies_consecutive_destinations(receivers):
    fwd = forwarder(receivers, mode="random", copies="2")
    for _ in range(30):
        fwd.handle([stats_raw("a")])
    got = [len(r.drain()) for r in receivers]
    assert sum(got) == 60 and all(n > 0 for n in got)


def test_hash_mode_shards_metrics_consistently_and_splits_messages(receivers):
    fwd = forwarder(receivers, mode="hash")
    names = [f"metric{i}" for i in range(40)]
    fwd.handle([stats_raw(*names), stats_raw(*names)])
    ring = HashRing([r.address for r in receivers])
    seen = []
    for r in receivers:
        for data in r.drain():
            msg = from_lwes(decode(data))
            for m in msg.metrics:
                assert ring.node_for(f"app\0{m.name}") == r.address
                seen.append(m.name)
    assert sorted(seen) == sorted(names * 2)
    # A one-metric event goes out as its original bytes to its owner.
    single = stats_raw("metric7")
    fwd.handle([single])
    owner = next(r for r in receivers if r.address == ring.node_for("app\0metric7"))
    assert owner.drain() == [single.data]


def test_undecodable_and_oversized_events_are_counted_not_raised(receivers):
    fwd = forwarder(receivers[:1], filter="aggregates")
    broken = RawEvent(b"\x13MonDemand::StatsMsg\x00\x05\x07", 1, "127.0.0.1", 1, "udp")
    fwd.handle([broken, stats_raw("a", stat="gauge")])
    assert fwd.counters()["undecodable"] == 1 and len(receivers[0].drain()) == 1
    big = forwarder(receivers[:1], include_headers="true")
    from mondemand.lwes import Event

    near_limit = encode(Event("Big::Event").set("blob", LwesType.STRING, "x" * 65_480))
    big.handle([RawEvent(near_limit, 1, "127.0.0.1", 1, "udp")])
    assert big.counters()["too_large"] == 1 and receivers[0].drain() == []


def test_bad_configs_name_the_key(tmp_path):
    from mondemand.config import ConfigError, load_config
    from mondemand.plugins import PluginHost

    host = PluginHost.discover()

    path = tmp_path / "routes.ini"
    path.write_text("""
[listener:in]
type = lwes-udp
port = 0

[backend:fwd]
type = lwes
destinations = 127.0.0.1:1, 127.0.0.1:2
mode = hash
copies = 3
extra_context = cluster

[route:all]
events = *
backends = fwd
""")
    with pytest.raises(ConfigError) as info:
        load_config(path, host)
    text = str(info.value)
    assert "[backend:fwd] extra_context" in text
    path.write_text(path.read_text().replace("extra_context = cluster\n", ""))
    with pytest.raises(ConfigError, match=r"\[backend:fwd\] copies: is 3, more than the 2 destinations"):
        load_config(path, host)


def test_hash_on_tenant_keeps_each_tenant_on_its_servers_and_sign_re_signs_for_the_next_tier(receivers, tmp_path):
    from mondemand.signing import Verifier
    from mondemand.tenants import Tenants, TenantSpec

    names = [f"t{i}" for i in range(6)]
    for name in names:
        (tmp_path / f"{name}.keys").write_text(f"{name} hmac:{name}-forwarding-secret-01\n")
    tenants = Tenants({n: TenantSpec(n, tmp_path / f"{n}.keys", ()) for n in names})
    values, problems = parse_options(LwesForwarder.options, {
        "destinations": ",".join(r.address for r in receivers), "mode": "hash", "hash_key": "tenant", "sign": "true"})
    assert problems == []
    backend = LwesForwarder("fwd", values, ServerContext(tenants=tenants))
    backend.start()
    ring = HashRing([r.address for r in receivers])
    expected: dict[str, set[str]] = {r.address: set() for r in receivers}
    for name in names:
        events = [stats_raw(f"m{i}", "other", prog="shop") for i in range(3)]
        for raw in events:
            raw.tenant = name
        backend.handle(events)
        [dest] = ring.nodes_for(f"tenant\0{name}", 1)
        expected[dest].add(name)
    backend.handle([stats_raw("untenanted")])  # no tenant: forwarded unsigned, hashed by series
    backend.close()
    verifier = Verifier(tenants)
    import time

    seen_unsigned = 0
    for receiver in receivers:
        got: set[str] = set()
        for data in receiver.drain():
            checked = verifier.verify(data, int(time.time() * 1000))
            if checked == "unsigned":
                seen_unsigned += 1
                continue
            tenant, event = checked
            assert from_lwes(decode(event)).prog_id == "shop"
            got.add(tenant)
        assert got == expected[receiver.address]  # a tenant's three events all on its own server
    assert seen_unsigned == 1 and len({n for s in expected.values() for n in s}) == 6
