"""`Summary`: count, sum, exact min and max, and optionally a quantile sketch, of one aggregate series.

The `agg` summariser keeps one per (interval, prog_id, metric, context). It is
fed single samples (a gauge, a counter delta) or whole summaries (a client
statset, a lower tier's aggregate), and merging is exact for count, sum, min
and max: they add or take extremes. Percentiles need every contribution to
carry a `mondemand.sketch.Sketch`; as soon as one does not, the summary can no
longer answer them honestly and drops its sketch (`percentiles_lost`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mondemand.messages import Statset
from mondemand.sketch import Sketch

__all__ = ["PERCENTILE_FIELDS", "Summary"]

#: Statset fields merged must lie strictly within +-2**64 (LWES integers are at most 64 bits): a 400-digit field
#: would overflow every float computation downstream (averages, sketches, RRD and whisper files).
FIELD_LIMIT = 1 << 64

#: Statset fields answered from the sketch, with their quantile.
PERCENTILE_FIELDS = {
    "median": 0.5, "pctl_75": 0.75, "pctl_90": 0.90, "pctl_95": 0.95, "pctl_98": 0.98, "pctl_99": 0.99,
}  # fmt: skip


class Summary:
    """One aggregate series in one interval; not thread-safe (its backend owns it)."""

    __slots__ = ("bot_weighted", "count", "max", "min", "percentiles_lost", "sketch", "sum", "tail_count",
                 "top_weighted")

    def __init__(self, sketch: Sketch | None = None) -> None:
        self.count: int | None = None
        self.sum: int | None = None
        self.min: int | None = None
        self.max: int | None = None
        self.sketch = sketch
        self.percentiles_lost = False
        #: BOT10/TOP10 of DaTtSs partials: sums of count x tail mean, and the count they cover.
        self.tail_count = 0
        self.bot_weighted = 0.0
        self.top_weighted = 0.0

    def add(self, value: int) -> None:
        """One sample: a gauge reading or a counter delta."""
        count = self.count
        self.count = 1 if count is None else count + 1
        total = self.sum
        self.sum = value if total is None else total + value
        low = self.min
        if low is None or value < low:
            self.min = value
        high = self.max
        if high is None or value > high:
            self.max = value
        sketch = self.sketch
        if sketch is not None:
            sketch.add(value)

    def add_statset(self, stats: Statset, sketch: Sketch | None = None) -> None:
        """Merge a summary someone else made: count and sum add, min and max take extremes.

        Fields the statset lacks are left as they are; `sketch` is that
        summary's sketch, if it sent one. ValueError, before anything
        changes, for a field beyond FIELD_LIMIT.
        """
        self.add_fields((stats.count, stats.sum, stats.min, stats.max), sketch)

    def add_fields(self, fields: Sequence[int | None], sketch: Sketch | None = None) -> None:
        """`add_statset` for statset fields in wire order (count, sum, min, max, ...), as a `StatsRecord` holds them.

        ValueError, before anything changes, for a field beyond FIELD_LIMIT.
        """
        count, total, low, high = fields[0], fields[1], fields[2], fields[3]
        for value in (count, total, low, high):
            if value is not None and not -FIELD_LIMIT < value < FIELD_LIMIT:
                raise ValueError(f"statset field {str(value)[:20]}... ({len(str(value))} digits) is beyond 64 bits")
        if count is not None:
            self.count = count if self.count is None else self.count + count
        if total is not None:
            self.sum = total if self.sum is None else self.sum + total
        if low is not None and (self.min is None or low < self.min):
            self.min = low
        if high is not None and (self.max is None or high > self.max):
            self.max = high
        if self.sketch is not None:
            if sketch is None or sketch.relative_accuracy != self.sketch.relative_accuracy:
                self.sketch = None
                self.percentiles_lost = True
            else:
                self.sketch.merge(sketch)

    def add_tails(self, count: int, bot10: float, top10: float) -> None:
        """Merge the BOT10/TOP10 means of a summary of `count` samples: the combine is COUNT-weighted."""
        self.tail_count += count
        self.bot_weighted += count * bot10
        self.top_weighted += count * top10

    @property
    def tails(self) -> tuple[float, float] | None:
        """The combined (BOT10, TOP10) means, None when no contribution had them."""
        if not self.tail_count:
            return None
        return self.bot_weighted / self.tail_count, self.top_weighted / self.tail_count

    def statset(self, fields: Iterable[str]) -> Statset:
        """The summary as a Statset with the wanted `fields` that it can answer (others left empty)."""
        values: dict[str, int] = {}
        for name in fields:
            if name in PERCENTILE_FIELDS:
                if self.sketch is not None and self.sketch.count:
                    values[name] = round(self.sketch.quantile(PERCENTILE_FIELDS[name]))
            elif name == "avg":
                if self.count and self.sum is not None:
                    values[name] = round(self.sum / self.count)
            else:
                value = getattr(self, name)
                if value is not None:
                    values[name] = value
        return Statset(**values)
