"""Issue 18: redirects, secrets in messages, and wire names that are not clean text, against real receivers."""

from __future__ import annotations

import base64
import json
import logging
import sys
from pathlib import Path

import pytest
from mondemand.backends.alerts.notifiers import (
    CommandNotifier,
    NotifierWorker,
    SmtpNotifier,
    WebhookNotifier,
    build_notifier,
    clean_payload,
    escape_text,
)

from tests.backends.alerts.alert_helpers import smtp_server
from tests.e2e.harness import wait_for
from tests.reliability.receivers import Answer, Receiver

FAST = {"retries": 2, "retry_delay": 0.01, "retry_max": 0.05, "timeout": 2.0}
#: prog_id, host, metric and context as they may come off the wire: NUL, CR/LF, a header, a byte not UTF-8.
DIRTY_PROG = "my\x00app"
DIRTY_HOST = "web01\r\nBcc: victim@example.org"
DIRTY_METRIC = "lat\udce9ncy\u2028ms"


def dirty_payload() -> dict:
    summary = f"{DIRTY_PROG} {DIRTY_METRIC} on {DIRTY_HOST}: value 250 is above 100"
    return {"alert": "slow", "state": "firing", "previous": "ok", "repeat": False, "condition": "above",
            "summary": summary, "value": 250.0,
            "series": {"prog_id": DIRTY_PROG, "host": DIRTY_HOST, "metric": DIRTY_METRIC,
                       "context": {"dc\x00": "us\r\neast\udcff"}},
            "time": 1_700_000_000.0, "time_iso": "2023-11-14T22:13:20.000Z", "since": 1_700_000_000.0,
            "server": "router1"}


def worker_for(name: str, options: dict, tmp_path: Path) -> NotifierWorker:
    options = {**FAST, **options}
    worker = NotifierWorker.for_options(build_notifier(name, options, tmp_path), options)
    worker.start()
    return worker


def finish(worker: NotifierWorker) -> dict:
    wait_for(lambda: worker.sent + worker.failed >= 1, what="the delivery to end")
    worker.close(2)
    return worker.counters()


# -- redirects ---------------------------------------------------------------------------------


def test_a_redirect_is_not_followed_by_default_and_is_a_retried_failure(tmp_path, caplog):
    with Receiver() as other, Receiver(default=Answer(302)) as hook:
        hook.default = Answer(302, other.url("/stolen"))
        worker = worker_for("hook", {"type": "webhook", "url": hook.url(),
                                     "headers": "Authorization: Bearer s3cr3t-t0ken"}, tmp_path)
        with caplog.at_level(logging.WARNING, "mondemand.alerts.notify"):
            worker.submit(dirty_payload())
            counters = finish(worker)
    assert counters["sent"] == 0 and counters["failed"] == 1 and counters["retried"] == 2
    assert len(hook.posts("/hook")) == 3  # retried with back-off like any failure
    assert other.requests == []  # neither the body nor the Authorization went to the other port
    assert "HTTP 302" in worker.last_error and "not followed (follow_redirects = false)" in worker.last_error
    assert "s3cr3t-t0ken" not in caplog.text


def test_a_redirect_to_another_origin_is_refused_even_when_following(tmp_path):
    with Receiver() as other, Receiver() as hook:
        hook.default = Answer(307, other.url("/elsewhere"))
        worker = worker_for("hook", {"type": "webhook", "url": hook.url(), "follow_redirects": True,
                                     "headers": "Authorization: Bearer s3cr3t-t0ken"}, tmp_path)
        worker.submit(dirty_payload())
        counters = finish(worker)
    assert counters == {**counters, "sent": 0, "failed": 1}
    assert other.requests == []
    assert "another origin, not followed" in worker.last_error


