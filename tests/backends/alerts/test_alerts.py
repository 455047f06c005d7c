"""The alerts backend in-process: rules from sections, notifications, state file, /alerts document."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from mondemand.backends.alerts.backend import ALERT_OPTIONS, NOTIFIER_OPTIONS, AlertConfigError, AlertsBackend

from mondemand.envelope import RawEvent
from mondemand.messages import LogLine, LogMsg, Metric, MetricType, Priority, StatsMsg
from mondemand.options import parse_options
from mondemand.plugin_api import ServerContext
from tests.backends.alerts.alert_helpers import WebhookReceiver
from tests.e2e.harness import wait_for


def section(schema, raw: dict[str, str]) -> dict:
    values, problems = parse_options(schema, raw)
    assert not problems, problems
    return values


def make_backend(tmp_path: Path, alerts: dict[str, dict[str, str]], notifiers: dict[str, dict[str, str]],
                 **options) -> AlertsBackend:
    context = ServerContext(hostname="router1", config_dir=tmp_path, sections={
        "alert": {name: section(ALERT_OPTIONS, raw) for name, raw in alerts.items()},
        "notifier": {name: section(NOTIFIER_OPTIONS, raw) for name, raw in notifiers.items()},
    })
    config = section(AlertsBackend.options, {"state_file": "alerts.json", **options})
    backend = AlertsBackend("alerts", config, context)
    backend.start()
    return backend


def stats(value: int, prog_id: str = "myapp", host: str = "web01", name: str = "latency_ms") -> RawEvent:
    msg = StatsMsg(prog_id, host=host, metrics=[Metric(MetricType.GAUGE, name, value)])
    return RawEvent.from_event(msg.to_lwes()[0])


def hook_notifier(url: str) -> dict[str, str]:
    return {"type": "webhook", "url": url, "retries": "0"}


def test_transition_notifies_persists_and_is_served(tmp_path):
    with WebhookReceiver() as hook:
        backend = make_backend(tmp_path, {"slow": {"metric": "myapp:latency_ms", "above": "100", "notify": "hook"}},
                               {"hook": hook_notifier(hook.url)})
        backend.handle([stats(50), stats(250), stats(300)])
        wait_for(lambda: hook.received, what="the firing webhook")
        doc = hook.received[0]
        assert doc["alert"] == "slow" and doc["state"] == "firing" and doc["value"] == 250.0
        assert doc["series"] == {"prog_id": "myapp", "host": "web01", "metric": "latency_ms", "context": {}}
        assert doc["server"] == "router1"
        saved = json.loads((tmp_path / "alerts.json").read_text())
        [entry] = saved["alerts"]["slow"].values()
        assert entry["state"] == "firing"
        status, body = backend.context.http_routes["/alerts"]("/alerts", {})
        assert status == 200 and body["firing"] == 1
        assert body["rules"]["slow"]["series"][0]["state"] == "firing"
        assert body["notifiers"]["hook"]["target"] == hook.url
        assert backend.context.http_routes["/alerts"]("/alerts/nope", {})[0] == 404
        assert backend.context.http_routes["/alerts"]("/alerts/slow", {"state": "ok"})[1]["rules"]["slow"][
            "series"] == []
        counters = backend.counters()
        assert counters["firing"] == 1 and counters["transitions"] == 1 and counters["state_writes"] >= 1
        backend.close()
        assert counters["notify_sent"] <= 1 and backend.counters()["notify_sent"] == 1
        assert "/alerts" not in backend.context.http_routes


def test_state_survives_a_restart_without_a_duplicate(tmp_path):
    alerts = {"slow": {"metric": "myapp:latency_ms", "above": "100", "hysteresis": "20", "notify": "hook"}}
    with WebhookReceiver() as hook:
        first = make_backend(tmp_path, alerts, {"hook": hook_notifier(hook.url)})
        first.handle([stats(250)])
        first.close()
        assert [d["state"] for d in hook.received] == ["firing"]
        second = make_backend(tmp_path, alerts, {"hook": hook_notifier(hook.url)})
        assert second.counters()["firing"] == 1
        second.handle([stats(260), stats(90)])  # 90 is inside the hysteresis band
        second.flush()
        second.handle([stats(70)])
        second.close()
    assert [d["state"] for d in hook.received] == ["firing", "ok"]


def test_window_is_checked_at_flush(tmp_path):
    with WebhookReceiver() as hook:
        backend = make_backend(tmp_path, {"slow": {"metric": "myapp:*", "above": "100", "window": "200ms",
                                                   "notify": "hook"}}, {"hook": hook_notifier(hook.url)})
        backend.handle([stats(250)])
        backend.flush()
        assert backend.counters()["firing"] == 0
        time.sleep(0.25)
        backend.flush()
        assert backend.counters()["firing"] == 1
        backend.close()
    assert [d["state"] for d in hook.received] == ["firing"]


def test_any_message_is_a_sign_of_life_for_not_seen(tmp_path):
    backend = make_backend(tmp_path, {"gone": {"metric": "myapp", "host": "web01", "not_seen": "400ms"}}, {})
    log = LogMsg("myapp", host="web01", lines=[LogLine("x.py", 1, Priority.INFO, "hello")])
    time.sleep(0.3)
    backend.handle([RawEvent.from_event(log.to_lwes())])
    time.sleep(0.2)
    backend.flush()  # 0.5 s after start, but only 0.2 s after the log line
    assert backend.counters()["firing"] == 0
    time.sleep(0.25)
    backend.flush()
    assert backend.counters()["firing"] == 1
    backend.handle([stats(1)])
    assert backend.counters()["firing"] == 0
    backend.close()


def test_cross_section_problems_are_all_reported(tmp_path):
    with pytest.raises(AlertConfigError) as info:
        make_backend(tmp_path, {
            "a": {"metric": "myapp:x", "above": "1", "notify": "pager, hook"},
            "b": {"metric": "myapp:x", "above": "1", "no_data": "5m"},
        }, {"hook": {"type": "webhook"}}, rules="a b c")
    assert info.value.problems == [
        "[backend:alerts] rules: no [alert:c] section",
        "[notifier:hook] url: required for type = webhook",
        "[alert:a] notify: no [notifier:pager] section",
        "[alert:b] no_data: cannot be combined with above/below; use another [alert:...] section",
    ]


def test_unreadable_state_file_is_moved_aside(tmp_path, caplog):
    (tmp_path / "alerts.json").write_text("{not json")
    caplog.set_level(logging.ERROR)
    backend = make_backend(tmp_path, {"slow": {"metric": "myapp:latency_ms", "above": "100"}}, {})
    assert "is unreadable" in caplog.text
    aside = list(tmp_path.glob("alerts.json.bad-*"))
    assert len(aside) == 1 and aside[0].read_text() == "{not json"
    backend.handle([stats(500)])
    assert backend.counters()["firing"] == 1
    backend.close()
    assert json.loads((tmp_path / "alerts.json").read_text())["version"] == 1
