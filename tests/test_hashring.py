"""mondemand.hashring: stable, balanced, minimal movement."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mondemand.hashring import HashRing, ring_hash

NODES = ["10.0.0.1:26562", "10.0.0.2:26562", "10.0.0.3:26562", "10.0.0.4:26562"]
keys = st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=200, unique=True)


def test_the_hash_is_the_documented_blake2b_prefix():
    import hashlib

    assert ring_hash("app\0requests") == int.from_bytes(hashlib.blake2b(b"app\0requests", digest_size=8).digest(),
                                                        "big")  # fmt: skip


@settings(max_examples=50, deadline=None)
@given(keys)
def test_two_rings_agree(items):
    a, b = HashRing(NODES), HashRing(list(NODES))
    assert [a.node_for(k) for k in items] == [b.node_for(k) for k in items]


@settings(max_examples=50, deadline=None)
@given(keys, st.sampled_from(NODES))
def test_removing_a_node_moves_only_its_keys(items, gone):
    full = HashRing(NODES)
    fewer = HashRing([n for n in NODES if n != gone])
    for key in items:
        before = full.node_for(key)
        if before != gone:
            assert fewer.node_for(key) == before


def test_load_is_near_even():
    ring = HashRing(NODES)
    load = Counter(ring.node_for(f"prog\0metric{i}") for i in range(10_000))
    assert set(load) == set(NODES)
    assert all(1875 <= count <= 3125 for count in load.values()), load


@settings(max_examples=50, deadline=None)
@given(keys, st.integers(1, 6))
def test_nodes_for_are_distinct_and_start_with_the_owner(items, n):
    ring = HashRing(NODES)
    for key in items:
        chosen = ring.nodes_for(key, n)
        assert len(chosen) == len(set(chosen)) == min(n, len(NODES))
        assert chosen[0] == ring.node_for(key)


@pytest.mark.parametrize("nodes", [[], ["a", "a"]])
def test_bad_node_lists_are_refused(nodes):
    with pytest.raises(ValueError):
        HashRing(nodes)
