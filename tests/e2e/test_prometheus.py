"""A real Prometheus (Debian's `prometheus`) scrapes mondemand-server's /metrics and the prometheus backend."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from mondemand.lwes import encode
from mondemand.messages import Metric, MetricType, Statset, StatsMsg
from tests.e2e.harness import ServerProcess, free_port, send_udp, wait_for

CONFIG = """
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {udp}

[backend:prom]
type = prometheus
address = 127.0.0.1
port = {prom}

[route:stats]
events = MonDemand::StatsMsg
backends = prom
"""


class Prometheus:
    """The prometheus binary on loopback with a generated config and its TSDB in a temporary directory."""

    def __init__(self, tmp: Path, targets: dict[str, str]) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is needed (Debian package prometheus; make setup installs it)"
        self.port = free_port(socket.SOCK_STREAM)
        jobs = "".join(f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
                       for job, target in targets.items())
        config = tmp / "prometheus.yml"
        config.write_text(f"global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{jobs}")
        self.log_path = tmp / "prometheus.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def query(self, expr: str) -> list[dict]:
        """The result vector of an instant query; [] while Prometheus is not answering yet."""
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log_path.read_text()[-3000:]}")
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body = json.load(resp)
        except OSError:
            return []
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def stack(tmp_path):
    udp, prom = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    server = ServerProcess(tmp_path, CONFIG.format(udp=udp, prom=prom))
    prometheus = Prometheus(tmp_path, {"mondemand": f"127.0.0.1:{server.http_port}",
                                       "backend": f"127.0.0.1:{prom}"})
    yield server, prometheus, udp
    prometheus.stop()
    assert server.stop() == 0, server.log()


def test_prometheus_scrapes_server_and_backend(stack):
    server, prometheus, udp = stack
    wait_for(lambda: prometheus.value('sum(up{job=~"mondemand|backend"})') == 2, timeout=30,
             what="both targets up in Prometheus")
    stat = Statset(count=7, sum=700, min=10, max=190, avg=100, median=90, pctl_99=190)
    for orders in (100, 160):
        msg = StatsMsg("promtest", "web1", {"env": "prod"}, [
            Metric(MetricType.GAUGE, "queue.depth", 42), Metric(MetricType.COUNTER, "orders", orders),
            Metric(MetricType.STATSET, "latency", stat)])
        send_udp(encode(msg.to_lwes()[0]), udp)
    labels = '{prog_id="promtest",host="web1",env="prod"}'
    wait_for(lambda: prometheus.value(f"queue_depth{labels}") == 42, timeout=20, what="the gauge")
    wait_for(lambda: prometheus.value(f"orders_total{labels}") == 160, timeout=20, what="the counter total")
    wait_for(lambda: prometheus.value(f"latency_count{labels}") == 14, timeout=20, what="the summary count")
    assert prometheus.value('latency{prog_id="promtest",quantile="0.99"}') == 190
    # The server's own counters, through its /metrics.
    wait_for(lambda: (prometheus.value('mondemand_backend_events_processed_total{backend="prom"}') or 0) >= 2,
             timeout=20, what="the server's backend counter")
    assert prometheus.value('mondemand_listener_received_total{listener="main"}') >= 2
    assert prometheus.value("mondemand_router_kernel_drops_total") == 0
    assert server.status()["backends"]["prom"]["backend.series"] == 3
