"""`rrd` backend: one RRD file per series, written through rrdcached or directly with librrd.

Layout, create parameters and series naming follow the reference RRD backend
(reference-server.md §3; names and paths are in `mondemand.backends.series`).
Differences on purpose, all described in docs/rrd.md:

- a new series' file is created in the same batch and its first sample is
  written, instead of being dropped while a builder creates the file;
- an update the file refuses (late or duplicate timestamp) is counted and
  skipped; the next good one is written, the file is not silenced;
- every name is made safe before it becomes a path, and two different series
  that would share a file are reported, not merged;
- MIN and MAX archives beside AVERAGE by default, everything configurable;
- DaTtSs partials are rolled up into one 1-minute partial per source first
  (`mondemand.rollup`), and a minute's record (a roll-up, or an aggregate with
  its `collect_time`) is written at minute start + step, so it fills the row
  ``(minute, minute + step]`` that holds the samples of that minute
  (docs/aggregation.md, "Time alignment").
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rrdtool
from mondemand.backends.outage import Outage
from mondemand.backends.rrd.rrdcached import (
    RrdcachedClient,
    RrdcachedError,
    classify,
    parse_address,
    timestamp_conflict,
)
from mondemand.backends.series import (
    AGG,
    AGG_CONTEXT_KEY,
    MD,
    PathRegistry,
    ProgIdFilter,
    SeriesKey,
    SeriesNameError,
    SeriesPoint,
    file_path,
    series_from_record,
    series_key,
    tree_path,
)

from mondemand.cardinality import CardinalityGuard, CardinalityLimits, cardinality_options, guard_sender
from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.messages.stats_fast import COLLECT_TIME, CONTEXT, PROG_ID, StatsRecord
from mondemand.options import DAY, HOUR, Option, OptionError
from mondemand.plugin_api import Backend
from mondemand.rollup import ROLLUP_OPTIONS, RollupOwner, partial_context
from mondemand.runner import RateLimitedLog

#: The one data source of every file, as in the reference.
DS_NAME = "value"
CONSOLIDATIONS = ("AVERAGE", "MIN", "MAX", "LAST")
DEFAULT_RRAS = ["1:44640", "15:9600", "1440:400"]
DEFAULT_STATSET_RRAS = ["1:44640", "15:9600", "1440:1200"]
#: Buffered samples sent per BATCH when replaying after an rrdcached outage.
REPLAY_CHUNK = 5000
_RRA = re.compile(r"([1-9][0-9]*):([1-9][0-9]*)")
#: Bounds of one archive (steps:rows): 10 million rows is 80 MB per archive and file.
MAX_RRA_STEPS, MAX_RRA_ROWS = 1_000_000, 10_000_000
#: Magnitude from which a value is refused: the largest double.
MAX_VALUE = sys.float_info.max
#: Shapes whose files are kept in a plan; beyond, the plans are forgotten and rebuilt.
_PLANS_MAX = 65536
_PLAIN = ("counter", "gauge")


def parse_rras(items: list[str]) -> list[tuple[int, int]]:
    """``steps:rows`` items (PDPs per row, rows) as int pairs; ValueError for anything else."""
    if not items:
        raise ValueError("at least one archive is needed")
    result = []
    for item in items:
        m = _RRA.fullmatch(item)
        if not m:
            raise ValueError(f"archive {item!r} is not steps:rows, e.g. 15:9600")
        steps, rows = int(m.group(1)), int(m.group(2))
        if steps > MAX_RRA_STEPS or rows > MAX_RRA_ROWS:
            raise ValueError(f"archive {item!r}: at most {MAX_RRA_STEPS} steps per row and {MAX_RRA_ROWS} rows")
        result.append((steps, rows))
    return result


def _check_cfs(items: list[str]) -> None:
    if not items:
        raise ValueError("at least one consolidation function is needed")
    bad = [c for c in items if c.upper() not in CONSOLIDATIONS]
    if bad:
        raise ValueError(f"unknown consolidation {bad[0]!r}; use " + ", ".join(CONSOLIDATIONS))


def _check_xff(value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError("must be at least 0 and below 1")


def _check_dir_name(name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError("must be a single directory name")


def _check_daemon(text: str) -> None:
    if text:
        parse_address(text)


@dataclass(frozen=True)
class Layout:
    """What each new file gets: step, heartbeat, archives and consolidation functions."""

    step: int = 60
    heartbeat: int = 900
    rras: tuple[tuple[int, int], ...] = tuple(parse_rras(DEFAULT_RRAS))
    statset_rras: tuple[tuple[int, int], ...] = tuple(parse_rras(DEFAULT_STATSET_RRAS))
    cfs: tuple[str, ...] = ("AVERAGE", "MIN", "MAX")
    xff: float = 0.5

    def data_source(self, key: SeriesKey) -> str:
        """``DS:value:DERIVE:<hb>:0:U`` for counters (stored as a per-second rate), GAUGE for the rest."""
        if key.is_counter:
            return f"DS:{DS_NAME}:DERIVE:{self.heartbeat}:0:U"
        return f"DS:{DS_NAME}:GAUGE:{self.heartbeat}:U:U"

    def archives(self, key: SeriesKey) -> list[str]:
        """One RRA per consolidation function and archive; statsets use `statset_rras`."""
        rras = self.statset_rras if key.is_statset else self.rras
        return [f"RRA:{cf}:{self.xff}:{steps}:{rows}" for cf in self.cfs for steps, rows in rras]

    def create_args(self, key: SeriesKey, first_timestamp: int) -> list[str]:
        """Arguments for ``rrdtool.create(path, *args)``.

        The file starts one step before the PDP holding the first sample, so
        that sample fills a whole step; ``--no-overwrite`` never clobbers a file
        another process made meanwhile.
        """
        start = (first_timestamp // self.step) * self.step - self.step
        return ["--start", str(start), "--step", str(self.step), "--no-overwrite",
                self.data_source(key), *self.archives(key)]


@dataclass(eq=False, slots=True)
class SeriesFile:
    """One writable series file and what this process knows about it."""

    key: SeriesKey
    path: str
    exists: bool
    #: Last update time the file (or rrdcached) holds, when known.
    last: int | None = None
    pending: list[tuple[int, int | float]] = field(default_factory=list)


Sample = tuple[int, int | float]


def _checked(points: Iterable[SeriesPoint]) -> list[SeriesPoint]:
    """`points` as a list; ValueError when a value is beyond what a double holds (librrd would store inf)."""
    points = list(points)
    for point in points:
        if not -MAX_VALUE < point[2] < MAX_VALUE:
            raise ValueError(f"value {str(point[2])[:20]}... of {point[0]} is beyond what RRD can store")
    return points


def _value_text(value: int | float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


class RrdBackend(RollupOwner, Backend):
    """Store every counter, gauge and statset sub-statistic of StatsMsg events in RRD files."""

    type_name = "rrd"
    needs = "stats"
    options = (
        Option("root", "str", required=True, help="directory of the RRD tree (relative: to the working directory)"),
        Option("daemon", "str", "", check=_check_daemon,
               help="rrdcached address (unix:/path, /path, host or host:port); empty: write files directly"),
        Option("timeout", "duration", 10.0, minimum=0.1, maximum=HOUR, help="rrdcached connect/reply timeout"),
        Option("step", "duration", 60.0, minimum=1, maximum=DAY, help="seconds per primary data point"),
        Option("heartbeat", "duration", 900.0, minimum=1, help="longest gap before a value becomes unknown"),
        Option("rras", "list", DEFAULT_RRAS, check=parse_rras,
               help="archives as steps:rows (PDPs per row and rows), for counters and gauges"),
        Option("statset_rras", "list", DEFAULT_STATSET_RRAS, check=parse_rras,
               help="archives for statset sub-statistics"),
        Option("consolidation", "list", ["AVERAGE", "MIN", "MAX"], check=_check_cfs,
               help="consolidation functions; each gets every archive"),
        Option("xff", "float", 0.5, minimum=0.0, check=_check_xff, help="x-files factor of every archive"),
        Option("whitelist", "list", [], help="prog_id globs to store (when set, only these)"),
        Option("blacklist", "list", [], help="prog_id globs never to store (ignored when whitelist is set)"),
        Option("graphite", "bool", True, help="also build the Graphite-compatible symlink tree"),
        Option("graphite_root", "str", "", help="root of that tree; default: root with 'g' appended"),
        Option("host_dir", "str", MD, check=_check_dir_name, help="tree directory of per-host series"),
        Option("aggregate_dir", "str", AGG, check=_check_dir_name,
               help="tree directory of aggregates (series with a stat context)"),
        Option("short_host", "bool", True, help="tree uses the host name up to its first dot, as the reference"),
        Option("unknown_types", "str", "skip", choices=("skip", "counter", "gauge"),
               help="how to store metrics of a type this server does not know"),
        Option("max_future", "duration", 600.0, minimum=0, maximum=DAY,
               help="refuse samples stamped further ahead of this server's clock (one would block its file)"),
        *ROLLUP_OPTIONS,
        Option("outage_buffer_points", "int", 1_000_000, minimum=0, maximum=100_000_000,
               help="samples kept (in order) while rrdcached is unreachable; beyond, dropped and counted"),
        *cardinality_options(per_sender=20_000, per_prog_id=1_000_000, per_datagram=100, per_minute=1000),
    )

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[OptionError]:
        """What `start` refuses: with `daemon`, a root whose path holds white space."""
        if options["daemon"] and any(ch.isspace() for ch in str(Path(options["root"]).absolute())):
            return [OptionError("root", "contains white space, which rrdcached's protocol (daemon) cannot carry")]
        return []

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        cfg = self.config
        self.root = Path(cfg["root"]).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.layout = Layout(
            step=int(cfg["step"]), heartbeat=int(cfg["heartbeat"]),
            rras=tuple(parse_rras(list(cfg["rras"]))), statset_rras=tuple(parse_rras(list(cfg["statset_rras"]))),
            cfs=tuple(c.upper() for c in cfg["consolidation"]), xff=float(cfg["xff"]),
        )
        self.tree_root: Path | None = None
        if cfg["graphite"]:
            self.tree_root = Path(cfg["graphite_root"] or f"{self.root}g").absolute()
            self.tree_root.mkdir(parents=True, exist_ok=True)
        self.filter = ProgIdFilter(cfg["whitelist"], cfg["blacklist"])
        self.unknown_as = None if cfg["unknown_types"] == "skip" else cfg["unknown_types"]
        self.registry = PathRegistry("rrd", self.log)
        self.tree_registry = PathRegistry("graphite tree", self.log)
        self.files: dict[SeriesKey, SeriesFile | str] = {}
        self.ratelog = RateLimitedLog(self.log)
        self.counts: Counter[str] = Counter()
        self.series = 0
        self.max_future = float(cfg["max_future"])
        self.rollup = self.make_rollup(cfg)
        #: who may create new files (mondemand.cardinality); `_raw` is the event whose points are being queued
        self.guard = CardinalityGuard(f"rrd backend {self.name}", CardinalityLimits.from_options(cfg), self.log)
        self._raw: RawEvent | None = None
        self._aggregate_contexts: dict[tuple[tuple[str, str], ...], bool] = {}
        #: False: every event through `_points` (tests and benchmarks compare both ways)
        self.use_plans = True
        self.max_plans = _PLANS_MAX
        #: (prog_id, host, context, types, names) -> the shape's files (`_plan`), or None when it has no plan
        self._plans: dict[tuple[Any, ...], list[SeriesFile] | None] = {}
        self.client: RrdcachedClient | None = None
        #: samples waiting for rrdcached to come back (docs/rrd.md, "When rrdcached is down")
        self.outage: Outage[tuple[SeriesFile, int, int | float]] = Outage(int(cfg["outage_buffer_points"]))
        if cfg["daemon"]:
            if any(ch.isspace() for ch in str(self.root)):
                raise ValueError(f"root {self.root} contains white space, which rrdcached's protocol cannot carry")
            self.client = RrdcachedClient(cfg["daemon"], timeout=float(cfg["timeout"]))
            try:
                self.client.connect()
            except RrdcachedError as exc:
                self.log.warning("%s; will retry", exc)

    def flush(self) -> None:
        """Store the partial minutes that are over; replay samples buffered during an rrdcached outage."""
        if self.rollup is not None:
            self._store_minutes(self.rollup.due())
        if self.client is not None and self.outage.items:
            self._replay()

    def close(self) -> None:
        if self.rollup is not None:
            self._store_minutes(self.rollup.drain())
        if self.client is not None:
            if self.outage.items:
                self._replay(force=True)
            lost = self.outage.drop_all()
            if lost:
                self.log.error("rrdcached still unreachable at shutdown: %d buffered samples dropped", lost)
            self.client.close()

    def counters(self) -> dict[str, float]:
        values: dict[str, float] = {
            "series": self.series,
            "collisions": self.registry.collisions,  # series refused: their file belongs to another series
            "collided_samples": self.counts["collided"],
            "tree_collisions": self.tree_registry.collisions + self.counts["tree_link_conflict"],
        }
        for name in ("written", "created", "rejected", "filtered", "dropped", "errors", "bad_names",
                     "create_errors", "daemon_errors", "ignored_messages", "recreated", "future", "cardinality"):
            values[name] = self.counts[name]
        if getattr(self, "rollup", None) is not None:
            values.update(self.rollup.counters())  # type: ignore[union-attr]
        values["dropped"] += self.outage.dropped
        values.update(self.outage.counters())
        if getattr(self, "guard", None) is not None:
            values.update(self.guard.counters())
        return values

    # -- per batch ---------------------------------------------------------------

    def handle(self, batch: list[RawEvent]) -> None:
        touched: list[SeriesFile] = []
        counts = self.counts
        horizon = time.time() + self.max_future
        rollup = self.rollup
        if self.use_plans:
            self._handle_planned(batch, touched, horizon)
            return
        for raw in batch:
            record = raw.stats
            if record is None:
                counts["ignored_messages"] += 1
                continue
            if not self.filter.allows(record[PROG_ID]):
                counts["filtered"] += 1
                continue
            self._store(raw, record, rollup, touched, horizon)
        self._raw = None
        self._write(touched)

    def _store(self, raw: RawEvent, record: StatsRecord, rollup: Any, touched: list[SeriesFile],
               horizon: float) -> bool:
        """Queue the points of one event (rolled up first when it is a partial); False when it was rejected."""
        try:
            stripped = partial_context(record[CONTEXT]) if rollup is not None else None
            if stripped is not None:
                minutes = rollup.add(record, stripped, raw.receipt_ms)
                points = [p for minute in minutes for p in self._points(minute, None, minute=True)]
            else:
                points = self._points(record, raw.receipt_ms)
        except Exception as exc:  # bad data in this event: it alone is dropped
            self.reject(raw, exc)
            return False
        self._raw = raw  # the sender the cardinality guard charges for any file opened now
        self._queue_points(points, touched, horizon)
        return True

    def _handle_planned(self, batch: list[RawEvent], touched: list[SeriesFile], horizon: float) -> None:
        """`handle` through the per-shape plans: an event of a shape seen before costs its values only.

        A plan is the shape's `SeriesFile` per metric. A sample the file would
        refuse (its second already written, or already queued in this batch)
        is counted as rejected at once, as `_ready` would count it, rather than
        queued. Shapes other than counters and gauges of a host (statsets,
        aggregates, partials), samples ahead of the clock and events without a
        send_time go through `_store`, which stays the definition (tests
        compare both).
        """
        counts = self.counts
        plans = self._plans
        allows = self.filter.allows
        rollup = self.rollup
        rejected = 0
        for raw in batch:
            record = raw.stats
            if record is None:
                counts["ignored_messages"] += 1
                continue
            prog_id, host, context, send, _collect, _receipt, types, names, values = record
            if not allows(prog_id):
                counts["filtered"] += 1
                continue
            plan_key = (prog_id, host, context, types, names)
            plan = plans.get(plan_key, False)
            if plan and send is not None and send // 1000 <= horizon:
                try:
                    for value in values:
                        if not -MAX_VALUE < value < MAX_VALUE:
                            raise ValueError(f"value {str(value)[:20]}... is beyond what RRD can store")
                except Exception as exc:  # bad data in this event: it alone is dropped
                    self.reject(raw, exc)
                    continue
                ts = send // 1000
                for entry, value in zip(plan, values, strict=True):
                    last = entry.last
                    if last is not None and ts <= last:
                        rejected += 1
                        continue
                    pending = entry.pending
                    if not pending:
                        touched.append(entry)
                    elif pending[-1][0] == ts:
                        rejected += 1
                        continue
                    pending.append((ts, value))
                continue
            if self._store(raw, record, rollup, touched, horizon) and plan is False:
                self._plan(plan_key)  # after its first event, whose series are now open (or refused)
        self._raw = None
        counts["rejected"] += rejected
        self._write(touched)

    def _plan(self, plan_key: tuple[Any, ...]) -> None:
        """Keep the `SeriesFile` of each metric of a shape of host counters and gauges (None for other shapes).

        Called after the shape's first event went through `_queue_points`,
        which opened its series (new-series creation stays in `_open`); a
        shape with a series that cannot be stored (bad name, collision) has no
        plan, nor one whose series are not all open yet. Bounded, cleared when full.
        """
        prog_id, host, context, types, names = plan_key
        plan: list[SeriesFile] | None = None
        if (types and all(kind in _PLAIN for kind in types) and not self._is_aggregate(context)
                and partial_context(context) is None):
            files = self.files
            plan = []
            for kind, name in zip(types, names, strict=True):
                entry = files.get(series_key(MD, prog_id, kind, name, host, context))
                if entry is None:
                    return  # not opened (the event was refused before): planned at the next one
                if isinstance(entry, str):
                    plan = None
                    break
                plan.append(entry)
        if len(self._plans) >= self.max_plans:
            self._plans.clear()
        self._plans[plan_key] = plan

    def _points(self, record: StatsRecord, receipt_ms: int | None, minute: bool = False) -> list[SeriesPoint]:
        """The record's points; a minute's record (a roll-up, an aggregate) all at collect_time + step."""
        points = _checked(series_from_record(record, receipt_ms=receipt_ms, unknown_as=self.unknown_as))
        collect = record[COLLECT_TIME]
        if collect is not None and (minute or self._is_aggregate(record[CONTEXT])):
            at = collect // 1000 + self.layout.step
            points = [SeriesPoint(key, at, value) for key, _ts, value in points]
        return points

    def _is_aggregate(self, context: tuple[tuple[str, str], ...]) -> bool:
        known = self._aggregate_contexts.get(context)
        if known is None:
            known = any(k == AGG_CONTEXT_KEY for k, _ in context)
            if len(self._aggregate_contexts) >= 65536:
                self._aggregate_contexts.clear()
            self._aggregate_contexts[context] = known
        return known

    def _store_minutes(self, minutes: list[StatsRecord]) -> None:
        if not minutes:
            return
        touched: list[SeriesFile] = []
        horizon = time.time() + self.max_future
        for minute in minutes:
            try:
                points = self._points(minute, None, minute=True)
            except Exception as exc:  # checked on the way in; a value beyond a double after adding up
                self.counts["errors"] += 1
                self.ratelog.error("minute", "a rolled-up minute of %s is not stored: %s", minute[PROG_ID], exc)
                continue
            self._queue_points(points, touched, horizon)
        self._write(touched)

    def _queue_points(self, points: list[SeriesPoint], touched: list[SeriesFile], horizon: float) -> None:
        files = self.files
        counts = self.counts
        for key, timestamp, value in points:
            entry = files.get(key)
            if entry is None:
                entry = self._open(key)
            if isinstance(entry, str):
                counts[entry] += 1
                continue
            if timestamp > horizon:
                counts["future"] += 1
                self.ratelog.error("future", "%s: sample at %d is ahead of this server's clock; refused",
                                   entry.path, timestamp)
                continue
            if not entry.pending:
                touched.append(entry)
            entry.pending.append((timestamp, value))

    def _write(self, touched: list[SeriesFile]) -> None:
        if touched:
            if self.client is None:
                self._write_direct(touched)
            else:
                self._write_daemon(touched)

    def _open(self, key: SeriesKey) -> SeriesFile | str:
        """Find the file for a series seen for the first time; a str is the counter its samples go to."""
        entry: SeriesFile | str
        try:
            rel = file_path(key)
        except SeriesNameError as exc:
            self.ratelog.error("name", "series %s not stored: %s", key, exc)
            entry = "bad_names"
        else:
            path = self.root / rel
            exists = path.exists()
            if not exists and not self._admit(key):
                return "cardinality"  # not remembered: the series may be let in later
            if self.registry.claim(rel, key):
                entry = SeriesFile(key, str(path), exists)
                self.series += 1
                if entry.exists:
                    self._link(entry)
            else:
                entry = "collided"
        self.files[key] = entry
        return entry

    def _admit(self, key: SeriesKey) -> bool:
        """May the event being queued create a file for `key`? (docs/rrd.md, "New files: the bound")."""
        raw = self._raw
        if raw is None:  # a rolled-up minute stored at flush: its sender is not known here, only its prog_id
            return self.guard.admit(None, key.prog_id)
        return self.guard.admit(guard_sender(raw.sender_ip, raw.listener), key.prog_id, raw)

    def _link(self, entry: SeriesFile) -> None:
        """Point the Graphite tree at `entry`'s file (a relative symlink); report a link that is someone else's."""
        if self.tree_root is None:
            return
        cfg = self.config
        try:
            rel = tree_path(entry.key, short_host=cfg["short_host"], md_dir=cfg["host_dir"],
                            agg_dir=cfg["aggregate_dir"])
        except SeriesNameError:
            self.counts["bad_names"] += 1
            return
        owner = self.tree_registry.owner(rel)
        if owner is not None:
            self.tree_registry.claim(rel, entry.key)  # counts and reports a second series
            return
        link = self.tree_root / rel
        target = os.path.relpath(entry.path, link.parent)
        try:
            try:
                os.symlink(target, link)
            except FileNotFoundError:
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, link)
        except FileExistsError:
            if not (os.path.islink(link) and os.readlink(link) == target):
                # Made by an earlier run for another series: that series keeps it.
                self.counts["tree_link_conflict"] += 1
                self.log.warning("graphite tree: %s exists and is not a link to %s; %s has no tree entry",
                                 link, target, entry.key)
                return
        except OSError as exc:
            self.ratelog.error("link", "graphite tree: cannot link %s: %s", link, exc)
            return
        self.tree_registry.claim(rel, entry.key)

    def _ready(self, entry: SeriesFile) -> list[Sample]:
        """Take `entry`'s pending samples, in time order, without those the file would refuse (counted)."""
        samples = entry.pending
        entry.pending = []
        samples.sort(key=lambda s: s[0])
        last = entry.last
        good = []
        for sample in samples:
            if last is not None and sample[0] <= last:
                self.counts["rejected"] += 1
                continue
            good.append(sample)
            last = sample[0]
        return good

    def _create(self, entry: SeriesFile, first_timestamp: int) -> bool:
        """Create `entry`'s file (and tree link); False, counted and logged, when that fails."""
        path = entry.path
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            rrdtool.create(path, *self.layout.create_args(entry.key, first_timestamp))
        except rrdtool.OperationalError as exc:
            if "File exists" not in str(exc) and not os.path.exists(path):
                self.counts["create_errors"] += 1
                self.ratelog.error("create", "cannot create %s: %s", path, exc)
                return False
            entry.last = None  # someone else made it; its last update is unknown
        except OSError as exc:
            self.counts["create_errors"] += 1
            self.ratelog.error("create", "cannot create %s: %s", path, exc)
            return False
        else:
            entry.last = None
            self.counts["created"] += 1
        entry.exists = True
        self._link(entry)
        return True

    # -- direct writes -------------------------------------------------------------

    def _write_direct(self, touched: list[SeriesFile]) -> None:
        for entry in touched:
            samples = self._ready(entry)
            if samples:
                self._update_direct(entry, samples, retry=True)

    def _update_direct(self, entry: SeriesFile, samples: list[Sample], retry: bool) -> None:
        if not entry.exists and not self._create(entry, samples[0][0]):
            self.counts["errors"] += len(samples)
            return
        try:
            rrdtool.update(entry.path, *[f"{ts}:{_value_text(v)}" for ts, v in samples])
        except rrdtool.OperationalError as exc:
            self._direct_failed(entry, samples, str(exc), retry)
        else:
            entry.last = samples[-1][0]
            self.counts["written"] += len(samples)

    def _direct_failed(self, entry: SeriesFile, samples: list[Sample], message: str, retry: bool) -> None:
        """librrd stopped at one bad sample, having written those before it: count it and write the rest."""
        if "No such file or directory" in message:
            entry.exists, entry.last = False, None
            self.counts["recreated"] += 1
            if retry:
                self._update_direct(entry, samples, retry=False)
            else:
                self.counts["errors"] += len(samples)
            return
        conflict = timestamp_conflict(message)
        if conflict is not None:
            refused, last = conflict
            done = next((i for i, s in enumerate(samples) if s[0] == refused), 0)
            self.counts["rejected"] += 1
            self.ratelog.error("timestamp", "%s: %s (counted and skipped)", entry.path, message)
        else:
            try:
                last = rrdtool.last(entry.path)
            except rrdtool.OperationalError:
                last = samples[0][0] - 1
            done = sum(1 for s in samples if s[0] <= last)
            self.counts["errors"] += 1
            self.ratelog.error("update", "%s: update failed: %s", entry.path, message)
        self.counts["written"] += done
        entry.last = last
        rest = samples[done + 1:]
        late = sum(1 for s in rest if s[0] <= last)
        self.counts["rejected"] += late
        rest = [s for s in rest if s[0] > last]
        if not rest:
            return
        if retry:
            self._update_direct(entry, rest, retry=False)
        else:
            self.counts["errors"] += len(rest)

    # -- rrdcached writes ------------------------------------------------------------

    def _write_daemon(self, touched: list[SeriesFile]) -> None:
        batch = _Batch()
        outage = self.outage
        for entry in touched:
            samples = self._ready(entry)
            if not samples:
                continue
            if outage.active:  # behind what is buffered, so that every file gets its samples in order
                outage.extend((entry, ts, value) for ts, value in samples)
                continue
            self._queue_samples(batch, entry, samples)
        if batch.commands:
            self._send_batch(batch, retry=True)
        if outage.items:
            self._replay()

    def _replay(self, force: bool = False) -> None:
        """Send buffered samples in order, in chunks, until the buffer is empty or rrdcached fails again."""
        outage = self.outage
        while outage.items and (force or outage.due()):
            batch = _Batch()
            for entry, ts, value in outage.take(REPLAY_CHUNK):
                self._queue_samples(batch, entry, [(ts, value)])
            if batch.commands and not self._send_batch(batch, retry=True):
                return
        if not outage.items:
            outage.succeeded()

    def _queue_samples(self, batch: _Batch, entry: SeriesFile, samples: list[Sample]) -> None:
        """Add `entry`'s samples to `batch`, creating the file first when needed."""
        if not entry.exists:
            if not self._create(entry, samples[0][0]):
                self.counts["errors"] += len(samples)
                return
            # rrdcached may remember an earlier file of the same name (deleted meanwhile).
            batch.add(f"FORGET {entry.path}", None)
        for ts, value in samples:
            batch.add(f"UPDATE {entry.path} {ts}:{_value_text(value)}", (entry, ts, value))

    def _send_batch(self, batch: _Batch, retry: bool) -> bool:
        """Send `batch`; False when rrdcached is unreachable (its samples are then buffered, in order, in front)."""
        assert self.client is not None
        was_connected = self.client.connected
        try:
            errors = self.client.batch(batch.commands)
        except RrdcachedError as exc:
            if retry and was_connected:
                # The connection may have gone stale (daemon restarted): one fresh attempt.
                return self._send_batch(batch, retry=False)
            samples = [o for o in batch.owners if o is not None]
            self.counts["daemon_errors"] += 1
            self.outage.put_back(samples)
            delay = self.outage.failed()
            self.ratelog.error("daemon", "%s; %d samples buffered (%d in all), retrying in %.1f s", exc,
                               len(samples), len(self.outage.items), delay)
            return False
        self.outage.succeeded()
        vanished: dict[SeriesFile, list[Sample]] = {}
        for index, owner in enumerate(batch.owners):
            if owner is None:
                continue
            entry, ts, value = owner
            message = errors.get(index)
            if message is None:
                self.counts["written"] += 1
                if entry.last is None or ts > entry.last:
                    entry.last = ts
                continue
            kind = classify(message)
            if kind == "timestamp":
                self.counts["rejected"] += 1
                conflict = timestamp_conflict(message)
                if conflict is not None and (entry.last is None or conflict[1] > entry.last):
                    entry.last = conflict[1]
                self.ratelog.error("timestamp", "%s: %s (counted and skipped)", entry.path, message)
            elif kind == "no_file" and retry:
                vanished.setdefault(entry, []).append((ts, value))
            else:
                self.counts["errors"] += 1
                self.ratelog.error(f"daemon-{kind}", "rrdcached refused an update of %s: %s", entry.path, message)
        if vanished:
            again = _Batch()
            for entry, samples in vanished.items():
                entry.exists, entry.last = False, None
                self.counts["recreated"] += 1
                self._queue_samples(again, entry, samples)
            if again.commands:
                self._send_batch(again, retry=False)
        return True


class _Batch:
    """rrdcached commands and, per command, the sample it carries (None for bookkeeping commands)."""

    __slots__ = ("commands", "owners")

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.owners: list[tuple[SeriesFile, int, int | float] | None] = []

    def add(self, command: str, owner: tuple[SeriesFile, int, int | float] | None) -> None:
        self.commands.append(command)
        self.owners.append(owner)


@hookimpl
def register_backend_types(register) -> None:
    register("rrd", RrdBackend)
