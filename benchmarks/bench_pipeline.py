"""Pipeline benchmark (issue 13): a bare receive loop and mondemand-server pipelines, in one run.

Targets, each fed the same varied StatsMsg traffic over UDP on loopback:

    (a) bare     a plain blocking `recv_into` loop in its own process (the baseline)
    (b) sink     mondemand-server -> sink
    (c) agg      mondemand-server -> sink + agg
    (d) rrd      mondemand-server -> agg + rrd (through a real rrdcached on a unix socket) + stats_file

Traffic: `--hosts` hosts (1000), each StatsMsg holding 3 counters (increasing per
host) and 2 gauges (changing values) with a cluster and a host context,
send_time = now. A pool of distinct datagrams (per host a sequence of `--pool`
encodings with different gauge values) is built before timing; at send time only
send_time and the counters are patched in place (one struct call). Every host
always sends from the same one of 64 source sockets (127.0.0.1, distinct ports;
host i -> socket i % 64), from one sender process, or two when the bare loop's
unpaced blast shows that one cannot reach the top step and two are faster;
paced runs send a burst once per millisecond, sleeping (never spinning) in
between. Where sendmmsg(2) is available (Linux) each socket sends a round of its
~16 hosts with one call, so the sender, which shares the cores, spends less CPU
per datagram (4.5 instead of 5.4 µs here, 6.8 before it stopped spinning).

For each target: a step-up of paced rates stopped at the first loss, and loss
at paced 20k/50k/100k events/s; in full mode also an unpaced blast. The bare
loop's blast is the reference rate that every rate is divided by ("x"). For
(d) also a long run at 50k/s (60 s) and a count of the RRD files and stats_file
lines written. Two checks close the run:

    (e) poison   4 each of 5 poison events among 2,000 valid ones (stats_file + agg + print + rrd):
                 lost events and backend restarts, per kind of poison
    (f) overload a `journal` backend (gzip of every raw event, CPU-bound: a few hundred 50 KB events/s
                 here) fed 50 KB LogMsgs at 10x what it handles, long enough to overflow its queue in
                 full mode: peak server RSS and whether sent = processed + queued + dropped + kernel
                 drops (+ the one batch being handled). `print` to /dev/full was not used: it fails
                 every write (errors and restarts), which is not the same as being slow.

Loss = sent - processed, processed being each backend's `events_processed` in
/status once every event is accounted for (processed, dropped, failed,
undecodable) or the counters have stood still with empty queues and an idle
server (the worst backend counts). Kernel drops are those of the target's
socket (/proc/net/udp); the machine's Udp RcvbufErrors (/proc/net/snmp) are
shown too. RSS and CPU are summed over the server process and every
descendant. Counters a server does not report show as n/a.

    .venv/bin/python benchmarks/bench_pipeline.py --quick     # smoke run, about 2 minutes
    .venv/bin/python benchmarks/bench_pipeline.py             # full run, about 15 minutes
    .venv/bin/python benchmarks/bench_pipeline.py --targets b,e   # a subset (the bare blast always runs)

It depends only on the mondemand-server CLI, routes.ini as documented in
docs/configuration.md, the /status JSON and the mondemand.messages /
mondemand.lwes APIs, so it runs unchanged against a rewritten server. Every
process and temporary directory it starts is removed at the end, also after
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mondemand.lwes import Event, LwesType, decode, encode
from mondemand.messages import LogLine, LogMsg, Metric, MetricType, Priority, StatsMsg

BIN = Path(sys.executable).parent
SOCKETS = 64
RCVBUF = 16 << 20  # what the lwes-udp listener asks for by default
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROG_ID = "bench_app"
SENTINEL = 0x5EED_0000_0000_0000  # int64 values unlikely to occur elsewhere in an encoded event
PATCHED = ("send_time", "v0", "v1", "v2")  # send_time and the three counters, rewritten at send time
BATCH_DEFAULT = 1000  # documented default batch_size: events a backend may hold in one handle call

FULL = {
    "steps": [10_000, 25_000, 50_000, 75_000, 100_000, 125_000, 150_000, 200_000],
    "step_seconds": 5.0, "loss_seconds": 10.0, "blast_events": 1_000_000, "long_seconds": 60.0,
    "overload_seconds": (40.0, 150.0), "quiet": 3.0, "settle_cap": 900.0, "calibrate_events": 600_000,
}
QUICK = {
    "steps": [10_000, 25_000, 50_000, 100_000, 200_000],
    "step_seconds": 1.0, "loss_seconds": 0.5, "blast_events": 0, "long_seconds": 2.0,
    "overload_seconds": (3.0, 3.0), "quiet": 2.0, "settle_cap": 8.0, "calibrate_events": 300_000,
}
LOSS_RATES = (20_000, 50_000, 100_000)
POISON_PER_KIND = 4
IDLE_CORES = 0.15  # a server using more CPU than this while its counters stand still is still working
BUSY_WAIT = 60.0  # ... but after this long without a counter moving it is taken as stuck, not busy
LABELS = {"a": ("bare", "(a) bare recv_into loop"), "b": ("sink", "(b) server -> sink"),
          "c": ("agg", "(c) server -> sink + agg"), "d": ("rrd", "(d) server -> agg + rrd (rrdcached) + stats_file")}
LONG_RATE = 50_000


# -- events -----------------------------------------------------------------------------------------


def host_name(h: int) -> str:
    return f"bench-host-{h:04d}"


def cluster_name(h: int) -> str:
    return f"cluster-{h % 4}"


def gauges(h: int, j: int) -> tuple[int, int]:
    return (h * 7 + j * 13) % 500, (h * 31 + j * 17) % 100


@dataclass
class Template:
    """One host's encoded StatsMsg and where its int64 values sit."""

    data: bytes
    offsets: dict[str, int]  # send_time, v0..v4 -> byte offset of the 8-byte value


def stats_template(h: int) -> Template:
    """Encode host `h`'s StatsMsg with sentinel values, send_time and the counters last, and find them."""
    metrics = [Metric(MetricType.COUNTER, f"requests_{k}", SENTINEL + 1 + k) for k in range(3)]
    metrics += [Metric(MetricType.GAUGE, "queue_depth", SENTINEL + 4),
                Metric(MetricType.GAUGE, "cpu_pct", SENTINEL + 5)]
    msg = StatsMsg(PROG_ID, host=host_name(h), context={"cluster": cluster_name(h)}, metrics=metrics,
                   send_time=SENTINEL)
    [event] = msg.to_lwes()
    ordered = Event(event.name)
    for key, (typ, value) in event.attrs.items():
        if key not in PATCHED:
            ordered.set(key, typ, value)
    for key in PATCHED:  # attribute order carries no meaning in LWES; this puts the patched values together
        typ, value = event.attrs[key]
        ordered.set(key, typ, value)
    data = encode(ordered)
    offsets = {}
    for key, value in [("send_time", SENTINEL)] + [(f"v{k}", SENTINEL + 1 + k) for k in range(5)]:
        packed = struct.pack(">q", value)
        at = data.find(packed)
        if at < 0 or data.find(packed, at + 1) >= 0:
            raise RuntimeError(f"cannot locate {key} in the encoded StatsMsg")
        offsets[key] = at
    return Template(data, offsets)


class Patcher:
    """Writes send_time and the three counters into a pool datagram: one struct call when they are adjacent."""

    def __init__(self, template: Template) -> None:
        offs = template.offsets
        order = sorted(PATCHED, key=offs.__getitem__)
        gaps = [template.data[offs[a] + 8:offs[b]] for a, b in itertools.pairwise(order)]
        others = [offs["v3"], offs["v4"]]
        self.fast = order == list(PATCHED) and all(len(g) <= 16 for g in gaps) and not any(
            offs[order[0]] <= o < offs[order[-1]] for o in others)
        if self.fast:
            self.struct = struct.Struct(">q" + "".join(f"{len(g)}sq" for g in gaps))
            self.gaps = gaps
            self.first = offs[order[0]]
        else:
            self.fields = [(struct.Struct(">q").pack_into, offs[k]) for k in PATCHED]

    def patch(self, buf: bytearray, base: int, ms: int, seq: int) -> None:
        """Slow, general form; `base` is the datagram's offset shift against the template (always 0 here)."""
        values = (ms, seq, 2 * seq, 3 * seq)
        if self.fast:
            g = self.gaps
            self.struct.pack_into(buf, base + self.first, values[0], g[0], values[1], g[1], values[2], g[2], values[3])
        else:
            for (pack, off), value in zip(self.fields, values, strict=True):
                pack(buf, base + off, value)


def check_datagram(buf: bytes, h: int, j: int, ms: int, seq: int) -> None:
    """Decode a patched pool datagram and compare with what it should say."""
    msg = StatsMsg.from_lwes(decode(bytes(buf)))
    values = {m.name: m.value for m in msg.metrics}
    g0, g1 = gauges(h, j)
    want = {"requests_0": seq, "requests_1": 2 * seq, "requests_2": 3 * seq, "queue_depth": g0, "cpu_pct": g1}
    if msg.host != host_name(h) or msg.send_time != ms or values != want or msg.prog_id != PROG_ID:
        raise RuntimeError(f"pool datagram decodes wrong: {msg}")


