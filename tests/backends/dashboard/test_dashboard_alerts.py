"""The dashboard's alert view in Debian's headless Chromium, over the real server's alerts backend.

A firing alert is acknowledged (its reminders stop) and silenced (its `ok`
is not sent) from the page; both land in `silences.json` beside the alerts
state file, which the alerts backend (another worker process) rereads.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By

from tests.backends.alerts.alert_helpers import WebhookReceiver
from tests.backends.dashboard import dashboard_scenario as scenario
from tests.e2e.harness import ServerProcess, emit, free_port, wait_for


def _config(port: int, http_port: int, dashboard_port: int, state_file: Path, hook_url: str) -> str:
    return f"""
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {port}

[backend:alerts]
type = alerts
state_file = {state_file}
flush_interval = 100ms

[backend:dashboard]
type = dashboard
port = {dashboard_port}
alerts_url = http://127.0.0.1:{http_port}/alerts
alerts_state_file = {state_file}

[route:alerts]
events = MonDemand::StatsMsg
backends = alerts, dashboard

[alert:slow]
metric = myapp:latency_ms
above = 100
repeat = 300ms
notify = hook

[notifier:hook]
type = webhook
url = {hook_url}
retry_delay = 100ms
"""


def _post(port: int, action: str, body: object, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/alerts/{action}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.fixture
def setup(tmp_path: Path):
    port, http_port, dashboard_port = free_port(), free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    state_file = tmp_path / "alerts.json"
    with WebhookReceiver() as hook:
        server = ServerProcess(tmp_path, _config(port, http_port, dashboard_port, state_file, hook.url),
                               http_port=http_port)
        driver = None
        try:
            driver = scenario.chromium()
            yield port, dashboard_port, state_file, hook, server, driver
        finally:
            if driver is not None:
                driver.quit()
            assert server.stop() == 0, server.log()


def click(driver, css: str) -> None:
    """Click the element; the alert view redraws its list every few seconds, so find it again if it went."""
    for _ in range(20):
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError(f"{css} kept being redrawn under the click")


def test_alert_view_acknowledges_and_silences_from_the_page(setup) -> None:
    port, dashboard_port, state_file, hook, server, driver = setup
    emit("-p", str(port), "stats", "--prog-id", "myapp", "--gauge", "latency_ms=250", "-c", "host=web01")
    wait_for(lambda: len(hook.received) >= 2, what="the firing notification and a reminder")
    driver.get(f"http://127.0.0.1:{dashboard_port}/")
    item = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, '#alerts-firing-list li[data-rule="slow"]'),
                    what="the firing series in the alert view")[0]
    assert "myapp latency_ms on web01" in item.text and "value 250" in item.text

    click(driver, '#alerts-firing-list li[data-rule="slow"] button.ack')
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, '#alerts-firing-list li[data-acked="true"]'),
             what="the series shown as acknowledged")
    time.sleep(0.5)  # the backend rereads silences.json at its next flush (100 ms)
    reminders = len(hook.received)
    time.sleep(1.2)  # four reminder periods
    assert len(hook.received) == reminders, "reminders of an acknowledged episode must stop"

    click(driver, '#alerts-firing-list li[data-rule="slow"] button.silence')
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, '#alerts-firing-list li[data-silenced="true"]'),
             what="the series shown as silenced")
    time.sleep(0.5)
    emit("-p", str(port), "stats", "--prog-id", "myapp", "--gauge", "latency_ms=40", "-c", "host=web01")
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, '#alerts-history li[data-state="ok"][data-muted="true"]'),
             what="the cleared alert in the history, not sent")
    assert [d["state"] for d in hook.received if not d["repeat"]] == ["firing"]  # the ok was silenced
    assert driver.find_elements(By.CSS_SELECTOR, "#alerts-none:not([hidden])")

    saved = json.loads(state_file.with_name("silences.json").read_text())
    assert [s["rule"] for s in saved["silences"]] == ["slow"] and [a["rule"] for a in saved["acks"]] == ["slow"]
    assert saved["silences"][0]["until"] > time.time() + 3000
    assert server.status()["backends"]["alerts"]["backend.notify_muted"] >= 1
    # The history survives in the state file too.
    assert [h["state"] for h in json.loads(state_file.read_text())["history"] if not h["repeat"]] == ["firing", "ok"]

    # Only JSON from the page's own origin; only rules and series the alerts backend knows.
    assert _post(dashboard_port, "silence", {"rule": "slow", "series": None, "seconds": 60}, "text/plain")[0] == 403
    assert _post(dashboard_port, "silence", {"rule": "nope", "series": None, "seconds": 60})[0] == 400
    assert _post(dashboard_port, "silence", {"rule": "slow", "series": "x", "seconds": 60})[0] == 400
    assert _post(dashboard_port, "silence", {"rule": "slow", "series": None, "seconds": 1e9})[0] == 400
    status, answer = _post(dashboard_port, "silence", {"rule": "slow", "series": None, "seconds": 60})
    assert status == 200 and answer["silence"]["series"] is None
