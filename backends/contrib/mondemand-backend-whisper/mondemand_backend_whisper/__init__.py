"""`whisper` backend: every StatsMsg series in a Graphite whisper file.

The same series as the `rrd` backend (`mondemand.backends.series`): one per
(prog_id, type, metric, host, context), statsets split into their
sub-statistics. Files live in the Graphite tree (``layout = tree``, the
default, so graphite-web reads them as they are) or in the reference's flat
layout (``layout = file``). Retentions default to ``1m:31d,15m:100d,1d:400d``.

Counters arrive cumulative; whisper stores a value per interval, so each
report becomes either the per-second rate since the previous report
(``counters = rate``, like RRD's DERIVE) or the increase since it
(``counters = delta``). The first report of a counter and a report lower than
the previous one (a restart) store nothing: there is no honest value for them.

DaTtSs partials (a ``partial_interval_ms`` context) are rolled up into one
1-minute partial per source first (``mondemand.rollup``), stored at the
minute's start without the interval key in the series' context.

docs/writing-a-backend.md in the mondemand repository walks through this module.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections import Counter
from pathlib import Path, PurePosixPath

import whisper
from mondemand.backends.outage import Outage, is_outage
from mondemand.backends.series import (
    CounterRates,
    PathRegistry,
    ProgIdFilter,
    SeriesKey,
    SeriesNameError,
    SeriesPoint,
    file_path,
    series_from_record,
    tree_path,
)

from mondemand.cardinality import CardinalityGuard, CardinalityLimits, cardinality_options, guard_sender
from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.messages.stats_fast import CONTEXT, PROG_ID, StatsRecord
from mondemand.options import Option
from mondemand.plugin_api import Backend
from mondemand.rollup import ROLLUP_OPTIONS, RollupOwner, partial_context
from mondemand.runner import RateLimitedLog

__all__ = ["WhisperBackend", "aggregation_method", "parse_retentions"]

DEFAULT_RETENTIONS = ["1m:31d", "15m:100d", "1d:400d"]
SUFFIX = ".wsp"
#: Most points one archive may hold (12 bytes each: 120 MB per archive and series).
MAX_POINTS = 10_000_000
#: Longest span of one archive: 10 years (whisper's timestamps and Graphite's tools go no further usefully).
MAX_SPAN = 3650 * 86400


def parse_retentions(items: list[str]) -> list[tuple[int, int]]:
    """["1m:31d", ...] -> [(seconds per point, points), ...]; ValueError naming the archive whisper refuses."""
    if not items:
        raise ValueError("give at least one archive, e.g. 1m:31d")
    archives = []
    for item in items:
        try:
            archive = whisper.parseRetentionDef(item)
        except (ValueError, ArithmeticError) as exc:  # "0s:1d" divides by zero in whisper
            raise ValueError(f"archive {item!r} is not precision:duration ({exc or type(exc).__name__})") from None
        precision, points = archive
        if precision < 1:
            raise ValueError(f"archive {item!r}: the precision must be at least 1s")
        if points > MAX_POINTS:
            raise ValueError(f"archive {item!r} holds {points} points; at most {MAX_POINTS} per archive")
        if precision * points > MAX_SPAN:
            raise ValueError(f"archive {item!r} spans more than {MAX_SPAN // 86400} days")
        archives.append(archive)
    try:
        whisper.validateArchiveList(archives)
    except whisper.InvalidConfiguration as exc:
        raise ValueError(f"archives do not fit together: {exc}") from None
    return archives


def _check_xff(value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError("must be between 0 and 1")


def aggregation_method(key: SeriesKey, counters: str) -> str:
    """How whisper rolls a series up into its coarser archives.

    Sums and counts add up; minima and maxima keep their extremes; counter
    deltas add up (rates average); everything else averages.
    """
    kind = key.metric_type
    if kind == "counter":
        return "sum" if counters == "delta" else "average"
    if kind in ("count", "sum"):
        return "sum"
    if kind in ("min", "max"):
        return kind
    return "average"


def _stays_under(rel: PurePosixPath) -> bool:
    """True when `rel` is relative and has no ``.``/``..`` parts: joined to the root it cannot leave it.

    tree_path and file_path already make every wire name safe; this makes sure of it before anything is created.
    """
    return not rel.is_absolute() and all(part not in ("", ".", "..") for part in rel.parts)


class WhisperBackend(RollupOwner, Backend):
    """Store counters, gauges and statset sub-statistics as whisper files."""

    type_name = "whisper"
    needs = "stats"
    options = (
        Option("root", "str", required=True, help="directory of the whisper files"),
        Option("retentions", "list", DEFAULT_RETENTIONS, check=parse_retentions,
               help="archives as precision:duration, finest first (Graphite's storage-schemas syntax); "
                    "each at most 10000000 points and 3650 days"),
        Option("x_files_factor", "float", 0.5, check=_check_xff,
               help="fraction of known points needed to roll up into a coarser archive"),
        Option("counters", "str", "rate", choices=("rate", "delta"),
               help="store counters as per-second rates or per-report increases"),
        Option("layout", "str", "tree", choices=("tree", "file"),
               help="Graphite tree (prog/md|agg/name/.../host/H/type.wsp) or the reference's flat layout"),
        Option("short_host", "bool", True, help="tree uses the host name up to its first dot, as the rrd backend's"),
        Option("sparse", "bool", True, help="create sparse files (disk used grows with the data)"),
        Option("whitelist", "list", [], help="prog_id globs to store (when set, only these)"),
        Option("blacklist", "list", [], help="prog_id globs never to store"),
        *ROLLUP_OPTIONS,
        *cardinality_options(per_sender=20_000, per_prog_id=1_000_000, per_datagram=100, per_minute=1000),
        Option("outage_buffer_points", "int", 1_000_000, minimum=0, maximum=100_000_000,
               help="points kept (in order) while the file system is full or read-only; beyond, dropped and counted"),
    )  # fmt: skip

    def start(self) -> None:
        cfg = self.config
        self.root = Path(cfg["root"]).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.archives = parse_retentions(list(cfg["retentions"]))
        self.filter = ProgIdFilter(cfg["whitelist"], cfg["blacklist"])
        self.registry = PathRegistry("whisper", self.log)
        self.ratelog = RateLimitedLog(self.log)
        self.paths: dict[SeriesKey, Path | None] = {}
        self.rates = CounterRates(delta=self.config["counters"] == "delta")
        self.counts: Counter[str] = Counter()
        self._last_outage: BaseException | None = None
        self.rollup = self.make_rollup(cfg)
        #: who may create new files (mondemand.cardinality); `_raw` is the event whose points are being added
        self.guard = CardinalityGuard(f"whisper backend {self.name}", CardinalityLimits.from_options(cfg), self.log)
        self._raw: RawEvent | None = None
        #: (series, points) waiting for the file system to take writes again; sizes are point counts
        self.outage: Outage[tuple[SeriesKey, list[tuple[int, float]]]] = Outage(
            max_bytes=int(cfg["outage_buffer_points"]))

    def counters(self) -> dict[str, float]:
        values: dict[str, float] = {"series": len(self.paths), "collisions": self.registry.collisions}
        for name in ("points_written", "files_created", "rejected", "errors", "bad_names", "filtered",
                     "first_counter_reports", "counter_resets", "cardinality"):
            values[name] = self.counts[name]
        if getattr(self, "guard", None) is not None:
            values.update(self.guard.counters())
        if getattr(self, "outage", None) is not None:
            outage = self.outage.counters()
            values.update(outage_seconds=outage["outage_seconds"], outages=outage["outages"],
                          buffered_points=outage["buffered_bytes"], dropped=self.counts["dropped"])
        if getattr(self, "rollup", None) is not None:
            values.update(self.rollup.counters())  # type: ignore[union-attr]
        return values

    def handle(self, batch: list[RawEvent]) -> None:
        pending: dict[SeriesKey, list[tuple[int, float]]] = {}
        rollup = self.rollup
        for raw in batch:
            record = raw.stats
            if record is None:
                continue
            if not self.filter.allows(record[PROG_ID]):
                self.counts["filtered"] += 1
                continue
            try:
                stripped = partial_context(record[CONTEXT]) if rollup is not None else None
                if stripped is not None:
                    minutes = rollup.add(record, stripped, raw.receipt_ms)  # type: ignore[union-attr]
                    points = [p for minute in minutes for p in self._points(minute, None)]
                else:
                    points = self._points(record, raw.receipt_ms)
            except Exception as exc:  # bad data in this event (e.g. a value no float holds): it alone is dropped
                self.reject(raw, exc)
                continue
            self._raw = raw
            self._add_points(points, pending)
        self._raw = None
        for key, points in pending.items():
            self._write(key, points)

    @staticmethod
    def _points(record: StatsRecord, receipt_ms: int | None) -> list[SeriesPoint]:
        points = list(series_from_record(record, receipt_ms=receipt_ms))
        for point in points:
            float(point.value)  # OverflowError for a value no float holds, before anything is stored
        return points

    def _add_points(self, points: list[SeriesPoint], pending: dict[SeriesKey, list[tuple[int, float]]]) -> None:
        paths = self.paths
        for key, timestamp, value in points:
            if key not in paths:
                self._path(key)
                if key not in paths:  # a new file the cardinality guard refused: counted, not remembered
                    self.counts["cardinality"] += 1
                    continue
            if key.metric_type == "counter":
                rate = self.rates.step(key, timestamp, value)
                if isinstance(rate, str):
                    self.counts["rejected" if rate == CounterRates.NOT_NEWER else rate] += 1
                    continue
                value = rate
            pending.setdefault(key, []).append((timestamp, value))

    def flush(self) -> None:
        """Store the partial minutes that are over; retry what a full or read-only file system refused."""
        if self.rollup is not None:
            self._store_minutes(self.rollup.due())
        if self.outage.items and self.outage.due():
            self._replay()

    def close(self) -> None:
        if self.rollup is not None:
            self._store_minutes(self.rollup.drain())
        if self.outage.items:
            self._replay()
            if self.outage.items:
                points = self.outage.bytes
                self.counts["dropped"] += points
                self.outage.drop_all()
                self.log.error("%s: the file system still refuses writes at shutdown: %d buffered points dropped",
                               self.name, points)

    def _store_minutes(self, minutes: list[StatsRecord]) -> None:
        pending: dict[SeriesKey, list[tuple[int, float]]] = {}
        for minute in minutes:
            try:
                self._add_points(self._points(minute, None), pending)
            except (OverflowError, ValueError) as exc:
                self.counts["errors"] += 1
                self.ratelog.error("minute", "%s: a rolled-up minute is not stored: %s", self.name, exc)
        for key, points in pending.items():
            self._write(key, points)

    def _path(self, key: SeriesKey) -> Path | None:
        if key in self.paths:
            return self.paths[key]
        path: Path | None = None
        try:
            rel: PurePosixPath = (tree_path(key, SUFFIX, short_host=self.config["short_host"])
                                  if self.config["layout"] == "tree" else file_path(key, SUFFIX))  # fmt: skip
        except SeriesNameError as exc:
            self.counts["bad_names"] += 1
            self.ratelog.error("name", "%s: cannot store %s: %s", self.name, key, exc)
        else:
            if not _stays_under(rel):
                self.counts["bad_names"] += 1
                self.ratelog.error("name", "%s: %s would leave %s; not stored", self.name, rel, self.root)
            else:
                full = self.root.joinpath(*rel.parts)
                if not full.exists() and not self._admit(key):
                    return None
                if self.registry.claim(rel, key):
                    path = full
        self.paths[key] = path
        return path

    def _admit(self, key: SeriesKey) -> bool:
        """May the event being added create a file for `key`? A rolled-up minute has no sender here."""
        raw = self._raw
        if raw is None:
            return self.guard.admit(None, key.prog_id)
        return self.guard.admit(guard_sender(raw.sender_ip, raw.listener), key.prog_id, raw)

    def _write(self, key: SeriesKey, points: list[tuple[int, float]]) -> None:
        """Store `points`; during a file-system outage (full, read-only) they queue behind the buffered ones."""
        if self.outage.active:
            if not self.outage.add((key, points), len(points)):
                self.counts["dropped"] += len(points)
            return
        if not self._store(key, points):
            self._buffer_front(key, points)
            self._outage_began()

    def _buffer_front(self, key: SeriesKey, points: list[tuple[int, float]]) -> None:
        for _key, lost in self.outage.put_back([(key, points)], [len(points)]):
            self.counts["dropped"] += len(lost)

    def _outage_began(self) -> None:
        delay = self.outage.failed()
        self.ratelog.error("outage", "%s: the file system refuses writes under %s: %s; writes stopped, %d points "
                           "buffered, retrying in %.1f s", self.name, self.root, self._last_outage,
                           self.outage.bytes, delay)

    def _replay(self) -> None:
        """Write the buffered points in arrival order until the file system refuses again."""
        outage = self.outage
        while outage.items:
            [(key, points)] = outage.take(1)
            if not self._store(key, points):
                self._buffer_front(key, points)
                self._outage_began()
                return
        outage.succeeded()
        self.log.info("%s: the file system takes writes again; the buffered points are written", self.name)

    def _store(self, key: SeriesKey, points: list[tuple[int, float]]) -> bool:
        """Write `points` to `key`'s file; False (nothing lost yet) when the file system is in an outage."""
        path = self._path(key)
        if path is None:
            self.counts["rejected"] += len(points)
            return True
        created = False
        try:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                created = True
                whisper.create(str(path), self.archives, xFilesFactor=self.config["x_files_factor"],
                               aggregationMethod=aggregation_method(key, self.config["counters"]),
                               sparse=self.config["sparse"])  # fmt: skip
                created = False
                self.counts["files_created"] += 1
            oldest = int(time.time()) - self.archives[-1][0] * self.archives[-1][1]
            kept = [p for p in points if p[0] > oldest]
            if len(kept) < len(points):
                # whisper would drop these silently: count and report them instead.
                self.counts["rejected"] += len(points) - len(kept)
                self.ratelog.error("old", "%s: %s: %d point(s) older than the longest retention; not stored",
                                   self.name, path, len(points) - len(kept))
            whisper.update_many(str(path), kept)
            self.counts["points_written"] += len(kept)
        except (OSError, ValueError, struct.error, whisper.WhisperException) as exc:
            if is_outage(exc):
                if created:  # a file cut short by the full disk would be refused ever after: made again later
                    with contextlib.suppress(OSError):
                        path.unlink()
                self._last_outage = exc
                return False
            # One bad file (corrupt, unreadable) must not cost the rest of the batch.
            self.counts["errors"] += 1
            self.ratelog.error("write", "%s: writing %s failed: %s", self.name, path, exc)
        return True


@hookimpl
def register_backend_types(register) -> None:
    register("whisper", WhisperBackend)
