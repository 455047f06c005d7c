"""`Outage`: what a backend does while its storage is unavailable (a dead daemon, a full disk).

During an outage the backend stops writing, keeps what arrives in a bounded
buffer (in items, bytes, or both), retries with a doubling back-off and, when
the storage is back, replays the buffer in arrival order before anything
newer. What does not fit the buffer is dropped and counted, never silently
lost. The backend is not restarted: an outage is a condition of the storage,
not a fault of the backend.
"""

from __future__ import annotations

import errno
import time
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

__all__ = ["OUTAGE_ERRNOS", "Outage", "is_outage"]

T = TypeVar("T")

#: The errors of a whole file system rather than of one file: full, read-only, over quota, failing.
OUTAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO})


def is_outage(exc: BaseException) -> bool:
    """True for an OSError that is a condition of the whole file system (full, read-only, quota, I/O error)."""
    return isinstance(exc, OSError) and exc.errno in OUTAGE_ERRNOS


class Outage(Generic[T]):
    """A bounded FIFO of items waiting for the storage, with the back-off and the outage counters."""

    def __init__(self, max_items: int | None = None, max_bytes: int | None = None,
                 backoff_min: float = 0.1, backoff_max: float = 30.0) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.items: deque[tuple[T, int]] = deque()
        self.bytes = 0
        self.dropped = 0
        self.outages = 0
        self._backoff = 0.0
        self._retry_at = 0.0
        self._since: float | None = None
        self._seconds = 0.0

    @property
    def active(self) -> bool:
        """True from a failure until the buffer is replayed: new items must queue behind the buffered ones."""
        return self._since is not None or bool(self.items)

    def due(self) -> bool:
        """True when the back-off is over and a retry may be made."""
        return time.monotonic() >= self._retry_at

    def failed(self) -> float:
        """The storage failed: start (or continue) the outage and back off; the seconds until the next retry."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
            self.outages += 1
        self._backoff = min(max(self._backoff * 2, self.backoff_min), self.backoff_max)
        self._retry_at = now + self._backoff
        return self._backoff

    def succeeded(self) -> None:
        """A write worked: the back-off is reset; the outage ends when the buffer is empty too."""
        self._backoff = 0.0
        self._retry_at = 0.0
        if self._since is not None and not self.items:
            self._seconds += time.monotonic() - self._since
            self._since = None

    def _fits(self, size: int) -> bool:
        if self.max_items is not None and len(self.items) >= self.max_items:
            return False
        return self.max_bytes is None or self.bytes + size <= self.max_bytes

    def add(self, item: T, size: int = 0) -> bool:
        """Buffer `item` at the end; False (counted in `dropped`) when the buffer is full."""
        if not self._fits(size):
            self.dropped += 1
            return False
        self.items.append((item, size))
        self.bytes += size
        return True

    def extend(self, items: Iterable[T]) -> None:
        """`add` each of `items` (size 0)."""
        for item in items:
            self.add(item)

    def put_back(self, items: list[T], sizes: list[int] | None = None) -> list[T]:
        """Return `items` (taken with `take`, or never buffered) to the front, in their order (a write failed).

        Beyond the bounds the newest buffered items are dropped (counted) so that the order is kept; they are
        returned, for callers that count more than items.
        """
        sizes = sizes if sizes is not None else [0] * len(items)
        for item, size in zip(reversed(items), reversed(sizes), strict=True):
            self.items.appendleft((item, size))
            self.bytes += size
        lost = []
        while self.items and ((self.max_items is not None and len(self.items) > self.max_items)
                              or (self.max_bytes is not None and self.bytes > self.max_bytes)):
            item, size = self.items.pop()
            self.bytes -= size
            self.dropped += 1
            lost.append(item)
        return lost

    def take(self, n: int) -> list[T]:
        """Remove and return up to `n` items from the front."""
        out = []
        items = self.items
        while items and len(out) < n:
            item, size = items.popleft()
            self.bytes -= size
            out.append(item)
        return out

    def drop_all(self) -> int:
        """Empty the buffer, counting its items as dropped (at shutdown); how many there were."""
        n = len(self.items)
        self.items.clear()
        self.bytes = 0
        self.dropped += n
        return n

    @property
    def seconds(self) -> float:
        """Seconds spent in outages, the current one included."""
        current = time.monotonic() - self._since if self._since is not None else 0.0
        return self._seconds + current

    def counters(self) -> dict[str, float]:
        """outage_seconds, outages, buffered, buffered_bytes."""
        return {"outage_seconds": round(self.seconds, 3), "outages": self.outages, "buffered": len(self.items),
                "buffered_bytes": self.bytes}
