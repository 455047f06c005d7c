"""DaTtSs-style aggregation: `process("api").agg("query", "153ms")`.

Values are an integer with a kind suffix: `c` counter, `ms` timer, `g` gauge.
Every `interval` seconds (5 by default) each metric's samples become one
`Partial` (COUNT, SUM, MIN, MAX, BOT10, TOP10; see `mondemand.client.partials`)
sent in a StatsMsg; servers merge partials from every process with
`partials.combine`. With `percentiles=True` each partial also carries a
mergeable sketch (`mondemand.sketch.Sketch`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from mondemand.client.core import Client, ClientError
from mondemand.client.partials import PARTIAL_CONTEXT_KEY, Partial
from mondemand.client.transports import Transport

from mondemand.messages import Metric

#: Seconds between two partials, DaTtSs's own period.
DEFAULT_INTERVAL = 5.0
KINDS = {"c": "counter", "ms": "timer", "g": "gauge"}
_VALUE = re.compile(r"\s*(-?[0-9]+)\s*(c|ms|g)\s*")


def parse_value(value: str) -> tuple[int, str]:
    """("153ms") -> (153, "ms"); ValueError with the accepted forms for anything else."""
    match = _VALUE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(
            f"agg value {value!r} is not an integer followed by a kind: "
            "c (counter, e.g. '1c'), ms (timer, e.g. '153ms') or g (gauge, e.g. '23g')"
        )
    return int(match.group(1)), match.group(2)


class Process(Client):
    """A DaTtSs-style emitter for one process; it is also a full `Client` (same transports, fork and thread safety)."""

    def __init__(
        self,
        name: str,
        host: str | None = None,
        context: Mapping[str, str] | None = None,
        transports: Sequence[Transport | str] | None = None,
        interval: float = DEFAULT_INTERVAL,
        percentiles: bool = False,
        relative_accuracy: float = 0.01,
        user: str | None = None,
        auth: str | None = None,
        **client_options: Any,
    ) -> None:
        """`user` and `auth` are DaTtSs's names for the tenant and its key (`Client(tenant=..., key=...)`)."""
        if user is not None:
            client_options.setdefault("tenant", user)
        if auth is not None:
            client_options.setdefault("key", auth)
        self.sketch_class: Any = None
        if percentiles:
            try:
                from mondemand.sketch import Sketch
            except ImportError as exc:
                raise ClientError(f"percentiles need mondemand.sketch, which cannot be imported: {exc}") from exc
            self.sketch_class = Sketch
        self.relative_accuracy = relative_accuracy
        ctx = {**(context or {}), PARTIAL_CONTEXT_KEY: str(round(interval * 1000))}
        super().__init__(name, host, ctx, transports, flush_interval=interval, **client_options)

    def _init_state(self) -> None:
        super()._init_state()
        self._aggs: dict[str, tuple[str, list[int]]] = {}
        self._interval_start = int(time.time() * 1000)

    def _collect_time(self) -> int:
        """The start of the interval this flush covers (the previous flush): the server's roll-up and `agg`
        put a partial in the minute of its collect_time."""
        start, self._interval_start = self._interval_start, int(time.time() * 1000)
        return start

    def agg(self, name: str, value: str) -> None:
        """Record one value such as "1c", "153ms" or "23g" for metric `name`.

        ValueError for a malformed value or for a metric used with two kinds.
        """
        number, kind = parse_value(value)
        with self._lock:
            self._start_locked()
            entry = self._aggs.get(name)
            if entry is None:
                self._aggs[name] = (kind, [number])
            elif entry[0] != kind:
                raise ValueError(f"metric {name!r} is a {KINDS[entry[0]]}; {value!r} would make it a {KINDS[kind]}")
            else:
                entry[1].append(number)

    def _take_extra_locked(self) -> dict[str, tuple[str, list[int]]]:
        aggs, self._aggs = self._aggs, {}
        return aggs

    def _extra_metrics(self, aggs: dict[str, tuple[str, list[int]]]) -> list[Metric]:
        metrics: list[Metric] = []
        for name, (_kind, samples) in aggs.items():
            metrics += self.partial(samples).to_metrics(name)
        return metrics

    def partial(self, samples: list[int]) -> Partial:
        """The partial (with a sketch when percentiles are on) of one metric's samples."""
        sketch = None
        if self.sketch_class is not None:
            sketch = self.sketch_class(relative_accuracy=self.relative_accuracy)
            for value in samples:
                sketch.add(value)
        return Partial.from_samples(samples, sketch)


def process(name: str, **options: Any) -> Process:
    """A DaTtSs-style `Process` named `name`; options as for `Process` (interval, transports, percentiles...)."""
    return Process(name, **options)
