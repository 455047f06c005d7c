"""The prometheus backend's table and exposition, and the server's /metrics collector."""

from __future__ import annotations

import urllib.request

import pytest
from mondemand.backends.prometheus import PrometheusBackend, label_name
from prometheus_client.parser import text_string_to_metric_families

from mondemand.envelope import RawEvent
from mondemand.lwes import encode
from mondemand.messages import Metric, MetricType, Statset, StatsMsg
from mondemand.plugin_api import ServerContext
from mondemand.promexport import ServerCollector, metric_name, render


def raw(msg: StatsMsg, sender_ip: str = "127.0.0.1") -> RawEvent:
    return RawEvent(encode(msg.to_lwes()[0]), 1, sender_ip, 1)


def started(**options) -> PrometheusBackend:
    """A started backend on a free loopback port: max_series 100, expire_after 60 s, unless `options` say."""
    b = PrometheusBackend("prom", {"address": "127.0.0.1", "port": 0, "max_series": 100, "expire_after": 60,
                                   **options}, ServerContext())
    b.start()
    return b


@pytest.fixture
def backend():
    b = started(max_series=20)
    yield b
    b.close()


def scrape(backend: PrometheusBackend) -> dict[tuple[str, tuple], float]:
    port = backend.bound[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_names_and_labels_follow_prometheus_rules():
    assert metric_name("req.latency-ms") == "req_latency_ms"
    assert metric_name("9lives") == "_9lives"
    assert metric_name("a:b") == "a:b"
    assert metric_name("") == "_"
    assert label_name("a:b") == "a_b"
    assert label_name("__name__") == "x_name__"
    assert label_name("1x") == "_1x"
    assert label_name("é") == "_"


def test_gauges_counters_with_resets_and_summaries(backend):
    labels = (("env", "prod"), ("host", "web1"), ("prog_id", "shop"))
    stat = Statset(count=4, sum=100, min=1, max=70, avg=25, median=20, pctl_90=60, pctl_99=70)
    backend.handle([raw(StatsMsg("shop", "web1", {"env": "prod"}, [
        Metric(MetricType.GAUGE, "queue.depth", 7), Metric(MetricType.COUNTER, "orders", 100),
        Metric(MetricType.STATSET, "latency", stat)]))])
    backend.handle([raw(StatsMsg("shop", "web1", {"env": "prod"}, [
        Metric(MetricType.GAUGE, "queue.depth", 3), Metric(MetricType.COUNTER, "orders", 130),
        Metric(MetricType.STATSET, "latency", Statset(count=2, sum=10, median=5))]))])
    backend.handle([raw(StatsMsg("shop", "web1", {"env": "prod"}, [Metric(MetricType.COUNTER, "orders", 20)]))])
    got = scrape(backend)
    assert got[("queue_depth", labels)] == 3
    assert got[("orders_total", labels)] == 150  # 100, +30, then a restart: +20
    assert backend.counters()["counter_resets"] == 1
    assert got[("latency_count", labels)] == 6 and got[("latency_sum", labels)] == 110
    assert got[("latency", (*labels, ("quantile", "0.5")))] == 5  # quantiles of the latest statset
    assert ("latency", (*labels, ("quantile", "0.9"))) not in got


def test_label_values_are_escaped_and_reserved_keys_renamed(backend):
    backend.handle([raw(StatsMsg("p", "h", {"quote": 'a"b\\c\nd', "host.name": "x", "quantile": "q",
                                            "__meta": "m"}, [Metric(MetricType.GAUGE, "g", 1)]))])
    got = scrape(backend)
    [(_, labels)] = [k for k in got if k[0] == "g"]
    assert dict(labels) == {"prog_id": "p", "host": "h", "quote": 'a"b\\c\nd', "host_name": "x",
                            "context_quantile": "q", "x_meta": "m"}


def test_a_name_with_two_kinds_gets_kind_suffixes(backend):
    backend.handle([raw(StatsMsg("p", "h", {}, [Metric(MetricType.GAUGE, "x", 1), Metric(MetricType.COUNTER, "x", 5),
                                                 Metric(MetricType.STATSET, "x", Statset(count=1, sum=2))]))])
    got = scrape(backend)
    labels = (("host", "h"), ("prog_id", "p"))
    assert got[("x_gauge", labels)] == 1 and got[("x_total", labels)] == 5 and got[("x_summary_count", labels)] == 1


def test_max_series_and_expiry(backend):
    backend.handle([raw(StatsMsg("p", "h", {}, [Metric(MetricType.GAUGE, f"g{i}", i) for i in range(25)]))])
    assert backend.counters()["series"] == 20 and backend.counters()["overflow"] == 5
    for state in backend.series.values():
        state[-1] -= 120  # last updated two minutes ago
    assert not [k for k in scrape(backend) if k[0].startswith("g")]
    assert backend.counters()["expired"] == 20


def test_server_collector_names_and_types():
    class FakeServer:
        def status(self):
            return {
                "uptime_seconds": 5.5,
                "router": {"events_received": 10, "no_route": 1},
                "listeners": {"main": {"received": 10, "kernel_drops": 2}},
                "backends": {"rrd-1": {"events_processed": 9, "queue_depth": 3, "backend.series": 4,
                                       "backend.rejected": 1, "worker_pid": 77}},
                "workers": {"rrd-1": {"running": True, "queued_bytes": 0, "pid": 77}},
                "kernel": {"rcvbuf_errors": 0, "listeners": {"main": 2}},
            }

    text = render(FakeServer()).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("mondemand_backend_events_processed_total", (("backend", "rrd-1"),))] == 9
    assert families["mondemand_backend_queue_depth"].type == "gauge"
    assert samples[("mondemand_backend_own_series", (("backend", "rrd-1"),))] == 4
    assert samples[("mondemand_backend_own_rejected_total", (("backend", "rrd-1"),))] == 1
    assert samples[("mondemand_listener_kernel_drops_total", (("listener", "main"),))] == 2
    assert samples[("mondemand_router_events_received_total", ())] == 10
    assert samples[("mondemand_kernel_rcvbuf_errors_total", ())] == 0
    assert samples[("mondemand_worker_running", (("worker", "rrd-1"),))] == 1
    assert samples[("mondemand_uptime_seconds", ())] == 5.5
    assert list(ServerCollector(FakeServer()).collect())


