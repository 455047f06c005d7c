"""Cardinality guards: who may create new series in a per-series store, and how many.

Why (issue 18): one 60 KB datagram made the `rrd` backend create 1,500 files
(1.9 GB), and 21,000 harmless series from one sender filled an alert rule's
table and the dashboard's, so that a real breach never fired and a new
program stayed invisible. A store (rrd and whisper files, alert rules, the
dashboard, the statsd listener) asks its `CardinalityGuard` only when it is
about to create a series it does not hold yet, never per sample:

- at most `new_series_per_datagram` new series from one datagram;
- at most `new_series_per_minute` new series per sender (IP) in a calendar
  minute (not per prog_id: a program spans the fleet, and a new release adds
  a series on every host at once);
- at most `series_per_sender` and `series_per_prog_id` live series; a store
  that forgets a series calls `release`;
- a sender or prog_id that created nothing for `cardinality_idle` is
  forgotten, with its count (for file stores, which never release a series,
  this is how a sender gets new quota).

A source over its share is refused new series; its existing series, and
every other source, keep working: a guard never evicts anything. Refusals are
counted per reason and per source (the ten sources refused most are in the
store's counters) and logged at most once per 10 s per reason, naming the
source. Events the server made itself (listener ``internal`` or an ``agg:``
summariser) have no sender of their own: only their prog_id is counted.

The state is plain dicts of small lists, bounded by `MAX_SOURCES`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from mondemand.options import DAY, Option
from mondemand.runner import RateLimitedLog

__all__ = ["CardinalityGuard", "CardinalityLimits", "cardinality_options", "guard_sender"]

#: Senders plus prog_ids tracked at most; a new source beyond is refused (reason ``sources``).
MAX_SOURCES = 200_000
#: Sources listed by name in `counters`, those refused most.
TOP_SOURCES = 10
#: Seconds between sweeps for idle sources.
SWEEP_INTERVAL = 60.0

# A source's record: [live series, minute number, new series in that minute, last admission, refusals].
_LIVE, _MINUTE, _NEW, _LAST, _REFUSED = range(5)


def cardinality_options(*, per_sender: int, per_prog_id: int, per_datagram: int = 200,
                        per_minute: int = 2000) -> tuple[Option, ...]:
    """The options of a store's cardinality guard, with that store's defaults (0 switches a limit off)."""
    return (
        Option("new_series_per_datagram", "int", per_datagram, minimum=0, maximum=65535,
               help="new series one datagram may create; 0: no limit"),
        Option("new_series_per_minute", "int", per_minute, minimum=0, maximum=10_000_000,
               help="new series one sender (IP) may create per minute; 0: no limit"),
        Option("series_per_sender", "int", per_sender, minimum=0, maximum=100_000_000,
               help="live series one sender (IP) may hold; 0: no limit"),
        Option("series_per_prog_id", "int", per_prog_id, minimum=0, maximum=100_000_000,
               help="live series one prog_id may hold; 0: no limit"),
        Option("cardinality_idle", "duration", 3600.0, minimum=1.0, maximum=30 * DAY,
               help="a sender or prog_id that created no series this long is forgotten, with its count"),
    )


@dataclass(frozen=True)
class CardinalityLimits:
    """The limits of one guard; 0 is no limit."""

    per_datagram: int = 200
    per_minute: int = 2000
    per_sender: int = 0
    per_prog_id: int = 0
    idle: float = 3600.0

    @classmethod
    def from_options(cls, values: Any) -> CardinalityLimits:
        """Limits from a section's parsed options (`cardinality_options`)."""
        return cls(int(values["new_series_per_datagram"]), int(values["new_series_per_minute"]),
                   int(values["series_per_sender"]), int(values["series_per_prog_id"]),
                   float(values["cardinality_idle"]))


def guard_sender(sender_ip: str, listener: str) -> str | None:
    """The sender a guard counts for an event: None for events this server made (aggregates, self-metrics)."""
    if listener == "internal" or listener.startswith("agg:"):
        return None
    return sender_ip


