"""Samples of one statset between two flushes, and their summary as a `Statset`.

count, sum, min and max are exact. Median and percentiles come from a uniform
reservoir of at most `capacity` samples (Vitter's algorithm R), so memory stays
bounded however many samples arrive; below `capacity` samples they are exact
(nearest-rank).
"""

from __future__ import annotations

import math
import random

from mondemand.messages import Statset

#: Every statset field, the default of `Client(statset_fields=...)`.
ALL_FIELDS: tuple[str, ...] = Statset.FIELDS
#: Percentile fields and their rank as a fraction.
PERCENTILES = {
    "median": 0.5, "pctl_75": 0.75, "pctl_90": 0.90, "pctl_95": 0.95, "pctl_98": 0.98, "pctl_99": 0.99,
}  # fmt: skip
#: Samples kept per statset for the percentiles.
DEFAULT_CAPACITY = 10_000


def check_fields(fields: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`fields` as a tuple when every name is a statset field; ValueError naming the bad one otherwise."""
    for name in fields:
        if name not in ALL_FIELDS:
            raise ValueError(f"unknown statset field {name!r}; choose from {', '.join(ALL_FIELDS)}")
    return tuple(fields)


def nearest_rank(ordered: list[float], q: float) -> float:
    """The nearest-rank q-quantile of a sorted, non-empty list: the ceil(q·n)-th smallest value."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


class SampleSet:
    """Samples of one metric; not thread-safe (the client holds its lock)."""

    __slots__ = ("capacity", "count", "max", "min", "reservoir", "sum")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.count = 0
        self.sum: float = 0
        self.min: float = math.inf
        self.max: float = -math.inf
        self.reservoir: list[float] = []

    def add(self, value: float) -> None:
        """Record one sample."""
        self.count += 1
        self.sum += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        if len(self.reservoir) < self.capacity:
            self.reservoir.append(value)
        else:
            slot = random.randrange(self.count)
            if slot < self.capacity:
                self.reservoir[slot] = value

    def statset(self, fields: tuple[str, ...] = ALL_FIELDS) -> Statset:
        """The summary with only `fields` filled (ints, rounded); the others are left empty."""
        values: dict[str, int] = {}
        if self.count:
            ordered = sorted(self.reservoir)
            exact = {"count": self.count, "sum": self.sum, "min": self.min, "max": self.max,
                     "avg": self.sum / self.count}  # fmt: skip
            for name in fields:
                value = exact[name] if name in exact else nearest_rank(ordered, PERCENTILES[name])
                values[name] = round(value)
        return Statset(**values)
