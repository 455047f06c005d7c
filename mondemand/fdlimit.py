"""File descriptor headroom: file backends keep many files open, connections need descriptors too.

The server raises its soft RLIMIT_NOFILE towards the hard limit at start
(workers inherit it), and a backend that keeps files open asks
`descriptor_share` how many it may hold so that sockets, pipes and
connections always find a free descriptor. The HTTP surfaces' connection
limits are planned first (`plan_connections`): together they take at most half
of what the limit leaves after BASE_RESERVED, and what they take is reserved,
so that a flood of connections cannot take the descriptors files need.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

log = logging.getLogger("mondemand.fdlimit")

#: Soft limit the server asks for (the hard limit caps it).
WANTED = 65536
#: Descriptors left for sockets, pipes, HTTP connections and libraries (at least; see `reserved`).
RESERVED = 512
#: Descriptors for sockets, pipes and libraries besides the HTTP connections.
BASE_RESERVED = 128
#: Connections the HTTP surfaces may hold together (set by `plan_connections`).
_connections = 0


def soft_limit() -> int:
    """The process's soft RLIMIT_NOFILE (a large number where the platform has none)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 1 << 16
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def raise_soft_limit(wanted: int = WANTED) -> int:
    """Raise the soft limit to `wanted` (or the hard limit, if lower); returns the limit in force."""
    try:
        import resource
    except ImportError:
        return soft_limit()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft_limit()


def reserved() -> int:
    """Descriptors kept from file backends: RESERVED, or BASE_RESERVED plus the planned connections if more."""
    return max(RESERVED, BASE_RESERVED + _connections)


def plan_connections(wanted: Mapping[str, int]) -> dict[str, int]:
    """Each HTTP surface's max_connections (by name), cut proportionally (at least 4 each, with a warning)
    when together they exceed half of what the open-file limit leaves after BASE_RESERVED; the result is
    reserved from `descriptor_share`."""
    global _connections
    total = sum(wanted.values())
    room = max(4 * len(wanted), (soft_limit() - BASE_RESERVED) // 2)
    granted = dict(wanted)
    if total > room:
        granted = {name: max(4, count * room // total) for name, count in wanted.items()}
        log.warning("max_connections cut by the open-file limit (%d): %s; raise LimitNOFILE", soft_limit(),
                    ", ".join(f"{name} {wanted[name]} -> {count}" for name, count in granted.items()))
    _connections = sum(granted.values())
    return granted


def descriptor_share(wanted: int, what: str) -> int:
    """`wanted` open files, or what the limit leaves after `reserved()` (at least 16), with a log line when cut."""
    room = max(16, (soft_limit() - reserved()) // 2)
    if wanted > room:
        log.warning("%s: max_open_files %d cut to %d by the open-file limit (%d); raise LimitNOFILE", what, wanted,
                    room, soft_limit())
        return room
    return wanted