class CardinalityGuard:
    """Admission of new series for one store; see the module docstring."""

    def __init__(self, store: str, limits: CardinalityLimits, log: logging.Logger) -> None:
        self.store = store
        self.limits = limits
        self.ratelog = RateLimitedLog(log)
        self.senders: dict[str, list[Any]] = {}
        self.prog_ids: dict[str, list[Any]] = {}
        self.refused: dict[str, int] = dict.fromkeys(("datagram", "sender_rate", "sender_live", "prog_id_live",
                                                      "sources"), 0)
        self.admitted = 0
        self._token: object = None
        self._in_token = 0
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL

    def admit(self, sender: str | None, prog_id: str, token: object = None, now: float | None = None,
              live: bool = True) -> bool:
        """May `sender` (None: this server) create a new series of `prog_id`? `token`: the datagram it came in.

        `live=False` checks and counts only the rates (per datagram, per minute), for a store whose
        series come and go each interval (agg's summaries) and so are never released one by one.
        """
        limits = self.limits
        if now is None:
            now = time.monotonic()
        if now >= self._next_sweep:
            self.sweep(now)
        if token is not None and limits.per_datagram:
            if token is not self._token:
                self._token, self._in_token = token, 0
            elif self._in_token >= limits.per_datagram:
                rec = self.senders.get(sender) if sender is not None else self.prog_ids.get(prog_id)
                return self._refuse("datagram", rec, "datagram from %s (prog_id %r): more than %d new series",
                                    sender or "this server", prog_id, limits.per_datagram)
        minute = int(now // 60)
        sender_rec = None
        if sender is not None:
            sender_rec = self._record(self.senders, sender, minute)
            if sender_rec is None:
                return self._refuse("sources", None, "more than %d sources tracked; new series from %s refused",
                                    MAX_SOURCES, sender)
            if limits.per_minute and sender_rec[_NEW] >= limits.per_minute:
                return self._refuse("sender_rate", sender_rec, "sender %s: more than %d new series this minute",
                                    sender, limits.per_minute)
            if live and limits.per_sender and sender_rec[_LIVE] >= limits.per_sender:
                return self._refuse("sender_live", sender_rec, "sender %s holds %d series (series_per_sender)",
                                    sender, sender_rec[_LIVE])
        prog_rec = self._record(self.prog_ids, prog_id, minute)
        if prog_rec is None:
            return self._refuse("sources", None, "more than %d sources tracked; new series of %r refused",
                                MAX_SOURCES, prog_id)
        if live and limits.per_prog_id and prog_rec[_LIVE] >= limits.per_prog_id:
            return self._refuse("prog_id_live", prog_rec, "prog_id %r holds %d series (series_per_prog_id)",
                                prog_id, prog_rec[_LIVE])
        for rec in (sender_rec, prog_rec):
            if rec is not None:
                rec[_LIVE] += live
                rec[_NEW] += 1
                rec[_LAST] = now
        self._in_token += 1
        self.admitted += 1
        return True

    def release(self, sender: str | None, prog_id: str) -> None:
        """A series `admit` let in is gone (expired, forgotten): its sources may create another."""
        for table, key in ((self.senders, sender), (self.prog_ids, prog_id)):
            rec = table.get(key) if key is not None else None
            if rec is not None and rec[_LIVE] > 0:
                rec[_LIVE] -= 1

    def sweep(self, now: float | None = None) -> None:
        """Forget sources that admitted nothing for `idle` seconds (called from `admit` once a minute)."""
        if now is None:
            now = time.monotonic()
        self._next_sweep = now + SWEEP_INTERVAL
        cutoff = now - self.limits.idle
        for table in (self.senders, self.prog_ids):
            for key in [k for k, rec in table.items() if rec[_LAST] < cutoff]:
                del table[key]

    def counters(self) -> dict[str, float]:
        """Refusals by reason and by source (the `TOP_SOURCES` refused most), for `/status`.

        Safe from another thread than `admit`'s: it reads copies (a dict copy is one step under the GIL).
        """
        values: dict[str, float] = {f"cardinality_refused_{reason}": n for reason, n in self.refused.copy().items()}
        values["cardinality_refused"] = sum(self.refused.values())
        values["cardinality_senders"] = len(self.senders)
        values["cardinality_prog_ids"] = len(self.prog_ids)
        for kind, table in (("sender", self.senders.copy()), ("prog_id", self.prog_ids.copy())):
            worst = sorted(((rec[_REFUSED], key) for key, rec in table.items() if rec[_REFUSED]), reverse=True)
            for refused, key in worst[:TOP_SOURCES]:
                values[f"cardinality_refused.{kind}.{key}"] = refused
        return values

    def _record(self, table: dict[str, list[Any]], key: str, minute: int) -> list[Any] | None:
        rec = table.get(key)
        if rec is None:
            if len(self.senders) + len(self.prog_ids) >= MAX_SOURCES:
                return None
            rec = table[key] = [0, minute, 0, 0.0, 0]
        elif rec[_MINUTE] != minute:
            rec[_MINUTE], rec[_NEW] = minute, 0
        return rec

    def _refuse(self, reason: str, rec: list[Any] | None, message: str, *args: Any) -> bool:
        self.refused[reason] += 1
        if rec is not None:
            rec[_REFUSED] += 1
        self.ratelog.warning(reason, f"{self.store}: new series refused: {message}", *args)
        return False
