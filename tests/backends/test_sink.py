"""`sink` backend: counts and discards, without decoding."""

from __future__ import annotations

from mondemand.backends.sink import SinkBackend

from mondemand.envelope import RawEvent
from mondemand.lwes import Event, LwesType, encode
from mondemand.plugin_api import ServerContext
from mondemand.runner import BackendRunner


def raw(n: int) -> RawEvent:
    return RawEvent(encode(Event("Load::Test").set("n", LwesType.UINT32, n)), 1, "127.0.0.1", 1)


def test_counts_events_and_bytes():
    sink = SinkBackend("sink", {}, ServerContext())
    sink.start()
    batch = [raw(i) for i in range(5)]
    sink.handle(batch)
    sink.handle(batch[:2])
    assert sink.counters() == {"discarded": 7, "bytes": 7 * len(batch[0].data)}


def test_never_decodes_so_malformed_bodies_are_counted_not_refused():
    assert SinkBackend.needs == "raw"
    broken = RawEvent(b"\x06Broken\x00\x01\x01a\x42", 1, "127.0.0.1", 1)
    runner = BackendRunner("sink", lambda: SinkBackend("sink", {}, ServerContext()), linger=0.001)
    runner.offer_many([broken, raw(1)])
    runner.start()
    runner.stop(timeout=10)
    counters = runner.counters()
    assert (counters["events_processed"], counters["decode_errors"]) == (2, 0)
    assert counters["backend.discarded"] == 2
    assert counters["backend.bytes"] == len(broken.data) + len(raw(1).data)
