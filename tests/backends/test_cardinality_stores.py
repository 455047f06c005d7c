"""Each store calls its cardinality guard where it creates a series: whisper files, agg, the statsd listener."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from mondemand.backends.agg import AggBackend
from mondemand.listeners.statsd import StatsdAggregator
from mondemand_backend_whisper import WhisperBackend

from mondemand.cardinality import CardinalityGuard, CardinalityLimits
from mondemand.envelope import RawEvent
from mondemand.lwes import encode
from mondemand.options import parse_options
from mondemand.plugin_api import ServerContext
from tests.backends.rrd.rrd_helpers import stats_msg
from tests.backends.test_agg import Collector


def from_sender(ip: str, *messages: Any) -> list[RawEvent]:
    now = int(time.time() * 1000)
    return [RawEvent(encode(e), now, ip, 40000, "udp") for msg in messages for e in msg.to_lwes(max_metrics=2000)]


def test_whisper_creates_at_most_100_files_from_one_datagram_and_remembers_no_refusal(tmp_path: Path):
    values, problems = parse_options(WhisperBackend.options, {"root": str(tmp_path), "retentions": "1m:1d"})
    assert problems == []
    backend = WhisperBackend("whisper", values, ServerContext())
    backend.start()
    gauges = {f"g{i:04d}": i for i in range(500)}
    [datagram] = from_sender("10.0.0.2", stats_msg("flood", gauges=gauges))
    backend.handle([datagram])
    assert sum(1 for _ in tmp_path.rglob("*.wsp")) == 100
    counters = backend.counters()
    assert counters["cardinality"] == 400
    assert counters["cardinality_refused.sender.10.0.0.2"] == 400
    assert counters["series"] == 100  # refused series are not remembered
    backend.handle(from_sender("10.0.0.3", stats_msg("other", gauges={"up": 1})))
    assert sum(1 for _ in tmp_path.rglob("*.wsp")) == 101


def test_agg_refuses_a_flooding_senders_new_counters_and_takes_another_senders():
    values, problems = parse_options(AggBackend.options, {"checkpoint": "off", "series_per_sender": "50",
                                                          "new_series_per_datagram": "0"})
    assert problems == []
    backend = AggBackend("agg", values, ServerContext(inject=Collector()))
    backend.start()
    backend.handle(from_sender("10.0.0.2", stats_msg("flood", counters={f"c{i}": i for i in range(200)})))
    assert backend.counters()["counter_states"] == 50
    assert backend.stats["refused"] == 150
    backend.handle(from_sender("10.0.0.3", stats_msg("shop", counters={"orders": 7})))
    assert backend.counters()["counter_states"] == 51
    assert backend.counters()["cardinality_refused.sender.10.0.0.2"] == 150


def test_statsd_listener_refuses_one_senders_flood_and_releases_on_expiry():
    guard = CardinalityGuard("statsd", CardinalityLimits(per_datagram=0, per_minute=0, per_sender=100,
                                                         per_prog_id=0), logging.getLogger("test"))
    agg = StatsdAggregator(guard=guard, expire_after=60.0, start=1000.0)
    agg.feed("\n".join(f"flood.m{i}:1|c" for i in range(1000)), "10.0.0.2")
    agg.feed("shop.orders:1|c", "10.0.0.3")
    assert agg.live_series == 101
    assert agg.refused == 900
    assert guard.counters()["cardinality_refused.sender.10.0.0.2"] == 900
    agg.flush(1010.0)
    agg.flush(1100.0)  # both expire: the sender's share is free again
    assert agg.live_series == 0
    agg.feed("flood.again:1|c", "10.0.0.2")
    assert agg.live_series == 1
