"""mondemand.sketch: accuracy bound, lossless merge, text round trip, clear errors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mondemand.sketch import Sketch, SketchError

values = st.lists(
    st.one_of(st.floats(min_value=1e-3, max_value=1e9), st.floats(min_value=-1e6, max_value=-1e-3), st.just(0.0)),
    min_size=1,
    max_size=300,
)


def exact_quantile(ordered: list[float], q: float) -> float:
    """The same rank DDSketch uses: the value at rank floor(q * (n - 1))."""
    return ordered[math.floor(q * (len(ordered) - 1))]


def within(estimate: float, exact: float, accuracy: float) -> bool:
    return abs(estimate - exact) <= accuracy * abs(exact) + 1e-9


@settings(max_examples=150, deadline=None)
@given(values, st.sampled_from([0.0, 0.25, 0.5, 0.9, 0.99, 1.0]))
def test_quantiles_are_within_the_relative_accuracy(data, q):
    sketch = Sketch(0.01)
    for v in data:
        sketch.add(v)
    assert within(sketch.quantile(q), exact_quantile(sorted(data), q), 0.01)
    assert sketch.count == len(data)
    assert sketch.min == min(data) and sketch.max == max(data)
    assert math.isclose(sketch.sum, math.fsum(data), rel_tol=1e-9, abs_tol=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.lists(values, min_size=1, max_size=6), st.sampled_from([0.5, 0.9, 0.99]))
def test_merging_parts_equals_sketching_the_whole(parts, q):
    whole = Sketch(0.02)
    merged = Sketch(0.02)
    for part in parts:
        piece = Sketch(0.02)
        for v in part:
            piece.add(v)
            whole.add(v)
        merged.merge(Sketch.from_text(piece.to_text()))  # through the wire form, as tiers do
    assert merged.quantile(q) == pytest.approx(whole.quantile(q))
    assert merged.count == whole.count
    assert (merged.min, merged.max) == (whole.min, whole.max)


@settings(max_examples=100, deadline=None)
@given(values)
def test_text_round_trip_keeps_everything(data):
    sketch = Sketch(0.01)
    for v in data:
        sketch.add(v)
    again = Sketch.from_text(sketch.to_text())
    assert again.to_text() == sketch.to_text()
    for q in (0, 0.5, 1):
        assert again.quantile(q) == sketch.quantile(q)


def test_text_grows_with_spread_not_volume():
    sketch = Sketch(0.01)
    for _ in range(100_000):
        sketch.add(42.0)
    assert len(sketch.to_text()) < 80
    assert sketch.quantile(0.5) == 42.0  # clamped to the exact min/max


def test_empty_sketch_answers_none_and_round_trips():
    sketch = Sketch()
    assert sketch.quantile(0.5) is None
    assert Sketch.from_text(sketch.to_text()).count == 0


def test_copy_is_independent():
    a = Sketch()
    a.add(1)
    b = a.copy()
    b.add(1000)
    assert a.count == 1 and a.max == 1


@pytest.mark.parametrize(
    "text",
    ["", "dds1", "hello 0.01 1 1 1 1 0 0:1 -", "dds1 0.01 2 1 1 1 0 0:1 -", "dds1 0.01 1 1 1 1 0 x:1 -",
     "dds1 0.01 1 1 1 1 0 0:-1 -", "dds1 7 1 1 1 1 0 0:1 -"],
)  # fmt: skip
def test_bad_texts_are_sketch_errors(text):
    with pytest.raises(SketchError):
        Sketch.from_text(text)


def test_different_accuracies_do_not_merge_and_bad_quantiles_are_refused():
    with pytest.raises(SketchError, match="accuracy"):
        Sketch(0.01).merge(Sketch(0.02))
    with pytest.raises(SketchError):
        Sketch().quantile(1.5)