def build_pool(hosts: Iterable[int], per_host: int) -> list[tuple[int, int, bytearray, Patcher]]:
    """(host, j, datagram, patcher) for j in range(per_host) for each host, j-major so hosts take turns."""
    templates = {h: stats_template(h) for h in hosts}
    patchers = {h: Patcher(t) for h, t in templates.items()}
    pool = []
    pack = struct.Struct(">q").pack_into
    for j in range(per_host):
        for h, t in templates.items():
            buf = bytearray(t.data)
            g0, g1 = gauges(h, j)
            pack(buf, t.offsets["v3"], g0)
            pack(buf, t.offsets["v4"], g1)
            pool.append((h, j, buf, patchers[h]))
    return pool


def valid_datagrams(hosts: int, rounds: int, seq0: int) -> list[tuple[int, bytes]]:
    """`rounds` StatsMsgs of every host, send_time now, counters increasing: (host, datagram)."""
    templates = [stats_template(h) for h in range(hosts)]
    out = []
    seq = seq0
    pack = struct.Struct(">q").pack_into
    for r in range(rounds):
        for h, t in enumerate(templates):
            buf = bytearray(t.data)
            seq += 1
            ms = int(time.time() * 1000)
            g0, g1 = gauges(h, r)
            for key, value in (("send_time", ms), ("v0", seq), ("v1", 2 * seq), ("v2", 3 * seq), ("v3", g0),
                               ("v4", g1)):
                pack(buf, t.offsets[key], value)
            out.append((h, bytes(buf)))
    return out


# Hand-built LWES for the poison events: name, uint16 attribute count, then key, type byte, value.


def _lwes(name: str, attrs: list[tuple[str, LwesType, bytes]], count: int | None = None) -> bytes:
    out = bytearray([len(name)]) + name.encode() + struct.pack(">H", len(attrs) if count is None else count)
    for key, typ, value in attrs:
        out += bytes([len(key)]) + key.encode() + bytes([int(typ)]) + value
    return bytes(out)


