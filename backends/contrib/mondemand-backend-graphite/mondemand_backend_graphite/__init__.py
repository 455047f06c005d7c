"""`graphite` backend: every StatsMsg series sent to carbon, plaintext or pickle, batched.

The series and names are the rrd tree's (`mondemand.backends.series`): one per
(prog_id, type, metric, host, context), statsets split into their
sub-statistics, named ``prog.md|agg.name.k.v....host.HOST.type``. Counters
arrive cumulative and are sent, as the whisper backend stores them, as the
per-second **rate** since the previous report (``counters = rate``) or the
**increase** (``counters = delta``); the first report of a counter and a
report lower than the previous one (a restart) send nothing.

Points wait in one buffer of at most `buffer_points`. Every `handle` and
`flush` sends what is buffered in messages of `batch_points` over one TCP
connection; a connection that fails is closed, and the next attempt waits
a back-off that doubles from `reconnect_min` to `reconnect_max`. Points stay
in the buffer until written to the socket, so an outage costs nothing until
the buffer is full; beyond it the oldest points are dropped and counted
(`dropped`). carbon sends nothing back, so a batch written just before a
connection broke may be sent again after the reconnect: carbon keeps one
value per timestamp, and the repeat changes nothing.
"""

from __future__ import annotations

import contextlib
import pickle
import select
import socket
import struct
import time
from collections import deque

from mondemand.backends.series import CounterRates, ProgIdFilter, SeriesKey, graphite_name, series_from_record

from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.messages.stats_fast import PROG_ID
from mondemand.options import DAY, HOUR, Option
from mondemand.plugin_api import Backend
from mondemand.runner import RateLimitedLog

__all__ = ["GraphiteBackend", "pickle_message", "plaintext_message"]

Point = tuple[str, int, float]


def plaintext_message(points: list[Point]) -> bytes:
    """carbon's line protocol: ``name value timestamp\\n`` per point."""
    return "".join(f"{name} {value!r} {ts}\n" for name, ts, value in points).encode()


def pickle_message(points: list[Point]) -> bytes:
    """carbon's pickle protocol: a 4-byte big-endian length, then a pickled list of (name, (timestamp, value))."""
    payload = pickle.dumps([(name, (ts, value)) for name, ts, value in points], protocol=2)
    return struct.pack("!L", len(payload)) + payload


