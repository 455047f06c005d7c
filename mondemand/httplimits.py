"""Options and limits of an HTTP surface (`mondemand.httpserve`), importable without aiohttp.

`--check` and plugin loading read these declarations; only serving needs aiohttp.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mondemand.options import Option


def limit_options(max_connections: int = 256) -> tuple[Option, ...]:
    """The options every HTTP surface takes (`[http]`, `lwes-http`), with their bounds."""
    return (
        Option("header_timeout", "duration", 10.0, minimum=0.1, maximum=300.0,
               help="a request's headers must be complete within this long; slower clients are cut off"),
        Option("body_timeout", "duration", 30.0, minimum=0.1, maximum=3600.0,
               help="a request body must be complete within this long of its headers"),
        Option("idle_timeout", "duration", 30.0, minimum=0.1, maximum=3600.0,
               help="a kept-alive connection without a request is closed after this long"),
        Option("max_connections", "int", max_connections, minimum=1, maximum=65536,
               help="open connections at most; more are answered 503 and closed at once"),
        *tls_options(),
    )


def tls_options() -> tuple[Option, ...]:
    """`tls_certificate` and `tls_key`: serve HTTPS. The loader resolves them against the config's directory
    and `--check` loads them (`check_tls`)."""
    return (
        Option("tls_certificate", "str", "",
               help="PEM certificate chain: serve HTTPS instead of HTTP (relative: to the config's directory)"),
        Option("tls_key", "str", "", help="PEM private key of tls_certificate (default: in the certificate file)"),
    )


def tls_context(certificate: str, key: str = "") -> ssl.SSLContext:
    """A server context for `certificate` (and `key`): TLS 1.2 at least, the default ciphers, no client
    certificates. Raises OSError (ssl.SSLError is one) for a missing, unreadable or mismatched file."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, key or None)
    return context


def check_tls(values: dict[str, Any], base: Path) -> list[tuple[str, str]]:
    """Resolve `tls_certificate`/`tls_key` in `values` against `base` (in place) and try them: (key, message)
    for each problem."""
    for key in ("tls_certificate", "tls_key"):
        if values.get(key):
            path = Path(values[key]).expanduser()
            values[key] = str(path if path.is_absolute() else base / path)
    cert, key = values.get("tls_certificate") or "", values.get("tls_key") or ""
    if key and not cert:
        return [("tls_key", "needs tls_certificate")]
    if not cert:
        return []
    problems = []
    for name, path in (("tls_certificate", cert), ("tls_key", key)):
        if not path:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            problems.append((name, f"cannot read {path}: {exc.strerror or exc}"))
    if problems:
        return problems
    try:
        tls_context(cert, key)
    except (OSError, ValueError) as exc:
        what = "tls_key" if key and "key" in str(exc).lower() else "tls_certificate"
        return [(what, f"{cert}{' with ' + key if key else ''} is not a usable certificate and key: {exc}")]
    return []


def is_loopback(address: str) -> bool:
    """Whether `address` (an IP or `localhost`) only listens to this machine."""
    if address.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def stream_limit_options(max_connections: int = 1024, idle_timeout: float = 300.0) -> tuple[Option, ...]:
    """The options of a line-oriented TCP port (statsd over TCP): `limit_options`' idle and connection limits,
    and `line_timeout` in place of the header deadline (a line must end within it of its first byte)."""
    by_name = {opt.name: opt for opt in limit_options(max_connections)}
    return (
        Option("line_timeout", "duration", 10.0, minimum=0.1, maximum=300.0,
               help="a line must end within this long of its first byte; slower clients are cut off"),
        replace(by_name["idle_timeout"], default=idle_timeout,
                help="a connection that sends nothing this long is closed"),
        by_name["max_connections"],
    )


@dataclass(frozen=True)
class Limits:
    """Timeouts (seconds) and the connection limit of one surface."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 30.0
    max_connections: int = 256
    #: PEM files (absolute once loaded); an empty certificate serves plain HTTP.
    tls_certificate: str = ""
    tls_key: str = ""

    @classmethod
    def from_options(cls, values: dict[str, Any]) -> Limits:
        """Limits from parsed options (missing keys take the defaults)."""
        defaults = cls()
        return cls(
            float(values.get("header_timeout", defaults.header_timeout)),
            float(values.get("body_timeout", defaults.body_timeout)),
            float(values.get("idle_timeout", defaults.idle_timeout)),
            int(values.get("max_connections", defaults.max_connections)),
            str(values.get("tls_certificate") or ""),
            str(values.get("tls_key") or ""),
        )


