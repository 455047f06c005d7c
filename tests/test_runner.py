"""`BackendRunner`: a backend behind its own queue and thread, with drops, rejects, errors and restarts counted."""

from __future__ import annotations

import logging
import threading
import time
import tracemalloc
from collections.abc import Callable

import pytest

from mondemand.envelope import RawEvent
from mondemand.lwes import Event, LwesDecodeError, LwesType, encode
from mondemand.messages import Metric, MetricType, StatsMsg
from mondemand.plugin_api import Backend, RejectEvent, ServerContext
from mondemand.runner import BROKEN_STREAK, EVENT_OVERHEAD, BackendRunner
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
    """Records every call; `fail_on` makes handle raise for batches holding those sequence numbers, `gate` makes
    it wait; instances in `broken` raise on every batch, those in `failing_starts` in start."""

    def __init__(self, journal: Journal, fail_on: frozenset[int] = frozenset(), gate: threading.Event | None = None,
                 failing_starts: frozenset[int] = frozenset(), broken: frozenset[int] = frozenset()) -> None:
        super().__init__("rec", {}, ServerContext())
        with journal.lock:
            journal.instances += 1
            self.instance = journal.instances
        self.journal = journal
        self.fail_on = fail_on
        self.gate = gate
        self.failing_starts = failing_starts
        self.broken = broken

    def start(self) -> None:
        self.journal.start_times.append(time.monotonic())
        self.journal.note(self.instance, "start")
        if self.instance in self.failing_starts:
            raise OSError(f"instance {self.instance} cannot start")

    def handle(self, batch: list[RawEvent]) -> None:
        if self.gate is not None:
            assert self.gate.wait(30), "gate never opened"
        seqs = [raw.event["seq"] for raw in batch]
        if self.instance in self.broken:
            raise OSError("disk gone")
        if self.fail_on.intersection(seqs):
            raise RuntimeError(f"cannot handle {seqs}")
        with self.journal.lock:
            self.journal.batches.append(seqs)
        self.journal.note(self.instance, "handle")

    def flush(self) -> None:
        self.journal.note(self.instance, "flush")

    def close(self) -> None:
        self.journal.note(self.instance, "close")

    def abandon(self) -> None:
        self.journal.note(self.instance, "abandon")

    def takeover(self, previous: Backend) -> None:
        assert isinstance(previous, Recording)
        self.journal.note(self.instance, f"takeover {previous.instance}")

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


def test_an_event_that_raises_alone_in_its_batch_is_rejected_without_a_restart():
    journal = Journal()
    r = runner(journal, batch_size=1, factory=lambda: Recording(journal, fail_on=frozenset({2})))
    r.offer_many(events(6))
    r.start()
    wait_for(lambda: r.processed == 5, what="the events after the bad one")
    r.stop(timeout=10)
    assert journal.handled() == [0, 1, 3, 4, 5]
    assert (r.rejected, r.errors, r.failed, r.restarts) == (1, 0, 0, 0)
    assert journal.instances == 1
    assert r.counters()["rejected"] == 1


def test_bisection_finds_the_bad_events_of_a_batch_and_hands_each_good_one_over_once(caplog):
    journal = Journal()
    bad = frozenset({0, 17, 63, 64, 99})
    r = runner(journal, batch_size=100, factory=lambda: Recording(journal, fail_on=bad))
    r.offer_many(events(100))
    with caplog.at_level(logging.WARNING, logger="mondemand.backend.rec"):
        r.start()
        r.stop(timeout=10)
    assert journal.handled() == [i for i in range(100) if i not in bad]  # in order, none twice
    assert (r.processed, r.rejected, r.errors, r.failed, r.restarts) == (95, 5, 0, 0, 0)
    # One line for the first, the other four held back for ~10 s.
    [line] = [rec.getMessage() for rec in caplog.records if "rejected" in rec.getMessage()]
    assert "'Test::Seq' from 127.0.0.1:9" in line and "RuntimeError('cannot handle [0]')" in line