def test_a_prog_id_that_is_not_utf8_does_not_break_the_page(backend):
    bad = b"\xff\xfe".decode("utf-8", "surrogateescape")
    backend.handle([raw(StatsMsg(bad, "h", {"k": bad}, [Metric(MetricType.GAUGE, "g", 1)])),
                    raw(StatsMsg("ok", "h", {}, [Metric(MetricType.GAUGE, "g", 2)]))])
    got = scrape(backend)
    assert got[("g", (("host", "h"), ("prog_id", "ok")))] == 2
    assert got[("g", (("host", "h"), ("k", "\\xff\\xfe"), ("prog_id", "\\xff\\xfe")))] == 1


def test_a_flooding_sender_cannot_fill_the_table_and_hide_another_program():
    b = started(series_per_sender=30, new_series_per_datagram=0)
    try:
        flood = [Metric(MetricType.GAUGE, f"junk{i}", i) for i in range(200)]
        b.handle([raw(StatsMsg("noisy", "h1", {}, flood), "10.0.0.1")])
        assert b.counters()["series"] == 30 and b.counters()["refused_series"] == 170
        assert b.counters()["cardinality_refused_sender_live"] == 170
        assert b.counters()["cardinality_refused.sender.10.0.0.1"] == 170
        b.handle([raw(StatsMsg("new", "h2", {}, [Metric(MetricType.GAUGE, "breach", 9)]), "10.0.0.2")])
        got = scrape(b)
        assert got[("breach", (("host", "h2"), ("prog_id", "new")))] == 9
        for state in b.series.values():  # the flood's series expire: the sender may add series again
            state[-1] -= 120
        scrape(b)
        b.handle([raw(StatsMsg("noisy", "h1", {}, flood[:5]), "10.0.0.1")])
        assert b.counters()["series"] == 5 and b.counters()["refused_series"] == 170
    finally:
        b.close()


def test_one_datagram_may_add_at_most_new_series_per_datagram():
    b = started(new_series_per_datagram=10)
    try:
        b.handle([raw(StatsMsg("p", "h", {}, [Metric(MetricType.GAUGE, f"g{i}", i) for i in range(25)]),
                              "10.0.0.1")])
        assert b.counters()["series"] == 10 and b.counters()["cardinality_refused_datagram"] == 15
    finally:
        b.close()
