"""Datagrams the kernel dropped before the server could read them.

Loss below the server is invisible to its own counters: when a socket's
receive buffer is full the kernel discards the datagram and counts it in
`/proc/net/snmp` (`Udp: RcvbufErrors`, machine-wide; `Udp6RcvbufErrors` in
`/proc/net/snmp6`) and in the `drops` column of `/proc/net/udp` and
`/proc/net/udp6` (per socket, found by its inode). `KernelDrops` reads both;
`/status` and the self-metrics report them so a user sees that loss.
On systems without these files every figure is 0.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROC = Path("/proc/net")


def udp_counters(proc: Path = PROC) -> dict[str, int]:
    """Machine-wide UDP counters: `Udp:` of /proc/net/snmp by name, plus Udp6 ones prefixed `udp6_`."""
    values: dict[str, int] = {}
    try:
        lines = (proc / "snmp").read_text().splitlines()
    except OSError:
        lines = []
    rows = [line.split() for line in lines if line.startswith("Udp:")]
    if len(rows) >= 2:
        header, numbers = rows[0][1:], rows[1][1:]
        for key, value in zip(header, numbers, strict=False):
            if value.lstrip("-").isdigit():
                values[key] = int(value)
    try:
        for line in (proc / "snmp6").read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].startswith("Udp6") and parts[1].isdigit():
                values["udp6_" + parts[0][4:]] = int(parts[1])
    except OSError:
        pass
    return values


def socket_drops(inodes: set[int], proc: Path = PROC) -> dict[int, int]:
    """Kernel drops per socket inode, from the last column of /proc/net/udp and udp6."""
    found: dict[int, int] = {}
    if not inodes:
        return found
    for name in ("udp", "udp6"):
        try:
            lines = (proc / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 13:
                continue
            try:
                inode, drops = int(parts[9]), int(parts[12])
            except ValueError:
                continue
            if inode in inodes:
                found[inode] = found.get(inode, 0) + drops
    return found


class KernelDrops:
    """Kernel-side loss since the server started: machine-wide and per listener socket."""

    def __init__(self, proc: Path = PROC) -> None:
        self.proc = proc
        self._base = udp_counters(proc)
        self._sockets: dict[str, list[int]] = {}

    def watch(self, listeners: Mapping[str, Any]) -> None:
        """Remember the inodes of each listener's sockets (listeners with a `sockets()` method)."""
        for name, listener in listeners.items():
            inodes = []
            for sock in getattr(listener, "sockets", lambda: [])():
                try:
                    inodes.append(os.fstat(sock.fileno()).st_ino)
                except (OSError, ValueError):
                    continue
            if inodes:
                self._sockets[name] = inodes

    def read(self) -> dict[str, Any]:
        """rcvbuf_errors and in_errors (machine-wide deltas since start, IPv4 and IPv6) and per-listener drops."""
        now = udp_counters(self.proc)

        def delta(*keys: str) -> int:
            return sum(max(0, now.get(k, 0) - self._base.get(k, 0)) for k in keys)

        per_socket = socket_drops({i for inodes in self._sockets.values() for i in inodes}, self.proc)
        return {
            "rcvbuf_errors": delta("RcvbufErrors", "udp6_RcvbufErrors"),
            "in_errors": delta("InErrors", "udp6_InErrors"),
            "listeners": {name: sum(per_socket.get(i, 0) for i in inodes) for name, inodes in self._sockets.items()},
        }
