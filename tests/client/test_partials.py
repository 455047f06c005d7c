"""The DaTtSs partial math: building partials and the server-side combine (hypothesis)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mondemand.client.partials import Partial, PartialError, combine, from_stats, tail_size

from mondemand.messages import StatsMsg, from_lwes

samples = st.lists(st.integers(-10**6, 10**6), min_size=1, max_size=300)


def exact_tails(values: list[int]) -> tuple[float, float]:
    ordered = sorted(values)
    k = tail_size(len(ordered))
    return sum(ordered[:k]) / k, sum(ordered[-k:]) / k


def test_tail_size_is_ceil_of_a_tenth_and_at_least_one():
    assert [tail_size(n) for n in (1, 9, 10, 11, 20, 21, 100)] == [1, 1, 1, 2, 2, 3, 10]


@given(samples)
def test_partial_of_samples_is_exact(values):
    p = Partial.from_samples(values)
    bot, top = exact_tails(values)
    assert (p.count, p.sum, p.min, p.max) == (len(values), sum(values), min(values), max(values))
    assert math.isclose(p.bot10, bot, abs_tol=1e-9) and math.isclose(p.top10, top, abs_tol=1e-9)
    assert p.min <= p.bot10 <= p.avg + 1e-9 and p.avg - 1e-9 <= p.top10 <= p.max


@given(st.lists(samples, min_size=1, max_size=8))
def test_combine_adds_counts_and_sums_and_keeps_extremes(groups):
    merged = combine(Partial.from_samples(g) for g in groups)
    everything = [v for g in groups for v in g]
    assert (merged.count, merged.sum) == (len(everything), sum(everything))
    assert (merged.min, merged.max) == (min(everything), max(everything))
    assert merged.min <= merged.bot10 <= merged.top10 + 1e-9 <= merged.max + 2e-9


@given(st.lists(st.lists(st.integers(-1000, 1000), min_size=1, max_size=12).map(lambda g: g * 10),
                min_size=1, max_size=6))
def test_combined_tails_bound_the_exact_tails_when_counts_are_multiples_of_ten(groups):
    # Then each process's bottom set has count/10 samples, their union is a set of the exact size,
    # and no set of that size has a smaller mean than the true bottom 10 % (likewise for the top).
    merged = combine(Partial.from_samples(g) for g in groups)
    bot, top = exact_tails([v for g in groups for v in g])
    assert merged.bot10 >= bot - 1e-9
    assert merged.top10 <= top + 1e-9


@given(samples, st.integers(2, 5))
def test_combining_identical_partials_changes_nothing_but_count_and_sum(values, copies):
    one = Partial.from_samples(values)
    merged = combine([one] * copies)
    assert (merged.count, merged.min, merged.max) == (one.count * copies, one.min, one.max)
    assert math.isclose(merged.bot10, one.bot10, abs_tol=1e-9) and math.isclose(merged.top10, one.top10, abs_tol=1e-9)


@given(samples)
def test_wire_round_trip_through_the_stats_decoder(values):
    partial = Partial.from_samples(values)
    msg = StatsMsg("api", metrics=partial.to_metrics("query"))
    [event] = msg.to_lwes()
    back = from_stats(from_lwes(event))["query"]
    assert (back.count, back.sum, back.min, back.max) == (partial.count, partial.sum, partial.min, partial.max)
    assert math.isclose(back.bot10, partial.bot10, abs_tol=1e-9)
    assert math.isclose(back.top10, partial.top10, abs_tol=1e-9)


def test_empty_inputs_are_partial_errors():
    with pytest.raises(PartialError, match="at least one sample"):
        Partial.from_samples([])
    with pytest.raises(PartialError, match="nothing to combine"):
        combine([])
