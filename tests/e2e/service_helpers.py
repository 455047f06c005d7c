"""A real mondemand-server in service mode (two tenants, an admin, a tiny quota) for the service tests."""

from __future__ import annotations

import hashlib
import json
import math
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.harness import ServerProcess, free_port

#: Keys of the test tenants: bearer keys (only their hash in the keys files) and hmac secrets.
KEYS = {
    "acme": {"bearer": "acme-bearer-7f3c9d1e", "secret": "acme-hmac-secret-5b8e2a90"},
    "globex": {"bearer": "globex-bearer-0a4d6c2b", "secret": "globex-hmac-secret-91c3f7e4"},
    "tiny": {"bearer": "tiny-bearer-3e5a7c9d", "secret": "tiny-hmac-secret-2d4f6a8c"},
    "ops": {"bearer": "ops-admin-bearer-6b1d8f2a"},
}
ADMIN = KEYS["ops"]["bearer"]


def sha(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def all_keys() -> list[str]:
    """Every key and secret of the test, to grep for."""
    return [value for keys in KEYS.values() for value in keys.values()]


class ServiceServer(ServerProcess):
    """mondemand-server on a service-mode config written into `tmp` (data under tmp/data, keys under tmp/keys)."""

    def __init__(self, tmp: Path, extra_backends: str = "", extra_routes: str = "", workers: bool = True,
                 tls: bool = False) -> None:
        self.tmp = tmp
        #: With `tls`: the status port and both HTTP listeners serve HTTPS with a certificate of a CA made here.
        self.scheme = "https" if tls else "http"
        self.client_tls: ssl.SSLContext | None = None
        tls_lines = ""
        if tls:
            import trustme

            ca = trustme.CA()
            (tmp / "tls").mkdir()
            cert = ca.issue_cert("127.0.0.1", "localhost")
            cert.cert_chain_pems[0].write_to_path(str(tmp / "tls" / "server.pem"))
            cert.private_key_pem.write_to_path(str(tmp / "tls" / "server.key"))
            ca.cert_pem.write_to_path(str(tmp / "tls" / "ca.pem"))
            self.client_tls = ssl.create_default_context(cafile=str(tmp / "tls" / "ca.pem"))
            tls_lines = "tls_certificate = tls/server.pem\ntls_key = tls/server.key\n"
        self.data = tmp / "data"
        keys = tmp / "keys"
        keys.mkdir()
        for tenant, values in KEYS.items():
            lines = [f"{tenant}-web {sha(values['bearer'])}"]
            if "secret" in values:
                lines.append(f"{tenant} hmac:{values['secret']}")
            (keys / f"{tenant}.keys").write_text("\n".join(lines) + "\n")
        self.udp = free_port()
        self.http = free_port(socket.SOCK_STREAM)
        self.dattss = free_port(socket.SOCK_STREAM)
        self.ingest = free_port(socket.SOCK_STREAM)
        d = self.data
        config = f"""
[server]
stats_interval = 1h
memory_budget = 8GiB              ; a bound, not an allocation: five tenants' copies of five backends
workers = {"true" if workers else "false"}

[http]
address = 127.0.0.1
port = {self.http}
{tls_lines}
[tenant:acme]
keys_file = keys/acme.keys
alert_rules = queue

[tenant:globex]
keys_file = keys/globex.keys

[tenant:tiny]
keys_file = keys/tiny.keys
max_events_per_second = 2

[tenant:ops]
keys_file = keys/ops.keys
admin = true

[listener:signed]
type = lwes-udp
address = 127.0.0.1
port = {self.udp}
signatures = required
signature_window = 30s

[listener:dattss]
type = dattss
address = 127.0.0.1
port = {self.dattss}
process_poll = 200ms
{tls_lines}
[listener:ingest]
type = lwes-http
address = 127.0.0.1
port = {self.ingest}
{tls_lines}
[backend:agg]
type = agg
interval = 1s
lateness = 1s
checkpoint = off

[backend:stats]
type = stats_file
root = {d}/stats
flush_interval = 100ms

[backend:logs]
type = log_file
root = {d}/logs
flush_interval = 100ms

[backend:rrd]
type = rrd
root = {d}/rrd

[backend:alerts]
type = alerts
state_file = {d}/alerts.json
flush_interval = 100ms

[alert:queue]
metric = shop:queue
above = 100
window = 1s

[alert:orders]
metric = shop:orders
above = 1000
{extra_backends.replace("@HTTP_PORT@", str(self.http))}
[route:stats]
events = MonDemand::StatsMsg
backends = agg, stats, rrd, alerts

[route:logs]
events = MonDemand::LogMsg
backends = logs
{extra_routes}
"""
        #: Every HTTP answer body the test saw, to check that none holds a key.
        self.answers: list[str] = []
        self.launch(tmp, "service.ini", config, timeout=30)

    def request(self, url: str, *, method: str = "GET", body: bytes | None = None, key: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        """(status, headers, body text) of one request; the body is kept for the key grep."""
        hdrs = dict(headers or {})
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(url, data=body, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=5, context=self.client_tls) as resp:
                status, answer, text = resp.status, dict(resp.headers), resp.read().decode()
        except urllib.error.HTTPError as exc:
            status, answer, text = exc.code, dict(exc.headers), exc.read().decode()
        self.answers.append(text + json.dumps(answer))
        return status, answer, text

    def status(self) -> dict[str, Any]:
        status, _, text = self.request(f"{self.scheme}://127.0.0.1:{self.http}/status", key=ADMIN)
        if status != 200:
            raise OSError(f"/status answered {status}")
        return json.loads(text)

    def listener(self, name: str) -> dict[str, Any]:
        return self.status()["listeners"][name]


def dattss_body(partials: dict[str, list[dict[str, Any]]], name: str = "api") -> bytes:
    """A DaTtSs `PUT /agg` body, written from the format in DaTtSs's client (peers.md §4.1)."""
    return json.dumps({"nam": name, "prt": partials}).encode()


def dattss_partial(typ: str, path: str, values: list[int], pct: float = 0.1) -> dict[str, Any]:
    """One partial as the DaTtSs node client's make_partials builds it: sorted values, bot/top at pct."""
    ordered = sorted(values)
    n = len(ordered)
    bot = ordered[min(n - 1, max(0, math.ceil(pct * n)))]
    top = ordered[min(n - 1, max(0, round((1 - pct) * n)))]
    return {"typ": typ, "pth": path, "pct": pct, "sum": sum(values), "cnt": n, "max": ordered[-1],
            "min": ordered[0], "fst": values[0], "lst": values[-1], "bot": bot, "top": top, "emp": False}


def files_text(root: Path) -> str:
    """Every file under `root`, as text (binary files decoded leniently)."""
    if not root.exists():
        return ""
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in sorted(root.rglob("*")) if p.is_file())
