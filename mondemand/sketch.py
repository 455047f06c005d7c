"""`Sketch`: a mergeable quantile sketch with a compact text form, for partial aggregates that tiers merge.

The quantiles come from DataDog's DDSketch (the `ddsketch` package): every
quantile it answers is within `relative_accuracy` of a value actually in the
data, and two sketches with the same accuracy merge losslessly, so a colo can
sketch its hosts and the global tier can merge the colos. Count, sum, min and
max are kept exactly beside it, and quantiles are clamped to [min, max].

The text form (`to_text` / `from_text`) travels as a string attribute:

    dds1 <accuracy> <count> <sum> <min> <max> <zero count> <positive bins> <negative bins>

where bins are `key:count` pairs joined by commas (`-` when there are none),
keys being DDSketch's logarithmic bucket indexes. Only non-empty buckets are
written, so the text grows with the spread of the data, not its volume.
"""

from __future__ import annotations

import math

from ddsketch.ddsketch import BaseDDSketch
from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import DenseStore

__all__ = ["Sketch", "SketchError"]

_MAGIC = "dds1"
_NUMBER_FIELDS = 6


class SketchError(ValueError):
    """A sketch text that cannot be read, or two sketches that cannot be merged."""


def _fmt(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _bins_text(store: DenseStore) -> str:
    pairs = [f"{index + store.offset}:{_fmt(count)}" for index, count in enumerate(store.bins) if count]
    return ",".join(pairs) or "-"


def _read_bins(text: str, store: DenseStore) -> None:
    if text == "-":
        return
    for pair in text.split(","):
        key, _, count = pair.partition(":")
        weight = float(count)
        if not weight > 0:
            raise SketchError(f"bin {pair!r} has a count that is not positive")
        store.add(int(key), weight)


class Sketch:
    """Quantiles within `relative_accuracy`, exact count/sum/min/max, lossless merge, text form."""

    __slots__ = ("_dd", "_negative", "_positive", "count", "max", "min", "relative_accuracy", "sum")

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        if not 0 < relative_accuracy < 1:
            raise SketchError(f"relative_accuracy must be between 0 and 1, got {relative_accuracy}")
        self.relative_accuracy = relative_accuracy
        self._positive = DenseStore()
        self._negative = DenseStore()
        self._dd = BaseDDSketch(LogarithmicMapping(relative_accuracy), self._positive, self._negative, 0.0)
        self.count = 0.0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float, weight: float = 1.0) -> None:
        """Record `value` (`weight` times)."""
        self._dd.add(value, weight)
        self.count += weight
        self.sum += value * weight
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def merge(self, other: Sketch) -> None:
        """Fold `other` into this sketch; both must have the same accuracy."""
        if other.relative_accuracy != self.relative_accuracy:
            raise SketchError(
                f"cannot merge a sketch of accuracy {other.relative_accuracy} into one of {self.relative_accuracy}"
            )
        if not other.count:
            return
        self._dd.merge(other._dd)
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0 <= q <= 1), None when empty."""
        if not 0 <= q <= 1:
            raise SketchError(f"quantile must be between 0 and 1, got {q}")
        if not self.count:
            return None
        value = self._dd.get_quantile_value(q)
        return min(max(value, self.min), self.max)

    def copy(self) -> Sketch:
        """An independent copy (merge mutates the receiver)."""
        return Sketch.from_text(self.to_text())

    def to_text(self) -> str:
        """The compact text form described in the module docstring."""
        zero = self.count - self._positive.count - self._negative.count
        numbers = (self.relative_accuracy, self.count, self.sum, self.min, self.max, zero)
        return " ".join(
            [_MAGIC, *(_fmt(n) if math.isfinite(n) else "-" for n in numbers),
             _bins_text(self._positive), _bins_text(self._negative)]
        )  # fmt: skip

    @classmethod
    def from_text(cls, text: str) -> Sketch:
        """Read `to_text`'s output; SketchError saying what is wrong otherwise."""
        parts = text.split(" ") if isinstance(text, str) else []
        if len(parts) != 3 + _NUMBER_FIELDS or parts[0] != _MAGIC:
            raise SketchError(f"not a sketch text: {str(text)[:60]!r}")
        try:
            acc, count, total, low, high, zero = (math.nan if p == "-" else float(p) for p in parts[1:7])
            sketch = cls(acc)
            positive, negative = DenseStore(), DenseStore()
            _read_bins(parts[7], positive)
            _read_bins(parts[8], negative)
        except (ValueError, OverflowError) as exc:
            raise SketchError(f"bad sketch text {text[:60]!r}: {exc}") from exc
        stored = positive.count + negative.count + zero
        if not math.isclose(stored, count, rel_tol=1e-9, abs_tol=1e-9):
            raise SketchError(f"sketch text says count {count} but its bins hold {stored}")
        sketch._positive, sketch._negative = positive, negative
        sketch._dd = BaseDDSketch(LogarithmicMapping(acc), positive, negative, zero)
        sketch.count, sketch.sum = count, total
        sketch.min = math.inf if math.isnan(low) else low
        sketch.max = -math.inf if math.isnan(high) else high
        return sketch

    def __repr__(self) -> str:
        return f"Sketch(count={self.count:g}, min={self.min:g}, max={self.max:g}, accuracy={self.relative_accuracy})"
