"""Notifiers against real receivers: aiosmtpd on loopback, an http.server webhook, a real command."""

from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path

import pytest
from mondemand.backends.alerts.notifiers import (
    NotifierWorker,
    build_notifier,
    parse_headers,
)
from mondemand.backends.alerts.rules import RuleError

from tests.backends.alerts.alert_helpers import WebhookReceiver, smtp_server
from tests.e2e.harness import free_port, wait_for

PAYLOAD = {
    "alert": "slow", "state": "firing", "previous": "ok", "repeat": False, "condition": "above",
    "summary": "myapp latency_ms on web01: value 250 is above 100", "value": 250.0,
    "series": {"prog_id": "myapp", "host": "web01", "metric": "latency_ms", "context": {}},
    "time": 1_700_000_000.0, "time_iso": "2023-11-14T22:13:20.000Z", "since": 1_700_000_000.0, "server": "router1",
}
FAST = {"retries": 2, "retry_delay": 0.01, "retry_max": 0.05, "timeout": 2.0}


def worker_for(name: str, options: dict, tmp_path: Path) -> NotifierWorker:
    options = {**FAST, **options}
    worker = NotifierWorker.for_options(build_notifier(name, options, tmp_path), options)
    worker.start()
    return worker


def test_smtp_delivers_a_mail(tmp_path):
    with smtp_server() as (port, messages):
        worker = worker_for("mail", {"type": "smtp", "host": "127.0.0.1", "port": port, "from": "alerts@example.org",
                                     "to": ["ops@example.org", "oncall@example.org"]}, tmp_path)
        assert worker.submit(PAYLOAD)
        wait_for(lambda: messages, what="the mail")
        worker.close()
    mail_from, rcpts, msg = messages[0]
    assert mail_from == "alerts@example.org"
    assert rcpts == ["ops@example.org", "oncall@example.org"]
    assert msg["Subject"].strip() == "[mondemand] FIRING slow: myapp latency_ms on web01: value 250 is above 100"
    body = msg.get_content().replace("\r\n", "\n")
    assert body.startswith("myapp latency_ms on web01: value 250 is above 100\n")
    assert json.loads(body[body.index("{"):]) == PAYLOAD
    assert worker.counters()["sent"] == 1 and worker.counters()["failed"] == 0


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_smtp_login(tmp_path):
    with smtp_server(login=("alerter", "s3cret")) as (port, messages):
        good = worker_for("mail", {"type": "smtp", "host": "127.0.0.1", "port": port, "from": "a@example.org",
                                   "to": ["b@example.org"], "username": "alerter", "password": "s3cret"}, tmp_path)
        bad = worker_for("mail2", {"type": "smtp", "host": "127.0.0.1", "port": port, "from": "a@example.org",
                                   "to": ["b@example.org"], "username": "alerter", "password": "wrong",
                                   "retries": 0}, tmp_path)
        good.submit(PAYLOAD)
        bad.submit(PAYLOAD)
        wait_for(lambda: good.counters()["sent"] == 1 and bad.counters()["failed"] == 1, what="both attempts")
        good.close()
        bad.close()
    assert len(messages) == 1
    assert "Authentication" in bad.last_error or "535" in bad.last_error


def test_webhook_posts_json_with_headers(tmp_path):
    with WebhookReceiver() as hook:
        worker = worker_for("hook", {"type": "webhook", "url": hook.url,
                                     "headers": "Authorization: Bearer abc\nX-Team: ops"}, tmp_path)
        worker.submit(PAYLOAD)
        wait_for(lambda: hook.received, what="the webhook")
        worker.close()
    assert hook.received == [PAYLOAD]
    assert hook.headers[0]["Authorization"] == "Bearer abc"
    assert hook.headers[0]["X-Team"] == "ops"
    assert hook.headers[0]["Content-Type"] == "application/json"


def test_failing_webhook_is_retried_then_succeeds(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="mondemand.alerts.notify")
    with WebhookReceiver(statuses=[500, 503]) as hook:
        worker = worker_for("hook", {"type": "webhook", "url": hook.url}, tmp_path)
        worker.submit(PAYLOAD)
        wait_for(lambda: hook.received, what="the third attempt")
        worker.close()
    assert hook.attempts == 3
    assert worker.counters() == {"sent": 1, "failed": 0, "retried": 2, "dropped": 0, "pending": 0}
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2
    assert "notifier hook: sending alert slow (firing) failed (attempt 1 of 3): " in retries[0]
    assert "HTTP 500" in retries[0] and "HTTP 503" in retries[1]


