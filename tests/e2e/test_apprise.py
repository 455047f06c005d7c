"""`type = apprise` notifiers end to end: a real server fires an alert through Apprise to local receivers.

Apprise's `json://` posts to a local HTTP receiver and its `mailto://` to a
local aiosmtpd server. SMS and voice gateways (Twilio, Vonage ...) need
accounts and are not exercised here (docs/alerts.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backends.alerts.alert_helpers import WebhookReceiver, smtp_server
from tests.e2e.harness import ServerProcess, emit, free_port, wait_for
from tests.e2e.test_alerts import config

pytest.importorskip("apprise")


def test_an_alert_goes_out_through_apprise_json_and_mailto(tmp_path: Path) -> None:
    port = free_port()
    with WebhookReceiver() as hook, smtp_server() as (smtp_port, mails):
        json_url = hook.url.replace("http://", "json://")
        mail_url = f"mailto://127.0.0.1:{smtp_port}?mode=insecure&from=alerts@example.org&to=oncall@example.org"
        server = ServerProcess(tmp_path, config(port, tmp_path / "alerts.json", f"""
[alert:slow]
metric = myapp:latency_ms
above = 100
notify = phone

[notifier:phone]
type = apprise
urls = {json_url}, {mail_url}
retry_delay = 100ms
"""))
        try:
            emit("-p", str(port), "stats", "--prog-id", "myapp", "--gauge", "latency_ms=250", "-c", "host=web01")
            wait_for(lambda: hook.received and mails, timeout=20, what="the Apprise JSON post and mail")
            doc = hook.received[0]
            assert doc["title"].startswith("FIRING slow: myapp latency_ms on web01: value 250 is above 100")
            assert '"alert": "slow"' in doc["message"] and doc["type"] == "failure"
            _, rcpts, msg = mails[0]
            assert rcpts == ["oncall@example.org"] and "FIRING slow" in msg["Subject"]
            assert server.status()["backends"]["alerts"]["backend.notify_sent"] == 1
        finally:
            assert server.stop() == 0


def test_a_url_apprise_does_not_know_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    from mondemand.backends.alerts.backend import check_alert_sections

    sections = {"alert": {"a": {"metric": "p:m", "above": 1.0, "notify": ["x"]}},
                "notifier": {"x": {"type": "apprise", "urls": ["nosuchscheme://secret@host/path"]}}}
    problems, _rules, _notifiers = check_alert_sections("alerts", [], sections, tmp_path)
    assert [(p.section, p.key) for p in problems] == [("notifier:x", "urls")]
    assert "secret" not in str(problems[0]) and "nosuchscheme://***@host/..." in str(problems[0])
