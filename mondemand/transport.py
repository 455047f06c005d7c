"""Sending LWES datagrams over UDP, unicast or multicast.

    >>> with UdpSender("127.0.0.1", 20402) as sender:   # doctest: +SKIP
    ...     sender.send(encode(event))

Multicast destinations (224.0.0.0/4) get IP_MULTICAST_TTL, IP_MULTICAST_LOOP
on and, when an interface address is given, IP_MULTICAST_IF, as the C emitter
does (wire-format §3.3). For unicast destinations ttl and interface are unused.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from types import TracebackType

#: SO_SNDBUF asked for first, as the C emitter does (10 maximal datagrams).
SEND_BUFFER = 10 * 65507


def is_multicast(address: str) -> bool:
    """True for an IPv4 address in 224.0.0.0/4."""
    try:
        return ipaddress.IPv4Address(address).is_multicast
    except ValueError:
        return False


def resolve(host: str) -> str:
    """`host` as a dotted-quad IPv4 address (names are looked up); OSError when it cannot be."""
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        return socket.gethostbyname(host)


class UdpSender:
    """One UDP socket that sends every datagram to the same IPv4 destination."""

    def __init__(self, host: str, port: int, ttl: int = 1, interface: str | None = None) -> None:
        if not 0 < port <= 0xFFFF:
            raise ValueError(f"port must be 1..65535, got {port}")
        if not 0 <= ttl <= 255:
            raise ValueError(f"ttl must be 0..255, got {ttl}")
        self.address = resolve(host)
        self.port = port
        self.ttl = ttl
        self.interface = interface
        self.multicast = is_multicast(self.address)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # The default buffer still sends; it only drops sooner under bursts.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            if self.multicast:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
                if interface is not None:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(resolve(interface)))
        except BaseException:
            sock.close()
            raise
        self._sock: socket.socket | None = sock

    @property
    def closed(self) -> bool:
        """True after `close`."""
        return self._sock is None

    def send(self, datagram: bytes) -> int:
        """Send one datagram; returns the bytes sent. OSError on failure, ValueError once closed."""
        if self._sock is None:
            raise ValueError("send on a closed UdpSender")
        return self._sock.sendto(datagram, (self.address, self.port))

    def close(self) -> None:
        """Close the socket; closing twice is harmless."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> UdpSender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = f"multicast ttl={self.ttl} interface={self.interface}" if self.multicast else "unicast"
        return f"UdpSender({self.address}:{self.port}, {kind})"
