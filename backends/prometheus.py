"""`prometheus` backend: the latest value of every live StatsMsg series, for Prometheus to scrape.

It serves `GET /metrics` on its own port (`address`/`port`, 127.0.0.1:9464 by
default) from the worker process it runs in, with `prometheus_client`'s HTTP
server and a custom collector over its own table of series:

- a **gauge** is exposed as a gauge with its last value;
- a **counter** (cumulative in mondemand) as a Prometheus counter
  `<name>_total`. When a report is lower than the previous one the sender
  restarted: the exposed total continues from where it was, adding the new
  value (counted from zero), so Prometheus never sees it go down;
- a **statset** as a summary: `<name>_count` and `<name>_sum` are running
  totals of the statsets' counts and sums (a summary's count and sum only
  grow), `<name>{quantile="0.5"}` ... `{quantile="0.99"}` the median and
  percentiles of the latest statset.

Labels are `prog_id`, `host` and the context pairs. Metric and label names
are made valid (`[a-zA-Z_:][a-zA-Z0-9_:]*`, label names without `:` and
without a leading `__`); a context key that would clash with `prog_id`,
`host` or `quantile` becomes `context_<key>`. Series not updated for
`expire_after` disappear; beyond `max_series` new series are dropped and
counted (`overflow`). A cardinality guard (`mondemand.cardinality`) keeps one
flooding sender or program from filling `max_series` and hiding the others.
docs/prometheus.md has the details.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

from mondemand.cardinality import CardinalityGuard, CardinalityLimits, cardinality_options, guard_sender
from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.httplimits import Limits, limit_options
from mondemand.messages import MetricType, Statset, StatsMsg
from mondemand.options import Option
from mondemand.plugin_api import Backend
from mondemand.promexport import metric_name
from mondemand.runner import RateLimitedLog

__all__ = ["PrometheusBackend", "label_name", "metric_name"]

#: Statset percentile fields and the quantile label they are exposed under.
QUANTILES = (("median", "0.5"), ("pctl_75", "0.75"), ("pctl_90", "0.9"), ("pctl_95", "0.95"),
             ("pctl_98", "0.98"), ("pctl_99", "0.99"))
#: Label names the backend sets itself; context keys equal to them are renamed.
RESERVED_LABELS = frozenset({"prog_id", "host", "quantile", "le"})

Labels = tuple[tuple[str, str], ...]


def label_name(text: str) -> str:
    """A valid label name: [a-zA-Z_][a-zA-Z0-9_]*, never starting with `__` (reserved by Prometheus)."""
    out = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in text)
    if not out or out[0].isdigit():
        out = "_" + out
    if out.startswith("__"):
        out = "x" + out[1:]
    return out


class _Collector(Collector):
    def __init__(self, backend: PrometheusBackend) -> None:
        self.backend = backend

    def collect(self) -> Iterator[Metric]:
        return iter(self.backend.families())


class PrometheusBackend(Backend):
    """Keep the latest value of each StatsMsg series and serve them to Prometheus."""

    type_name = "prometheus"
    #: In service mode /metrics wants an admin key: loading warns when that crosses a non-loopback port in clear.
    carries_keys = True
    needs = "message"
    options = (
        Option("address", "str", "127.0.0.1", help="address of the /metrics HTTP server"),
        Option("port", "port", 9464, help="its port"),
        Option("prefix", "str", "", help="prepended to every metric name (e.g. md_)"),
        Option("expire_after", "duration", 900.0, minimum=1, help="a series not updated this long disappears"),
        Option("max_series", "int", 100_000, minimum=1, help="series kept at most; new ones beyond are dropped"),
        *cardinality_options(per_sender=20_000, per_prog_id=50_000, per_datagram=1000, per_minute=5000),
        *limit_options(max_connections=64),
    )  # fmt: skip

    def start(self) -> None:
        self.lock = threading.Lock()
        self.prefix = metric_name(self.config["prefix"]) if self.config["prefix"] else ""
        self.expire_after = float(self.config["expire_after"])
        self.max_series = int(self.config["max_series"])
        # (kind, name, labels) -> state. gauge: [value, seen]; counter: [total, last raw, seen];
        # summary: [count, sum, quantiles, seen].
        self.series: dict[tuple[str, str, Labels], list[Any]] = {}
        #: who may add series; `_owners` holds the (sender, prog_id) each series was admitted for, to release it
        self.guard = CardinalityGuard(f"prometheus backend {self.name}", CardinalityLimits.from_options(self.config),
                                      self.log)
        self._owners: dict[tuple[str, str, Labels], tuple[str | None, str]] = {}
        self._names: dict[str, str] = {}
        self._labels: dict[tuple[str, str, tuple[tuple[str, str], ...]], Labels] = {}
        self.stats = dict.fromkeys(("messages", "overflow", "refused_series", "expired", "counter_resets",
                                    "scrapes"), 0)
        self.ratelog = RateLimitedLog(self.log)
        self._next_expiry = time.monotonic() + min(60.0, self.expire_after)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        # The scrape port is a `mondemand.httpserve.Surface` (header/body/idle timeouts, max_connections), as the
        # status port: prometheus_client's own server is a thread per connection without read timeouts.
        from mondemand.httpserve import Surface

        self.surface = Surface(f"prometheus-{self.name}", Limits.from_options(self.config), self._http, pool_size=2)
        self.bound = self.surface.bind(str(self.config["address"]).strip("[]"), int(self.config["port"]))
        self.surface.start()
        self.log.info("prometheus backend %s: metrics on %s://%s:%s/metrics", self.name, self.surface.scheme,
                      *self.bound)

    async def _http(self, request: Any) -> Any:
        """GET /metrics (or /): the text exposition, made on the surface's pool (it takes the lock)."""
        from aiohttp import web

        if request.method not in ("GET", "HEAD"):
            return web.json_response({"error": "GET /metrics"}, status=405)
        if request.path not in ("/metrics", "/"):
            return web.json_response({"error": "not found: GET /metrics"}, status=404)
        tenants = self.context.tenants
        if tenants is not None:  # every tenant's series are here: an admin key only (Prometheus' authorization)
            from mondemand.httpserve import request_key, unauthorized

            if not tenants.is_admin(request_key(request)):
                return unauthorized("an admin key")
        body = await self.surface.run_blocking(generate_latest, self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def reopen(self) -> None:
        """SIGHUP: the scrape port reads its certificate again."""
        surface = getattr(self, "surface", None)
        problem = surface.reload_tls() if surface is not None else None
        if problem is not None:
            self.log.error("%s", problem)

    def close(self) -> None:
        surface = getattr(self, "surface", None)
        if surface is not None:
            surface.stop()
            self.surface = None

    def counters(self) -> dict[str, float]:
        surface = getattr(self, "surface", None)
        http = {f"http_{k}": v for k, v in surface.counters().items()} if surface is not None else {}
        guard = getattr(self, "guard", None)
        refusals = guard.counters() if guard is not None else {}
        return {"series": len(self.series), **self.stats, **refusals, **http}

    # -- intake ---------------------------------------------------------------

    def _name(self, name: str) -> str:
        out = self._names.get(name)
        if out is None:
            if len(self._names) >= 4 * self.max_series:
                self._names.clear()
            out = self._names[name] = metric_name(self.prefix + name)
        return out

    def _label_set(self, msg: StatsMsg, tenant: str | None) -> Labels:
        key = (msg.prog_id, msg.host, tuple(sorted(msg.context.items())), tenant)
        labels = self._labels.get(key)
        if labels is None:
            pairs = {"prog_id": _text(msg.prog_id), "host": _text(msg.host)}
            if tenant is not None:  # service mode: every series says whose it is ("" = no tenant)
                pairs["tenant"] = tenant
            for k, v in key[2]:
                name = label_name(k)
                if name in RESERVED_LABELS or name in pairs:
                    name = label_name("context_" + k)
                pairs[name] = _text(v)
            if len(self._labels) >= 4 * self.max_series:
                self._labels.clear()
            labels = self._labels[key] = tuple(sorted(pairs.items()))
        return labels

    def handle(self, batch: list[RawEvent]) -> None:
        now = time.monotonic()
        service = self.context.tenants is not None
        with self.lock:
            for raw in batch:
                msg = raw.message
                if not isinstance(msg, StatsMsg):
                    continue
                try:
                    self._add(msg, now, raw.tenant if service else None, raw)
                except Exception as exc:  # bad data in this event: it alone is dropped
                    self.reject(raw, exc)
            if now >= self._next_expiry:
                self._expire(now)
                self._next_expiry = now + min(60.0, self.expire_after)

    def _add(self, msg: StatsMsg, now: float, tenant: str | None = None, raw: RawEvent | None = None) -> None:
        self.stats["messages"] += 1
        labels = self._label_set(msg, tenant)
        series = self.series
        for metric in msg.metrics:
            kind = metric.type
            if kind is MetricType.GAUGE:
                key = ("gauge", self._name(metric.name), labels)
            elif kind is MetricType.COUNTER:
                key = ("counter", self._name(metric.name), labels)
            elif kind is MetricType.STATSET:
                key = ("summary", self._name(metric.name), labels)
            else:
                continue
            state = series.get(key)
            if state is None:
                if len(series) >= self.max_series:
                    self.stats["overflow"] += 1
                    self.ratelog.warning("overflow", "%s: %d series (max_series); %s of %s from %s dropped",
                                         self.name, len(series), metric.name, msg.prog_id, msg.host)
                    continue
                sender = guard_sender(raw.sender_ip, raw.listener) if raw is not None else None
                if not self.guard.admit(sender, msg.prog_id, raw):
                    self.stats["refused_series"] += 1
                    continue
                state = series[key] = self._new(kind, metric.value, now)
                self._owners[key] = (sender, msg.prog_id)
                continue
            if kind is MetricType.GAUGE:
                state[0], state[1] = float(metric.value), now
            elif kind is MetricType.COUNTER:
                value = float(metric.value)
                if value >= state[1]:
                    state[0] += value - state[1]
                else:  # the sender restarted: continue from the previous total
                    self.stats["counter_resets"] += 1
                    state[0] += max(value, 0.0)
                state[1], state[2] = value, now
            else:
                stat: Statset = metric.value
                state[0] += stat.count or 0
                state[1] += stat.sum or 0
                state[2] = _quantiles(stat)
                state[3] = now

    @staticmethod
    def _new(kind: MetricType, value: Any, now: float) -> list[Any]:
        if kind is MetricType.GAUGE:
            return [float(value), now]
        if kind is MetricType.COUNTER:
            return [max(float(value), 0.0), float(value), now]
        stat: Statset = value
        return [float(stat.count or 0), float(stat.sum or 0), _quantiles(stat), now]

    def _expire(self, now: float) -> None:
        limit = now - self.expire_after
        old = [key for key, state in self.series.items() if state[-1] < limit]
        owners, release = self._owners, self.guard.release
        for key in old:
            del self.series[key]
            owner = owners.pop(key, None)
            if owner is not None:
                release(*owner)
        self.stats["expired"] += len(old)

    # -- the scrape ---------------------------------------------------------------

    def families(self) -> list[Metric]:
        """Every series as metric families (called by the HTTP thread at each scrape)."""
        now = time.monotonic()
        with self.lock:
            self.stats["scrapes"] += 1
            self._expire(now)
            items = [(key, list(state)) for key, state in self.series.items()]
        kinds_of: dict[str, set[str]] = {}
        for (kind, name, _labels), _ in items:
            kinds_of.setdefault(name, set()).add(kind)
        families: dict[tuple[str, str], Metric] = {}
        for (kind, name, labels), state in items:
            family_name = name if len(kinds_of[name]) == 1 or kind == "counter" else f"{name}_{kind}"
            family = families.get((kind, family_name))
            label_names = [k for k, _ in labels]
            values = [v for _, v in labels]
            if family is None:
                doc = f"mondemand {kind} {name}"
                if kind == "gauge":
                    family = GaugeMetricFamily(family_name, doc, labels=None)
                elif kind == "counter":
                    family = CounterMetricFamily(family_name, doc, labels=None)
                else:
                    family = SummaryMetricFamily(family_name, doc, labels=None)
                families[(kind, family_name)] = family
            # Series of one family may carry different label sets (context differs): samples are added directly.
            if kind == "gauge":
                family.samples.append(_sample(family_name, label_names, values, state[0]))
            elif kind == "counter":
                family.samples.append(_sample(family_name + "_total", label_names, values, state[0]))
            else:
                family.samples.append(_sample(family_name + "_count", label_names, values, state[0]))
                family.samples.append(_sample(family_name + "_sum", label_names, values, state[1]))
                for q, v in state[2]:
                    family.samples.append(_sample(family_name, [*label_names, "quantile"], [*values, q], v))
        return list(families.values())


def _text(value: str) -> str:
    """A label value the exposition can encode: bytes that are not UTF-8 (surrogates) written as \\xNN."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a surrogate no byte stands for
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _quantiles(stat: Statset) -> list[tuple[str, float]]:
    return [(q, float(getattr(stat, f))) for f, q in QUANTILES if getattr(stat, f) is not None]


def _sample(name: str, label_names: list[str], values: list[str], value: float) -> Sample:
    return Sample(name, dict(zip(label_names, values, strict=True)), value, None, None)


@hookimpl
def register_backend_types(register) -> None:
    register("prometheus", PrometheusBackend)
