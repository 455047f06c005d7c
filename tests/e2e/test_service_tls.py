"""Service mode over HTTPS: a real server whose status port, DaTtSs and lwes-http listeners and dashboard serve
TLS with a certificate made by the test (trustme), answered by urllib trusting only that CA.

Keys travel inside TLS: a DaTtSs partial and a log line sent over HTTPS land as their tenant's, a wrong key
over HTTPS is still a 401, plain HTTP to a TLS port gets no HTTP answer, the dashboard's session cookie is
`Secure`, and the log says https for each surface.
"""

from __future__ import annotations

import http.cookiejar
import json
import socket
import urllib.parse
import urllib.request

import pytest

from mondemand.lwes import encode
from mondemand.messages import LogLine, LogMsg, Priority
from tests.e2e.harness import free_port, wait_for
from tests.e2e.service_helpers import ADMIN, KEYS, ServiceServer, all_keys, dattss_body, dattss_partial, files_text


@pytest.fixture
def server(tmp_path):
    port = free_port(socket.SOCK_STREAM)
    srv = ServiceServer(tmp_path, tls=True, extra_backends=f"""
[backend:dashboard]
type = dashboard
address = 127.0.0.1
port = {port}
tls_certificate = tls/server.pem
tls_key = tls/server.key
""", extra_routes="""
[route:dashboard]
events = MonDemand::StatsMsg
backends = dashboard
""")
    srv.dashboard = port
    try:
        yield srv
    finally:
        assert srv.stop() == 0, srv.log()


def test_keys_travel_over_https_and_plain_http_gets_no_answer(server):
    assert server.status()["tenants"]["acme"]["keys"] == 2  # /status over HTTPS with the admin key
    dattss = f"https://127.0.0.1:{server.dattss}"
    body = dattss_body({"ms": [dattss_partial("ms", "query", [10, 20, 30])]})
    status, _, answer = server.request(f"{dattss}/agg", method="PUT", body=body, key=KEYS["acme"]["bearer"])
    assert (status, json.loads(answer)) == (200, {"ok": True, "partials": 1})
    assert server.request(f"{dattss}/agg?auth=wrong", method="PUT", body=body)[0] == 401
    log = LogMsg("shop", "web1", {}, [LogLine("app.py", 1, Priority.ERROR, "over-tls log line")])
    status, _, _ = server.request(f"https://127.0.0.1:{server.ingest}/events", method="POST",
                                  body=encode(log.to_lwes()), key=KEYS["globex"]["bearer"])
    assert status == 202
    assert server.listener("dattss")["unauthorized"] == 1

    for port in (server.http, server.dattss, server.ingest, server.dashboard):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
            plain.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = plain.recv(100)
            except ConnectionResetError:
                answer = b""
        assert not answer.startswith(b"HTTP/"), port

    # The dashboard over HTTPS: the session cookie is Secure (never sent over plain HTTP), HttpOnly, Strict.
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=server.client_tls),
                                         urllib.request.HTTPCookieProcessor(jar))
    form = urllib.parse.urlencode({"key": KEYS["acme"]["bearer"]}).encode()
    with opener.open(f"https://127.0.0.1:{server.dashboard}/login", data=form, timeout=5) as resp:
        assert resp.status == 200  # followed the redirect to the page, with the session
        page = resp.read().decode()
    [cookie] = list(jar)
    assert cookie.name == "md_session" and cookie.secure
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") == "Strict"
    assert all(key not in page + cookie.value for key in all_keys())

    wait_for(lambda: "over-tls log line" in files_text(server.data / "logs" / "globex"), what="globex's log line")
    assert "over-tls" not in files_text(server.data / "logs" / "acme")
    log_text = server.log()
    for surface in (f"https://127.0.0.1:{server.http}/status", f"https://127.0.0.1:{server.dashboard}/"):
        assert surface in log_text
    assert ADMIN not in log_text and all(key not in log_text for key in all_keys())


def test_sighup_reads_the_certificates_again_and_a_broken_one_keeps_the_old(server):
    import signal
    import ssl

    import trustme

    new_ca = trustme.CA()
    new_client = ssl.create_default_context()
    new_ca.configure_trust(new_client)
    ports = (server.http, server.dattss, server.ingest, server.dashboard)

    def handshakes(context: ssl.SSLContext) -> list[bool]:
        ok = []
        for port in ports:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                        context.wrap_socket(raw, server_hostname="127.0.0.1"):
                    ok.append(True)
            except ssl.SSLError:
                ok.append(False)
        return ok

    assert handshakes(server.client_tls) == [True] * 4
    tls = server.tmp / "tls"
    # A broken pair first (the new certificate with the old key): refused, the old pair stays.
    cert = new_ca.issue_cert("127.0.0.1")
    old_key = (tls / "server.key").read_bytes()
    cert.cert_chain_pems[0].write_to_path(str(tls / "server.pem"))
    server.signal(signal.SIGHUP)
    wait_for(lambda: server.log().count("certificate not reloaded") >= 4, what="four refused reloads")
    assert handshakes(server.client_tls) == [True] * 4
    # The whole new pair: new connections get it.
    cert.private_key_pem.write_to_path(str(tls / "server.key"))
    assert (tls / "server.key").read_bytes() != old_key
    server.signal(signal.SIGHUP)
    wait_for(lambda: handshakes(new_client) == [True] * 4, what="the new certificate on every port")
    assert handshakes(server.client_tls) == [False] * 4
    server.client_tls = new_client
    assert server.status()["tenants"]["acme"]["keys"] == 2  # /status answers under the new certificate
