"""Options and limits of an HTTP surface (`mondemand.httpserve`), importable without aiohttp.

`--check` and plugin loading read these declarations; only serving needs aiohttp.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from mondemand.options import Option


def limit_options(max_connections: int = 256) -> tuple[Option, ...]:
    """The options every HTTP surface takes (`[http]`, `lwes-http`), with their bounds."""
    return (
        Option("header_timeout", "duration", 10.0, minimum=0.1, maximum=300.0,
               help="a request's headers must be complete within this long; slower clients are cut off"),
        Option("body_timeout", "duration", 30.0, minimum=0.1, maximum=3600.0,
               help="a request body must be complete within this long of its headers"),
        Option("idle_timeout", "duration", 30.0, minimum=0.1, maximum=3600.0,
               help="a kept-alive connection without a request is closed after this long"),
        Option("max_connections", "int", max_connections, minimum=1, maximum=65536,
               help="open connections at most; more are answered 503 and closed at once"),
    )


def stream_limit_options(max_connections: int = 1024, idle_timeout: float = 300.0) -> tuple[Option, ...]:
    """The options of a line-oriented TCP port (statsd over TCP): `limit_options`' idle and connection limits,
    and `line_timeout` in place of the header deadline (a line must end within it of its first byte)."""
    by_name = {opt.name: opt for opt in limit_options(max_connections)}
    return (
        Option("line_timeout", "duration", 10.0, minimum=0.1, maximum=300.0,
               help="a line must end within this long of its first byte; slower clients are cut off"),
        replace(by_name["idle_timeout"], default=idle_timeout,
                help="a connection that sends nothing this long is closed"),
        by_name["max_connections"],
    )


@dataclass(frozen=True)
class Limits:
    """Timeouts (seconds) and the connection limit of one surface."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 30.0
    max_connections: int = 256

    @classmethod
    def from_options(cls, values: dict[str, Any]) -> Limits:
        """Limits from parsed options (missing keys take the defaults)."""
        defaults = cls()
        return cls(
            float(values.get("header_timeout", defaults.header_timeout)),
            float(values.get("body_timeout", defaults.body_timeout)),
            float(values.get("idle_timeout", defaults.idle_timeout)),
            int(values.get("max_connections", defaults.max_connections)),
        )


