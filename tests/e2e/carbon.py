"""Real Graphite daemons for the graphite backend's tests: carbon-cache (Debian graphite-carbon) and carbon-c-relay.

Each runs in the foreground on loopback with configuration generated in a
temporary directory; no system service is used or needed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import whisper

from tests.e2e.harness import free_port, wait_for


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class CarbonCache:
    """One carbon-cache instance (`--instance NAME --nodaemon`), its whisper files under `root/whisper`."""

    def __init__(self, root: Path, instance: str = "a") -> None:
        self.binary = shutil.which("carbon-cache")
        assert self.binary, "carbon-cache is needed (Debian package graphite-carbon; make setup installs it)"
        self.root, self.instance = root, instance
        root.mkdir(parents=True, exist_ok=True)
        self.line_port, self.pickle_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
        self.whisper_dir = root / "whisper"
        (root / "storage-schemas.conf").write_text("[all]\npattern = .*\nretentions = 60s:2d\n")
        (root / "storage-aggregation.conf").write_text("[all]\npattern = .*\nxFilesFactor = 0\n"
                                                       "aggregationMethod = sum\n")
        (root / "carbon.conf").write_text(f"""[cache]
STORAGE_DIR = {root}
LOCAL_DATA_DIR = {self.whisper_dir}
WHITELISTS_DIR = {root / "lists"}
LOG_DIR = {root / "log"}
PID_DIR = {root}
ENABLE_LOGROTATION = False
USER =
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = inf
MAX_CREATES_PER_MINUTE = inf
CACHE_WRITE_STRATEGY = sorted
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {self.line_port}
ENABLE_UDP_LISTENER = False
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {self.pickle_port}
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = {free_port(socket.SOCK_STREAM)}
CARBON_METRIC_PREFIX = carbon
CARBON_METRIC_INTERVAL = 0
LOG_UPDATES = False
LOG_CREATES = False
WHISPER_AUTOFLUSH = True
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start and wait until both receivers accept connections."""
        self.log_path = self.root / f"cache-{self.instance}.out"
        pidfile = self.root / f"carbon-cache-{self.instance}.pid"
        pidfile.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [self.binary, f"--config={self.root / 'carbon.conf'}", f"--instance={self.instance}", "--nodaemon",
             f"--pidfile={pidfile}", f"--logdir={self.root / 'log'}", "start"],
            stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT,
            env={**os.environ, "GRAPHITE_ROOT": str(self.root), "GRAPHITE_CONF_DIR": str(self.root)},
        )  # fmt: skip

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"carbon-cache exited:\n{self.log_path.read_text()[-3000:]}")
            return _listening(self.line_port) and _listening(self.pickle_port)

        wait_for(up, timeout=30, what=f"carbon-cache {self.instance} listening")

    def stop(self) -> None:
        """SIGTERM and wait: carbon-cache writes its cache out before it exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def series(self) -> dict[str, list[tuple[int, float]]]:
        """Graphite name -> the (timestamp, value) points stored, from the whisper files."""
        out: dict[str, list[tuple[int, float]]] = {}
        if not self.whisper_dir.exists():
            return out
        now = int(time.time())
        for path in self.whisper_dir.rglob("*.wsp"):
            name = ".".join(path.relative_to(self.whisper_dir).with_suffix("").parts)
            try:
                (start, _end, step), values = whisper.fetch(str(path), now - 2 * 86400 + 120, now + 60)
            except whisper.CorruptWhisperFile:  # carbon is still writing its header: not stored yet
                continue
            out[name] = [(start + i * step, v) for i, v in enumerate(values) if v is not None]
        return out


class CarbonRelay:
    """carbon-c-relay with one consistent-hash cluster (`carbon_ch`, replication 1) over the given caches."""

    def __init__(self, root: Path, caches: list[CarbonCache]) -> None:
        binary = shutil.which("carbon-c-relay")
        assert binary, "carbon-c-relay is needed (Debian package carbon-c-relay; make setup installs it)"
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port(socket.SOCK_STREAM)
        # carbon_ch places a member on the ring by host and instance (not port): name each cache instance.
        members = " ".join(f"127.0.0.1:{c.line_port}={c.instance}" for c in caches)
        config = root / "relay.conf"
        config.write_text(f"listen type linemode 127.0.0.1:{self.port} proto tcp;\n"
                          f"cluster x carbon_ch replication 1 {members};\n"
                          "match * send to x stop;\n")
        self.log_path = root / "relay.log"
        # -s: submission mode, no statistics of its own in the stream.
        self.proc = subprocess.Popen([binary, "-f", str(config), "-s", "-l", str(self.log_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

        def up() -> bool:
            if self.proc.poll() is not None:
                log = self.log_path.read_text() if self.log_path.exists() else ""
                raise AssertionError(f"carbon-c-relay exited:\n{log[-3000:]}")
            return _listening(self.port)

        wait_for(up, timeout=20, what="carbon-c-relay listening")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
