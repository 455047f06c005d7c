"""Statset summaries: exact below the reservoir capacity, bounded memory above it (hypothesis)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from mondemand.client.samples import ALL_FIELDS, SampleSet


@given(st.lists(st.integers(-10**9, 10**9), min_size=1, max_size=500))
def test_summary_below_capacity_is_exact_nearest_rank(values):
    samples = SampleSet(capacity=1000)
    for v in values:
        samples.add(v)
    stat = samples.statset(ALL_FIELDS)
    ordered = sorted(values)
    n = len(ordered)
    assert (stat.count, stat.sum, stat.min, stat.max) == (n, sum(values), ordered[0], ordered[-1])
    assert stat.avg == round(sum(values) / n)
    assert stat.median == ordered[math.ceil(0.5 * n) - 1]
    assert stat.pctl_99 == ordered[math.ceil(0.99 * n) - 1]


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=50, max_size=300), st.integers(1, 20))
def test_over_capacity_memory_is_bounded_and_exact_fields_stay_exact(values, capacity):
    samples = SampleSet(capacity=capacity)
    for v in values:
        samples.add(v)
    assert len(samples.reservoir) == capacity
    assert all(v in values for v in samples.reservoir)
    stat = samples.statset(("count", "min", "max", "median"))
    assert (stat.count, stat.min, stat.max) == (len(values), round(min(values)), round(max(values)))
    assert round(min(values)) <= stat.median <= round(max(values))
    assert stat.sum is None and stat.pctl_90 is None


def test_empty_set_gives_an_empty_statset():
    assert SampleSet().statset().format() == "::::::::::"
