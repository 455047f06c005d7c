"""File descriptor headroom: file backends keep many files open, connections need descriptors too.

The server raises its soft RLIMIT_NOFILE towards the hard limit at start
(workers inherit it), and a backend that keeps files open asks
`descriptor_share` how many it may hold so that sockets, pipes and
connections always find a free descriptor.
"""

from __future__ import annotations

import logging

log = logging.getLogger("mondemand.fdlimit")

#: Soft limit the server asks for (the hard limit caps it).
WANTED = 65536
#: Descriptors left for sockets, pipes, HTTP connections and libraries.
RESERVED = 512


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


def descriptor_share(wanted: int, what: str) -> int:
    """`wanted` open files, or what the limit leaves after RESERVED (at least 16), with a log line when cut."""
    room = max(16, (soft_limit() - RESERVED) // 2)
    if wanted > room:
        log.warning("%s: max_open_files %d cut to %d by the open-file limit (%d); raise LimitNOFILE", what, wanted,
                    room, soft_limit())
        return room
    return wanted
