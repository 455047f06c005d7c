"""Daily-against-week curves read from the RRD tree the `rrd` backend writes.

For one metric (prog_id, name, host, context, kind) the dashboard shows, per
statistic, today's curve from local midnight until now over the whole of the
same weekday one week earlier, both placed on one axis of seconds since their
own midnight. Counters and gauges have one file whose AVERAGE, MIN and MAX
archives give AVG, MIN and MAX; a statset has one file per sub-statistic
(``min``, ``max``, ``avg``, ``count``, ``sum``, ``median``, ``pctl_*``), read
from its AVERAGE archive. Only what exists is shown.

Files are found with `mondemand.backends.series.file_path`, the same function
the `rrd` backend writes with, so no name from the wire ever leaves the root.
A row returned by ``rrdtool.fetch`` with start ``S`` and step ``s`` covers
``(S + i*s, S + (i+1)*s]``; it is placed at the start of that interval.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any

from mondemand.safepath import safe_name, unsafe_name

from ..series import SeriesKey, SeriesNameError, file_path, parse_file_path

__all__ = ["DayPair", "History", "HistoryError", "align", "day_pair", "statistics_for"]

#: Display names of the statistics, in the order the charts are shown; BOT10 and TOP10 are the gauges
#: ``NAME.bot10``/``NAME.top10`` beside a DaTtSs statset (rolled-up partials, agg output).
STATSET_LABELS: dict[str, str] = {
    "min": "MIN", "max": "MAX", "avg": "AVG", "bot10": "BOT10", "top10": "TOP10", "count": "COUNT", "sum": "SUM",
    "median": "MEDIAN", "pctl_75": "P75", "pctl_90": "P90", "pctl_95": "P95", "pctl_98": "P98", "pctl_99": "P99",
}
_TAILS = {"bot10": ".bot10", "top10": ".top10"}
#: Time ranges: (label, days shown, seconds per point asked of rrdtool: the 1-minute, 15-minute, 1-day archives).
RANGES: dict[str, tuple[int, int]] = {"day": (1, 60), "week": (7, 900), "month": (30, 86400)}
#: Consolidation function read for each statistic of a counter or gauge file.
PLAIN_LABELS: tuple[tuple[str, str], ...] = (("AVERAGE", "AVG"), ("MIN", "MIN"), ("MAX", "MAX"))
_KINDS = ("counter", "gauge", "statset")
#: What one fetch gives: first row's start, step, values.
Fetched = tuple[int, int, list[float | None]]
#: Most files listed for one program when browsing what is stored.
MAX_LISTED = 5000


class HistoryError(ValueError):
    """A history request that cannot be answered (unknown kind, impossible names)."""


@dataclass(frozen=True, slots=True)
class DayPair:
    """Today (midnight to midnight, data until `now`) and the same weekday one week earlier, as epoch seconds."""

    today_start: int
    today_end: int
    now: int
    week_start: int
    week_end: int

    @property
    def length(self) -> int:
        """Seconds of the longer of the two days (23 h or 25 h on a daylight-saving change)."""
        return max(self.week_end - self.week_start, self.today_end - self.today_start)


def _midnight(day: date, tz: tzinfo) -> int:
    return int(datetime.combine(day, time(0), tz).timestamp())


def day_pair(now: float, tz: tzinfo, days: int = 1) -> DayPair:
    """Local midnight of today in `tz`, and midnight-to-midnight of the same weekday a week before.

    With `days` > 1 (the week and month ranges): the last `days` local days up
    to the end of today, against the `days` days just before them.
    """
    today = datetime.fromtimestamp(now, tz).date()
    day = timedelta(days=1)
    if days > 1:
        first = today - timedelta(days=days - 1)
        return DayPair(_midnight(first, tz), _midnight(today + day, tz), int(now),
                       _midnight(first - timedelta(days=days), tz), _midnight(first, tz))
    week = today - timedelta(days=7)
    return DayPair(_midnight(today, tz), _midnight(today + day, tz), int(now), _midnight(week, tz),
                   _midnight(week + day, tz))


def align(start: int, step: int, values: Sequence[float | None], day_start: int, grid_step: int,
          length: int) -> list[float | None]:
    """Fetched rows placed on a grid of `grid_step` seconds since `day_start`, `length` seconds long.

    Row ``i`` covers ``(start + i*step, start + (i+1)*step]`` and fills every
    grid slot whose start lies in that interval (so a coarse archive shows as
    steps on a finer grid). Rows outside the day and unknown rows stay None.
    """
    slots = -(-length // grid_step)
    grid: list[float | None] = [None] * slots
    for i, value in enumerate(values):
        if value is None:
            continue
        lo = start + i * step - day_start
        hi = lo + step
        first = max(0, -(-lo // grid_step))
        last = min(slots, -(-hi // grid_step))
        for slot in range(first, last):
            grid[slot] = value
    return grid


def statistics_for(kind: str) -> list[tuple[str, str, str, str]]:
    """(label, series type, consolidation function, metric name suffix) of every chart a `kind` metric can have."""
    if kind == "statset":
        return [(label, "gauge" if field in _TAILS else field, "AVERAGE", _TAILS.get(field, ""))
                for field, label in STATSET_LABELS.items()]
    if kind in ("counter", "gauge"):
        return [(label, kind, cf, "") for cf, label in PLAIN_LABELS]
    raise HistoryError(f"kind must be one of {', '.join(_KINDS)}, got {kind!r}")


class History:
    """Reads daily-against-week curves from the RRD files under `root`.

    `daemon` (an rrdcached address) makes every fetch flush that file's
    pending updates first, so the curve is current when the rrd backend
    writes through rrdcached.
    """

    def __init__(self, root: Path, tz: tzinfo, daemon: str = "") -> None:
        self.root = root
        self.tz = tz
        self.daemon = daemon

    def _fetch(self, path: Path, cf: str, start: int, end: int, resolution: int = 60) -> Fetched:
        import rrdtool  # the rrd extra; needed only when history is configured

        args = [str(path), cf, "--start", str(start), "--end", str(end)]
        if resolution > 60:
            args += ["--resolution", str(resolution)]
        if self.daemon:
            args += ["--daemon", self.daemon]
        (first, _last, step), _names, rows = rrdtool.fetch(*args)
        return first, step, [row[0] for row in rows]

    def curves(self, prog_id: str, name: str, host: str, kind: str, context: Iterable[tuple[str, str]],
               now: float, span: str = "day") -> dict[str, Any]:
        """Every chart available for one metric: this period's and the previous one's values on a shared axis.

        `span` is ``day`` (today against the same weekday last week, 1-minute
        points), ``week`` (the last 7 days against the 7 before, 15-minute
        points) or ``month`` (30 days against 30, daily points). A statset
        without an ``avg`` file gets AVG = SUM / COUNT.
        """
        if span not in RANGES:
            raise HistoryError(f"range must be one of {', '.join(RANGES)}, got {span!r}")
        n_days, resolution = RANGES[span]
        days = day_pair(now, self.tz, n_days)
        context = tuple(context)
        charts: list[dict[str, Any]] = []
        missing: list[str] = []
        fetched: list[tuple[str, str, str, Fetched, Fetched]] = []
        for label, metric_type, cf, suffix in statistics_for(kind):
            try:
                key = SeriesKey.make(prog_id, metric_type, name + suffix, host, context)
                rel = file_path(key)
            except (ValueError, SeriesNameError) as exc:
                raise HistoryError(f"no such series: {exc}") from None
            path = self.root / rel
            if not path.is_file():
                missing.append(label)
                continue
            try:
                # Just after midnight "today" may be shorter than a step, which rrdtool refuses.
                today = self._fetch(path, cf, days.today_start, max(days.now, days.today_start + resolution),
                                    resolution)
                week = self._fetch(path, cf, days.week_start, days.week_end, resolution)
            except Exception as exc:  # rrdtool.OperationalError: archive absent or file unreadable
                missing.append(label)
                charts.append({"stat": label, "file": str(rel), "cf": cf, "error": str(exc)})
                continue
            fetched.append((label, str(rel), cf, today, week))
        steps = [f[3][1] for f in fetched] + [f[4][1] for f in fetched]
        grid_step = min(steps) if steps else resolution
        length = days.length
        fetched = self._derived_avg(fetched, missing)
        for label, rel, cf, today, week in fetched:
            today_values = align(*today, days.today_start, grid_step, length)
            week_values = align(*week, days.week_start, grid_step, length)
            charts.append({
                "stat": label, "file": rel, "cf": cf, "today": today_values, "week": week_values,
                "today_points": sum(v is not None for v in today_values),
                "week_points": sum(v is not None for v in week_values),
            })
        charts.sort(key=lambda c: "error" in c)
        tz_name = str(self.tz)
        return {
            "metric": {"prog_id": prog_id, "name": name, "host": host, "kind": kind,
                       "context": [list(p) for p in context]},
            "timezone": tz_name, "now": days.now, "step": grid_step,
            "today": {"start": days.today_start, "date": _label(days.today_start, self.tz)},
            "week": {"start": days.week_start, "date": _label(days.week_start, self.tz)},
            "x": list(range(0, length, grid_step)), "charts": charts, "missing": missing,
            "rate": kind == "counter", "range": span,
        }

    @staticmethod
    def _derived_avg(fetched: list[tuple[str, str, str, Fetched, Fetched]],
                     missing: list[str]) -> list[tuple[str, str, str, Fetched, Fetched]]:
        """AVG = SUM / COUNT, row by row, when a statset has no avg file but has both of those."""
        by_label = {f[0]: f for f in fetched}
        if "AVG" not in missing or "SUM" not in by_label or "COUNT" not in by_label:
            return fetched
        total, count = by_label["SUM"], by_label["COUNT"]
        derived = []
        for i in (3, 4):
            (s_start, s_step, s_values), (c_start, c_step, c_values) = total[i], count[i]
            if (s_start, s_step, len(s_values)) != (c_start, c_step, len(c_values)):
                return fetched
            derived.append((s_start, s_step, [None if a is None or not b else a / b
                                              for a, b in zip(s_values, c_values, strict=True)]))
        missing.remove("AVG")
        order = list(STATSET_LABELS.values())
        result = [*fetched, ("AVG", f"{total[1]} / COUNT", "AVERAGE", derived[0], derived[1])]
        return sorted(result, key=lambda f: order.index(f[0]) if f[0] in order else len(order))

    def programs(self, limit: int = MAX_LISTED) -> list[str]:
        """prog_ids that have a directory under the root (as sent, not as escaped)."""
        try:
            names = sorted(entry.name for entry in os.scandir(self.root) if entry.is_dir(follow_symlinks=False))
        except OSError:
            return []
        return [unsafe_name(n) for n in names[:limit]]

    def stored(self, prog_id: str, limit: int = MAX_LISTED) -> list[SeriesKey]:
        """Series of `prog_id` that have a file, found by reading the directory names back (`parse_file_path`)."""
        prog_dir = self.root / safe_name(prog_id)
        keys: list[SeriesKey] = []
        try:
            metric_dirs = [e for e in os.scandir(prog_dir) if e.is_dir(follow_symlinks=False)]
        except OSError:
            return keys
        for metric_dir in sorted(metric_dirs, key=lambda e: e.name):
            try:
                files = sorted(e.name for e in os.scandir(metric_dir.path) if e.name.endswith(".rrd"))
            except OSError:
                continue
            for file_name in files:
                rel = f"{prog_dir.name}/{metric_dir.name}/{file_name}"
                key = parse_file_path(rel)
                if key is not None and key.prog_id == prog_id and str(file_path(key)) == rel:
                    keys.append(key)
                    if len(keys) >= limit:
                        return keys
        return keys


def _label(epoch: int, tz: tzinfo) -> str:
    return datetime.fromtimestamp(epoch, tz).strftime("%a %Y-%m-%d")
