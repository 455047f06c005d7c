"""`sink` backend: count and discard (for load tests)."""

from __future__ import annotations

from operator import attrgetter

from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.plugin_api import Backend

_data = attrgetter("data")


class SinkBackend(Backend):
    """Discards every event; counts events and bytes."""

    type_name = "sink"
    needs = "raw"
    default_process = "main"

    def start(self) -> None:
        self.discarded = 0
        self.bytes = 0

    def handle(self, batch: list[RawEvent]) -> None:
        self.discarded += len(batch)
        self.bytes += sum(map(len, map(_data, batch)))

    def counters(self) -> dict[str, float]:
        return {"discarded": self.discarded, "bytes": self.bytes}


@hookimpl
def register_backend_types(register) -> None:
    register("sink", SinkBackend)
