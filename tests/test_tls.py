"""TLS on the HTTP surfaces (`tls_certificate` / `tls_key`, mondemand/httplimits.py and httpserve.py).

A CA and certificates made here by `trustme`; a real `Surface` on loopback answered by a real HTTPS client
(urllib with that CA); `mondemand-server --check` refusing a missing, unreadable or mismatched certificate by
file, section and key, and warning about tenants' keys in clear text off loopback.
"""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from mondemand.httplimits import Limits, check_tls, is_loopback
from mondemand.httpserve import Surface
from tests.e2e.harness import check_config, wait_for


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_cert(ca: trustme.CA, folder: Path, name: str = "server") -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert("127.0.0.1", "localhost")
    pem, key = folder / f"{name}.pem", folder / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(pem))
    cert.private_key_pem.write_to_path(str(key))
    return pem, key


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def hello(request) -> web.Response:
    return web.Response(text=f"hello {request.secure}")


@pytest.fixture
def surface(ca, tmp_path):
    pem, key = write_cert(ca, tmp_path)
    surf = Surface("t", Limits(header_timeout=0.5, max_connections=3, tls_certificate=str(pem), tls_key=str(key)),
                   hello)
    _host, port = surf.bind("127.0.0.1", 0)
    surf.start()
    try:
        yield surf, port
    finally:
        surf.stop()


def test_a_surface_with_a_certificate_answers_https_only(surface, ca):
    surf, port = surface
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/", timeout=5, context=client_context(ca)) as resp:
        assert resp.read() == b"hello True"
    assert surf.scheme == "https"
    # A client that does not trust the CA refuses the certificate; plain HTTP gets no HTTP answer.
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen(f"https://127.0.0.1:{port}/", timeout=5, context=ssl.create_default_context())
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = plain.recv(100)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"HTTP/")


def test_failed_and_stalled_handshakes_give_their_connection_slots_back(surface, ca):
    surf, port = surface
    # Three plain-text clients (failed handshakes) and three that never say anything (stalled ones), against
    # max_connections = 3: asyncio does not tell the protocol about either, the surface must still free them.
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
            plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
    wait_for(lambda: surf.counters()["accepted"] == 3, what="three plain clients")
    wait_for(lambda: surf.counters()["connections"] == 0, timeout=10, what="the failed handshakes' slots")
    stalled = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    try:
        wait_for(lambda: surf.counters()["accepted"] == 6, what="three silent clients")
        wait_for(lambda: surf.counters()["connections"] == 0, timeout=10, what="the stalled handshakes' slots")
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/", timeout=5, context=client_context(ca)) as resp:
            assert resp.status == 200
        assert surf.counters()["refused"] == 0
    finally:
        for sock in stalled:
            sock.close()


def test_an_over_the_limit_connection_is_refused_over_tls_too(surface, ca):
    surf, port = surface
    stalled = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    try:
        wait_for(lambda: surf.counters()["connections"] == 3, what="three open connections")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"https://127.0.0.1:{port}/", timeout=5, context=client_context(ca))
        assert refused.value.code == 503
        assert surf.counters()["refused"] == 1
    finally:
        for sock in stalled:
            sock.close()


def test_check_tls_resolves_against_the_config_directory_and_names_the_key(ca, tmp_path):
    pem, key = write_cert(ca, tmp_path / "tls")
    values = {"tls_certificate": "tls/server.pem", "tls_key": "tls/server.key"}
    assert check_tls(values, tmp_path) == []
    assert values == {"tls_certificate": str(pem), "tls_key": str(key)}
    assert check_tls({"tls_certificate": "", "tls_key": "k.pem"}, tmp_path) == [("tls_key", "needs tls_certificate")]
    [(name, message)] = check_tls({"tls_certificate": "nope.pem", "tls_key": ""}, tmp_path)
    assert name == "tls_certificate" and "nope.pem" in message
    other_pem, _other_key = write_cert(ca, tmp_path / "other")
    [(name, message)] = check_tls({"tls_certificate": str(other_pem), "tls_key": str(key)}, tmp_path)
    assert name == "tls_key" and "not a usable certificate and key" in message
    assert "PRIVATE KEY" not in message


def test_loopback_addresses():
    assert all(map(is_loopback, ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost")))
    assert not any(map(is_loopback, ("0.0.0.0", "::", "10.0.0.1", "example.org")))


CONFIG = """
[http]
address = {address}
port = 0
{tls}
[tenant:acme]
keys = web=sha256:{hash}

[listener:ingest]
type = dattss
address = {address}
port = 0
{tls}
[backend:out]
type = print
path = {tmp}/out.txt

[route:all]
events = *
backends = out
"""


def check(tmp_path: Path, address: str = "127.0.0.1", tls: str = "", cwd: Path | None = None):
    config = tmp_path / "conf" / "routes.ini"
    config.parent.mkdir(exist_ok=True)
    config.write_text(CONFIG.format(address=address, tls=tls, hash="0" * 64, tmp=tmp_path))
    return check_config(config, cwd=cwd or tmp_path)


def test_check_refuses_a_missing_or_unreadable_certificate_naming_file_section_and_key(ca, tmp_path):
    tls = "tls_certificate = tls/server.pem\ntls_key = tls/server.key\n"
    missing = check(tmp_path, tls=tls)
    assert missing.returncode == 2
    lines = missing.stderr.splitlines()
    assert any(line.startswith("error: routes.ini: [http] tls_certificate: cannot read ") and
               str(tmp_path / "conf" / "tls" / "server.pem") in line for line in lines), lines
    assert any(line.startswith("error: routes.ini: [listener:ingest] tls_certificate: ") for line in lines), lines
    _pem, key = write_cert(ca, tmp_path / "conf" / "tls")
    ok = check(tmp_path, tls=tls, cwd=Path("/"))  # relative to the config, not to the working directory
    assert ok.returncode == 0, ok.stderr
    key.unlink()
    key.mkdir()  # unreadable even for root (the tests may run as root, who reads a mode-0 file)
    unreadable = check(tmp_path, tls=tls)
    assert unreadable.returncode == 2
    assert "error: routes.ini: [http] tls_key: cannot read " in unreadable.stderr


def test_tenants_keys_in_clear_text_off_loopback_are_warned_about(ca, tmp_path):
    clear = check(tmp_path, address="0.0.0.0")
    assert clear.returncode == 0, clear.stderr
    warned = [line for line in clear.stderr.splitlines() if "without TLS" in line]
    assert [line.split("]")[0] for line in warned] == ["warning: routes.ini: [http",
                                                       "warning: routes.ini: [listener:ingest"]
    write_cert(ca, tmp_path / "conf" / "tls")
    tls = check(tmp_path, address="0.0.0.0", tls="tls_certificate = tls/server.pem\ntls_key = tls/server.key\n")
    assert tls.returncode == 0, tls.stderr
    assert "without TLS" not in tls.stderr
    loopback = check(tmp_path)
    assert "without TLS" not in loopback.stderr