def _s(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack(">H", len(raw)) + raw


def _i64(value: int) -> bytes:
    return struct.pack(">q", value)


def _u16(value: int) -> bytes:
    return struct.pack(">H", value)


def _stats_attrs(prog_id: bytes | str, metrics: list[tuple[str, str, LwesType, bytes]], num: int | None = None,
                 extra: list[tuple[str, LwesType, bytes]] = ()) -> list[tuple[str, LwesType, bytes]]:
    attrs = [("prog_id", LwesType.STRING, _s(prog_id)), ("send_time", LwesType.INT64, _i64(int(time.time() * 1000))),
             ("num", LwesType.UINT16, _u16(len(metrics) if num is None else num))]
    for i, (kind, name, typ, value) in enumerate(metrics):
        attrs += [(f"t{i}", LwesType.STRING, _s(kind)), (f"k{i}", LwesType.STRING, _s(name)), (f"v{i}", typ, value)]
    attrs += [("ctxt_num", LwesType.UINT16, _u16(2)), ("ctxt_k0", LwesType.STRING, _s("cluster")),
              ("ctxt_v0", LwesType.STRING, _s("cluster-p")), ("ctxt_k1", LwesType.STRING, _s("host")),
              ("ctxt_v1", LwesType.STRING, _s("poison-host"))]
    return attrs + list(extra)


def poison_events() -> dict[str, bytes]:
    """One of each poison, by kind."""
    gauge = [("gauge", "g", LwesType.INT64, _i64(1))]
    statset = "3:" + "9" * 400 + ":1:9:5:5:7:8:9:9:9"
    trace = [("mondemand.prog_id", LwesType.STRING, _s("poison_trace")),
             ("mondemand.trace_id", LwesType.STRING, _s("t-1")),
             ("mondemand.owner", LwesType.STRING, _s("bench")),
             ("mondemand.src_host", LwesType.STRING, _s("poison-host")),
             ("mondemand.message", LwesType.STRING, _s("deeply nested")),
             ("payload", LwesType.STRING, _s("[" * 20_000))]
    return {
        "non-UTF-8 prog_id": _lwes("MonDemand::StatsMsg", _stats_attrs(b"bad\xff\xfe\xc3(prog", gauge)),
        "400-digit statset": _lwes("MonDemand::StatsMsg", _stats_attrs(
            "poison_statset", [("statset", "latency", LwesType.STRING, _s(statset))])),
        "ReceiptTime 2**62": _lwes("MonDemand::StatsMsg", _stats_attrs(
            "poison_time", gauge, extra=[("ReceiptTime", LwesType.INT64, _i64(2**62))])),
        "trace of 20000 '['": _lwes("MonDemand::TraceMsg", trace),
        "num 3, 2 metrics": _lwes("MonDemand::StatsMsg", _stats_attrs(
            "poison_num", [*gauge, ("counter", "c", LwesType.INT64, _i64(5))], num=3)),
    }


def big_events(n: int, size: int = 50_000) -> list[bytes]:
    """`n` distinct MonDemand::LogMsg of about `size` bytes each: one line of random base64 text."""
    out = []
    for i in range(n):
        text = base64.b64encode(os.urandom(size * 3 // 4 - 300)).decode()
        msg = LogMsg("bench_big", host=host_name(i % 1000), context={"cluster": cluster_name(i)},
                     lines=[LogLine("bench.py", i, Priority.INFO, text)], send_time=int(time.time() * 1000))
        out.append(encode(msg.to_lwes()))
    return out


# -- sender and bare receiver processes ---------------------------------------------------------------


def _close_quietly(socks: list[socket.socket]) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()


def sender_main(conn: Any, stop: Any, index: int, nprocs: int, hosts: int, per_host: int) -> None:
    """A sender process: owns sockets s with s % nprocs == index and the hosts on them; runs commands from `conn`."""
    socks: list[socket.socket] = []
    try:
        own = {}
        for s in range(SOCKETS):
            if s % nprocs == index:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
                sock.bind(("127.0.0.1", 0))
                own[s] = sock
                socks.append(sock)
        my_hosts = [h for h in range(hosts) if (h % SOCKETS) % nprocs == index]
        raw_pool = build_pool(my_hosts, per_host)
        seq = 1_000_000 * (index + 1)
        for h, j, buf, patcher in (raw_pool[0], raw_pool[-1]):
            probe = bytearray(buf)
            patcher.patch(probe, 0, 1_700_000_000_123, seq)
            check_datagram(probe, h, j, 1_700_000_000_123, seq)
        fast = all(p.fast for _, _, _, p in raw_pool)
        groups = MmsgGroups.build(raw_pool, own) if fast else None
        if fast:
            pool: list[Any] = [(buf, own[h % SOCKETS].send, p.first) for h, _, buf, p in raw_pool]
            struct_ = raw_pool[0][3].struct
            gaps = raw_pool[0][3].gaps
        else:
            pool = [(buf, own[h % SOCKETS].send, p) for h, _, buf, p in raw_pool]
            struct_, gaps = None, []
        del raw_pool
        lists: dict[str, list[tuple[bytes, Callable[[bytes], int]]]] = {}
        own_list = list(own.values())
        conn.send({"ports": [s.getsockname()[1] for s in socks], "hosts": len(my_hosts), "pool": len(pool),
                   "fast": fast})
        while True:
            cmd = conn.recv()
            op = cmd[0]
            if op == "exit":
                break
            if op == "connect":
                for s in socks:
                    s.connect(cmd[1])
                    s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # clear an ICMP error left by the last target
                conn.send("ok")
            elif op == "load":
                _, name, items = cmd
                lists[name] = [(data, own_list[h % len(own_list)].send) for h, data in items]
                conn.send(len(lists[name]))
            elif op == "run":
                _, name, rate, count, start_at = cmd
                if name == "stats" and groups is not None:
                    result = groups.run(struct_, gaps, rate, count, start_at, seq, stop)
                    seq += result["attempts"]
                elif name == "stats":
                    result = _run_stats(pool, struct_, gaps, fast, rate, count, start_at, seq, stop)
                    seq += result["attempts"]
                else:
                    result = _run_list(lists[name], rate, count, start_at, stop)
                conn.send(result)
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass
    finally:
        _close_quietly(socks)


class MmsgGroups:
    """The pool sent with sendmmsg(2): per source socket, one call per round of the hosts on it.

    The sender shares the two cores with the server, so its own CPU per datagram
    matters: one system call (through ctypes) per round of a socket's ~16 hosts
    instead of one `send` per datagram costs 1.5 us less per datagram here. Each
    datagram is still patched (send_time, counters) just before it leaves, and
    every host still sends from its own socket, once per round, in the same order
    as the per-datagram sender. `build` returns None where sendmmsg is missing.
    """

    def __init__(self, libc: Any, groups: list[tuple[int, list[tuple[bytearray, int]], Any, int]]) -> None:
        self.sendmmsg = libc.sendmmsg
        self.groups = groups  # (fd, [(buffer, offset of send_time)], mmsghdr array, hosts per round)
        self.cursors = [0] * len(groups)
        self.next_group = 0

    @classmethod
    def build(cls, raw_pool: list[tuple[int, int, bytearray, Patcher]],
              own: dict[int, socket.socket]) -> MmsgGroups | None:
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        except (OSError, AttributeError):
            return None

        class IoVec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

        class MsgHdr(ctypes.Structure):
            _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                        ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                        ("flags", ctypes.c_int)]

        class MMsgHdr(ctypes.Structure):
            _fields_ = [("hdr", MsgHdr), ("len", ctypes.c_uint)]

        by_socket: dict[int, list[tuple[int, bytearray, int]]] = defaultdict(list)
        for h, _j, buf, p in raw_pool:  # j-major: consecutive entries of one socket are distinct hosts
            by_socket[h % SOCKETS].append((h, buf, p.first))
        groups = []
        keep = []
        for s, entries in sorted(by_socket.items()):
            n = len(entries)
            iovs = (IoVec * n)()
            msgs = (MMsgHdr * n)()
            for i, (_h, buf, _first) in enumerate(entries):
                cbuf = (ctypes.c_char * len(buf)).from_buffer(buf)
                keep.append(cbuf)
                iovs[i].base = ctypes.addressof(cbuf)
                iovs[i].len = len(buf)
                msgs[i].hdr.iov = ctypes.addressof(iovs[i])
                msgs[i].hdr.iovlen = 1
            keep.append(iovs)
            hosts = len({h for h, _, _ in entries})
            groups.append((own[s].fileno(), [(buf, first) for _, buf, first in entries], msgs, hosts))
        made = cls(libc, groups)
        made.keep = keep  # the ctypes views must live as long as the arrays pointing at them
        made.size = ctypes.sizeof(MMsgHdr)
        made.byref = ctypes.byref
        return made

    def run(self, struct_: struct.Struct, gaps: list[bytes], rate: float, count: int, start_at: float,
            seq: int, stop: Any) -> dict[str, float]:
        """Send `count` pool datagrams at `rate`/s (0: as fast as possible), as `_run_stats` does."""
        perf = time.perf_counter
        burst = max(1, round(rate / 1000)) if rate > 0 else 1000
        period = burst / rate if rate > 0 else 0.0
        pack = struct_.pack_into
        g0, g1, g2 = [*gaps, b"", b"", b""][:3]
        groups, cursors, sendmmsg, byref, size = self.groups, self.cursors, self.sendmmsg, self.byref, self.size
        n_groups = len(groups)
        g = self.next_group
        cpu0 = time.process_time()
        t0 = _wait_start(start_at)
        next_t = t0
        attempts = errors = bursts = 0
        left = 0  # datagrams of the current burst not sent yet
        while attempts < count:
            if left == 0:
                if period:
                    _pace(next_t, perf)
                    next_t += period
                left = min(burst, count - attempts)
                ms = int(time.time() * 1000)
                bursts += 1
                if bursts & 127 == 0 and stop.is_set():
                    break
            fd, bufs, msgs, hosts = groups[g]
            start = cursors[g]
            m = min(left, hosts, len(bufs) - start)
            for i in range(start, start + m):
                seq += 1
                buf, off = bufs[i]
                pack(buf, off, ms, g0, seq, g1, seq + seq, g2, 3 * seq)
            sent = sendmmsg(fd, byref(msgs, start * size), m, 0)
            errors += m - sent if sent >= 0 else m
            attempts += m
            left -= m
            cursors[g] = 0 if start + m == len(bufs) else start + m
            g += 1
            if g == n_groups:
                g = 0
        self.next_group = g
        t1 = perf()
        return {"attempts": attempts, "sent": attempts - errors, "errors": errors, "seconds": t1 - t0,
                "behind": max(0.0, t1 - next_t) if period else 0.0, "cpu": time.process_time() - cpu0,
                "end": time.time()}


def _wait_start(start_at: float) -> float:
    """Sleep until wall time `start_at`; returns the perf_counter of that moment."""
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    return time.perf_counter()


def _pace(next_t: float, perf: Callable[[], float]) -> None:
    # Sleep the whole gap, never spin: the sender shares the cores with the server. A late wake-up
    # (tens of µs) delays one burst, not the rate: the next deadline is counted from the last one.
    wait = next_t - perf()
    if wait > 0:
        time.sleep(wait)


def _run_stats(pool: list[Any], struct_: struct.Struct | None, gaps: list[bytes], fast: bool, rate: float,
               count: int, start_at: float, seq: int, stop: Any) -> dict[str, float]:
    """Send `count` pool datagrams at `rate`/s (0: as fast as possible), patching send_time and counters."""
    perf = time.perf_counter
    burst = max(1, round(rate / 1000)) if rate > 0 else 1000
    period = burst / rate if rate > 0 else 0.0
    n_pool = len(pool)
    k = seq % n_pool
    cpu0 = time.process_time()
    t0 = _wait_start(start_at)
    next_t = t0
    attempts = errors = bursts = 0
    pack = struct_.pack_into if struct_ is not None else None
    g0, g1, g2 = [*gaps, b"", b"", b""][:3]
    while attempts < count:
        if period:
            _pace(next_t, perf)
            next_t += period
        n = min(burst, count - attempts)
        ms = int(time.time() * 1000)
        for _ in range(n):
            buf, send, off = pool[k]
            k += 1
            if k == n_pool:
                k = 0
            seq += 1
            if fast:
                pack(buf, off, ms, g0, seq, g1, seq + seq, g2, 3 * seq)
            else:
                off.patch(buf, 0, ms, seq)
            try:
                send(buf)
            except OSError:
                errors += 1
        attempts += n
        bursts += 1
        if bursts & 127 == 0 and stop.is_set():
            break
    t1 = perf()
    return {"attempts": attempts, "sent": attempts - errors, "errors": errors, "seconds": t1 - t0,
            "behind": max(0.0, t1 - next_t) if period else 0.0, "cpu": time.process_time() - cpu0, "end": time.time()}


def _run_list(items: list[tuple[bytes, Callable[[bytes], int]]], rate: float, count: int, start_at: float,
              stop: Any) -> dict[str, float]:
    """Send `count` datagrams cycling through `items` at `rate`/s, unchanged."""
    perf = time.perf_counter
    burst = max(1, round(rate / 1000)) if rate > 0 else 100
    period = burst / rate if rate > 0 else 0.0
    cpu0 = time.process_time()
    t0 = _wait_start(start_at)
    next_t = t0
    attempts = errors = bursts = 0
    k, n_items = 0, len(items)
    while attempts < count:
        if period:
            _pace(next_t, perf)
            next_t += period
        n = min(burst, count - attempts)
        for _ in range(n):
            data, send = items[k]
            k += 1
            if k == n_items:
                k = 0
            try:
                send(data)
            except OSError:
                errors += 1
        attempts += n
        bursts += 1
        if bursts & 15 == 0 and stop.is_set():
            break
    t1 = perf()
    return {"attempts": attempts, "sent": attempts - errors, "errors": errors, "seconds": t1 - t0,
            "behind": max(0.0, t1 - next_t) if period else 0.0, "cpu": time.process_time() - cpu0, "end": time.time()}


def bare_main(conn: Any, rcvbuf: int) -> None:
    """The baseline: a blocking `recv_into` loop counting datagrams. A datagram of under 16 bytes is a control
    message from the benchmark (b"CTRL" + token): the count so far is sent back with the token."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        try:
            s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), rcvbuf)  # 33: Linux value
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.bind(("127.0.0.1", 0))
        conn.send(s.getsockname()[1])
        buf = bytearray(65535)
        recv_into = s.recv_into
        n = 0
        while True:
            size = recv_into(buf)
            if size < 16 and buf[:4] == b"CTRL":
                token = bytes(buf[4:size])
                if token == b"EXIT":
                    break
                conn.send((token, n))
            else:
                n += 1
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass
    finally:
        s.close()


# -- /proc ------------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def process_tree(root: int) -> list[int]:
    """`root` and every descendant, found through the ppid field of /proc/*/stat."""
    children: dict[int, list[int]] = defaultdict(list)
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None:
                children[int(fields[1])].append(int(name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of each process, plus what its reaped children used (cutime + cstime)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += sum(int(f) for f in fields[11:15])
    return total / CLK_TCK


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            pass
    return total


def rcvbuf_errors() -> int:
    """Udp RcvbufErrors from /proc/net/snmp (header and value lines matched by name)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    header, values = lines[0], lines[1]
    return int(dict(zip(header[1:], values[1:], strict=True))["RcvbufErrors"])


def socket_drops(port: int) -> int | None:
    """Datagrams the kernel dropped on the UDP sockets bound to `port` (the `drops` column of /proc/net/udp*):
    unlike RcvbufErrors, which counts every socket of the machine, this is the target's alone."""
    total, found = 0, False
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            continue
        if not lines or lines[0].split()[-1] != "drops":
            return None
        for line in lines[1:]:
            fields = line.split()
            if len(fields) > 2 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                total += int(fields[-1])
                found = True
    return total if found else None


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def top_cpu(exclude: set[int], seconds: float = 1.5, n: int = 5) -> list[tuple[float, int, str]]:
    """Processes using the most CPU over `seconds`, as (cores, pid, command), leaving out `exclude`."""

    def sample() -> dict[int, tuple[int, str]]:
        out = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    text = Path(f"/proc/{name}/stat").read_text()
                except OSError:
                    continue
                comm = text[text.find("(") + 1:text.rfind(")")]
                fields = text.rsplit(")", 1)[1].split()
                out[int(name)] = (int(fields[11]) + int(fields[12]), comm)
        return out

    first = sample()
    time.sleep(seconds)
    second = sample()
    busy = []
    for pid, (ticks, comm) in second.items():
        if pid in exclude or pid not in first:
            continue
        used = (ticks - first[pid][0]) / CLK_TCK / seconds
        if used >= 0.01:
            busy.append((used, pid, comm))
    busy.sort(reverse=True)
    result = []
    for used, pid, comm in busy[:n]:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = ""
        result.append((used, pid, (cmd or comm)[:90]))
    return result


class Monitor(threading.Thread):
    """Samples the RSS of watched process trees every 0.2 s and keeps each one's peak since `reset`."""

    def __init__(self) -> None:
        super().__init__(name="rss-monitor", daemon=True)
        self.roots: dict[str, int] = {}
        self.peaks: dict[str, int] = {}
        self.limit: tuple[str, int, Any] | None = None  # (name, bytes, event to set when exceeded)
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self.roots[name] = pid
            self.peaks[name] = 0

    def unwatch(self, name: str) -> None:
        with self._lock:
            self.roots.pop(name, None)

    def reset(self, name: str) -> None:
        with self._lock:
            self.peaks[name] = 0
        self.sample()

    def peak(self, name: str) -> int:
        self.sample()
        with self._lock:
            return self.peaks.get(name, 0)

    def sample(self) -> None:
        with self._lock:
            roots = dict(self.roots)
        for name, pid in roots.items():
            rss = rss_bytes(process_tree(pid))
            with self._lock:
                if rss > self.peaks.get(name, 0):
                    self.peaks[name] = rss
            limit = self.limit
            if limit is not None and limit[0] == name and rss > limit[1]:
                limit[2].set()

    def run(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(Exception):
                self.sample()

    def stop(self) -> None:
        self._stop.set()


# -- the processes the benchmark starts -----------------------------------------------------------------


class Senders:
    """`n` long-lived sender processes sharing the hosts and the 64 source sockets."""

    def __init__(self, n: int, hosts: int, per_host: int) -> None:
        ctx = mp.get_context("spawn")
        self.n = n
        self.stop_event = ctx.Event()
        self.procs, self.conns = [], []
        for i in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=sender_main, args=(child, self.stop_event, i, n, hosts, per_host),
                               name=f"bench-sender-{i}", daemon=True)
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)
        try:
            self.info = [self._recv(c, 300) for c in self.conns]
        except BaseException:
            self.close()
            raise
        self.fast = all(i["fast"] for i in self.info)

    def _recv(self, conn: Any, timeout: float) -> Any:
        if not conn.poll(timeout):
            raise RuntimeError("a sender process did not answer")
        return conn.recv()

    def connect(self, port: int) -> None:
        for c in self.conns:
            c.send(("connect", ("127.0.0.1", port)))
        for c in self.conns:
            self._recv(c, 30)

    def load(self, name: str, items: list[tuple[int, bytes]], only_first: bool = False) -> None:
        conns = self.conns[:1] if only_first else self.conns
        for i, c in enumerate(conns):
            c.send(("load", name, items if only_first else items[i::len(conns)]))
        for c in conns:
            self._recv(c, 60)

    def run(self, rate: float, count: int, pool: str = "stats", only_first: bool = False) -> dict[str, float]:
        """Send `count` datagrams at `rate`/s in total, split over the senders; sums of their reports."""
        conns = self.conns[:1] if only_first else self.conns
        self.stop_event.clear()
        start_at = time.time() + 0.05
        n = len(conns)
        for i, c in enumerate(conns):
            share = count // n + (1 if i < count % n else 0)
            c.send(("run", pool, rate / n, share, start_at))
        results = [self._recv(c, count / max(rate, 1000) + 600) for c in conns]
        out = {key: sum(r[key] for r in results) for key in ("attempts", "sent", "errors", "cpu")}
        out["seconds"] = max(r["seconds"] for r in results)
        out["behind"] = max(r["behind"] for r in results)
        out["end"] = max(r["end"] for r in results)
        out["start"] = start_at
        return out

    def close(self) -> None:
        self.stop_event.set()  # a sender in the middle of a run stops sending
        for c in self.conns:
            with contextlib.suppress(OSError, ValueError):
                c.send(("exit",))
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(5)
        for c in self.conns:
            c.close()


class Bare:
    """The bare receive loop in its own process."""

    name = "bare"

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=bare_main, args=(child, RCVBUF), name="bench-bare", daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(30):
            raise RuntimeError("the bare receiver did not start")
        self.port = self.conn.recv()
        self.pid = self.proc.pid
        self.ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._token = 0

    def count(self) -> int:
        """Datagrams received so far. The control datagram queues behind the data, so every datagram sent before
        the call is counted (it is resent when the kernel dropped it from a full buffer)."""
        self._token += 1
        token = b"%d" % self._token
        for _ in range(60):
            self.ctl.sendto(b"CTRL" + token, ("127.0.0.1", self.port))
            deadline = time.monotonic() + 1.0
            while self.conn.poll(max(0.0, deadline - time.monotonic())):
                got, n = self.conn.recv()
                if got == token:
                    return n
        raise RuntimeError("the bare receiver does not answer")

    def close(self) -> None:
        if self.proc.is_alive():
            with contextlib.suppress(OSError):
                self.ctl.sendto(b"CTRLEXIT", ("127.0.0.1", self.port))
            self.proc.join(3)
            if self.proc.is_alive():
                self.proc.terminate()
                self.proc.join(5)
        self.ctl.close()
        self.conn.close()


def free_port(kind: int) -> int:
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, other) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


class Server:
    """mondemand-server on a routes.ini made of a common head and `body` (backends and routes)."""

    def __init__(self, work: Path, name: str, body: str, drain_timeout: str = "5s") -> None:
        self.name = name
        self.dir = work
        self.port = free_port(socket.SOCK_DGRAM)
        self.http = free_port(socket.SOCK_STREAM)
        self.config = work / "routes.ini"
        self.config.write_text(f"""\
[server]
log_level = warning
stats_interval = 3600s
drain_timeout = {drain_timeout}

[http]
address = 127.0.0.1
port = {self.http}

[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {self.port}
{body}""")
        exe = BIN / "mondemand-server"
        cmd = [str(exe) if exe.exists() else (shutil.which("mondemand-server") or "mondemand-server"),
               "-c", str(self.config)]
        self.log_path = work / "server.log"
        self._log = self.log_path.open("w")
        # Its own session: Ctrl-C reaches only the benchmark, whose clean-up stops the server.
        self.proc = subprocess.Popen(cmd, cwd=work, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        self.pid = self.proc.pid
        try:
            self._wait_ready()
        except BaseException:
            self.stop(10)
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mondemand-server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                self.status()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no /status within 60 s: {self.log_tail()}") from None
                time.sleep(0.1)

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/status", timeout=10) as resp:
            return json.load(resp)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 15) -> str:
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(lines[-n:])
        return ""

    def stop(self, timeout: float = 60) -> None:
        family = process_tree(self.pid) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  ({self.name}: no exit {timeout:.0f} s after SIGTERM; killing it)", flush=True)
                self.proc.kill()
                self.proc.wait(10)
        # Worker processes it started (recorded before SIGTERM, still in its process group) must not outlive it.
        for pid in family[1:]:
            fields = _stat_fields(pid)
            if fields is not None and int(fields[2]) == self.pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self._log.close()


class Rrdcached:
    """A real rrdcached on a unix socket in the benchmark's temp dir, confined to `base`."""

    def __init__(self, work: Path, base: Path) -> None:
        exe = shutil.which("rrdcached") or "/usr/bin/rrdcached"
        self.socket = work / "rrdcached.sock"
        self.address = f"unix:{self.socket}"
        self.log = (work / "rrdcached.log").open("w")
        base.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "-g", "-l", self.address, "-p", str(work / "rrdcached.pid"), "-b", str(base), "-B",
             "-w", "60", "-z", "5", "-f", "3600", "-t", "4"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        try:
            deadline = time.monotonic() + 15
            while not self.ping():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"rrdcached exited with {self.proc.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError("rrdcached did not answer PING within 15 s")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1)
                s.connect(str(self.socket))
                s.sendall(b"PING\n")
                return s.recv(64).startswith(b"0 PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


# -- measuring a target ---------------------------------------------------------------------------------

COUNTERS = ("events_processed", "dropped", "failed", "decode_errors", "errors", "restarts", "queue_depth",
            "backend.rejected", "backend.emitted_events")


def backend_counters(status: dict[str, Any], names: Iterable[str]) -> dict[str, dict[str, float | None]]:
    backends = status.get("backends", {}) if isinstance(status, dict) else {}
    out = {}
    for name in names:
        b = backends.get(name, {}) if isinstance(backends, dict) else {}
        out[name] = {key: b.get(key) for key in COUNTERS}
    return out


def _num(value: Any) -> float:
    return value if isinstance(value, int | float) else 0


def delta(after: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]], key: str) -> dict[str, float | None]:
    out = {}
    for name, counters in after.items():
        a, b = counters.get(key), before.get(name, {}).get(key)
        out[name] = None if a is None else _num(a) - _num(b)
    return out


@dataclass
class Run:
    label: str
    rate: float  # asked for (0: blast)
    sent: int = 0
    send_errors: int = 0
    send_rate: float = 0.0
    sender_cores: float = 0.0
    behind: float = 0.0
    processed: int = 0  # the worst backend's (bare: datagrams counted)
    per_backend: dict[str, dict[str, float | None]] = field(default_factory=dict)
    kernel_drops: int = 0  # on the target's socket(s)
    system_drops: int = 0  # Udp RcvbufErrors of the whole machine
    unaccounted: int | None = None  # sent - kernel drops - (processed + dropped + failed + decode_errors), worst
    estimated: bool = False  # settle cut short: events still queued counted as processed
    lag: float = 0.0  # seconds from the sender's end to the counters' last move
    throughput: float = 0.0  # processed per second from the first send to the last move
    cores: float = 0.0
    peak_rss: int = 0

    @property
    def loss(self) -> int:
        return self.sent - self.processed

    @property
    def loss_pct(self) -> float:
        return 100.0 * self.loss / self.sent if self.sent else 0.0

    @property
    def sender_limited(self) -> bool:
        return self.rate > 0 and self.send_rate < 0.93 * self.rate


class Target:
    """What a run needs from a target: pids, counts, settling."""

    name = ""
    label = ""

    def __init__(self, monitor: Monitor, quiet: float) -> None:
        self.monitor = monitor
        self.quiet = quiet
        self.runs: list[Run] = []
        self.notes: list[str] = []

    @property
    def port(self) -> int:
        raise NotImplementedError

    def pids(self) -> list[int]:
        raise NotImplementedError

    def snapshot(self) -> Any:
        raise NotImplementedError

    def settle(self, expected: int, require_empty: bool = True, timeout: float = 900,
               before: Any = None) -> tuple[Any, float, float, bool]:
        """Wait until every one of `expected` events is accounted for, or else the counters stop moving;
        (counters, when they last moved, CPU seconds then, timed out)."""
        raise NotImplementedError

    def processed(self, before: Any, after: Any, with_queued: bool = False) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError


class BareTarget(Target):
    name = "bare"
    label = "(a) bare recv_into loop"

    def __init__(self, monitor: Monitor, quiet: float) -> None:
        super().__init__(monitor, quiet)
        self.bare = Bare()
        monitor.watch(self.name, self.bare.pid)

    @property
    def port(self) -> int:
        return self.bare.port

    def pids(self) -> list[int]:
        return [self.bare.pid]

    def snapshot(self) -> int:
        return self.bare.count()

    def settle(self, expected: int, require_empty: bool = True, timeout: float = 900,
               before: Any = None) -> tuple[int, float, float, bool]:
        n = self.bare.count()  # queued behind the data: returns once everything sent before it is counted
        return n, time.time(), cpu_seconds(self.pids()), False

    def processed(self, before: int, after: int, with_queued: bool = False) -> tuple[int, dict[str, Any]]:
        return after - before, {}

    def close(self) -> None:
        self.monitor.unwatch(self.name)
        self.bare.close()


class ServerTarget(Target):
    """A server whose `inputs` backends receive the benchmark's events (and `storage` also the agg output)."""

    def __init__(self, monitor: Monitor, quiet: float, name: str, label: str, work: Path, body: str,
                 inputs: list[str], drain_timeout: str = "5s", storage: tuple[str, ...] = ()) -> None:
        super().__init__(monitor, quiet)
        self.name, self.label, self.work, self.inputs, self.storage = name, label, work, inputs, storage
        self.rrdcached: Rrdcached | None = None
        work.mkdir(parents=True, exist_ok=True)
        self.server = Server(work, name, body, drain_timeout)
        monitor.watch(name, self.server.pid)

    @property
    def port(self) -> int:
        return self.server.port

    def pids(self) -> list[int]:
        return process_tree(self.server.pid)

    def snapshot(self) -> dict[str, Any]:
        st = self.server.status()
        return {"backends": backend_counters(st, self.inputs), "emitted": self._emitted(st), "status": st}

    @staticmethod
    def _emitted(status: dict[str, Any]) -> float:
        """Events the agg backends routed back through the server (they reach the storage backends too)."""
        return sum(_num(b.get("backend.emitted_events")) for b in status.get("backends", {}).values()
                   if isinstance(b, dict))

    @staticmethod
    def _moving(snap: dict[str, Any], intake_only: bool) -> tuple[Any, ...]:
        st = snap["status"]
        router = st.get("router", {})
        listeners = st.get("listeners", {})
        keys = ("dropped",) if intake_only else ("events_processed", "dropped", "failed", "decode_errors")
        return (router.get("events_received"), tuple(sorted((k, str(v)) for k, v in listeners.items())),
                tuple((n, *(c.get(k) for k in keys)) for n, c in snap["backends"].items()))

    def settle(self, expected: int, require_empty: bool = True, timeout: float = 900,
               before: dict[str, Any] | None = None) -> tuple[dict[str, Any], float, float, bool]:
        """Done as soon as every input backend accounts for `expected` events (processed, dropped, failed or
        refused, against `before`); otherwise once the counters have not moved for `quiet` seconds with the
        queues empty and the server idle (a backend inside one long `handle` call, say creating thousands of
        RRD files, moves no counter but uses CPU; this waits for it up to `BUSY_WAIT` seconds). With
        `require_empty` false only the intake must stop (listeners, router, drops): the backends may still be
        working through their queues."""
        intake_only = not require_empty
        snap = self.snapshot()
        last = self._moving(snap, intake_only)
        moved, moved_cpu = time.time(), cpu_seconds(self.pids())
        recent = [(moved, moved_cpu)]  # (time, CPU seconds) of the polls since the last move
        deadline = time.monotonic() + timeout
        while True:
            if not intake_only and before is not None and self._accounted(before, snap) >= expected:
                return snap, time.time(), cpu_seconds(self.pids()), False
            time.sleep(0.1)
            if not self.server.alive():
                raise RuntimeError(f"{self.name}: the server died: {self.server.log_tail()}")
            snap = self.snapshot()
            now, t, cpu = self._moving(snap, intake_only), time.time(), cpu_seconds(self.pids())
            if now != last:
                last, moved, moved_cpu = now, t, cpu
                recent = [(t, cpu)]
                continue
            recent.append((t, cpu))
            window = [(wt, wc) for wt, wc in recent if wt >= t - self.quiet]
            busy = (cpu - window[0][1]) / max(t - window[0][0], 1e-9) > IDLE_CORES and t - moved < BUSY_WAIT
            queued = sum(_num(c.get("queue_depth")) for c in snap["backends"].values())
            if t - moved >= self.quiet and (intake_only or (queued == 0 and not busy)):
                return snap, moved, moved_cpu, False
            if time.monotonic() > deadline:
                return snap, moved, moved_cpu, True

    def _accounted(self, before: dict[str, Any], after: dict[str, Any]) -> float:
        """The fewest events any input backend has finished with (processed, dropped, failed, refused)."""
        worst = None
        for name in self.inputs:
            a, b = after["backends"][name], before["backends"][name]
            total = sum(_num(a.get(k)) - _num(b.get(k)) for k in ("events_processed", "dropped", "failed",
                                                                   "decode_errors"))
            worst = total if worst is None else min(worst, total)
        return worst or 0

    def processed(self, before: dict[str, Any], after: dict[str, Any],
                  with_queued: bool = False) -> tuple[int, dict[str, dict[str, Any]]]:
        """The worst input backend's processed events (plus, `with_queued`, those still in its queue)."""
        emitted = after["emitted"] - before["emitted"]
        per = {}
        worst = None
        for name in self.inputs:
            d = {key: delta(after["backends"], before["backends"], key)[name] for key in COUNTERS}
            if d["events_processed"] is None:
                raise RuntimeError(f"/status has no backends.{name}.events_processed")
            if name in self.storage:
                d["events_processed"] -= emitted  # the agg output this backend also stored
            per[name] = d
            done = d["events_processed"]
            if with_queued:
                done += _num(after["backends"][name].get("queue_depth"))
            worst = done if worst is None else min(worst, done)
        return int(worst or 0), per

    def close(self) -> None:
        self.monitor.unwatch(self.name)
        self.server.stop()


def measure(target: Target, senders: Senders, label: str, rate: float, count: int, pool: str = "stats",
            only_first: bool = False, settle_cap: float = 900) -> Run:
    """One run: send `count` events at `rate`/s (0: blast), wait for the target to settle, collect the figures.

    When the target has not finished within `settle_cap` seconds of the sender, the events still queued are
    counted as processed and the run is marked as estimated."""
    run = Run(label, rate)
    system0, port0 = rcvbuf_errors(), socket_drops(target.port)
    before = target.snapshot()
    target.monitor.reset(target.name)
    cpu0 = cpu_seconds(target.pids())
    sent = senders.run(rate, count, pool, only_first)
    port1 = socket_drops(target.port)
    run.kernel_drops = (port1 or 0) - (port0 or 0)
    run.sent, run.send_errors = int(sent["sent"]), int(sent["errors"])
    after, moved, moved_cpu, timed_out = target.settle(run.sent - run.kernel_drops, timeout=settle_cap, before=before)
    run.system_drops = rcvbuf_errors() - system0
    run.peak_rss = target.monitor.peak(target.name)
    run.send_rate = sent["sent"] / max(sent["seconds"], 1e-9)
    run.sender_cores = sent["cpu"] / max(sent["seconds"], 1e-9)
    run.behind = sent["behind"]
    run.processed, run.per_backend = target.processed(before, after, with_queued=timed_out)
    run.estimated = timed_out
    if timed_out:
        run.unaccounted = None  # some events are inside a handle call: neither queued nor counted yet
    elif run.per_backend:
        run.unaccounted = int(max(
            run.sent - run.kernel_drops - sum(_num(d.get(k)) for k in ("events_processed", "dropped", "failed",
                                                                       "decode_errors"))
            for name, d in run.per_backend.items()))
    else:
        run.unaccounted = run.sent - run.kernel_drops - run.processed
    run.lag = max(0.0, moved - sent["end"]) if not timed_out else settle_cap
    busy = max(moved, sent["end"]) - sent["start"]
    run.throughput = run.processed / max(busy, 1e-9)
    run.cores = (moved_cpu - cpu0) / max(busy, 1e-9)
    target.runs.append(run)
    print_run(target, run)
    return run


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}/s"


def fmt_ratio(value: float | None, ref: float | None) -> str:
    return "n/a" if value is None or not ref else f"{value / ref:.2f}x"


def mb(value: float) -> str:
    return f"{value / 1e6:,.0f} MB"


def print_run(target: Target, run: Run) -> None:
    rate = "blast" if run.rate == 0 else f"{run.rate:>7,.0f}/s"
    extra = []
    for name, d in run.per_backend.items():
        parts = [f"{name} {int(d['events_processed'] or 0):,}"]
        for key in ("dropped", "failed", "decode_errors", "restarts", "backend.rejected"):
            if d.get(key):
                parts.append(f"{key.removeprefix('backend.')} {int(d[key]):,}")
        extra.append(" ".join(parts))
    flags = []
    if run.sender_limited:
        flags.append(f"SENDER-LIMITED ({run.behind:.2f} s behind)")
    if run.estimated:
        flags.append("settle cut short: queued events counted as processed")
    if run.unaccounted:
        flags.append(f"{run.unaccounted:,} lost without a counter")
    print(f"  {target.name:<5} {run.label:<6} {rate:>10}  sent {run.sent:>9,} at {run.send_rate:>9,.0f}/s  "
          f"processed {run.processed:>9,}  loss {run.loss:>9,} ({run.loss_pct:5.1f} %)  lag {run.lag:5.2f} s  "
          f"throughput {run.throughput:>9,.0f}/s" + (f"  [{', '.join(flags)}]" if flags else ""))
    print(f"        kernel drops {run.kernel_drops:,} (whole machine {run.system_drops:,}); target {run.cores:.2f} "
          f"cores, {mb(run.peak_rss)}; sender {run.sender_cores:.2f} cores"
          + (f"; {'; '.join(extra)}" if extra else ""), flush=True)


@dataclass
class Summary:
    name: str
    label: str
    blast: Run | None = None
    max_ok: float | None = None
    max_ok_capped: bool = False  # passed every step
    max_kept: float | None = None
    loss: dict[int, Run] = field(default_factory=dict)
    throughput: float = 0.0
    kernel_drops: int = 0
    peak_rss: int = 0
    cores_50k: float | None = None
    long: Run | None = None
    note: str = ""
    error: str = ""


def bench_target(target: Target, senders: Senders, cfg: dict[str, Any], keep_lag: float, hosts: int,
                 blast: Run | None = None) -> Summary:
    s = Summary(target.name, target.label)
    cap = cfg["settle_cap"]
    senders.connect(target.port)
    if isinstance(target, ServerTarget):
        measure(target, senders, "warmup", 10_000, hosts)  # first sight of every host and series
        target.runs.clear()
    if blast is not None:
        if blast not in target.runs:
            target.runs.append(blast)
        s.blast = blast
    elif cfg["blast_events"]:
        s.blast = measure(target, senders, "blast", 0, cfg["blast_events"], settle_cap=cap)
    step_runs = []
    for rate in cfg["steps"]:
        run = measure(target, senders, "step", rate, int(rate * cfg["step_seconds"]), settle_cap=cap)
        if run.sender_limited and run.loss == 0:  # a sender starved for a moment on a busy machine: once more
            target.runs.remove(run)
            run = measure(target, senders, "step", rate, int(rate * cfg["step_seconds"]), settle_cap=cap)
        step_runs.append(run)
        if run.loss > 0:
            break
        if run.sender_limited:
            s.note = f"the sender reached {run.send_rate:,.0f}/s of the {rate:,}/s step: stepping stopped there"
            s.max_ok_capped = True
            break
        if cfg["quick"] and run.lag > keep_lag:
            break  # quick mode: stop once the target falls behind (its queues would hide the loss)
    ok = [r for r in step_runs if r.loss == 0 and not r.sender_limited]
    s.max_ok = max((r.rate for r in ok), default=None)
    s.max_ok_capped = s.max_ok_capped or (bool(ok) and len(ok) == len(cfg["steps"]))
    kept = [r for r in ok if r.lag <= keep_lag]
    s.max_kept = max((r.rate for r in kept), default=None)
    for rate in LOSS_RATES:
        s.loss[rate] = measure(target, senders, "loss", rate, int(rate * cfg["loss_seconds"]), settle_cap=cap)
    s.cores_50k = s.loss[50_000].cores
    all_runs = target.runs
    s.throughput = max(r.throughput for r in all_runs)
    s.kernel_drops = sum(r.kernel_drops for r in all_runs)
    s.peak_rss = max(r.peak_rss for r in all_runs)
    return s


# -- the targets ----------------------------------------------------------------------------------------


def sink_body() -> str:
    return """
[backend:sink]
type = sink

[route:bench]
events = *
listeners = main
backends = sink
"""


def agg_body() -> str:
    return """
[backend:sink]
type = sink

[backend:agg]
type = agg

[route:bench]
events = *
listeners = main
backends = sink, agg

[route:agg_output]
events = MonDemand::StatsMsg
backends = sink
"""


def rrd_body(work: Path, daemon: str, rras: str) -> str:
    return f"""
[backend:agg]
type = agg

[backend:rrd]
type = rrd
root = {work / 'rrd'}
daemon = {daemon}
new_series_per_minute = 0   ; the 1000 hosts share 127.0.0.1 (docs/configuration.md, "Cardinality")
series_per_sender = 0
{rras}

[backend:stats_file]
type = stats_file
root = {work / 'stats'}

[route:bench]
events = *
listeners = main
backends = agg, rrd, stats_file

[route:agg_output]
events = MonDemand::StatsMsg
backends = rrd, stats_file
"""


def count_files(root: Path, suffix: str) -> int:
    return sum(1 for p in root.rglob(f"*{suffix}") if p.is_file() and not p.is_symlink()) if root.exists() else 0


def count_lines(root: Path) -> int:
    total = 0
    if not root.exists():
        return 0
    for p in root.rglob("*"):
        if p.is_file():
            with p.open("rb") as f:
                while chunk := f.read(1 << 20):
                    total += chunk.count(b"\n")
    return total


def poison_check(work: Path, monitor: Monitor, senders: Senders, quiet: float, hosts: int,
                 rras: str) -> dict[str, Any]:
    """(e): 20 poison events (4 of each kind) among 2,000 valid ones; per kind: what was lost, any restart."""
    body = f"""
[backend:stats_file]
type = stats_file
root = {work / 'stats'}

[backend:agg]
type = agg

[backend:print]
type = print
format = json
path = {work / 'print.jsonl'}

[backend:rrd]
type = rrd
root = {work / 'rrd'}
new_series_per_minute = 0   ; the hosts share 127.0.0.1 (docs/configuration.md, "Cardinality")
series_per_sender = 0
{rras}

[route:everything]
events = *
listeners = main
backends = stats_file, agg, print, rrd
"""
    names = ["stats_file", "agg", "print", "rrd"]
    # Events may go missing here without any counter saying so: wait longer for the counters to stand still.
    target = ServerTarget(monitor, max(quiet, 5.0), "poison", "(e) poison", work, body, names)
    result: dict[str, Any] = {"kinds": {}}
    try:
        senders.connect(target.port)
        poisons = poison_events()
        valid = valid_datagrams(hosts, max(1, 2000 // hosts + (2000 % hosts > 0)), 50_000_000)[:2000]
        per_kind = len(valid) // len(poisons)
        processed = dict.fromkeys(names, 0)
        for i, (kind, data) in enumerate(poisons.items()):
            chunk = valid[i * per_kind:(i + 1) * per_kind]
            items: list[tuple[int, bytes]] = []
            step = len(chunk) // POISON_PER_KIND
            for k, item in enumerate(chunk):
                items.append(item)
                if k % step == step // 2:  # spread among the valid ones
                    items.append((k, data))
            senders.load("poison", items, only_first=True)
            run = measure(target, senders, "poison", 2_000, len(items), pool="poison", only_first=True)
            restarts = {n: _num(run.per_backend[n]["restarts"]) for n in names}
            for n in names:
                processed[n] += int(_num(run.per_backend[n]["events_processed"]))
            info = result["kinds"][kind] = {
                "sent": run.sent, "lost": run.loss,
                "refused": {n: int(_num(run.per_backend[n]["decode_errors"])) for n in names},
                "failed": {n: int(_num(run.per_backend[n]["failed"])) for n in names},
                "restarts": int(sum(restarts.values())),
                "restarted": [n for n in names if restarts[n] > 0],
                "alive": target.server.alive(),
            }
            refused = ", ".join(f"{n} {c}" for n, c in info["refused"].items() if c) or "none"
            failed = ", ".join(f"{n} {c}" for n, c in info["failed"].items() if c) or "none"
            print(f"    {kind}: lost {info['lost']} of {info['sent']} (refused as undecodable: {refused}; failed in "
                  f"a batch: {failed}); restarts {info['restarts']}"
                  + (f" ({', '.join(info['restarted'])})" if info["restarted"] else ""), flush=True)
        result["sent"] = sum(k["sent"] for k in result["kinds"].values())
        result["lost"] = result["sent"] - min(processed.values())  # the worst backend over the whole check
        result["restarts"] = sum(k["restarts"] for k in result["kinds"].values())
        result["restarts_known"] = any(run.per_backend[n]["restarts"] is not None for n in names)
        result["alive"] = target.server.alive()
        result["poisons"] = POISON_PER_KIND * len(poisons)
        result["print_lines"] = count_lines(work / "print.jsonl") if (work / "print.jsonl").exists() else None
        result["stats_lines"] = count_lines(work / "stats")
        result["server_log_errors"] = sum(1 for line in target.server.log_path.read_text(errors="replace")
                                          .splitlines() if "ERROR" in line or "Traceback" in line)
    finally:
        target.close()
    return result


def overload_check(work: Path, monitor: Monitor, senders: Senders, quiet: float,
                   seconds: tuple[float, float]) -> dict[str, Any]:
    """(f): a journal backend (gzip, CPU-bound) fed 50 KB events at 10x the rate it handles, for long enough to
    overflow a default queue (100,000 events) when `seconds` (shortest, longest) allows."""
    body = f"""
[backend:journal]
type = journal
root = {work / 'journal'}

[route:everything]
events = *
listeners = main
backends = journal
"""
    target = ServerTarget(monitor, quiet, "overload", "(f) overload", work, body, ["journal"],
                          drain_timeout="2s")
    result: dict[str, Any] = {}
    try:
        senders.connect(target.port)
        big = big_events(200)
        result["size"] = sum(map(len, big)) // len(big)
        senders.load("big", [(i, data) for i, data in enumerate(big)])
        cal = measure(target, senders, "calib", 2_000, 400, pool="big")
        capacity = cal.throughput
        rate = 10 * capacity
        duration = min(seconds[1], max(seconds[0], 100_000 / max(rate - capacity, 1) + 10))
        result.update(capacity=capacity, rate=rate, seconds=duration)
        avail = mem_available()
        cap = int(avail * 0.6)
        stop = senders.stop_event
        monitor.limit = ("overload", cap, stop)
        result["cap"] = cap
        drops0 = socket_drops(target.port) or 0
        before = target.snapshot()
        monitor.reset("overload")
        base_rss = monitor.peak("overload")
        sent = senders.run(rate, int(rate * duration), pool="big")
        result["aborted"] = stop.is_set()
        after, _, _, _ = target.settle(0, require_empty=False, timeout=120)
        monitor.limit = None
        kernel = (socket_drops(target.port) or 0) - drops0
        result["peak_rss"] = monitor.peak("overload")
        result["sent"] = int(sent["sent"])
        result["send_rate"] = sent["sent"] / max(sent["seconds"], 1e-9)
        result["kernel_drops"] = kernel
        d = {key: delta(after["backends"], before["backends"], key)["journal"] for key in COUNTERS}
        queued = after["backends"]["journal"].get("queue_depth")
        result.update(processed=d["events_processed"], dropped=d["dropped"], failed=d["failed"],
                      decode_errors=d["decode_errors"], queued=queued, restarts=d["restarts"])
        if None in (d["events_processed"], d["dropped"], queued):
            result["in_handle"] = None
        else:
            accounted = (d["events_processed"] + d["dropped"] + _num(d["failed"]) + _num(d["decode_errors"])
                         + queued + kernel)
            result["in_handle"] = result["sent"] - accounted
        result["alive"] = target.server.alive()
        result["rss_per_queued"] = (result["peak_rss"] - base_rss) / queued if queued else None
        print(f"  overload: sent {result['sent']:,} at {result['send_rate']:,.0f}/s, peak RSS "
              f"{mb(result['peak_rss'])}, processed {d['events_processed']}, queued {queued}, dropped "
              f"{d['dropped']}, kernel drops {kernel:,}", flush=True)
    finally:
        monitor.limit = None
        target.close()
    return result


# -- the run --------------------------------------------------------------------------------------------


def machine_report(exclude: set[int]) -> list[str]:
    load = os.getloadavg()
    lines = [f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min), "
             f"{mem_available() / 1e9:.1f} GB available"]
    busy = top_cpu(exclude, seconds=1.0)
    if busy:
        lines.append("other processes using CPU (over 1 s): " + "; ".join(
            f"{used:.2f} cores pid {pid} {cmd}" for used, pid, cmd in busy))
    else:
        lines.append("other processes using CPU (over 1 s): none above 0.01 cores")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke run (< 2 minutes)")
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--pool", type=int, default=32, help="pre-encoded datagrams per host")
    parser.add_argument("--senders", type=int, default=0, help="sender processes (default: as many as needed, ≤ 2)")
    parser.add_argument("--targets", default="a,b,c,d,e,f", help="which of a,b,c,d,e,f to run")
    parser.add_argument("--keep-lag", type=float, default=1.5,
                        help="a step 'kept up' when the counters stopped moving within this many s of the sender")
    parser.add_argument("--rrd-default-archives", action="store_true",
                        help="(d): the rrd backend's default archives (1.3 MB a file) instead of 1:1440")
    args = parser.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL, quick=args.quick)
    targets = set(args.targets.split(","))
    rras = "" if args.rrd_default_archives else "rras = 1:1440\nstatset_rras = 1:1440\nconsolidation = AVERAGE"

    started = time.time()
    me = os.getpid()
    print(f"bench_pipeline ({'quick' if args.quick else 'full'} mode), {time.strftime('%Y-%m-%d %H:%M:%S')}",
          flush=True)
    machine = machine_report(set(process_tree(me)))
    for line in machine:
        print(line)
    work = Path(tempfile.mkdtemp(prefix="mdbench-"))
    monitor = Monitor()
    monitor.start()
    senders: Senders | None = None
    bare: BareTarget | None = None
    open_targets: list[Any] = []
    summaries: dict[str, Summary] = {}
    extra: dict[str, Any] = {}

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        probe = stats_template(0)
        print(f"events: MonDemand::StatsMsg, 3 counters + 2 gauges, contexts cluster + host, {len(probe.data)} bytes; "
              f"{args.hosts} hosts x {args.pool} pre-encoded = {args.hosts * args.pool:,} distinct datagrams; "
              f"{SOCKETS} source sockets; work dir {work}", flush=True)
        bare = BareTarget(monitor, cfg["quiet"])
        senders = Senders(args.senders or 1, args.hosts, args.pool)
        senders.connect(bare.port)
        top = max(cfg["steps"])
        # The bare loop's unpaced blast is the reference rate and tells whether one sender process is enough.
        print("(a) bare recv_into loop: blast with one sender process" if not args.senders else
              f"(a) bare recv_into loop: blast with {args.senders} sender process(es)", flush=True)
        bare_blast = measure(bare, senders, "blast", 0, cfg["calibrate_events"])
        if not args.senders and bare_blast.send_rate < 1.15 * top:
            print(f"  one sender sends {bare_blast.send_rate:,.0f}/s, under 1.15 x the top step ({top:,}/s): "
                  "trying 2 sender processes", flush=True)
            two = Senders(2, args.hosts, args.pool)
            two.connect(bare.port)
            bare.runs.clear()
            blast2 = measure(bare, two, "blast", 0, cfg["calibrate_events"])
            if blast2.send_rate > 1.1 * bare_blast.send_rate:
                senders.close()
                senders, bare_blast = two, blast2
            else:
                print("  2 senders are not faster on this machine: keeping one", flush=True)
                two.close()
                bare.runs.clear()
                bare.runs.append(bare_blast)
        print(f"senders: {senders.n} process(es); patching {'one struct call' if senders.fast else 'per field'} "
              f"per datagram; source ports {senders.info[0]['ports'][:3]}...", flush=True)

        def run_target(key: str, make: Callable[[], Target]) -> None:
            if key not in targets:
                return
            print(f"\n{key}: starting at +{time.time() - started:.0f} s", flush=True)
            target = None
            try:
                target = make()
                open_targets.append(target)
                print(f"{target.label}", flush=True)
                summaries[target.name] = bench_target(target, senders, cfg, args.keep_lag, args.hosts,
                                                      bare_blast if target is bare else None)
                if key == "d":
                    extra_d(target)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                traceback.print_exc()
                name, label = LABELS[key]
                summaries[name] = Summary(name, label, error=f"{type(exc).__name__}: {exc}"[:200])
            finally:
                if target is not None and target is not bare:
                    target.close()
                    open_targets.remove(target)

        def extra_d(target: Target) -> None:
            long_run = measure(target, senders, "long", LONG_RATE, int(LONG_RATE * cfg["long_seconds"]))
            summaries["rrd"].long = long_run
            work_d = target.work
            extra["rrd_files"] = count_files(work_d / "rrd", ".rrd")
            extra["stats_lines"] = count_lines(work_d / "stats")
            extra["rrd_processed"] = sum(int(_num(r.per_backend.get("rrd", {}).get("events_processed")))
                                         for r in target.runs)
            extra["rrd_rejected"] = sum(int(_num(r.per_backend.get("rrd", {}).get("backend.rejected")))
                                        for r in target.runs)
            st = target.server.status().get("backends", {})
            extra["rrd_counters"] = {k: v for k, v in st.get("rrd", {}).items()
                                     if k in ("backend.created", "backend.written", "backend.rejected",
                                              "backend.dropped", "backend.daemon_errors", "backend.series")}
            extra["stats_file_processed"] = int(_num(st.get("stats_file", {}).get("events_processed")))
            extra["rrdcached_cpu"] = cpu_seconds([target.rrdcached.pid])
            print(f"  rrd files {extra['rrd_files']:,}; stats_file lines {extra['stats_lines']:,} "
                  f"(5 per event processed by stats_file: {extra['stats_file_processed']:,}); rrd "
                  f"{extra['rrd_counters']}; rrdcached CPU {extra['rrdcached_cpu']:.1f} s", flush=True)

        def make_d() -> Target:
            work_d = work / "d"
            work_d.mkdir()
            daemon = Rrdcached(work_d, work_d / "rrd")
            try:
                target = ServerTarget(monitor, cfg["quiet"], "rrd", "(d) server -> agg + rrd (rrdcached) + stats_file",
                                      work_d, rrd_body(work_d, daemon.address, rras), ["agg", "rrd", "stats_file"],
                                      storage=("rrd", "stats_file"))
            except BaseException:
                daemon.stop()
                raise
            target.rrdcached = daemon
            close = target.close

            def close_both() -> None:
                try:
                    close()
                finally:
                    daemon.stop()

            target.close = close_both
            return target

        if "a" in targets:
            run_target("a", lambda: bare)
        bare_runs = list(bare.runs)
        bare.close()
        bare = None
        run_target("b", lambda: ServerTarget(monitor, cfg["quiet"], "sink", "(b) server -> sink", work / "b",
                                             sink_body(), ["sink"]))
        run_target("c", lambda: ServerTarget(monitor, cfg["quiet"], "agg", "(c) server -> sink + agg", work / "c",
                                             agg_body(), ["sink", "agg"], storage=("sink",)))
        run_target("d", make_d)
        if "e" in targets:
            print(f"\ne: poison events, at +{time.time() - started:.0f} s", flush=True)
            try:
                (work / "e").mkdir()
                extra["poison"] = poison_check(work / "e", monitor, senders, cfg["quiet"], args.hosts, rras)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                traceback.print_exc()
                extra["poison"] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        if "f" in targets:
            print(f"\nf: overload memory, at +{time.time() - started:.0f} s", flush=True)
            try:
                (work / "f").mkdir()
                extra["overload"] = overload_check(work / "f", monitor, senders, cfg["quiet"],
                                                   cfg["overload_seconds"])
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                traceback.print_exc()
                extra["overload"] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        report(summaries, extra, cfg, args, machine, time.time() - started,
               max(r.throughput for r in bare_runs))
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything this benchmark started", file=sys.stderr, flush=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with contextlib.suppress(BaseException):
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the clean-up must not be interrupted half-way
        for target in open_targets:
            if target is not bare:
                with contextlib.suppress(Exception):
                    target.close()
        if bare is not None:
            with contextlib.suppress(Exception):
                bare.close()
        if senders is not None:
            with contextlib.suppress(Exception):
                senders.close()
        monitor.stop()
        shutil.rmtree(work, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)


# -- the report -----------------------------------------------------------------------------------------


def report(summaries: dict[str, Summary], extra: dict[str, Any], cfg: dict[str, Any], args: argparse.Namespace,
           machine: list[str], elapsed: float, ref: float | None) -> None:
    load = os.getloadavg()
    mode = "quick" if args.quick else "full"
    print(f"\n=== summary ({mode} mode, {elapsed / 60:.1f} min; load average now {load[0]:.2f}) ===")

    def rate_x(value: float | None, prefix: str = "") -> str:
        if value is None:
            return f"< {cfg['steps'][0]:,}/s"
        return f"{prefix}{value:,.0f}/s" + (f" ({value / ref:.2f}x)" if ref else "")

    def loss_text(run: Run | None) -> str:
        if run is None:
            return "n/a"
        text = f"{'≈ ' if run.estimated else ''}{run.loss_pct:.1f} % ({run.loss:,})"
        return text + (f" † sender {run.send_rate / 1000:,.0f}k/s" if run.sender_limited else "")

    keys = [k for k in ("bare", "sink", "agg", "rrd") if k in summaries]
    cols = {k: summaries[k] for k in keys}
    figures: list[tuple[str, Callable[[Summary], str]]] = [
        ("max paced rate with 0 loss", lambda s: rate_x(s.max_ok, "≥ " if s.max_ok_capped else "")),
        (f"max rate kept up (0 loss, lag ≤ {args.keep_lag:g} s)", lambda s: rate_x(s.max_kept)),
        ("max throughput" + (" (unpaced blast)" if not args.quick else " (best run)"),
         lambda s: rate_x(s.blast.throughput if s.blast and not args.quick else s.throughput)),
        *[(f"loss at paced {r // 1000}k/s", lambda s, r=r: loss_text(s.loss.get(r))) for r in LOSS_RATES],
        ("kernel drops on its socket, all runs", lambda s: f"{s.kernel_drops:,}"),
        ("peak RSS (process + children)", lambda s: mb(s.peak_rss)),
        ("CPU at paced 50k/s", lambda s: "n/a" if s.cores_50k is None else f"{s.cores_50k:.2f} cores"),
    ]
    table = [["figure", *(cols[k].label for k in keys)], ["---"] * (len(keys) + 1)]
    for name, get in figures:
        table.append([name, *("failed: " + cols[k].error if cols[k].error else get(cols[k]) for k in keys)])
    blank = [""] * max(0, len(keys) - 1)

    rrd = summaries.get("rrd")
    if rrd and rrd.long:
        r = rrd.long
        table.append([f"(d) {cfg['long_seconds']:.0f} s paced at {LONG_RATE // 1000}k/s",
                      f"loss {loss_text(r)}, kernel drops {r.kernel_drops:,}, throughput {rate_x(r.throughput)}, "
                      f"{r.cores:.2f} cores, {mb(r.peak_rss)}; stored {extra.get('rrd_files', 0):,} RRD files, "
                      f"{extra.get('stats_lines', 0):,} stats_file lines", *blank])
    p = extra.get("poison")
    if p:
        if "error" in p:
            text = f"failed: {p['error']}"
        else:
            ok = p["lost"] <= p["poisons"] and p["restarts"] == 0 and p["alive"]
            culprits = [f"{kind}: lost {k['lost']}" + (f", restarted {', '.join(k['restarted'])}"
                                                       if k["restarted"] else "")
                        for kind, k in p["kinds"].items() if k["lost"] or k["restarts"]]
            restarts = p["restarts"] if p.get("restarts_known", True) else "n/a"
            text = (f"lost {p['lost']} (target ≤ {p['poisons']}), backend restarts {restarts} (target 0), "
                    f"server {'alive' if p['alive'] else 'DEAD'}; target {'met' if ok else 'NOT met'}"
                    + (f" ({'; '.join(culprits)})" if culprits else ""))
        table.append([f"(e) poison: {POISON_PER_KIND * 5} among 2,000 valid", text, *blank])
    o = extra.get("overload")
    if o:
        if "error" in o:
            text = f"failed: {o['error']}"
        else:
            in_handle = o.get("in_handle")
            if in_handle is None:
                account = "drop accounting n/a (counters missing)"
            elif 0 <= in_handle <= BATCH_DEFAULT:
                account = (f"sent {o['sent']:,} = processed {o['processed']:,} + queued {o['queued']:,} + dropped "
                           f"{o['dropped']:,} + kernel {o['kernel_drops']:,} + {in_handle:,} in the batch being "
                           "handled: every drop counted")
            else:
                account = (f"NOT every drop counted: sent {o['sent']:,}, processed {o['processed']:,}, queued "
                           f"{o['queued']}, dropped {o['dropped']}, kernel {o['kernel_drops']:,}: {in_handle:,} "
                           "unaccounted")
            per_event = o.get("rss_per_queued")
            text = (f"journal handles {o['capacity']:,.0f}/s of {o['size'] / 1000:.0f} KB events; fed "
                    f"{o['send_rate']:,.0f}/s for {o['seconds']:.0f} s: peak RSS {mb(o['peak_rss'])}"
                    + (f" (≈ {per_event / 1000:.0f} KB per queued event)" if per_event else "")
                    + (f", ABORTED at the {mb(o['cap'])} safety cap" if o.get("aborted") else "") + f"; {account}")
        table.append(["(f) overload memory, 10x a slow backend", text, *blank])

    notes = [
        f"x = ratio to the bare loop's rate in the same run ({ref:,.0f} events/s: its best throughput, blast or "
        "paced)" if ref else
        "no bare-loop reference in this run",
        "loss = sent - events_processed of the worst backend once every event is accounted for or the counters "
        "stop; a backend queue (queue_size 100000) absorbs overload in short runs, hence the 'kept up' row",
        "† the sender could not reach the asked rate (it shares the 2 cores with the target)",
        "kernel drops: the target socket's drops column in /proc/net/udp; the per-run lines also give the "
        "machine's Udp RcvbufErrors, which include other programs",
    ]
    if "rrd" in summaries:
        notes.append(f"(d): {args.hosts} hosts send many reports per second each; RRD keeps one sample per series "
                     "and second, the rest are counted as rejected"
                     + ("" if args.rrd_default_archives else "; RRD archives 1:1440 AVERAGE (--rrd-default-archives)"))
    if "overload" in extra:
        notes.append("(f): journal = gzip of every raw event at its default level, a real backend that is CPU-bound "
                     "on 50 KB events (print to /dev/full would fail every write, not be slow)")
    if args.quick:
        notes.append("quick mode: 1 s steps stopped once the target fell behind, 0.5 s loss runs, settling cut at "
                     f"{cfg['settle_cap']:.0f} s (≈: queued events counted as processed): a smoke test")
    notes += [f"{s.name}: {s.note}" for s in summaries.values() if s.note]
    print("\n".join(machine))
    print("notes:\n" + "\n".join(f"- {n}" for n in notes))
    print()
    for row in table:
        print("| " + " | ".join(c.replace("|", "/") for c in row) + " |")


if __name__ == "__main__":
    sys.exit(main())