def test_a_same_origin_redirect_is_followed_with_body_and_headers_when_asked(tmp_path):
    with Receiver() as hook:
        hook.script["/hook"] = [Answer(308, "/moved")]
        hook.script["/moved"] = [Answer(302, f"http://127.0.0.1:{hook.port}/final")]
        worker = worker_for("hook", {"type": "webhook", "url": hook.url(), "follow_redirects": True,
                                     "headers": "Authorization: Bearer s3cr3t-t0ken"}, tmp_path)
        worker.submit(dirty_payload())
        counters = finish(worker)
    assert counters["sent"] == 1 and counters["failed"] == 0
    assert [r.path for r in hook.posts()] == ["/hook", "/moved", "/final"]
    final = hook.posts()[-1]
    assert json.loads(final.body)["alert"] == "slow"  # the body went along: a POST, not a GET
    assert final.headers["Authorization"] == "Bearer s3cr3t-t0ken"


def test_a_303_is_a_failure_even_when_following(tmp_path):
    with Receiver() as hook:
        hook.script["/hook"] = [Answer(303, "/result")] * 3
        worker = worker_for("hook", {"type": "webhook", "url": hook.url(), "follow_redirects": True}, tmp_path)
        worker.submit(dirty_payload())
        counters = finish(worker)
    assert counters["sent"] == 0 and counters["failed"] == 1
    assert hook.posts("/result") == [] and [r for r in hook.requests if r.method == "GET"] == []


@pytest.mark.parametrize("status", [204, 304, 404, 500])
def test_only_2xx_counts_as_sent(tmp_path, status):
    with Receiver(default=Answer(status)) as hook:
        worker = worker_for("hook", {"type": "webhook", "url": hook.url(), "retries": 0}, tmp_path)
        worker.submit(dirty_payload())
        counters = finish(worker)
    assert counters["sent"] == (1 if status == 204 else 0)


def test_userinfo_is_sent_as_basic_authentication_and_never_logged(tmp_path, caplog):
    with Receiver() as hook:
        hook.script["/hook"] = [Answer(500)]
        url = f"http://alerter:pa%3Ass-w0rd@127.0.0.1:{hook.port}/hook?token=t0k3n-abc"
        worker = worker_for("hook", {"type": "webhook", "url": url}, tmp_path)
        with caplog.at_level(logging.INFO, "mondemand.alerts.notify"):
            worker.submit(dirty_payload())
            wait_for(lambda: worker.sent, what="the retried delivery")
        worker.close(2)
    auth = hook.posts()[-1].headers["Authorization"]
    assert base64.b64decode(auth.split()[1]).decode() == "alerter:pa:ss-w0rd"
    assert hook.posts()[-1].path == "/hook?token=t0k3n-abc"
    assert "HTTP 500" in caplog.text  # the failure was logged ...
    for secret in ("pa%3Ass-w0rd", "pa:ss-w0rd", "t0k3n-abc"):  # ... without the secrets
        assert secret not in caplog.text
    assert f"http://***@127.0.0.1:{hook.port}/hook?token=***" in caplog.text
    assert worker.notifier.describe() == f"http://***@127.0.0.1:{hook.port}/hook?token=***"


def test_an_unexpected_error_logs_a_redacted_traceback(tmp_path, caplog):
    notifier = build_notifier("hook", {"type": "webhook", "url": "http://127.0.0.1:1/h?token=zzz-secret"}, tmp_path)

    def boom(payload):
        raise RuntimeError("library said: http://u:pw-secret@x/?token=zzz-secret")

    notifier.send = boom  # type: ignore[method-assign]
    worker = NotifierWorker(notifier, retries=0)
    worker.start()
    with caplog.at_level(logging.ERROR, "mondemand.alerts.notify"):
        worker.submit(dirty_payload())
        finish(worker)
    assert "Traceback" in caplog.text and "RuntimeError" in caplog.text
    assert "zzz-secret" not in caplog.text and "pw-secret" not in caplog.text
    assert "zzz-secret" not in worker.last_error


# -- data that is not clean text -------------------------------------------------------------


def test_escape_text_is_one_line_utf8_and_idempotent():
    text = escape_text("a\x00b\r\nc\udce9d\u2028e\u00e9\tf")
    assert text == "a\\x00b\\r\\nc\\xe9d\\u2028e\u00e9\\tf"
    assert escape_text(text) == text
    text.encode("utf-8")  # no lone surrogate left
    assert clean_payload({"k\x00": ["v\n", 1]}) == {"k\\x00": ["v\\n", 1]}


