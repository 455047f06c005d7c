"""The mondemand client library: emit stats, logs, traces, perf timings and annotations.

    >>> from mondemand.client import Client, process
    >>> client = Client("myapp", transports=["udp://127.0.0.1:20402"])   # doctest: +SKIP
    >>> client.increment("requests")                                     # doctest: +SKIP
    >>> api = process("api")                                             # doctest: +SKIP
    >>> api.agg("query", "153ms")                                        # doctest: +SKIP

See docs/client.md.
"""

from __future__ import annotations

from mondemand.client.core import Client, ClientError
from mondemand.client.dattss import Process, parse_value, process
from mondemand.client.loghandler import MondemandLogHandler
from mondemand.client.partials import Partial, PartialError, combine
from mondemand.client.transports import HttpTransport, Transport, TransportError, UdpTransport, transport_from_url

__all__ = [
    "Client",
    "ClientError",
    "HttpTransport",
    "MondemandLogHandler",
    "Partial",
    "PartialError",
    "Process",
    "Transport",
    "TransportError",
    "UdpTransport",
    "combine",
    "parse_value",
    "process",
    "transport_from_url",
]