def test_a_backend_failing_on_every_event_of_a_batch_is_restarted():
    journal = Journal()
    r = runner(journal, batch_size=8, factory=lambda: Recording(journal, broken=frozenset({1})))
    r.offer_many(events(8))
    r.start()
    wait_for(lambda: r.restarts == 1, what="the restart")
    r.offer_many(events(3, 8))
    wait_for(lambda: r.processed == 3, what="events offered after the restart")
    r.stop(timeout=10)
    assert journal.handled() == [8, 9, 10]
    assert (r.errors, r.failed, r.rejected, r.restarts) == (1, 8, 0, 1)
    first = [what for instance, what in journal.calls if instance == 1]
    assert first == ["start", "abandon"]  # abandoned, not closed: the replacement takes over
    second = [what for instance, what in journal.calls if instance == 2]
    assert second[:2] == ["takeover 1", "start"] and second[-2:] == ["flush", "close"]
    assert r.counters()["backend.instance"] == 2


def test_restarts_back_off_while_starting_keeps_failing():
    journal = Journal()
    r = BackendRunner(
        "flaky",
        lambda: Recording(journal, broken=frozenset({1}), failing_starts=frozenset({2, 3, 4})),
        batch_size=10, backoff_min=0.02, backoff_max=0.05, linger=0.001,
    )
    r.offer_many(events(3))
    r.start()
    wait_for(lambda: r.restarts == 1, what="the restart")
    r.offer_many(events(2, 3))
    wait_for(lambda: r.processed == 2, what="processing after the restarts")
    r.stop(timeout=10)
    assert journal.instances == 5
    assert journal.handled() == [3, 4]
    # One broken batch plus three failed starts; one successful restart.
    assert (r.errors, r.restarts, r.failed) == (4, 1, 3)
    # Before the 2nd start: 0.02 s; then the wait doubles, capped at backoff_max.
    waits = [b - a for a, b in zip(journal.start_times, journal.start_times[1:], strict=False)]
    assert len(waits) == 4
    for waited, least in zip(waits, [0.02, 0.04, 0.05, 0.05], strict=True):
        assert waited >= least - 0.001, waits
    # Every attempt took over from the broken first instance.
    assert [what for _, what in journal.calls if what.startswith("takeover")] == ["takeover 1"] * 4


def test_a_broken_backend_is_given_up_after_a_streak_and_the_untried_events_go_to_its_replacement():
    journal = Journal()
    r = runner(journal, batch_size=100, factory=lambda: Recording(journal, broken=frozenset({1})))
    r.offer_many(events(100))
    r.start()
    wait_for(lambda: r.processed == 100 - BROKEN_STREAK, what="the replacement to handle the untried events")
    r.stop(timeout=10)
    # Bisection goes left first: the first BROKEN_STREAK events failed on their own, the rest were put back.
    assert journal.handled() == list(range(BROKEN_STREAK, 100))
    assert (r.failed, r.rejected, r.restarts, r.errors) == (BROKEN_STREAK, 0, 1, 1)
    assert r.queued_bytes == 0


def test_one_event_batches_failing_in_a_row_mark_the_backend_broken():
    journal = Journal()
    r = runner(journal, batch_size=1, factory=lambda: Recording(journal, broken=frozenset({1})))
    r.offer_many(events(BROKEN_STREAK + 5))
    r.start()
    wait_for(lambda: r.processed == 5, what="the replacement")
    r.stop(timeout=10)
    assert journal.handled() == list(range(BROKEN_STREAK, BROKEN_STREAK + 5))
    # Alone, the first ones look like bad data; the BROKEN_STREAK-th in a row shows the backend is at fault.
    assert (r.rejected, r.failed, r.restarts) == (BROKEN_STREAK - 1, 1, 1)


def test_a_good_event_between_failures_resets_the_streak():
    journal = Journal()
    bad = frozenset(range(0, 3 * BROKEN_STREAK, 2))  # every other event, more of them than the streak
    r = runner(journal, batch_size=1, factory=lambda: Recording(journal, fail_on=bad))
    r.offer_many(events(3 * BROKEN_STREAK))
    r.start()
    r.stop(timeout=10)
    assert (r.rejected, r.restarts, r.failed) == (len(bad), 0, 0)