def test_smtp_with_dirty_names_delivers_one_mail_without_injected_headers(tmp_path):
    with smtp_server() as (port, messages):
        worker = worker_for("mail", {"type": "smtp", "host": "127.0.0.1", "port": port, "from": "a@example.org",
                                     "to": ["ops@example.org"]}, tmp_path)
        worker.submit(dirty_payload())
        counters = finish(worker)
        assert counters["sent"] == 1 and counters["failed"] == 0
        (_, rcpts, msg), = messages
    assert rcpts == ["ops@example.org"]
    assert msg["Bcc"] is None and "victim" not in "".join(f"{k}{v}" for k, v in msg.items() if k != "Subject")
    subject = str(msg["Subject"])
    assert "\n" not in subject and "\r" not in subject
    assert "my\\x00app" in subject and "lat\\xe9ncy\\u2028ms" in subject and "web01\\r\\nBcc:" in subject
    body = msg.get_content()
    assert "\x00" not in body and "my\\x00app" in body


def test_webhook_with_dirty_names_posts_valid_utf8_json(tmp_path):
    with Receiver() as hook:
        worker = worker_for("hook", {"type": "webhook", "url": hook.url()}, tmp_path)
        worker.submit(dirty_payload())
        assert finish(worker)["sent"] == 1
    doc = json.loads(hook.posts()[0].body.decode("utf-8", errors="strict"))
    text = json.dumps(doc, ensure_ascii=False)
    text.encode("utf-8")  # raises on a lone surrogate: there is none
    assert doc["series"]["prog_id"] == "my\\x00app" and doc["series"]["metric"] == "lat\\xe9ncy\\u2028ms"
    assert doc["series"]["context"] == {"dc\\x00": "us\\r\\neast\\xff"}


def test_command_with_dirty_names_gets_escaped_environment_and_stdin(tmp_path):
    script = tmp_path / "record.py"
    out = tmp_path / "out.json"
    script.write_text(
        "import json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'stdin': sys.stdin.read(), 'env': {{k: v for k, v in os.environ.items()"
        f" if k.startswith('MONDEMAND_')}}}}, open({str(out)!r}, 'w'))\n")
    worker = worker_for("cmd", {"type": "command", "command": f"{sys.executable} {script} --flag"}, tmp_path)
    worker.submit(dirty_payload())
    counters = finish(worker)
    assert counters["sent"] == 1 and counters["failed"] == 0, worker.last_error
    got = json.loads(out.read_text())
    assert got["argv"] == ["--flag"]
    env = got["env"]
    assert env["MONDEMAND_ALERT_PROG_ID"] == "my\\x00app"
    assert env["MONDEMAND_ALERT_HOST"] == "web01\\r\\nBcc: victim@example.org"
    assert env["MONDEMAND_ALERT_METRIC"] == "lat\\xe9ncy\\u2028ms"
    assert "\n" not in env["MONDEMAND_ALERT_SUMMARY"]
    assert json.loads(got["stdin"])["series"]["prog_id"] == "my\\x00app"


def test_describe_never_shows_a_secret(tmp_path):
    smtp = SmtpNotifier("m", {"type": "smtp", "host": "h", "from": "a@b", "to": ["c@d"], "username": "u",
                              "password": "smtp-pa55"}, tmp_path)
    assert "smtp-pa55" not in smtp.describe() and smtp.redact("login smtp-pa55 refused") == "login *** refused"
    hook = WebhookNotifier("w", {"type": "webhook", "url": "https://u:p4ss@h/x?token=abc",
                                 "headers": "X-Key: k3y-value"}, tmp_path)
    assert hook.describe() == "https://***@h/x?token=***"
    assert hook.redact("sent k3y-value and p4ss") == "sent *** and ***"
    cmd = CommandNotifier("c", {"type": "command", "command": "curl -d @- https://u:pw@h/?t=123"}, tmp_path)
    assert cmd.describe() == "curl -d @- https://***@h/?t=***"
