"""examples/webapp.py runs standalone and its events reach a real listener."""

from __future__ import annotations

import subprocess
import sys

from mondemand.client.partials import from_stats

from mondemand.messages import MetricType
from tests.conftest import ROOT


def test_webapp_example_sends_stats_partials_and_an_annotation(udp):
    received, url = udp
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "webapp.py"), "--seconds", "0.5", "--to", url],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "0 send errors" in result.stdout
    sent = int(result.stdout.split("sent ")[1].split()[0])
    received.wait(sent)  # the listener thread may still be delivering the last datagrams
    names = {raw.name for raw in received.events()}
    assert {"MonDemand::StatsMsg", "MonDemand::AnnotationMsg", "MonDemand::TraceMsg"} <= names
    stats = received.stats()
    requests = max(m.value for s in stats if s.prog_id == "webapp" for m in s.metrics if m.name == "requests")
    served = int(result.stdout.split()[1])
    assert requests == served
    partials = [from_stats(s) for s in stats if s.prog_id == "webapp_api"]
    assert sum(p["new"].sum for p in partials if "new" in p) == served
    assert any(m.type is MetricType.GAUGE and m.name == "process_rss_bytes" for s in stats for m in s.metrics)