class Rejecting(Backend):
    """Handles events one by one; `reject`s (or, with `raising`, raises RejectEvent for) the odd-numbered ones."""

    def __init__(self, kept: list[int], raising: bool) -> None:
        super().__init__("rej", {}, ServerContext())
        self.kept = kept
        self.raising = raising
        self.calls = 0

    def handle(self, batch: list[RawEvent]) -> None:
        self.calls += 1
        for raw in batch:
            seq = raw.event["seq"]
            if seq % 2:
                if self.raising:
                    raise RejectEvent(raw, f"odd number {seq}")
                self.reject(raw, ValueError(f"odd number {seq}"))
                continue
            self.kept.append(seq)


@pytest.mark.parametrize("raising", [False, True], ids=["reject", "RejectEvent"])
def test_events_a_backend_names_are_rejected_and_the_others_kept_once(raising, caplog):
    kept: list[int] = []
    instances: list[Rejecting] = []

    def factory() -> Backend:
        instances.append(Rejecting(kept, raising))
        return instances[-1]

    r = BackendRunner("rej", factory, batch_size=20, **FAST)
    r.offer_many(events(20))
    with caplog.at_level(logging.WARNING, logger="mondemand.backend.rej"):
        r.start()
        r.stop(timeout=10)
    assert kept == list(range(0, 20, 2))
    assert (r.processed, r.rejected, r.restarts, r.errors) == (10, 10, 0, 0)
    [line] = [rec.getMessage() for rec in caplog.records]
    assert "odd number 1" in line and "127.0.0.1:9" in line
    # reject(): one call for the batch; RejectEvent: the rest is handed over again after each.
    assert instances[0].calls == (10 if raising else 1)


def test_the_queue_is_bounded_in_bytes_too():
    journal = Journal()
    payload = len(events(1)[0].data) + EVENT_OVERHEAD
    r = runner(journal, queue_bytes=10 * payload)
    assert r.offer_many(events(4)) == 4
    assert r.offer_many(events(4, 4)) == 4
    assert r.offer_many(events(4, 8)) == 2  # only two more fit
    assert r.offer(events(1, 12)[0]) is False
    assert r.queued_bytes == 10 * payload and r.depth == 10
    assert (r.dropped, r.dropped_bytes_limit) == (3, 3)
    assert r.has_room(0, 0) and not r.has_room(1, payload - EVENT_OVERHEAD)
    r.start()
    wait_for(lambda: r.processed == 10, what="the queued events")
    assert r.queued_bytes == 0
    assert r.offer_many(events(10, 20)) == 10
    r.stop(timeout=10)
    assert journal.handled() == [*range(10), *range(20, 30)]
    counters = r.counters()
    assert (counters["dropped"], counters["dropped_bytes_limit"], counters["queued_bytes"]) == (3, 3, 0)


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


def big_events(n: int, start: int, size: int = 50_000) -> list[RawEvent]:
    """Test::Seq events of about `size` bytes each, each datagram its own fresh bytes object."""
    return [RawEvent(encode(Event("Test::Seq").set("seq", LwesType.UINT32, i).set("pad", LwesType.STRING,
                                                                                  "x" * size)), 1, "127.0.0.1", 9)
            for i in range(start, start + n)]


def test_a_stuck_backend_holds_at_most_queue_bytes():
    journal = Journal()
    gate = threading.Event()
    limit = 2 << 20
    r = runner(journal, queue_bytes=limit, factory=lambda: Recording(journal, gate=gate))
    r.start()
    try:
        r.offer_many(events(1))
        wait_for(lambda: r.depth == 0, what="the worker to take the first event and get stuck")
        per_event = len(big_events(1, 0)[0].data) + EVENT_OVERHEAD
        fits = limit // per_event
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        offered = queued = 0
        for start in range(1, 401, 10):
            batch = big_events(10, start)
            queued += r.offer_many(batch)
            offered += len(batch)
            single = big_events(1, 1000 + start)[0]
            queued += r.offer(single)
            offered += 1
            assert r.queued_bytes <= limit
            del batch, single
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert queued == r.depth == fits  # the queue stopped growing at queue_bytes
        assert r.queued_bytes == fits * per_event
        assert offered == queued + r.dropped  # every event offered is queued or counted as dropped
        assert r.dropped == r.dropped_bytes_limit == offered - fits
        # What stays allocated is the queued events: about queue_bytes, not the 22 MB offered.
        assert limit * 0.8 < grown < limit * 1.2, grown
    finally:
        gate.set()
    r.stop(timeout=10)
    assert len(journal.handled()) == 1 + fits


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
