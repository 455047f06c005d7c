"""`BackendRunner`: a backend behind its own queue and thread, with drops, errors and restarts counted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from mondemand.envelope import RawEvent
from mondemand.lwes import Event, LwesDecodeError, LwesType, encode
from mondemand.messages import Metric, MetricType, StatsMsg
from mondemand.plugin_api import Backend, ServerContext
from mondemand.runner import BackendRunner
from tests.e2e.harness import wait_for

FAST = {"backoff_min": 0.01, "backoff_max": 0.05, "linger": 0.001}


class Journal:
    """What every instance a runner built did, in order (instances are numbered from 1)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[int, str]] = []
        self.batches: list[list[int]] = []
        self.instances = 0
        self.start_times: list[float] = []

    def note(self, instance: int, what: str) -> None:
        with self.lock:
            self.calls.append((instance, what))

    def handled(self) -> list[int]:
        with self.lock:
            return [seq for batch in self.batches for seq in batch]


class Recording(Backend):
    """Records every call; `fail_on` makes handle raise for those sequence numbers, `gate` makes it wait."""

    def __init__(self, journal: Journal, fail_on: frozenset[int] = frozenset(), gate: threading.Event | None = None,
                 failing_starts: frozenset[int] = frozenset()) -> None:
        super().__init__("rec", {}, ServerContext())
        with journal.lock:
            journal.instances += 1
            self.instance = journal.instances
        self.journal = journal
        self.fail_on = fail_on
        self.gate = gate
        self.failing_starts = failing_starts

    def start(self) -> None:
        self.journal.start_times.append(time.monotonic())
        self.journal.note(self.instance, "start")
        if self.instance in self.failing_starts:
            raise OSError(f"instance {self.instance} cannot start")

    def handle(self, batch: list[RawEvent]) -> None:
        if self.gate is not None:
            assert self.gate.wait(30), "gate never opened"
        seqs = [raw.event["seq"] for raw in batch]
        if self.fail_on.intersection(seqs):
            raise RuntimeError(f"cannot handle {seqs}")
        with self.journal.lock:
            self.journal.batches.append(seqs)
        self.journal.note(self.instance, "handle")

    def flush(self) -> None:
        self.journal.note(self.instance, "flush")

    def close(self) -> None:
        self.journal.note(self.instance, "close")

    def reopen(self) -> None:
        self.journal.note(self.instance, "reopen")

    def counters(self) -> dict[str, float]:
        return {"instance": self.instance}


def events(n: int, start: int = 0) -> list[RawEvent]:
    return [RawEvent(encode(Event("Test::Seq").set("seq", LwesType.UINT32, i)), 1, "127.0.0.1", 9, "main")
            for i in range(start, start + n)]


def runner(journal: Journal, name: str = "rec", factory: Callable[[], Backend] | None = None,
           **settings: float) -> BackendRunner:
    return BackendRunner(name, factory or (lambda: Recording(journal)), **{**FAST, **settings})


def test_events_are_handled_in_order_in_batches():
    journal = Journal()
    r = runner(journal, batch_size=10)
    assert r.offer_many(events(95)) == 95
    assert r.depth == 95
    r.start()
    r.stop(timeout=10)
    assert journal.batches == [list(range(i, min(i + 10, 95))) for i in range(0, 95, 10)]
    counters = r.counters()
    assert (counters["events_processed"], counters["dropped"], counters["errors"]) == (95, 0, 0)
    assert counters["queue_depth"] == 0


def test_offer_while_running_keeps_order():
    journal = Journal()
    r = runner(journal, batch_size=50)
    r.start()
    for raw in events(300):
        assert r.offer(raw)
    wait_for(lambda: r.processed == 300, what="300 events handled")
    r.stop(timeout=10)
    assert journal.handled() == list(range(300))
    assert all(1 <= len(b) <= 50 for b in journal.batches)


def test_a_full_queue_drops_for_that_backend_only():
    small_journal, big_journal = Journal(), Journal()
    small = runner(small_journal, "small", queue_size=5)
    big = runner(big_journal, "big", queue_size=1000)
    batch = events(10)
    assert small.offer_many(batch) == 5
    assert big.offer_many(batch) == 10
    assert small.offer(events(1, 10)[0]) is False
    assert (small.dropped, big.dropped) == (6, 0)
    for r in (small, big):
        r.start()
        r.stop(timeout=10)
    assert small_journal.handled() == [0, 1, 2, 3, 4]
    assert big_journal.handled() == list(range(10))
    assert small.counters()["dropped"] == 6 and big.counters()["dropped"] == 0


