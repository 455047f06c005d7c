"""`Client` end to end against a real lwes-udp listener: numbers, threads, fork, splitting, logs, processes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

import pytest
from mondemand.client import Client, ClientError

from mondemand.lwes import MAX_DATAGRAM
from mondemand.messages import LogMsg, MetricType, PerfMsg, Priority, Statset, StatsMsg, TraceMsg
from tests.e2e.harness import free_port


def values(msgs: list[StatsMsg], kind: MetricType) -> dict[str, object]:
    """name -> value of every metric of `kind` over `msgs`, later messages winning."""
    return {m.name: m.value for msg in msgs for m in msg.metrics if m.type is kind}


def test_counters_gauges_and_statsets_arrive_as_sent(udp):
    received, url = udp
    client = Client("shop", host="web01", context={"colo": "east"}, transports=[url], flush_interval=3600)
    client.increment("orders")
    client.increment("orders", by=4)
    client.set_gauge("queue", 7)
    client.set_gauge("queue", 9)
    for value in range(1, 101):
        client.add_sample("latency", value)
    assert client.flush() == 1
    [msg] = [raw.message for raw in received.wait(1)]
    assert (msg.prog_id, msg.host, msg.context) == ("shop", "web01", {"colo": "east"})
    assert values([msg], MetricType.COUNTER) == {"orders": 5}
    assert values([msg], MetricType.GAUGE) == {"queue": 9}
    assert values([msg], MetricType.STATSET)["latency"] == Statset(
        count=100, sum=5050, min=1, max=100, avg=50, median=50,
        pctl_75=75, pctl_90=90, pctl_95=95, pctl_98=98, pctl_99=99,
    )  # fmt: skip

    # Counters are cumulative; a statset starts anew after each flush and is absent when empty.
    client.increment("orders", by=2)
    client.flush()
    client.close()
    second = received.wait(2)[1].message
    assert values([second], MetricType.COUNTER) == {"orders": 7}
    assert values([second], MetricType.STATSET) == {}


def test_statset_fields_are_configurable(udp):
    received, url = udp
    with Client("app", transports=[url], statset_fields=("count", "max", "pctl_99")) as client:
        for value in (5, 1, 9):
            client.add_sample("size", value)
    [raw] = received.wait(1)
    assert values([raw.message], MetricType.STATSET)["size"] == Statset(count=3, max=9, pctl_99=9)
    with pytest.raises(ValueError, match="unknown statset field 'p50'"):
        Client("app", transports=[url], statset_fields=("p50",))


def test_1000_threads_hammering_lose_no_increment(udp):
    received, url = udp
    client = Client("hammer", transports=[url], flush_interval=0.05)
    start = threading.Barrier(1000)

    def work() -> None:
        start.wait()
        for _ in range(100):
            client.increment("hits")
            client.add_sample("work", 1)

    threads = [threading.Thread(target=work) for _ in range(1000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    received.wait(client.events_sent)
    msgs = received.stats()
    assert max(values([m], MetricType.COUNTER)["hits"] for m in msgs) == 100_000
    assert values(msgs, MetricType.COUNTER)["hits"] == 100_000  # the close flush is the last message
    counted = sum(m.value.count for msg in msgs for m in msg.metrics if m.type is MetricType.STATSET)
    assert counted == 100_000
    assert client.send_errors == 0


def test_forked_child_does_not_resend_the_parents_counters(udp):
    received, url = udp
    client = Client("forky", transports=[url], flush_interval=3600)
    client.increment("hits", by=5)
    client.log("error", "parent only")
    client._lock.acquire()  # held at fork time, as another thread might: the child must not deadlock on it
    pid = os.fork()
    if pid == 0:
        signal.alarm(10)
        try:
            client.increment("hits", by=2)
            client.set_gauge("child", 1)
            alive = client._thread is not None and client._thread.is_alive()
            client.flush()
            os._exit(0 if alive else 3)
        finally:
            os._exit(4)
    client._lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    [child] = received.wait(1)
    assert values([child.message], MetricType.COUNTER) == {"hits": 2}
    assert values([child.message], MetricType.GAUGE) == {"child": 1}
    client.close()
    events = received.wait(3)
    parent_stats = [r.message for r in events[1:] if r.name == "MonDemand::StatsMsg"]
    assert values(parent_stats, MetricType.COUNTER) == {"hits": 5}
    assert "child" not in values(parent_stats, MetricType.GAUGE)
    [log] = [r.message for r in events if r.name == "MonDemand::LogMsg"]
    assert [line.message for line in log.lines] == ["parent only"]


def test_stats_split_under_max_metrics(udp):
    received, url = udp
    with Client("many", transports=[url], max_metrics=10) as client:
        for i in range(25):
            client.increment(f"c{i}", by=i)
        assert client.flush() == 3
    msgs = [raw.message for raw in received.wait(3)][:3]  # close sends the cumulative counters once more
    assert sorted(len(m.metrics) for m in msgs) == [5, 10, 10]
    assert values(msgs, MetricType.COUNTER) == {f"c{i}": i for i in range(25)}


def test_stats_split_under_the_udp_size_limit(udp):
    received, url = udp
    names = [f"metric-{i:05d}-" + "x" * 100 for i in range(3000)]
    with Client("wide", transports=[url], max_metrics=0xFFFF, flush_interval=3600) as client:
        for i, name in enumerate(names):
            client.set_gauge(name, i)
        sent = client.flush()
    assert sent >= 6
    events = received.wait(sent)
    assert all(len(raw.data) <= MAX_DATAGRAM for raw in events)
    assert values([r.message for r in events], MetricType.GAUGE) == {name: i for i, name in enumerate(names)}


def test_identical_log_lines_in_one_flush_become_one_line_with_a_repeat_count(udp):
    received, url = udp
    with Client("logger", transports=[url], flush_interval=3600) as client:
        for _ in range(50):
            client.log(Priority.ERROR, "disk full")
        client.log("warning", "disk full")
        client.log(Priority.ERROR, "disk full", file="other.py", line=3)
        client.flush()
        client.log(Priority.ERROR, "disk full", file="other.py", line=3)
    first, second = (raw.message for raw in received.wait(2))
    assert isinstance(first, LogMsg)
    lines = {(ln.priority, ln.file, ln.repeat) for ln in first.lines}
    assert lines == {(Priority.ERROR, "test_core.py", 50), (Priority.WARNING, "test_core.py", 1),
                     (Priority.ERROR, "other.py", 1)}  # fmt: skip
    assert [(ln.file, ln.line, ln.repeat) for ln in second.lines] == [("other.py", 3, 1)]


def test_trace_perf_and_annotation_are_sent_at_once(udp):
    received, url = udp
    with Client("tracer", host="h1", context={"dc": "x"}, transports=[url]) as client:
        client.trace("alice", 42, "checkout", cart="3 items", total=9.5)
        client.perf("req-1", "db", 1000, 1250)
        client.annotation("deploy-7", "deployed 7", text="details", tags=["deploy"], timestamp=123)
        trace, perf, note = (raw.message for raw in received.wait(3))
    assert isinstance(trace, TraceMsg)
    assert (trace.prog_id, trace.owner, trace.trace_id, trace.src_host, trace.message) == (
        "tracer", "alice", "42", "h1", "checkout")  # fmt: skip
    assert trace.fields == {"cart": "3 items", "total": "9.5"}
    assert isinstance(perf, PerfMsg)
    assert (perf.id, perf.caller_label, perf.host, perf.context) == ("req-1", "tracer", "h1", {"dc": "x"})
    assert [(t.label, t.duration) for t in perf.timings] == [("db", 250)]
    assert (note.id, note.timestamp, note.tags, note.text) == ("deploy-7", 123, ["deploy"], "details")


def test_several_udp_transports_each_get_every_event(udp, udp2):
    (first, url1), (second, url2) = udp, udp2
    with Client("fan", transports=[url1, url2]) as client:
        client.increment("x", by=3)
    for received in (first, second):
        [raw] = received.wait(1)
        assert values([raw.message], MetricType.COUNTER) == {"x": 3}


def test_trace_too_large_for_udp_without_http_transport_is_a_client_error(udp):
    _, url = udp
    with Client("big", transports=[url]) as client, pytest.raises(ClientError, match="no transport carries"):
        client.trace("o", 1, "m", a="a" * 40_000, b="b" * 40_000)


def test_send_failures_are_counted_not_raised_by_flush():
    client = Client("lonely", transports=[f"http://127.0.0.1:{free_port()}/events"], flush_interval=3600)
    client.increment("x")
    assert client.flush() == 0
    assert client.send_errors == 1
    assert "failed" in (client.last_error or "")
    client.close()


def test_bad_calls_fail_clearly_and_closed_clients_refuse_work(udp):
    _, url = udp
    client = Client("strict", transports=[url])
    with pytest.raises(TypeError, match="by must be an int"):
        client.increment("x", by="2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a number"):
        client.add_sample("x", "fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown transport"):
        Client("strict", transports=["tcp://127.0.0.1:1"])
    client.close()
    with pytest.raises(ClientError, match="closed"):
        client.increment("x")
    with pytest.raises(ClientError, match="closed"):
        client.trace("o", 1, "m")
    assert client.flush() == 0


def test_process_stats_are_sent_with_the_other_stats(udp):
    received, url = udp
    log = logging.getLogger("tests.client.procstats")
    with Client("proc", transports=[url], process_stats=True, flush_interval=3600) as client:
        client.increment("work")
        log.error("boom")
        log.error("boom again")
        log.warning("careful")
        client.flush()
    msg = received.wait(1)[0].message
    gauges, counters = values([msg], MetricType.GAUGE), values([msg], MetricType.COUNTER)
    assert gauges["process_rss_bytes"] > 1 << 20
    assert gauges["process_threads"] >= 2  # this thread and the flush thread
    assert gauges["process_open_fds"] >= 3
    assert gauges["process_uptime_s"] >= 0 and 0 <= gauges["process_cpu_pct"] <= 100 * os.cpu_count()
    assert counters == {"work": 1, "process_log_errors": 2, "process_log_warnings": 1}


def test_pending_data_is_sent_when_the_program_exits_without_close(udp):
    received, url = udp
    script = f"from mondemand.client import Client\nc = Client('leaver', transports=['{url}'])\n"
    script += "c.increment('bye', by=3)\n"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    [raw] = received.wait(1)
    assert values([raw.message], MetricType.COUNTER) == {"bye": 3}
