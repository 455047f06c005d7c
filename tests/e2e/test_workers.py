"""End to end: backends in worker processes, the link between them, and the kernel's drops in /status."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from mondemand.lwes import Event, LwesType, encode
from tests.e2e.harness import ServerProcess, free_port, send_udp, wait_for


@pytest.fixture
def run_server(tmp_path):
    servers: list[ServerProcess] = []

    def start(config: str, where: Path | None = None) -> ServerProcess:
        where = where or tmp_path
        where.mkdir(parents=True, exist_ok=True)
        server = ServerProcess(where, config)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def seq_event(i: int, name: str = "Test::Seq") -> bytes:
    return encode(Event(name).set("seq", LwesType.INT64, i))


def listener(port: int, extra: str = "") -> str:
    return f"[listener:main]\ntype = lwes-udp\naddress = 127.0.0.1\nport = {port}\n{extra}\n"


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def niceness(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[16])


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_each_backend_runs_in_its_own_worker_unless_told_otherwise(tmp_path, run_server):
    port = free_port()
    server = run_server(listener(port) + f"""
[backend:a]
type = print
path = {tmp_path}/a.txt
[backend:b]
type = print
path = {tmp_path}/b.txt
process = shared
[backend:c]
type = print
path = {tmp_path}/c.txt
process = shared
[backend:d]
type = print
path = {tmp_path}/d.txt
process = main
[backend:s]
type = sink
[route:all]
events = *
backends = a, b, c, d, s
""")
    for i in range(50):
        send_udp(seq_event(i), port)
    wait_for(lambda: all(server.status()["backends"][n]["events_processed"] == 50 for n in "abcds"),
             what="every backend to process 50 events")
    status = server.status()
    workers = status["workers"]
    assert sorted(workers) == ["a", "shared"]
    assert workers["shared"]["backends"] == ["b", "c"]
    pids = {name: w["pid"] for name, w in workers.items()}
    assert len(set(pids.values())) == 2 and server.proc.pid not in pids.values()
    assert all(parent_of(pid) == server.proc.pid for pid in pids.values())
    assert all(niceness(pid) == niceness(server.proc.pid) + 5 for pid in pids.values())  # the socket goes first
    assert status["backends"]["b"]["worker_pid"] == status["backends"]["c"]["worker_pid"] == pids["shared"]
    assert "worker_pid" not in status["backends"]["d"] and "worker_pid" not in status["backends"]["s"]
    assert server.stop() == 0
    for name in "abcd":
        assert (tmp_path / f"{name}.txt").read_text().count("Test::Seq") == 50


def test_workers_off_keeps_everything_in_one_process(tmp_path, run_server):
    port = free_port()
    server = run_server("[server]\nworkers = false\n" + listener(port) + f"""
[backend:a]
type = print
path = {tmp_path}/a.txt
[route:all]
events = *
backends = a
""")
    send_udp(seq_event(1), port)
    wait_for(lambda: server.status()["backends"]["a"]["events_processed"] == 1, what="the event")
    assert server.status()["workers"] == {}


def test_a_backend_failing_to_start_in_its_worker_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = listener(free_port()) + f"""
[backend:files]
type = stats_file
root = {blocker}/below
[route:all]
events = *
backends = files
"""
    with pytest.raises(AssertionError) as failure:
        ServerProcess(tmp_path, config)
    assert "[backend:files] failed to start" in str(failure.value)


def test_killing_the_server_with_sigkill_takes_its_workers_along(tmp_path, run_server):
    port = free_port()
    server = run_server(listener(port) + "[backend:a]\ntype = print\npath = /dev/null\n"
                        "[route:all]\nevents = *\nbackends = a\n")
    pid = server.status()["workers"]["a"]["pid"]
    assert alive(pid)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    wait_for(lambda: not alive(pid), what="the worker to die with the server")


def test_a_dead_worker_costs_only_its_own_backends(tmp_path, run_server):
    port = free_port()
    server = run_server(listener(port) + f"""
[backend:doomed]
type = print
path = {tmp_path}/doomed.txt
[backend:fine]
type = print
path = {tmp_path}/fine.txt
[route:all]
events = *
backends = doomed, fine
""")
    send_udp(seq_event(0), port)
    wait_for(lambda: server.status()["backends"]["doomed"]["events_processed"] == 1, what="the first event")
    os.kill(server.status()["workers"]["doomed"]["pid"], signal.SIGKILL)
    wait_for(lambda: not server.status()["workers"]["doomed"]["running"], what="the worker to be seen dead")
    for i in range(1, 21):
        send_udp(seq_event(i), port)
    wait_for(lambda: server.status()["backends"]["fine"]["events_processed"] == 21, what="the other backend")
    status = server.status()["backends"]["doomed"]
    assert status["link_dropped"] == 20 and status["dropped"] >= 20
    assert "ended unexpectedly" in server.log()
    assert server.stop() == 0


def test_the_link_to_a_stuck_worker_is_bounded_and_counts_every_drop(tmp_path, run_server):
    """A worker that reads nothing (stopped) fills the pipe, then the main process's queue; the rest is counted."""
    port = free_port()
    server = run_server("[server]\nworker_queue_bytes = 256K\n" + listener(port) + f"""
[backend:slow]
type = print
path = {tmp_path}/slow.txt
[backend:fast]
type = sink
[route:all]
events = *
backends = slow, fast
""")
    pid = server.status()["workers"]["slow"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        big = encode(Event("Test::Big").set("blob", LwesType.STRING, "x" * 20000))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(400):  # 8 MB: far more than the pipe (1 MiB) and the queue (256 KiB) hold
                sock.sendto(big, ("127.0.0.1", port))
                time.sleep(0.0005)
        wait_for(lambda: server.status()["backends"]["fast"]["events_processed"] == 400, what="the sink")
        status = server.status()
        assert status["backends"]["slow"]["link_dropped"] > 200
        assert status["workers"]["slow"]["queued_bytes"] <= 256 * 1024
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: (lambda b: b["events_processed"] + b["link_dropped"] == 400)(server.status()["backends"]["slow"]),
             what="every event written or counted")


def test_kernel_drops_below_the_server_show_in_status(tmp_path, run_server):
    port = free_port()
    server = run_server(listener(port, "receive_buffer = 64K") + "[backend:s]\ntype = sink\n"
                        "[route:all]\nevents = *\nbackends = s\n")
    assert server.status()["listeners"]["main"]["kernel_drops"] == 0
    server.signal(signal.SIGSTOP)  # nobody reads: the socket's buffer fills and the kernel drops the rest
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(3000):
                sock.sendto(seq_event(i), ("127.0.0.1", port))
    finally:
        server.signal(signal.SIGCONT)
    wait_for(lambda: server.status()["listeners"]["main"]["kernel_drops"] > 0, what="kernel drops reported")
    time.sleep(0.5)
    status = server.status()
    drops = status["listeners"]["main"]["kernel_drops"]
    assert status["router"]["kernel_drops"] >= drops
    assert status["listeners"]["main"]["received"] + drops == 3000