def test_a_backend_that_raises_is_counted_restarted_and_keeps_processing():
    journal = Journal()
    r = runner(journal, batch_size=1, factory=lambda: Recording(journal, fail_on=frozenset({2})))
    r.offer_many(events(6))
    r.start()
    wait_for(lambda: r.processed == 5, what="the events after the failure")
    r.offer_many(events(3, 6))
    wait_for(lambda: r.processed == 8, what="events offered after the restart")
    r.stop(timeout=10)
    assert journal.handled() == [0, 1, 3, 4, 5, 6, 7, 8]
    assert (r.errors, r.failed, r.restarts) == (1, 1, 1)
    assert journal.instances == 2
    first = [what for instance, what in journal.calls if instance == 1]
    assert first == ["start", "handle", "handle", "close"]  # the broken instance was closed
    assert [what for instance, what in journal.calls if instance == 2][-2:] == ["flush", "close"]
    assert r.counters()["backend.instance"] == 2


def test_restarts_back_off_while_starting_keeps_failing():
    journal = Journal()
    r = BackendRunner(
        "flaky",
        lambda: Recording(journal, fail_on=frozenset({0}), failing_starts=frozenset({2, 3, 4})),
        batch_size=1, backoff_min=0.02, backoff_max=0.05, linger=0.001,
    )
    r.offer_many(events(3))
    r.start()
    wait_for(lambda: r.processed == 2, what="processing after the restarts")
    r.stop(timeout=10)
    assert journal.instances == 5
    assert journal.handled() == [1, 2]
    # One failed handle plus three failed starts; one successful restart.
    assert (r.errors, r.restarts, r.failed) == (4, 1, 1)
    # Before the 2nd start: 0.02 s; then the wait doubles, capped at backoff_max.
    waits = [b - a for a, b in zip(journal.start_times, journal.start_times[1:], strict=False)]
    assert len(waits) == 4
    for waited, least in zip(waits, [0.02, 0.04, 0.05, 0.05], strict=True):
        assert waited >= least - 0.001, waits


def test_a_slow_backend_does_not_delay_another_runner():
    slow_journal, fast_journal = Journal(), Journal()
    gate = threading.Event()
    slow = runner(slow_journal, "slow", factory=lambda: Recording(slow_journal, gate=gate))
    fast = runner(fast_journal, "fast")
    slow.start()
    fast.start()
    try:
        for start in range(0, 200, 20):
            batch = events(20, start)
            slow.offer_many(batch)
            fast.offer_many(batch)
        wait_for(lambda: fast.processed == 200, what="the fast backend to handle everything")
        assert slow.processed == 0  # still stuck in its first batch
        assert fast_journal.handled() == list(range(200))
    finally:
        gate.set()
    slow.stop(timeout=10)
    fast.stop(timeout=10)
    assert slow_journal.handled() == list(range(200))


def test_stop_drains_the_queue_then_flushes_and_closes():
    journal = Journal()
    r = runner(journal, batch_size=10, flush_interval=3600)
    r.offer_many(events(50))
    r.start()
    r.stop(timeout=10)
    assert journal.handled() == list(range(50))
    calls = [what for _, what in journal.calls]
    assert calls[0] == "start"
    assert calls[-2:] == ["flush", "close"]
    assert calls.count("close") == 1
    assert r.depth == 0
    # Once stopping, offers are refused and counted as drops.
    assert r.offer(events(1)[0]) is False
    assert r.offer_many(events(3)) == 0
    assert r.dropped == 4


def test_flush_is_called_periodically():
    journal = Journal()
    r = runner(journal, flush_interval=0.02)
    r.start()
    try:
        wait_for(lambda: [w for _, w in journal.calls].count("flush") >= 3, what="three periodic flushes")
    finally:
        r.stop(timeout=10)


def test_reopen_is_called_in_the_worker():
    journal = Journal()
    r = runner(journal)
    r.start()
    r.request_reopen()
    wait_for(lambda: (1, "reopen") in journal.calls, what="reopen")
    r.stop(timeout=10)


