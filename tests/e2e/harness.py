"""Run the real `mondemand-server` as a subprocess for end-to-end tests."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port that was free a moment ago (UDP and TCP checked)."""
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


def random_group() -> str:
    return f"239.255.{random.randint(1, 254)}.{random.randint(1, 254)}"


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def check_config(path: Path | str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`mondemand-server -c PATH --check`, its output captured (exit 0 good, 2 refused)."""
    return subprocess.run([str(BIN / "mondemand-server"), "-c", str(path), "--check"], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


class ServerProcess:
    """A mondemand-server subprocess on a config written by the test."""

    def __init__(self, tmp: Path, config: str, http_port: int | None = None) -> None:
        self.http_port = http_port if http_port is not None else free_port(socket.SOCK_STREAM)
        if "[http]" not in config:
            config += f"\n[http]\naddress = 127.0.0.1\nport = {self.http_port}\n"
        self.launch(tmp, "routes.ini", config)

    def launch(self, tmp: Path, name: str, config: str, timeout: float = 20) -> None:
        """Write `config` as tmp/NAME, start the server on it (log in tmp/server.log), wait for /status."""
        self.config_path = tmp / name
        self.config_path.write_text(config)
        self.log_path = tmp / "server.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [str(BIN / "mondemand-server"), "-c", str(self.config_path)],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_for(self._ready, timeout=timeout, what="the server's /status")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
        try:
            self.status()
        except OSError:
            return False
        return True

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/status", timeout=2) as resp:
            return json.load(resp)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text()


def emit(*args: str) -> subprocess.CompletedProcess[str]:
    """Run mondemand-emit with `args`; fails the test on a non-zero exit."""
    result = subprocess.run([str(BIN / "mondemand-emit"), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


def send_udp(data: bytes, port: int, host: str = "127.0.0.1") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, (host, port))
