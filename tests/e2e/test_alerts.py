"""End to end: a real mondemand-server with [alert:...] sections, real SMTP and webhook receivers, a restart."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.backends.alerts.alert_helpers import WebhookReceiver, smtp_server
from tests.e2e.harness import BIN, ServerProcess, emit, free_port, wait_for


def alerts_doc(server: ServerProcess) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/alerts", timeout=2) as resp:
        return json.load(resp)


def config(port: int, state_file, extra: str) -> str:
    return f"""
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {port}

[backend:alerts]
type = alerts
state_file = {state_file}
flush_interval = 100ms

[route:alerts]
events = MonDemand::StatsMsg, MonDemand::LogMsg
backends = alerts
{extra}
"""


def test_threshold_alert_mails_and_posts_and_survives_a_restart(tmp_path):
    port = free_port()
    state_file = tmp_path / "alerts.json"
    with WebhookReceiver() as hook, smtp_server() as (smtp_port, mails):
        text = config(port, state_file, f"""
[alert:slow]
metric = myapp:latency_ms
host = web*
above = 100
hysteresis = 10
window = 1s
notify = hook, mail

[notifier:hook]
type = webhook
url = {hook.url}
retry_delay = 100ms

[notifier:mail]
type = smtp
host = 127.0.0.1
port = {smtp_port}
from = mondemand@example.org
to = ops@example.org
""")
        (tmp_path / "one").mkdir()
        server = ServerProcess(tmp_path / "one", text)
        try:
            sent_at = time.time()
            emit("-p", str(port), "stats", "--prog-id", "myapp", "--gauge", "latency_ms=250", "-c", "host=web01")
            wait_for(lambda: hook.received and mails, what="the firing webhook and mail")
            doc = hook.received[0]
            assert doc["state"] == "firing" and doc["alert"] == "slow" and doc["value"] == 250.0
            assert doc["series"]["host"] == "web01"
            assert doc["time"] - sent_at >= 1.0  # the value had to stand for the whole window
            _, rcpts, msg = mails[0]
            assert rcpts == ["ops@example.org"] and "FIRING slow" in msg["Subject"]
            served = alerts_doc(server)
            assert served["firing"] == 1 and served["rules"]["slow"]["series"][0]["state"] == "firing"
            assert server.status()["backends"]["alerts"]["backend.notify_sent"] == 2
        finally:
            assert server.stop() == 0
        saved = json.loads(state_file.read_text())
        assert [s["state"] for s in saved["alerts"]["slow"].values()] == ["firing"]

        (tmp_path / "two").mkdir()
        server = ServerProcess(tmp_path / "two", text)
        try:
            assert alerts_doc(server)["firing"] == 1  # restored, not re-notified
            emit("-p", str(port), "stats", "--prog-id", "myapp", "--gauge", "latency_ms=260", "-c", "host=web01")
            emit("-p", str(port), "stats", "--prog-id", "myapp", "--gauge", "latency_ms=95", "-c", "host=web01")
            time.sleep(1.5)  # longer than the window: a forgotten state would have fired again by now
            assert len(hook.received) == 1 and len(mails) == 1  # 95 is inside the hysteresis band
            emit("-p", str(port), "stats", "--prog-id", "myapp", "--gauge", "latency_ms=40", "-c", "host=web01")
            wait_for(lambda: len(hook.received) == 2 and len(mails) == 2, what="the resolved notifications")
            assert hook.received[1]["state"] == "ok" and hook.received[1]["value"] == 40.0
            assert "OK slow" in mails[1][2]["Subject"]
            assert alerts_doc(server)["firing"] == 0
        finally:
            assert server.stop() == 0
        assert "alert state restored" in server.log()
        assert [d["state"] for d in hook.received] == ["firing", "ok"]


def test_stopped_responding_runs_a_command(tmp_path):
    port = free_port()
    script = tmp_path / "record.py"
    script.write_text("import os\nopen('states.txt', 'a').write(os.environ['MONDEMAND_ALERT_STATE'] + '\\n')\n")
    server = ServerProcess(tmp_path, config(port, tmp_path / "alerts.json", f"""
[alert:gone]
metric = myapp
host = web01
not_seen = 1s
notify = run

[notifier:run]
type = command
command = {sys.executable} {script}
"""))
    out = tmp_path / "states.txt"  # the command runs in the config's directory
    try:
        wait_for(lambda: out.exists() and out.read_text() == "firing\n", what="the firing command")
        emit("-p", str(port), "log", "--prog-id", "myapp", "-c", "host=web01", "--priority", "info", "-m", "back")
        wait_for(lambda: out.read_text() == "firing\nok\n", what="the resolved command")
    finally:
        assert server.stop() == 0


def run_check(tmp_path, text: str, *flags: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "routes.ini"
    path.write_text(text)
    return subprocess.run([str(BIN / "mondemand-server"), "-c", str(path), *flags], capture_output=True, text=True,
                          timeout=60)


def test_check_names_the_section_and_key(tmp_path):
    base = config(free_port(), tmp_path / "alerts.json", "")
    good = run_check(tmp_path, base + "\n[alert:slow]\nmetric = myapp:latency_ms\nabove = 100\nwindow = 5m\n",
                     "--check")
    assert good.returncode == 0, good.stderr
    bad = run_check(tmp_path, base + "\n[alert:slow]\nmetric = myapp:latency_ms\nabove = lots\nwindow = soon\n",
                    "--check")
    assert bad.returncode == 2
    assert "[alert:slow] above: expected a number" in bad.stderr
    assert "[alert:slow] window: expected a duration" in bad.stderr


@pytest.mark.parametrize("flags", [("--check",), ()], ids=["check", "start"])
def test_rules_that_cannot_work_are_refused_by_check_and_at_start(tmp_path, flags):
    base = config(free_port(), tmp_path / "alerts.json", "")
    result = run_check(tmp_path, base + "\n[alert:slow]\nmetric = myapp:latency_ms\nabove = 100\nnotify = pager\n"
                                        "\n[notifier:mail]\ntype = smtp\nhost = localhost\nto = a@example.org\n",
                       *flags)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "error: routes.ini: [alert:slow] notify: no [notifier:pager] section" in result.stderr.splitlines()
    assert "error: routes.ini: [notifier:mail] from: required for type = smtp" in result.stderr.splitlines()


def test_check_refuses_a_webhook_notifier_without_url(tmp_path):
    base = config(free_port(), tmp_path / "alerts.json", "")
    result = run_check(tmp_path, base + "\n[alert:slow]\nmetric = myapp:latency_ms\nabove = 100\nnotify = hook\n"
                                        "\n[notifier:hook]\ntype = webhook\n", "--check")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: routes.ini: [notifier:hook] url: required for type = webhook"]


def test_check_refuses_rules_naming_missing_alert_sections(tmp_path):
    text = config(free_port(), tmp_path / "alerts.json", "").replace("type = alerts\n", "type = alerts\nrules = gone\n")
    assert "rules = gone" in text
    result = run_check(tmp_path, text, "--check")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: routes.ini: [backend:alerts] rules: no [alert:gone] section"]
