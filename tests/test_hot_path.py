"""The per-event hot path both ways: compiled (mondemand._speedups) and pure Python, giving the same results.

The link's batch payload from either encoder decodes to the same events in
either decoder; the lwes-udp listener's two drains build the same RawEvents
from a real socket; a server pipeline through a worker carries sender,
listener and tenant across the link with and without the compiled module.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mondemand.listeners.udp import LwesUdpListener

from mondemand import envelope, ipc
from mondemand.envelope import RawEvent
from mondemand.lwes import Event, LwesType, encode
from mondemand.plugin_api import ServerContext
from tests.e2e.harness import ServerProcess, free_port, wait_for

# The compiled module itself, whether or not MONDEMAND_PURE_PYTHON keeps the server off it in this run.
COMPILED = importlib.import_module("mondemand._speedups")
COMPILED.setup(RawEvent, envelope._UNSET)


def fields(raw: RawEvent) -> tuple:
    return (raw.data, raw.receipt_ms, raw.sender_ip, raw.sender_port, raw.listener, raw.name, raw.tenant)


def test_the_compiled_module_is_built_and_chosen_unless_pure_python_is_asked_for() -> None:
    # make setup builds it (the import above); a machine without a compiler runs the pure-Python path
    pure = os.environ.get("MONDEMAND_PURE_PYTHON", "") not in ("", "0")
    assert envelope.SPEEDUPS is (None if pure else COMPILED)


text = st.text(max_size=12)
events = st.lists(
    st.tuples(st.binary(max_size=300), st.integers(-(2**63), 2**63 - 1),
              st.sampled_from(["127.0.0.1", "10.0.0.7", "::1"]), st.integers(0, 65535),
              st.sampled_from(["main", "udp2", "internal", "ünï"]), text),
    max_size=40)


@settings(max_examples=150, deadline=None)
@given(name=st.text(min_size=1, max_size=20), rows=events)
def test_both_encoders_write_the_same_bytes_and_both_decoders_read_them(name: str, rows: list) -> None:
    batch = [RawEvent(data, ms, ip, port, listener, name, tenant) for data, ms, ip, port, listener, tenant in rows]
    payload = ipc.encode_batch_py(name, batch)
    assert COMPILED.encode_batch(name, batch) == payload
    want = [fields(raw) for raw in batch]
    assert [fields(raw) for raw in ipc.decode_batch_py(payload)] == want
    decoded = COMPILED.decode_batch(payload, ipc.FrameError)
    assert [fields(raw) for raw in decoded] == want
    assert all(raw.stats is None or raw.name == "MonDemand::StatsMsg" for raw in decoded)


@pytest.mark.parametrize("decode", [ipc.decode_batch_py, lambda p: COMPILED.decode_batch(p, ipc.FrameError)],
                         ids=["python", "compiled"])
def test_a_damaged_batch_payload_is_a_frame_error_never_a_crash(decode) -> None:
    batch = [RawEvent(b"\x04Te::X\x00\x00" + bytes([i]), 1000 + i, "127.0.0.1", 4000 + i, "main", "Te::X")
             for i in range(5)]
    payload = ipc.encode_batch_py("Te::X", batch)
    for cut in range(len(payload)):
        with pytest.raises(ipc.FrameError):
            decode(payload[:cut])
    with pytest.raises(ipc.FrameError):
        decode(payload + b"x")
    bad_index = bytearray(payload)
    at = payload.index(batch[0].data) - 5 * 26 + 12  # the first record's ip index
    bad_index[at:at + 4] = (99).to_bytes(4, "little")
    with pytest.raises(ipc.FrameError):
        decode(bytes(bad_index))


def test_an_event_that_cannot_be_encoded_says_so_in_both_encoders() -> None:
    bad = [RawEvent(b"\x01X\x00\x00", 1, "127.0.0.1", 70000, "main", "X")]  # a port out of range
    with pytest.raises(ValueError):
        ipc.encode_batch_py("X", bad)
    with pytest.raises(ValueError):
        COMPILED.encode_batch("X", bad)


def _datagrams() -> list[bytes]:
    out = []
    for i in range(300):
        name = ("MonDemand::StatsMsg", "Test::Other", f"Test::New{i // 100}")[i % 3]
        out.append(encode(Event(name).set("seq", LwesType.INT64, i).set("host", LwesType.STRING, f"h{i % 17}")))
    out[10] = b""  # malformed: empty
    out[20] = b"\x40short"  # malformed: the name runs past the end
    out[30] = b"\x05ab"  # malformed: cut inside the name
    return out


def _drain_all(compiled: bool, monkeypatch) -> tuple[list[tuple], int, int, int]:
    monkeypatch.setattr(envelope, "SPEEDUPS", COMPILED if compiled else None)
    envelope._NAMES.clear()
    lst = LwesUdpListener("udp", {"address": "127.0.0.1", "port": 0}, ServerContext(config_dir=Path.cwd()))
    lst.tenant = "acme"
    rx = lst._open_socket()
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    got: list[RawEvent] = []
    try:
        for s in senders:
            s.bind(("127.0.0.1", 0))
            s.connect(rx.getsockname())
        data = _datagrams()
        for i, d in enumerate(data):
            senders[i % 3].send(d)
        time.sleep(0.05)
        while lst.received < len(data):
            lst._drain(rx, got.extend)
        ports = {s.getsockname()[1]: k for k, s in enumerate(senders)}
    finally:
        rx.close()
        for s in senders:
            s.close()
    rows = sorted((raw.data, raw.sender_ip, ports[raw.sender_port], raw.listener, raw.name, raw.tenant)
                  for raw in got)
    now = time.time() * 1000
    assert all(now - 5000 < raw.receipt_ms <= now for raw in got)
    return rows, lst.received, lst.malformed, lst.bytes


def test_both_drains_build_the_same_events_and_counters(monkeypatch) -> None:
    compiled = _drain_all(True, monkeypatch)
    python = _drain_all(False, monkeypatch)
    assert compiled == python
    rows, received, malformed, _ = compiled
    assert (received, malformed, len(rows)) == (300, 3, 297)
    assert {r[4] for r in rows} == {"MonDemand::StatsMsg", "Test::Other", "Test::New0", "Test::New1", "Test::New2"}
    assert {r[1] for r in rows} == {"127.0.0.1"} and {r[5] for r in rows} == {"acme"}


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_both_drains_give_ipv4_mapped_senders_as_plain_ipv4(monkeypatch, compiled: bool) -> None:
    monkeypatch.setattr(envelope, "SPEEDUPS", COMPILED if compiled else None)
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.close()
    except OSError:
        pytest.fail("the test machine has no IPv6 sockets")
    lst = LwesUdpListener("udp6", {"address": "::", "port": 0}, ServerContext(config_dir=Path.cwd()))
    rx = lst._open_socket()
    got: list[RawEvent] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(encode(Event("Test::V6")), ("127.0.0.1", rx.getsockname()[1]))
        time.sleep(0.05)
        lst._drain(rx, got.extend)
        rx.close()
        assert [(raw.sender_ip, raw.sender_port, raw.name) for raw in got] == [
            ("127.0.0.1", tx.getsockname()[1], "Test::V6")]


@pytest.mark.parametrize("pure", ["0", "1"], ids=["compiled", "python"])
def test_a_worker_gets_the_events_their_sender_and_listener_across_the_link(tmp_path, monkeypatch, pure) -> None:
    monkeypatch.setenv("MONDEMAND_PURE_PYTHON", pure)
    port = free_port()
    out = tmp_path / "events.txt"
    server = ServerProcess(tmp_path, f"""
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {port}
[backend:p]
type = print
path = {out}
format = json
[route:all]
events = *
backends = p
""")
    try:
        assert server.status()["hot_path"] == ("python" if pure == "1" else "compiled")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.bind(("127.0.0.1", 0))
            for i in range(50):
                tx.sendto(encode(Event("Test::Seq").set("seq", LwesType.INT64, i)), ("127.0.0.1", port))
            sender_port = tx.getsockname()[1]
        wait_for(lambda: server.status()["backends"]["p"]["events_processed"] == 50, timeout=10,
                 what="50 events through the worker")
    finally:
        server.stop()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(line["attrs"]["seq"] for line in lines) == list(range(50))
    assert {(line["name"], line["sender"], line["listener"]) for line in lines} == {
        ("Test::Seq", f"127.0.0.1:{sender_port}", "main")}


def test_an_event_the_link_cannot_carry_costs_only_itself() -> None:
    from mondemand.backends.sink import SinkBackend

    from mondemand.workers import BackendSpec, WorkerProcess, WorkerSettings

    worker = WorkerProcess("w", [BackendSpec("s", SinkBackend, {})], WorkerSettings("h", Path.cwd(), {}),
                           lambda raw: None)
    target = worker.target("s")
    batch = [RawEvent(b"\x01X\x00\x00", 1, "127.0.0.1", port, "main", "X") for port in (1, 2, 70000, 3)]
    assert target.offer_many(batch) == 3
    assert worker.link_dropped == [1]
    [(frame, mask, count)] = list(worker._queue)
    assert (mask, count) == (1, 3)
    assert [raw.sender_port for raw in ipc.decode_batch(frame[ipc.HEADER.size:])] == [1, 2, 3]


def test_the_frame_reader_reassembles_frames_however_the_pipe_cuts_them() -> None:
    import random
    import threading

    batches = [[RawEvent(bytes([i % 251]) * (1 + i * 37 % 3000), 1000 + i, "127.0.0.1", i, "main", "T::X")
                for i in range(k, k + 1 + k % 7)] for k in range(60)]
    frames = [ipc.HEADER.pack(len(p), 1) + p for p in (ipc.encode_batch("T::X", b) for b in batches)]
    frames.insert(30, ipc.encode_message(("poll", 7)))
    stream = b"".join(frames)
    r, w = os.pipe()

    def write() -> None:
        rng = random.Random(5)
        pos = 0
        while pos < len(stream):
            n = rng.choice((1, 3, 8, 100, 5000, 70000))
            os.write(w, stream[pos:pos + n])
            pos += n
        os.close(w)

    writer = threading.Thread(target=write)
    writer.start()
    reader = ipc.FrameReader(r)
    got = []
    while (frame := reader.read()) is not None:
        got.append(frame)
    writer.join()
    reader.close()
    assert got[30] == (0, ("poll", 7))
    del got[30]
    assert [[fields(raw) for raw in message[1]] for _mask, message in got] == [
        [fields(raw) for raw in b] for b in batches]
    assert reader.buffered == 0


def test_a_frame_cut_short_by_a_dying_writer_is_a_frame_error() -> None:

    payload = ipc.encode_batch("T::X", [RawEvent(b"abc", 1, "127.0.0.1", 2, "main", "T::X")])
    for cut in (3, ipc.HEADER.size + 2):
        r, w = os.pipe()
        os.write(w, (ipc.HEADER.pack(len(payload), 1) + payload)[:cut])
        os.close(w)
        reader = ipc.FrameReader(r)
        with pytest.raises(ipc.FrameError):
            reader.read()
        reader.close()


def test_the_link_writes_straight_into_the_pipe_and_queues_only_what_it_cannot_take() -> None:
    import threading

    from mondemand.backends.sink import SinkBackend

    from mondemand.ipc import FrameReader, FrameWriter
    from mondemand.workers import BackendSpec, WorkerProcess, WorkerSettings

    worker = WorkerProcess("w", [BackendSpec("s", SinkBackend, {})], WorkerSettings("h", Path.cwd(), {}),
                           lambda raw: None, link_bytes=64 << 20)
    r, w = os.pipe()
    os.set_blocking(w, False)
    worker._writer = FrameWriter(w)
    target = worker.target("s")
    batches = [[RawEvent(bytes(1000), i * 100 + k, "127.0.0.1", k, "main", "T::X") for k in range(50)]
               for i in range(200)]  # 10 MB: far more than a pipe holds
    assert target.offer_many(batches[0]) == 50
    assert not worker._queue  # the first batch went straight into the empty pipe
    for batch in batches[1:]:
        assert target.offer_many(batch) == 50
    assert worker._queue and worker.queued_bytes > 0  # the rest waits for the writer thread, in order
    thread = threading.Thread(target=worker._write_loop, daemon=True)
    thread.start()
    reader = FrameReader(r)
    got = []
    while len(got) < len(batches):
        frame = reader.read()
        assert frame is not None
        got.append([raw.receipt_ms for raw in frame[1][1]])
    assert got == [[raw.receipt_ms for raw in b] for b in batches]
    with worker._lock:  # the stop marker, as WorkerProcess.stop queues it: ("stop",) is sent, the pipe closed
        worker._queue.append((b"", 0, -1))
        worker._ready.notify()
    thread.join(5)
    assert reader.read() == (0, ("stop",))
    assert worker.queued_bytes == 0 and worker.link_dropped == [0]
    reader.close()


def test_stopping_a_worker_that_was_never_forked_kills_nothing() -> None:
    from mondemand.backends.sink import SinkBackend

    from mondemand.workers import BackendSpec, WorkerProcess, WorkerSettings

    worker = WorkerProcess("w", [BackendSpec("s", SinkBackend, {})], WorkerSettings("h", Path.cwd(), {}),
                           lambda raw: None)
    worker.stop(timeout=0.05)  # pid 0: a kill(0, SIGKILL) here would end this test process
    worker.kill()
    assert worker.pid == 0


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_a_drain_of_big_datagrams_stops_near_max_burst_bytes(monkeypatch, compiled: bool) -> None:
    """A drain is one batch held whole: 150 datagrams of 50 KB (7.5 MB) waiting take two drains or more."""
    from mondemand.listeners import udp

    monkeypatch.setattr(envelope, "SPEEDUPS", COMPILED if compiled else None)
    lst = LwesUdpListener("big", {"address": "127.0.0.1", "port": 0, "receive_buffer": 64 << 20},
                          ServerContext(config_dir=Path.cwd()))
    rx = lst._open_socket()
    batches: list[list[RawEvent]] = []
    data = [encode(Event("Test::Big").set("blob", LwesType.STRING, f"{i:05d}" + "x" * 49_995)) for i in range(150)]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for d in data:
                tx.sendto(d, rx.getsockname())
        time.sleep(0.05)
        while lst.received < len(data) and len(batches) < 50:
            lst._drain(rx, batches.append)
    finally:
        rx.close()
    assert sorted(raw.data for batch in batches for raw in batch) == sorted(data)
    slack = 64 * len(data[0]) if compiled else len(data[0])  # one recvmmsg call, or one datagram
    assert len(batches) >= 2
    assert all(sum(len(raw.data) for raw in batch) <= udp.MAX_BURST_BYTES + slack for batch in batches)


def test_a_batch_bigger_than_half_the_worker_link_goes_in_parts_not_dropped_whole() -> None:
    from mondemand.workers import BackendSpec, WorkerProcess, WorkerSettings

    worker = WorkerProcess("w", [BackendSpec("sink", object, {})], WorkerSettings("h", Path.cwd(), {}),
                           inject=lambda raw: None, link_bytes=1 << 20)  # not forked: frames wait in its queue
    target = worker.target("sink")
    batch = [RawEvent(encode(Event("Te::Big").set("b", LwesType.STRING, "y" * 50_000)), 1, "127.0.0.1", 1, "main",
                      "Te::Big") for _ in range(40)]  # 2 MB: over the whole link
    queued = target.offer_many(batch)
    assert 0 < queued < 40 and queued + worker.link_dropped[0] == 40
    frames = list(worker._queue)
    assert sum(count for _, _, count in frames) == queued
    assert all(len(frame) <= (1 << 20) // 2 + ipc.HEADER.size for frame, _, _ in frames)
    assert worker.queued_bytes <= 1 << 20


def test_a_module_built_from_another_version_of_the_source_is_not_used(monkeypatch) -> None:
    monkeypatch.delenv("MONDEMAND_PURE_PYTHON", raising=False)
    monkeypatch.setattr(COMPILED, "API", envelope.SPEEDUPS_API - 1)
    try:
        assert envelope._load_speedups() is None
        assert "make setup" in envelope.SPEEDUPS_MISSING
    finally:
        monkeypatch.undo()
        envelope._load_speedups()  # what this process had: SPEEDUPS_MISSING as it was