class EventReader(Backend):
    needs = "event"

    def __init__(self, got: list[RawEvent]) -> None:
        super().__init__("reader", {}, ServerContext())
        self.got = got

    def handle(self, batch: list[RawEvent]) -> None:
        self.got.extend(batch)


class MessageReader(EventReader):
    needs = "message"


def test_undecodable_events_are_counted_and_left_out_for_event_backends():
    got: list[RawEvent] = []
    reported: list[tuple[str, str]] = []
    r = BackendRunner("reader", lambda: EventReader(got), on_decode_error=lambda raw, exc: reported.append(
        (raw.name, exc.kind)), **FAST)
    good = events(2)
    broken = RawEvent(b"\x06Broken\x00\x01\x01a\x42", 1, "127.0.0.1", 9)  # unknown type id
    r.offer_many([good[0], broken, good[1]])
    r.start()
    r.stop(timeout=10)
    assert got == [good[0], good[1]]
    assert r.decode_errors == 1
    assert reported == [("Broken", "bad-type-id")]
    with pytest.raises(LwesDecodeError, match="bad-type-id"):
        broken.event  # noqa: B018 - the cached error is raised again


def test_message_backends_see_only_well_formed_messages():
    got: list[RawEvent] = []
    r = BackendRunner("reader", lambda: MessageReader(got), **FAST)
    stats = StatsMsg("app", metrics=[Metric(MetricType.GAUGE, "load", 3)]).to_lwes()[0]
    bad = Event("MonDemand::StatsMsg").set("num", LwesType.UINT16, 0)  # no prog_id
    good_raw = RawEvent.from_event(stats)
    other = RawEvent.from_event(Event("Not::MonDemand"))
    r.offer_many([RawEvent.from_event(bad), good_raw, other])
    r.start()
    r.stop(timeout=10)
    assert got == [good_raw, other]
    assert got[0].message.prog_id == "app"
    assert got[1].message is None
    assert r.decode_errors == 1


class StatsReader(EventReader):
    needs = "stats"


def test_stats_backends_get_records_and_other_events_undecoded():
    got: list[RawEvent] = []
    reported: list[Exception] = []
    r = BackendRunner("stats", lambda: StatsReader(got), on_decode_error=lambda raw, exc: reported.append(exc),
                      **FAST)
    good = RawEvent.from_event(StatsMsg("app", metrics=[Metric(MetricType.GAUGE, "load", 3)]).to_lwes()[0])
    bad_message = RawEvent.from_event(Event("MonDemand::StatsMsg").set("num", LwesType.UINT16, 0))
    bad_bytes = RawEvent(good.data[:-2], 1, "127.0.0.1", 9)
    other = RawEvent(b"\x06Broken\x00\x01\x01a\x42", 1, "127.0.0.1", 9)  # not a StatsMsg: not decoded at all
    r.offer_many([bad_message, good, bad_bytes, other])
    r.start()
    r.stop(timeout=10)
    assert got == [good, other]
    assert got[0].stats[0] == "app" and got[1].stats is None
    assert not hasattr(good, "_event") and not hasattr(other, "_event")
    assert r.decode_errors == 2
    assert len(reported) == 1 and isinstance(reported[0], LwesDecodeError)


def test_one_undecodable_stats_event_reaches_every_runner_as_one_error_object():
    got: list[RawEvent] = []
    reported: list[Exception] = []
    runners = [BackendRunner(f"r{i}", (lambda cls=cls: cls(got)), on_decode_error=lambda raw, exc: reported.append(exc),
                             **FAST) for i, cls in enumerate([StatsReader, EventReader, MessageReader, StatsReader])]
    good = StatsMsg("app", metrics=[Metric(MetricType.GAUGE, "load", 3)]).to_lwes()[0]
    broken = [RawEvent(encode(good)[:-2], 1, "127.0.0.1", 9) for _ in range(50)]
    for r in runners:
        r.offer_many(broken)
    for r in runners:
        r.start()
    for r in runners:
        r.stop(timeout=10)
    assert got == [] and all(r.decode_errors == 50 for r in runners)
    # The server counts an error once per exception object: 50 objects, each reported by all 4 runners.
    assert len(reported) == 200 and len({id(e) for e in reported}) == 50
