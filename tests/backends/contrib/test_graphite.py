"""The graphite backend against a plain TCP socket standing in for carbon: formats, counters, buffer, reconnect."""

from __future__ import annotations

import contextlib
import pickle
import socket
import struct
import threading
import time

import pytest
from mondemand_backend_graphite import GraphiteBackend, pickle_message, plaintext_message

from mondemand.envelope import RawEvent
from mondemand.lwes import encode
from mondemand.messages import Metric, MetricType, Statset, StatsMsg
from mondemand.plugin_api import ServerContext
from tests.e2e.harness import free_port


def raw(metrics: list[Metric], when: int, prog: str = "app", host: str = "web1.example.com") -> RawEvent:
    msg = StatsMsg(prog, host, {"dc": "eu"}, metrics, send_time=when * 1000)
    return RawEvent(encode(msg.to_lwes()[0]), when * 1000, "127.0.0.1", 1)


class Carbon:
    """Accepts connections and keeps every byte received."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.data = bytearray()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            while chunk := conn.recv(65536):
                with self.lock:
                    self.data += chunk

    def lines(self) -> list[str]:
        with self.lock:
            return self.data.decode().splitlines()

    def close(self) -> None:
        """Stop listening and close every connection (as a carbon that exits)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread, which holds the socket
        self.sock.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def make(port: int, **options) -> GraphiteBackend:
    backend = GraphiteBackend("graphite", {"port": port, "reconnect_min": 0.05, "reconnect_max": 0.2, **options},
                              ServerContext())
    backend.start()
    return backend


def test_message_formats():
    points = [("a.b", 60, 1.5), ("c", 120, 2.0)]
    assert plaintext_message(points) == b"a.b 1.5 60\nc 2.0 120\n"
    message = pickle_message(points)
    (length,) = struct.unpack("!L", message[:4])
    assert length == len(message) - 4
    assert pickle.loads(message[4:]) == [("a.b", (60, 1.5)), ("c", (120, 2.0))]


@pytest.mark.parametrize("counters, expected", [("rate", 10.0), ("delta", 600.0)])
def test_names_gauges_statsets_and_counters(counters, expected):
    carbon = Carbon()
    backend = make(carbon.port, counters=counters, prefix="md.")
    t = 1_700_000_000
    backend.handle([raw([Metric(MetricType.COUNTER, "hits", 100), Metric(MetricType.GAUGE, "queue", 4),
                         Metric(MetricType.STATSET, "lat", Statset(count=3, sum=30))], t)])
    backend.handle([raw([Metric(MetricType.COUNTER, "hits", 700)], t + 60)])
    backend.handle([raw([Metric(MetricType.COUNTER, "hits", 5)], t + 120)])  # a restart: nothing sent
    backend.close()
    wait(lambda: len(carbon.lines()) == 4)
    assert sorted(carbon.lines()) == sorted([
        f"md.app.md.hits.dc.eu.host.web1.counter {expected!r} {t + 60}",
        f"md.app.md.queue.dc.eu.host.web1.gauge 4.0 {t}",
        f"md.app.md.lat.dc.eu.host.web1.count 3.0 {t}",
        f"md.app.md.lat.dc.eu.host.web1.sum 30.0 {t}",
    ])  # fmt: skip
    assert backend.counts["first_counter_reports"] == 1 and backend.counts["counter_resets"] == 1
    carbon.close()


def test_buffer_keeps_points_while_carbon_is_down_and_drops_the_oldest_beyond():
    port = free_port(socket.SOCK_STREAM)
    backend = make(port, buffer_points=5)
    t = 1_700_000_000
    backend.handle([raw([Metric(MetricType.GAUGE, f"g{i}", i) for i in range(7)], t)])
    assert backend.counters()["buffered_points"] == 5 and backend.counts["dropped"] == 2
    assert backend.counts["connect_errors"] == 1
    backend.flush()  # within the back-off: no new attempt
    assert backend.counts["connect_errors"] == 1
    carbon = Carbon(port)
    time.sleep(0.1)
    backend.flush()
    wait(lambda: len(carbon.lines()) == 5)
    assert [line.split()[0].split(".")[2] for line in carbon.lines()] == ["g2", "g3", "g4", "g5", "g6"]
    assert backend.counters()["buffered_points"] == 0 and backend.counters()["connected"] == 1
    backend.close()
    carbon.close()


def test_a_connection_closed_by_carbon_is_noticed_before_sending():
    carbon = Carbon()
    backend = make(carbon.port)
    t = 1_700_000_000
    backend.handle([raw([Metric(MetricType.GAUGE, "a", 1)], t)])
    wait(lambda: len(carbon.lines()) == 1)
    carbon.close()  # carbon restarts: its end of the connection is closed
    replacement = Carbon(carbon.port)
    time.sleep(0.1)
    backend.handle([raw([Metric(MetricType.GAUGE, "b", 2)], t)])
    wait(lambda: len(replacement.lines()) == 1)
    assert replacement.lines()[0].startswith("app.md.b.") and backend.counts["connects"] == 2
    backend.close()
    replacement.close()


def test_poison_events_cost_only_themselves():
    from tests.backends.test_poison import SERIES, VALID, mixed, run

    carbon = Carbon()
    r, backend = run("graphite", {"port": str(carbon.port)}, mixed("stats"))
    wait(lambda: len(carbon.lines()) >= VALID)
    good = [line.split() for line in carbon.lines() if line.startswith("good.")]
    assert sorted(int(float(value)) for _, value, _ in good) == list(range(VALID))
    assert {name for name, _, _ in good} == {f"good.md.g{n}.host.web1.gauge" for n in range(SERIES)}
    assert r.rejected == 4 and backend.counts["dropped"] == 0  # the 400-digit statsets
    carbon.close()
