"""Find listener sections that would receive on the same UDP port.

Two unicast sockets on one port either fail to bind or, with SO_REUSEPORT,
share its traffic without saying so: on the same address the kernel splits
the datagrams between them (each listener sees about half); a wildcard
address and a specific one bind side by side and the specific socket takes
every datagram for its address.
The config loader reports such pairs as an error naming both sections and
the key `port` (docs/configuration.md, "One port, one listener").

Multicast listeners may share a port: a socket bound to a group receives
that group's datagrams from the interfaces it joined on, and the listener
always sets SO_REUSEADDR for them. Two listeners on the same group and port
are fine when they join on different interfaces (each hears its own); on
the same interface both would receive every datagram, so every event would
be counted and stored twice: an error. A wildcard unicast listener may share
a multicast listener's port on Linux, where its socket is told to receive no
group (IP_MULTICAST_ALL = 0) and both set SO_REUSEADDR; without `reuse_port`
it cannot bind beside it, and elsewhere (or on `::`) it would receive the
group's datagrams as well: errors.

Addresses are compared as written (after IPv4-mapped IPv6 is made plain):
no name is looked up, so `localhost` and `127.0.0.1` are different here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class UdpEndpoint:
    """Where a UDP listener receives: bound address, port, and for multicast the group's interface."""

    address: str
    port: int
    multicast: bool = False
    interface: str = "0.0.0.0"
    #: SO_REUSEADDR is set (a port is shared between addresses only when both sockets set it).
    reuse: bool = True
    #: An IPv4 socket receives only the groups it joined (Linux IP_MULTICAST_ALL = 0).
    group_filter: bool = True

    @property
    def family(self) -> int:
        return 6 if ":" in self.address else 4

    @property
    def wildcard(self) -> bool:
        return self.address in ("", "0.0.0.0", "::")

    def __str__(self) -> str:
        if self.multicast:
            return f"group {self.address} port {self.port} on interface {self.interface}"
        return f"{self.address or '0.0.0.0'}:{self.port}"


def normalise(address: str) -> str:
    """A literal IP address in canonical form (IPv4-mapped IPv6 as plain IPv4); a name lower-cased."""
    text = address.strip().strip("[]")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def _covers(wild: UdpEndpoint, other: UdpEndpoint) -> bool:
    """A wildcard socket receives what is sent to `other`'s address: `::` takes IPv4 too (dual stack)."""
    return wild.address == "::" or wild.family == other.family or other.address == ""


def conflict(a: UdpEndpoint, b: UdpEndpoint) -> str | None:
    """Why `a` and `b` cannot both receive, or None when they can."""
    if a.port == 0 or b.port == 0 or a.port != b.port:
        return None  # port 0: each gets a free port of its own
    if a.multicast and b.multicast:
        if a.address != b.address or a.interface != b.interface:
            return None
        return f"both join {a}: every datagram would be received twice"
    if a.multicast or b.multicast:
        uni = b if a.multicast else a
        group = a if a.multicast else b
        if not (uni.wildcard and _covers(uni, group)):
            return None
        if not uni.reuse:
            return (f"{uni} without reuse_port cannot bind beside the multicast listener on {group} "
                    "(set reuse_port = true, or use another port)")
        if uni.family == 6 or not uni.group_filter:
            return (f"{uni} also receives the datagrams of the multicast listener on {group} "
                    "(bind the unicast listener to a specific address or use another port)")
        return None
    if a.address == b.address:
        return (f"both receive on {a}: the kernel would give the datagrams to one of them or split them "
                "(or the second bind fails)")
    for wild, other in ((a, b), (b, a)):
        if wild.wildcard and _covers(wild, other):
            return (f"{wild} includes {other}: datagrams to {other.address} would reach only one of them "
                    "(or the second bind fails)")
    return None


def udp_conflicts(endpoints: Mapping[str, UdpEndpoint]) -> list[tuple[str, str, str]]:
    """(first section, second section, reason) for every pair of `endpoints` that collide, in file order."""
    names = list(endpoints)
    found = []
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            reason = conflict(endpoints[first], endpoints[second])
            if reason is not None:
                found.append((first, second, reason))
    return found


__all__ = ["UdpEndpoint", "conflict", "normalise", "udp_conflicts"]
