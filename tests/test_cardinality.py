"""`mondemand.cardinality.CardinalityGuard`: each limit refuses, counts and names its source; others go on."""

from __future__ import annotations

import logging

from mondemand.cardinality import CardinalityGuard, CardinalityLimits, guard_sender

LOG = logging.getLogger("test.cardinality")


def guard(**limits: float) -> CardinalityGuard:
    base = {"per_datagram": 0, "per_minute": 0, "per_sender": 0, "per_prog_id": 0, "idle": 3600.0}
    return CardinalityGuard("test store", CardinalityLimits(**{**base, **limits}), LOG)  # type: ignore[arg-type]


def test_one_datagram_creates_at_most_per_datagram_series():
    g = guard(per_datagram=100)
    datagram, other = object(), object()
    admitted = sum(g.admit("10.0.0.1", "app", datagram, now=0.0) for _ in range(1500))
    assert admitted == 100
    assert g.refused["datagram"] == 1400
    assert g.admit("10.0.0.1", "app", other, now=0.0)  # the next datagram starts again


def test_a_flooding_sender_is_refused_while_others_keep_creating(caplog):
    g = guard(per_sender=1000)
    with caplog.at_level(logging.WARNING, "test.cardinality"):
        flood = sum(g.admit("127.0.0.2", f"p{i % 50}", now=1.0) for i in range(21_000))
    assert flood == 1000
    assert g.admit("127.0.0.3", "shop", now=1.0)
    counters = g.counters()
    assert counters["cardinality_refused_sender_live"] == 20_000
    assert counters["cardinality_refused.sender.127.0.0.2"] == 20_000
    assert "cardinality_refused.sender.127.0.0.3" not in counters
    assert len(caplog.records) == 1 and "127.0.0.2" in caplog.records[0].getMessage()  # rate-limited, named


def test_per_prog_id_limit_holds_across_senders_and_release_gives_room():
    g = guard(per_prog_id=10)
    assert sum(g.admit(f"10.0.0.{i}", "flood", now=0.0) for i in range(30)) == 10
    assert not g.admit("10.0.0.99", "flood", now=0.0)
    assert g.admit("10.0.0.99", "other", now=0.0)
    g.release("10.0.0.1", "flood")
    assert g.admit("10.0.0.99", "flood", now=0.0)
    assert g.counters()["cardinality_refused.prog_id.flood"] == 21


def test_per_minute_rate_resets_with_the_minute():
    g = guard(per_minute=5)
    assert sum(g.admit("10.0.0.1", "app", now=60.0) for _ in range(8)) == 5
    assert g.refused["sender_rate"] == 3
    assert sum(g.admit("10.0.0.1", "app", now=125.0) for _ in range(8)) == 5


def test_rates_only_admission_does_not_hold_live_series():
    g = guard(per_sender=2)
    assert all(g.admit("10.0.0.1", "app", now=0.0, live=False) for _ in range(10))
    assert g.admit("10.0.0.1", "app", now=0.0) and g.admit("10.0.0.1", "app", now=0.0)
    assert not g.admit("10.0.0.1", "app", now=0.0)


def test_idle_sources_are_forgotten_with_their_count():
    g = guard(per_sender=3, idle=600.0)
    assert sum(g.admit("10.0.0.1", "app", now=0.0) for _ in range(5)) == 3
    g.sweep(now=700.0)
    assert "10.0.0.1" not in g.senders
    assert g.admit("10.0.0.1", "app", now=700.0)


def test_events_of_this_server_count_only_by_prog_id():
    assert guard_sender("10.1.2.3", "main") == "10.1.2.3"
    assert guard_sender("127.0.0.1", "internal") is None
    assert guard_sender("127.0.0.1", "agg:agg") is None
    g = guard(per_sender=1)
    assert g.admit(None, "app", now=0.0) and g.admit(None, "app", now=0.0)
    assert not g.senders
