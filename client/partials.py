"""DaTtSs partial aggregates: what one process sends per interval, and the server-side combine.

A partial summarises the samples one process saw for one metric in one interval:

- COUNT, SUM, MIN, MAX of the samples;
- BOT10 / TOP10: the mean of the k lowest / k highest samples, k = ceil(COUNT / 10)
  (so at least one sample, and at least 10 % of them).

`combine` merges partials from many processes (and intervals) into one value:
counts and sums add, MIN/MAX are the extremes, and BOT10/TOP10 are the
COUNT-weighted means of the partial BOT10/TOP10. That last step is an
approximation: see docs/client.md ("Accuracy of the combine"). Everything here
is pure; the wire shape is read and written by `to_metrics` / `from_stats`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mondemand.lwes import LwesType
from mondemand.messages import Metric, MetricType, Statset, StatsMsg

#: Suffixes of the two gauges that carry the BOT10 / TOP10 sums next to the statset.
BOT10_SUFFIX = ".bot10_sum"
TOP10_SUFFIX = ".top10_sum"
#: Metric type name of the optional sketch metric (a string value, `Sketch.to_text()`).
SKETCH_TYPE = "sketch"
#: Context key marking a StatsMsg as DaTtSs partials; its value is the interval in ms.
PARTIAL_CONTEXT_KEY = "partial_interval_ms"


class PartialError(ValueError):
    """Partials that cannot be built or combined (no samples, a half-sent partial)."""


def tail_size(count: int) -> int:
    """How many samples BOT10 and TOP10 average: ceil(count / 10), at least 1 for count >= 1."""
    return (count + 9) // 10


@dataclass(frozen=True, slots=True)
class Partial:
    """One process's aggregate of one metric over one interval; `sketch` is optional."""

    count: int
    sum: float
    min: float
    max: float
    bot10: float
    top10: float
    sketch: Any = None

    @property
    def avg(self) -> float:
        """SUM / COUNT."""
        return self.sum / self.count

    @classmethod
    def from_samples(cls, samples: Sequence[float], sketch: Any = None) -> Partial:
        """The partial of a non-empty sequence of samples."""
        if not samples:
            raise PartialError("a partial needs at least one sample")
        ordered = sorted(samples)
        k = tail_size(len(ordered))
        return cls(
            count=len(ordered), sum=math.fsum(ordered), min=ordered[0], max=ordered[-1],
            bot10=math.fsum(ordered[:k]) / k, top10=math.fsum(ordered[-k:]) / k, sketch=sketch,
        )  # fmt: skip

    def to_metrics(self, name: str) -> list[Metric]:
        """The wire shape: statset `name` (count, sum, min, max, avg), gauges `name.bot10_sum` and
        `name.top10_sum` (the sums of the k lowest / highest samples, rounded), and a `sketch` metric
        when there is a sketch."""
        k = tail_size(self.count)
        statset = Statset(count=self.count, sum=round(self.sum), min=round(self.min), max=round(self.max),
                          avg=round(self.avg))  # fmt: skip
        metrics = [
            Metric(MetricType.STATSET, name, statset),
            Metric(MetricType.GAUGE, name + BOT10_SUFFIX, round(self.bot10 * k)),
            Metric(MetricType.GAUGE, name + TOP10_SUFFIX, round(self.top10 * k)),
        ]
        if self.sketch is not None:
            text = self.sketch.to_text()
            metrics.append(Metric(MetricType.UNKNOWN, name, text, type_name=SKETCH_TYPE, value_type=LwesType.STRING))
        return metrics


def from_stats(msg: StatsMsg, sketch_from_text: Any = None) -> dict[str, Partial]:
    """The partials in a StatsMsg sent by `mondemand.client.process`, by metric name.

    A statset with both BOT10/TOP10 gauges is a partial; other metrics are
    ignored. Sketch metrics are decoded with `sketch_from_text` when given.
    """
    gauges = {m.name: m.value for m in msg.metrics if m.type is MetricType.GAUGE}
    sketches = {m.name: m.value for m in msg.metrics if m.type_name == SKETCH_TYPE}
    partials: dict[str, Partial] = {}
    for metric in msg.metrics:
        if metric.type is not MetricType.STATSET:
            continue
        bot, top = gauges.get(metric.name + BOT10_SUFFIX), gauges.get(metric.name + TOP10_SUFFIX)
        stat: Statset = metric.value
        if bot is None or top is None:
            continue
        if None in (stat.count, stat.sum, stat.min, stat.max) or not stat.count:
            raise PartialError(f"partial {metric.name!r} lacks count, sum, min or max")
        k = tail_size(stat.count)
        text = sketches.get(metric.name)
        sketch = sketch_from_text(text) if text is not None and sketch_from_text is not None else None
        partials[metric.name] = Partial(stat.count, stat.sum, stat.min, stat.max, bot / k, top / k, sketch)
    return partials


def combine(partials: Iterable[Partial]) -> Partial:
    """Merge partials (many processes, many intervals) into one.

    COUNT and SUM add; MIN and MAX are the extremes; BOT10 and TOP10 are the
    COUNT-weighted means of the partials' BOT10 and TOP10. Sketches are merged
    when every partial has one, else the result has none.
    """
    items = list(partials)
    if not items:
        raise PartialError("nothing to combine")
    count = sum(p.count for p in items)
    sketch = None
    if all(p.sketch is not None for p in items):
        first = items[0].sketch
        sketch = type(first).from_text(first.to_text())  # a fresh copy: merge mutates
        for p in items[1:]:
            sketch.merge(p.sketch)
    return Partial(
        count=count,
        sum=math.fsum(p.sum for p in items),
        min=min(p.min for p in items),
        max=max(p.max for p in items),
        bot10=math.fsum(p.count * p.bot10 for p in items) / count,
        top10=math.fsum(p.count * p.top10 for p in items) / count,
        sketch=sketch,
    )
