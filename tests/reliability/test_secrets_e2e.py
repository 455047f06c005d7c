"""End to end: a real mondemand-server with secret-bearing notifiers; no secret in any HTTP answer or log line.

The webhook URL carries userinfo and a token, its headers a bearer token; a
second webhook is dead (connection refused) and a third redirects to another
port; the SMTP notifier logs in with a password to a real aiosmtpd server.
Every notifier fails at least once, so the failure messages (which repeat
URLs) are logged. Then /status, /alerts, /alerts/NAME and the whole server
log are searched for every secret.
"""

from __future__ import annotations

import base64
import json
import socket
import urllib.request

import pytest

from tests.backends.alerts.alert_helpers import smtp_server
from tests.e2e.harness import ServerProcess, emit, free_port, wait_for
from tests.reliability.receivers import Answer, Receiver

pytestmark = pytest.mark.reliability

SECRETS = {
    "url_password": "Url-Pa55word",
    "url_token": "Qu3ry-T0ken",
    "header_token": "Head3r-Bearer",
    "dead_token": "D3ad-T0ken",
    "redirect_token": "R3direct-T0ken",
    "smtp_password": "Smtp-Pa55word",
}


def get(server: ServerProcess, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}{path}", timeout=5) as resp:
        return resp.read().decode()


def test_no_secret_in_http_answers_or_the_log(tmp_path):
    port = free_port()
    dead_port = free_port(socket.SOCK_STREAM)
    with Receiver() as hook, Receiver() as stolen, Receiver() as redirecting, \
            smtp_server(login=("alerter", SECRETS["smtp_password"])) as (smtp_port, mails):
        hook.script["/hook"] = [Answer(502)]  # the first attempt fails: its message is logged
        redirecting.default = Answer(302, stolen.url("/stolen"))
        config = f"""
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {port}

[backend:alerts]
type = alerts
flush_interval = 100ms

[route:alerts]
events = MonDemand::StatsMsg
backends = alerts

[alert:slow]
metric = myapp:latency_ms
above = 100
notify = hook, dead, redirect, mail

[notifier:hook]
type = webhook
url = http://alerter:{SECRETS["url_password"]}@127.0.0.1:{hook.port}/hook?token={SECRETS["url_token"]}
headers =
    X-Api-Key: {SECRETS["header_token"]}
retry_delay = 100ms

[notifier:dead]
type = webhook
url = http://127.0.0.1:{dead_port}/hook?token={SECRETS["dead_token"]}
retries = 1
retry_delay = 100ms

[notifier:redirect]
type = webhook
url = http://127.0.0.1:{redirecting.port}/hook?token={SECRETS["redirect_token"]}
retries = 1
retry_delay = 100ms

[notifier:mail]
type = smtp
host = 127.0.0.1
port = {smtp_port}
username = alerter
password = {SECRETS["smtp_password"]}
from = mondemand@example.org
to = ops@example.org
"""
        server = ServerProcess(tmp_path, config)
        try:
            emit("-p", str(port), "stats", "--prog-id", "myapp", "--gauge", "latency_ms=250", "-c", "host=web01")
            wait_for(lambda: hook.posts() and len(hook.posts()) >= 2 and mails, what="the webhook retry and the mail")

            def settled() -> dict | None:
                doc = json.loads(get(server, "/alerts"))
                notifiers = doc["notifiers"]
                done = all(n["sent"] + n["failed"] >= 1 for n in notifiers.values())
                return doc if done else None

            doc = wait_for(settled, timeout=20, what="every notifier to finish")
            answers = {path: get(server, path) for path in ("/status", "/alerts", "/alerts/slow",
                                                            "/alerts?state=firing")}
        finally:
            assert server.stop() == 0
        log = server.log()

    # The deliveries really happened (with the credentials), and the failures really were logged.
    last = hook.posts()[-1]
    assert base64.b64decode(last.headers["Authorization"].split()[1]).decode() == \
        f"alerter:{SECRETS['url_password']}"
    assert last.headers["X-Api-Key"] == SECRETS["header_token"] and SECRETS["url_token"] in last.path
    assert mails and mails[0][1] == ["ops@example.org"]
    notifiers = doc["notifiers"]
    assert notifiers["hook"]["sent"] == 1 and notifiers["mail"]["sent"] == 1
    assert notifiers["dead"]["failed"] == 1 and notifiers["redirect"]["failed"] == 1
    assert stolen.requests == []
    assert "HTTP 502" in log and "HTTP 302" in log and "notifier dead" in log
    assert notifiers["hook"]["target"] == f"http://***@127.0.0.1:{hook.port}/hook?token=***"
    assert notifiers["dead"]["last_error"].startswith(f"http://127.0.0.1:{dead_port}/hook?token=***")

    for name, secret in SECRETS.items():
        for path, body in answers.items():
            assert secret not in body, f"{name} in the answer to {path}"
        assert secret not in log, f"{name} in the server log"
