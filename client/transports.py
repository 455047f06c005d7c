"""Where a client's encoded events go: UDP datagrams, or HTTP POSTs for events too large for UDP.

A `Client` hands every encoded event to its datagram transports; an event
larger than a datagram can carry goes to its HTTP transports instead (the
Erlang client does the same for large traces). When a client has only HTTP
transports, everything goes over HTTP.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

from mondemand.lwes import MAX_DATAGRAM
from mondemand.transport import UdpSender

#: Seconds an HTTP POST may take before it counts as failed.
HTTP_TIMEOUT = 5.0
#: The default destination: a mondemand-server's lwes-udp listener on this host.
DEFAULT_URL = "udp://127.0.0.1:20402"


class TransportError(OSError):
    """An event could not be delivered (socket error, HTTP error status)."""


class Transport:
    """Base class: something that delivers one encoded LWES event."""

    #: Largest event this transport carries, in bytes.
    max_size: int = MAX_DATAGRAM
    #: True for datagram transports (the default path), False for the large-event path.
    datagram: bool = True
    #: Non-datagram transports send this key with each event (`Client(key=...)`); datagrams are signed instead.
    key: str | None = None

    def send(self, data: bytes) -> None:
        """Deliver `data`; TransportError on failure."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the transport's resources; closing twice is harmless."""


class UdpTransport(Transport):
    """UDP unicast or (for a 224.0.0.0/4 address) multicast, through `mondemand.transport.UdpSender`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 20402, ttl: int = 1, interface: str | None = None) -> None:
        self.sender = UdpSender(host, port, ttl=ttl, interface=interface)

    def send(self, data: bytes) -> None:
        """Send one datagram."""
        if len(data) > self.max_size:
            raise TransportError(f"{len(data)} bytes do not fit in one UDP datagram ({self.max_size})")
        try:
            self.sender.send(data)
        except OSError as exc:
            raise TransportError(f"UDP send to {self.sender.address}:{self.sender.port} failed: {exc}") from exc

    def close(self) -> None:
        """Close the socket."""
        self.sender.close()

    def __repr__(self) -> str:
        return f"UdpTransport({self.sender.address}:{self.sender.port})"


class HttpTransport(Transport):
    """POST each event as the body of one request to a server's lwes-http listener (`/events`)."""

    datagram = False
    max_size = 16 << 20

    def __init__(self, url: str, timeout: float = HTTP_TIMEOUT) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"HTTP transport needs an http:// URL such as http://127.0.0.1:20603/events, got {url!r}")
        self.url = url if parts.path not in ("", "/") else urllib.parse.urlunsplit(parts._replace(path="/events"))
        self.timeout = timeout
        #: A tenant's key, sent as `Authorization: Bearer` (service mode); set by `Client(key=...)`.
        self.key: str | None = None

    def send(self, data: bytes) -> None:
        """POST `data`; TransportError unless the server answers 2xx."""
        headers = {"Content-Type": "application/octet-stream"}
        if self.key is not None:
            headers["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(self.url, data=data, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise TransportError(f"POST {self.url} answered {exc.code}: {exc.read()[:200]!r}") from exc
        except OSError as exc:
            raise TransportError(f"POST {self.url} failed: {exc}") from exc

    def __repr__(self) -> str:
        return f"HttpTransport({self.url})"


def transport_from_url(url: str) -> Transport:
    """A transport from `udp://host:port` or `http://host:port/events`; ValueError for anything else."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "udp":
        if not parts.hostname or parts.port is None:
            raise ValueError(f"UDP transport needs udp://host:port, got {url!r}")
        return UdpTransport(parts.hostname, parts.port)
    if parts.scheme in ("http", "https"):
        return HttpTransport(url)
    raise ValueError(f"unknown transport {url!r}; use udp://host:port or http://host:port/events")
