"""`HashRing`: consistent hashing, so one key always reaches the same one of several servers.

Each node gets `replicas` points on a 64-bit ring; a key belongs to the first
point at or after its own hash, going round. Adding or removing a node moves
only the keys of that node. The hash is stable across processes and Python
runs (unlike `hash()`), and simple to compute elsewhere:

    h(data) = int.from_bytes(blake2b(data, digest_size=8).digest(), "big")

with the key encoded as UTF-8 and virtual node i of node N hashing the text
``f"{N}#{i}"``. The forwarder's key for a metric is ``prog_id + "\\0" + name``.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

__all__ = ["HashRing", "ring_hash"]


def ring_hash(data: str | bytes) -> int:
    """The 64-bit position of `data` on the ring."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


class HashRing:
    """Nodes on a ring of 2**64 positions, `replicas` virtual points each."""

    def __init__(self, nodes: Sequence[str], replicas: int = 160) -> None:
        if not nodes:
            raise ValueError("a hash ring needs at least one node")
        if len(set(nodes)) != len(nodes):
            raise ValueError(f"duplicate nodes in {list(nodes)}")
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {replicas}")
        self.nodes = tuple(nodes)
        points = sorted((ring_hash(f"{node}#{i}"), node) for node in nodes for i in range(replicas))
        self._positions = [p for p, _ in points]
        self._owners = [n for _, n in points]

    def node_for(self, key: str | bytes) -> str:
        """The node that owns `key`."""
        index = bisect.bisect_left(self._positions, ring_hash(key))
        return self._owners[index % len(self._owners)]

    def nodes_for(self, key: str | bytes, n: int) -> list[str]:
        """`n` distinct nodes for `key` (replicas), walking the ring from its owner; at most every node."""
        wanted = min(n, len(self.nodes))
        index = bisect.bisect_left(self._positions, ring_hash(key))
        found: list[str] = []
        size = len(self._owners)
        for step in range(size):
            node = self._owners[(index + step) % size]
            if node not in found:
                found.append(node)
                if len(found) == wanted:
                    break
        return found
