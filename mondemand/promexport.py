"""The server's own counters in the Prometheus text format, for `GET /metrics` on the status port.

A custom `prometheus_client` collector reads `Server.status()` at each scrape
(nothing is kept between scrapes) and exposes every number in it:

- `mondemand_router_<key>_total` for the router's counters;
- `mondemand_listener_<key>_total{listener="NAME"}` for each listener's;
- `mondemand_backend_<key>_total{backend="NAME"}` for the counters the server
  keeps for every backend (`events_processed`, `dropped`, `rejected`, ...) and
  `mondemand_backend_own_<key>{backend="NAME"}` for those the backend reports
  itself;
- a per-source counter (`cardinality_refused.sender.IP`) as
  `mondemand_backend_own_cardinality_refused_by_sender_total{backend="NAME",sender="IP"}`;
- `mondemand_kernel_<key>_total` (the kernel's receive-buffer drops),
  `mondemand_worker_running{worker="NAME"}`, `mondemand_uptime_seconds`.

Levels (queue depths, bytes queued, live series, pids) are gauges, the rest
counters. Names keep only `[a-zA-Z0-9_:]` (anything else becomes `_`).
docs/prometheus.md lists them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["CONTENT_TYPE_LATEST", "ServerCollector", "metric_name", "render"]

#: Status keys that are levels rather than running counts.
GAUGE_KEYS = frozenset({
    "queue_depth", "queued_bytes", "series", "worker_pid", "open_files", "live", "live_series", "pending",
    "receive_buffer_granted", "running", "uptime_seconds", "connections_open", "buffered", "buffered_points",
})  # fmt: skip


def metric_name(text: str) -> str:
    """`text` as a Prometheus metric name: characters outside [a-zA-Z0-9_:] become `_`, no leading digit."""
    out = "".join(c if c.isascii() and (c.isalnum() or c in "_:") else "_" for c in text)
    if not out or out[0].isdigit():
        out = "_" + out
    return out


#: Counter keys `NAME.KIND.SOURCE` (the cardinality guards' refusals per source) become `NAME_by_KIND{KIND="SOURCE"}`.
SOURCE_KINDS = ("sender", "prog_id")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


class ServerCollector(Collector):
    """Reads `server.status()` at every collect and turns it into metric families."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        status = self.server.status()
        families: dict[str, Metric] = {}

        def add(base: str, key: str, labels: Mapping[str, str], value: Any) -> None:
            number = _number(value)
            if number is None:
                return
            for kind in SOURCE_KINDS:
                head, sep, source = key.partition(f".{kind}.")
                if sep:  # a per-source counter (mondemand.cardinality): the source is a label, not part of the name
                    key, labels = f"{head}_by_{kind}", {**labels, kind: source}
                    break
            gauge = key.rsplit(".", 1)[-1] in GAUGE_KEYS
            name = metric_name(f"{base}_{key}")
            family = families.get(name)
            if family is None:
                doc = f"{key} from /status"
                family = (GaugeMetricFamily(name, doc, labels=list(labels)) if gauge
                          else CounterMetricFamily(name, doc, labels=list(labels)))  # fmt: skip
                families[name] = family
            family.add_metric(list(labels.values()), number)  # type: ignore[attr-defined]

        for key, value in status.get("router", {}).items():
            add("mondemand_router", key, {}, value)
        for listener, counters in status.get("listeners", {}).items():
            for key, value in counters.items():
                add("mondemand_listener", key, {"listener": listener}, value)
        for backend, counters in status.get("backends", {}).items():
            for key, value in counters.items():
                if key.startswith("backend."):
                    add("mondemand_backend_own", key[len("backend."):], {"backend": backend}, value)
                else:
                    add("mondemand_backend", key, {"backend": backend}, value)
        for key, value in status.get("kernel", {}).items():
            if not isinstance(value, Mapping):
                add("mondemand_kernel", key, {}, value)
        for worker, info in status.get("workers", {}).items():
            add("mondemand_worker", "running", {"worker": worker}, info.get("running"))
            add("mondemand_worker", "queued_bytes", {"worker": worker}, info.get("queued_bytes"))
        uptime = GaugeMetricFamily("mondemand_uptime_seconds", "seconds since the server started")
        uptime.add_metric([], float(status.get("uptime_seconds", 0)))
        yield uptime
        yield from families.values()


def render(server: Any) -> bytes:
    """The text exposition of `server`'s counters (one registry per call: nothing global)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server))
    return generate_latest(registry)