class GraphiteBackend(Backend):
    """Send counters (as rates or deltas), gauges and statset sub-statistics to carbon."""

    type_name = "graphite"
    needs = "stats"
    options = (
        Option("host", "str", "127.0.0.1", help="carbon (or carbon-c-relay) host"),
        Option("port", "port", 2003, help="its port: 2003 plaintext, 2004 pickle by carbon's defaults"),
        Option("protocol", "str", "plaintext", choices=("plaintext", "pickle")),
        Option("prefix", "str", "", help="prepended to every name, e.g. mondemand. (include the dot)"),
        Option("counters", "str", "rate", choices=("rate", "delta"),
               help="send counters as per-second rates or per-report increases"),
        Option("short_host", "bool", True, help="the host up to its first dot, as the rrd tree"),
        Option("batch_points", "int", 500, minimum=1, help="points per message"),
        Option("buffer_points", "int", 1_000_000, minimum=1,
               help="points held while carbon cannot be reached; beyond, the oldest are dropped"),
        Option("reconnect_min", "duration", 0.5, minimum=0.01, maximum=DAY,
               help="first wait after a failed connection"),
        Option("reconnect_max", "duration", 30.0, minimum=0.01, maximum=DAY, help="longest wait between attempts"),
        Option("timeout", "duration", 5.0, minimum=0.1, maximum=HOUR, help="connect and send timeout"),
        Option("whitelist", "list", [], help="prog_id globs to send (when set, only these)"),
        Option("blacklist", "list", [], help="prog_id globs never to send"),
    )  # fmt: skip

    def start(self) -> None:
        cfg = self.config
        self.encode = pickle_message if cfg["protocol"] == "pickle" else plaintext_message
        self.filter = ProgIdFilter(cfg["whitelist"], cfg["blacklist"])
        self.buffer: deque[Point] = deque()
        self.names: dict[SeriesKey, str] = {}
        self.rates = CounterRates(delta=cfg["counters"] == "delta")
        self.sock: socket.socket | None = None
        self.backoff = float(cfg["reconnect_min"])
        self.next_attempt = 0.0
        self.ratelog = RateLimitedLog(self.log)
        self.counts = dict.fromkeys(("points_sent", "messages_sent", "dropped", "connects", "connect_errors",
                                     "send_errors", "first_counter_reports", "counter_resets", "filtered"), 0)

    def counters(self) -> dict[str, float]:
        return {**self.counts, "buffered_points": len(self.buffer), "series": len(self.names),
                "connected": int(self.sock is not None)}

    # -- intake -------------------------------------------------------------------

    def handle(self, batch: list[RawEvent]) -> None:
        for raw in batch:
            record = raw.stats
            if record is None:
                continue
            if not self.filter.allows(record[PROG_ID]):
                self.counts["filtered"] += 1
                continue
            try:
                points = [(key, ts, float(value)) for key, ts, value in series_from_record(record,
                                                                                          receipt_ms=raw.receipt_ms)]
            except Exception as exc:  # a value no float holds: this event alone is dropped
                self.reject(raw, exc)
                continue
            for key, ts, value in points:
                if key.metric_type == "counter":
                    rate = self.rates.step(key, ts, value)
                    if isinstance(rate, str):
                        if rate != CounterRates.NOT_NEWER:  # the same report again, or an older one
                            self.counts[rate] += 1
                        continue
                    value = rate
                self._buffer(self._name(key), ts, value)
        self._send()

    def _name(self, key: SeriesKey) -> str:
        name = self.names.get(key)
        if name is None:
            name = self.names[key] = self.config["prefix"] + graphite_name(key, short_host=self.config["short_host"])
        return name

    def _buffer(self, name: str, ts: int, value: float) -> None:
        buffer = self.buffer
        if len(buffer) >= self.config["buffer_points"]:
            buffer.popleft()
            self.counts["dropped"] += 1
            self.ratelog.warning("dropped", "%s: buffer of %d points full (carbon at %s:%s unreachable?); "
                                 "oldest points dropped, %d so far", self.name, len(buffer), self.config["host"],
                                 self.config["port"], self.counts["dropped"])
        buffer.append((name, ts, value))

    # -- sending ----------------------------------------------------------------------

    def flush(self) -> None:
        self._send()

    def close(self) -> None:
        self._send()
        if self.buffer:
            self.log.warning("%s: %d points not sent at shutdown (carbon at %s:%s unreachable)", self.name,
                             len(self.buffer), self.config["host"], self.config["port"])
        self._disconnect()

    def _connect(self) -> socket.socket | None:
        if self.sock is not None:
            if not self._peer_closed(self.sock):
                return self.sock
            self._disconnect()
        now = time.monotonic()
        if now < self.next_attempt:
            return None
        address = (self.config["host"], self.config["port"])
        try:
            sock = socket.create_connection(address, timeout=self.config["timeout"])
        except OSError as exc:
            self.counts["connect_errors"] += 1
            self._fail(now, f"cannot connect to {address[0]}:{address[1]}: {exc}")
            return None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.counts["connects"] += 1
        self.backoff = float(self.config["reconnect_min"])
        return sock

    @staticmethod
    def _peer_closed(sock: socket.socket) -> bool:
        """carbon never writes to us: a readable socket means the other end closed or reset it."""
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _fail(self, now: float, reason: str) -> None:
        self.next_attempt = now + self.backoff
        self.ratelog.warning("connect", "%s: %s; retrying in %.1f s, %d points buffered", self.name, reason,
                             self.backoff, len(self.buffer))
        self.backoff = min(self.backoff * 2, float(self.config["reconnect_max"]))

    def _disconnect(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def _send(self) -> None:
        buffer = self.buffer
        size = int(self.config["batch_points"])
        while buffer:
            sock = self._connect()
            if sock is None:
                return
            chunk = [buffer[i] for i in range(min(size, len(buffer)))]
            try:
                sock.sendall(self.encode(chunk))
            except OSError as exc:
                self.counts["send_errors"] += 1
                self._disconnect()
                self._fail(time.monotonic(), f"sending to carbon failed: {exc}")
                return
            for _ in chunk:  # written: only now do they leave the buffer
                buffer.popleft()
            self.counts["points_sent"] += len(chunk)
            self.counts["messages_sent"] += 1


@hookimpl
def register_backend_types(register) -> None:
    register("graphite", GraphiteBackend)
