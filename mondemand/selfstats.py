"""The server's own metrics, emitted as `MonDemand::StatsMsg` events.

Every `stats_interval` the server's counters become one StatsMsg per backend
(context `backend=NAME`) plus one for the router, with prog_id
`mondemand_server`; they are routed like received events and can also be
sent to an LWES channel. Counters are cumulative (the MonDemand convention);
queue depth is a gauge.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from mondemand.lwes import Event
from mondemand.messages import Metric, MetricType, StatsMsg

GAUGES = frozenset({"queue_depth", "queued_bytes", "uptime_seconds"})


def _metrics(values: Mapping[str, float]) -> list[Metric]:
    out = []
    for key, value in sorted(values.items()):
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        kind = MetricType.GAUGE if key in GAUGES or key.startswith("backend.") else MetricType.COUNTER
        out.append(Metric(kind, key, int(value)))
    return out


def stats_events(
    status: Mapping[str, object], *, prog_id: str, hostname: str, now_ms: int | None = None
) -> list[Event]:
    """StatsMsg events describing a `Server.status()` snapshot."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    events: list[Event] = []

    def add(values: Mapping[str, float], context: dict[str, str]) -> None:
        metrics = _metrics(values)
        if metrics:
            msg = StatsMsg(prog_id, host=hostname, context=context, metrics=metrics, send_time=now_ms,
                           collect_time=now_ms)
            events.extend(msg.to_lwes())

    router = dict(status.get("router", {}))  # type: ignore[call-overload]
    router["uptime_seconds"] = int(status.get("uptime_seconds", 0))  # type: ignore[call-overload]
    add(router, {})
    for name, counters in dict(status.get("listeners", {})).items():  # type: ignore[call-overload]
        add(counters, {"listener": name})
    for name, counters in dict(status.get("backends", {})).items():  # type: ignore[call-overload]
        add(counters, {"backend": name})
    return events