def test_dead_destination_gives_up_with_a_clear_log_line(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="mondemand.alerts.notify")
    port = free_port(socket.SOCK_STREAM)  # nothing listens there
    worker = worker_for("hook", {"type": "webhook", "url": f"http://127.0.0.1:{port}/x"}, tmp_path)
    worker.submit(PAYLOAD)
    wait_for(lambda: worker.counters()["failed"] == 1, what="the give-up")
    worker.close()
    assert worker.counters()["retried"] == 2 and worker.counters()["sent"] == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"notifier hook: gave up on alert slow (firing) after 3 attempt(s): "
                      f"http://127.0.0.1:{port}/x: [Errno 111] Connection refused"]


def test_command_gets_json_on_stdin_and_environment(tmp_path):
    script = tmp_path / "record.py"
    script.write_text(
        "import json, os, sys\n"
        "doc = json.load(sys.stdin)\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith('MONDEMAND_ALERT')}\n"
        "open('alert-out.json', 'w').write(json.dumps({'doc': doc, 'env': env}))\n"
    )
    worker = worker_for("run", {"type": "command", "command": f"{sys.executable} {script}"}, tmp_path)
    worker.submit(PAYLOAD)
    out = tmp_path / "alert-out.json"  # relative paths are the config directory's
    wait_for(out.exists, what="the command's file")
    worker.close()
    written = json.loads(out.read_text())
    assert written["doc"] == PAYLOAD
    assert written["env"]["MONDEMAND_ALERT"] == "slow"
    assert written["env"]["MONDEMAND_ALERT_STATE"] == "firing"
    assert written["env"]["MONDEMAND_ALERT_VALUE"] == "250"
    assert written["env"]["MONDEMAND_ALERT_HOST"] == "web01"
    assert written["env"]["MONDEMAND_ALERT_METRIC"] == "latency_ms"
    assert written["env"]["MONDEMAND_ALERT_REPEAT"] == "0"


def test_failing_command_is_logged_with_its_stderr(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="mondemand.alerts.notify")
    command = f"{sys.executable} -c \"import sys; sys.stderr.write('mailbox full\\n'); sys.exit(3)\""
    worker = worker_for("run", {"type": "command", "command": command, "retries": 1}, tmp_path)
    worker.submit(PAYLOAD)
    wait_for(lambda: worker.counters()["failed"] == 1, what="the give-up")
    worker.close()
    assert worker.counters()["retried"] == 1
    assert any("exited with 3: mailbox full" in r.getMessage() for r in caplog.records)


def test_missing_command_is_a_failure_not_a_crash(tmp_path):
    worker = worker_for("run", {"type": "command", "command": str(tmp_path / "no-such-program"), "retries": 0},
                        tmp_path)
    worker.submit(PAYLOAD)
    wait_for(lambda: worker.counters()["failed"] == 1, what="the failure")
    worker.submit(PAYLOAD)  # the worker is still alive
    wait_for(lambda: worker.counters()["failed"] == 2, what="the second failure")
    worker.close()
    assert "cannot run" in worker.last_error


def test_a_full_queue_drops_and_counts(tmp_path, caplog):
    notifier = build_notifier("hook", {"type": "webhook", "url": "http://127.0.0.1:9/"}, tmp_path)
    worker = NotifierWorker(notifier, queue_size=2)  # not started: nothing drains the queue
    assert worker.submit(PAYLOAD) and worker.submit(PAYLOAD)
    assert not worker.submit(PAYLOAD)
    assert worker.counters()["dropped"] == 1 and worker.pending == 2
    assert "queue full" in caplog.text


def test_close_delivers_what_is_queued(tmp_path):
    with WebhookReceiver() as hook:
        worker = worker_for("hook", {"type": "webhook", "url": hook.url}, tmp_path)
        for i in range(5):
            worker.submit({**PAYLOAD, "value": float(i)})
        worker.close(timeout=10)
        assert [doc["value"] for doc in hook.received] == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize(("options", "key"), [
    ({"type": "smtp", "from": "a@b", "to": ["c@d"]}, "host"),
    ({"type": "smtp", "host": "h", "from": "a@b", "to": ["c@d"], "url": "http://x/"}, "url"),
    ({"type": "smtp", "host": "h", "from": "a@b", "to": ["c@d"], "ssl": True, "starttls": True}, "starttls"),
    ({"type": "smtp", "host": "h", "from": "a@b", "to": ["c@d"], "username": "u"}, "password"),
    ({"type": "webhook"}, "url"),
    ({"type": "webhook", "url": "http://x/", "command": "true"}, "command"),
    ({"type": "command"}, "command"),
])
def test_notifier_sections_are_checked_per_type(options, key, tmp_path):
    with pytest.raises(RuleError) as info:
        build_notifier("n", options, tmp_path)
    assert info.value.key == key


def test_parse_headers():
    assert parse_headers("A: 1\n\n  B-C: x: y  \n") == {"A": "1", "B-C": "x: y"}
    with pytest.raises(ValueError):
        parse_headers("no colon here")
