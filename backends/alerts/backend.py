"""`alerts` backend: evaluate `[alert:NAME]` rules on routed messages and notify.

Route StatsMsg events to it (and any other MonDemand messages: every message
counts as a sign of life for `not_seen` rules). `handle` feeds each matching
metric to its rules; `flush`, called every `flush_interval`, checks windows,
silences and reminders. Each transition is written to the state file
(atomically) before its notifications are queued, so a restart neither loses
a firing alert nor notifies it twice. Notifications go through one
`NotifierWorker` per notifier: handling never waits for SMTP or HTTP.
The current state is served at `/alerts` on the server's HTTP port.
See docs/alerts.md.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mondemand.atomicfile import write_json_atomic
from mondemand.cardinality import cardinality_options, guard_sender
from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.messages import StatsMsg
from mondemand.options import DAY, Option, SectionProblem
from mondemand.plugin_api import Backend
from mondemand.tenancy import tenant_of

from .notifiers import NOTIFIER_OPTIONS, Notifier, NotifierWorker, build_notifier, clean_payload
from .rules import NOT_SEEN, STATS, Rule, RuleError, RuleState, Transition, rule_from_options, series_key
from .silences import SILENCES_FILE, Silences

__all__ = ["ALERT_OPTIONS", "NOTIFIER_OPTIONS", "AlertConfigError", "AlertsBackend", "check_alert_sections"]

STATE_VERSION = 1
#: Transitions kept for the `/alerts` document's history (the dashboard's alert view).
HISTORY_KEPT = 200

#: Keys of an `[alert:NAME]` section; combinations are checked at load (`check_alert_sections`) and at start.
ALERT_OPTIONS = (
    Option("metric", "str", required=True, help="PROG_ID:NAME (globs allowed), or PROG_ID for not_seen"),
    Option("host", "str", "*", help="host glob"),
    Option("context", "list", (), help="key=glob context filters, all of which must match"),
    Option("stat", "str", "auto", choices=STATS,
           help="number compared: auto (gauge value, counter rate/s, statset avg), value, rate or a statset field"),
    Option("above", "float", None, help="fire when the value is over this"),
    Option("below", "float", None, help="fire when the value is under this"),
    Option("clear_above", "float", None, help="an above alert clears at or under this (default above - hysteresis)"),
    Option("clear_below", "float", None, help="a below alert clears at or over this (default below + hysteresis)"),
    Option("hysteresis", "float", 0.0, minimum=0, help="distance from the limit a value must return to clear"),
    Option("window", "duration", 0.0, minimum=0, maximum=DAY,
           help="how long the condition must hold (all) or averaging span (avg)"),
    Option("window_mode", "str", "all", choices=("all", "avg"), help="all: every value over the window; avg: mean"),
    Option("clear_window", "duration", 0.0, minimum=0, maximum=DAY, help="how long the clear condition must hold"),
    Option("no_data", "duration", None, minimum=0.001, help="stopped working: a matching series silent this long"),
    Option("not_seen", "duration", None, minimum=0.001,
           help="stopped responding: nothing from the prog_id on a host this long"),
    Option("notify", "list", (), help="[notifier:NAME] sections to tell"),
    Option("repeat", "duration", 0.0, minimum=0, help="remind this often while firing; 0 = never"),
    Option("max_series", "int", 10_000, minimum=1, help="most series one rule tracks"),
    *cardinality_options(per_sender=2_000, per_prog_id=5_000, per_datagram=1000, per_minute=2000),
)


class AlertConfigError(Exception):
    """Alert or notifier sections that cannot work together; one line per problem, naming section and key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def check_alert_sections(
    backend: str, wanted: Sequence[str], sections: Mapping[str, Mapping[str, Mapping[str, Any]]], config_dir: Path,
) -> tuple[list[SectionProblem], dict[str, Rule], dict[str, Notifier]]:
    """Validate the `[alert:NAME]` sections `wanted` (default: all) and every `[notifier:NAME]` together.

    Returns every problem found, the rules and the notifiers; the config loader
    (and so `--check`) and `AlertsBackend.start` both call it.
    """
    alerts = sections.get("alert", {})
    notifier_sections = sections.get("notifier", {})
    problems: list[SectionProblem] = []
    names = list(wanted) or list(alerts)
    for name in names:
        if name not in alerts:
            problems.append(SectionProblem(f"backend:{backend}", "rules", f"no [alert:{name}] section"))
    notifiers: dict[str, Notifier] = {}
    for name, options in notifier_sections.items():
        try:
            notifiers[name] = build_notifier(name, options, config_dir)
        except RuleError as exc:
            problems.append(SectionProblem(f"notifier:{name}", exc.key, exc.message))
    rules: dict[str, Rule] = {}
    for name in names:
        if name not in alerts:
            continue
        try:
            rule = rule_from_options(name, alerts[name])
        except RuleError as exc:
            problems.append(SectionProblem(f"alert:{name}", exc.key, exc.message))
            continue
        for target in rule.notify:
            if target not in notifier_sections:
                problems.append(SectionProblem(f"alert:{name}", "notify", f"no [notifier:{target}] section"))
        rules[name] = rule
    return problems, rules, notifiers


def payload(transition: Transition, server: str, tenant: str = "") -> dict[str, Any]:
    """The JSON document a notifier sends for `transition`; wire strings escaped (`notifiers.escape_text`).

    In service mode a tenant's alerts copy adds `tenant`, so that a rule and notifier shared by several
    tenants still say whose series fired."""
    document = clean_payload({
        "alert": transition.rule,
        "state": transition.state,
        "previous": transition.previous,
        "repeat": transition.repeat,
        "condition": transition.condition,
        "summary": transition.summary,
        "value": transition.value,
        "series": dict(transition.labels),
        "time": round(transition.time, 3),
        "time_iso": _iso(transition.time),
        "since": round(transition.since, 3),
        "server": server,
    })
    if tenant:
        document["tenant"] = tenant  # a configured [tenant:NAME]: no wire text to escape
    return document


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class AlertsBackend(Backend):
    """Evaluate alert rules on StatsMsg traffic and send notifications on each change of state."""

    type_name = "alerts"
    needs = "message"
    options = (
        Option("state_file", "str", "", help="JSON file keeping alert states across restarts (relative to the "
                                             "config directory); empty: states start over on restart"),
        Option("rules", "list", (), help="[alert:NAME] sections this backend evaluates (default: all)"),
        Option("http_path", "str", "/alerts", help="path of the state document on the [http] port"),
        Option("forget_after", "duration", 86_400.0, minimum=1, maximum=400 * DAY,
               help="an ok above/below series silent this long is forgotten"),
        Option("shutdown_timeout", "duration", 10.0, minimum=0, maximum=DAY,
               help="how long close waits for pending notifications"),
    )

    @classmethod
    def check_config(
        cls, name: str, options: Mapping[str, Any], sections: Mapping[str, Mapping[str, Mapping[str, Any]]],
        config_dir: Path,
    ) -> list[SectionProblem]:
        """What `start` would refuse: rules naming missing sections or notifiers, notifier keys, rule combinations."""
        return check_alert_sections(name, options.get("rules") or (), sections, config_dir)[0]

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        now = time.time()
        self._lock = threading.Lock()
        self.transitions = 0
        self.state_writes = 0
        self.state_errors = 0
        problems, rules, notifiers = check_alert_sections(self.name, self.config["rules"], self.context.sections,
                                                          self.context.config_dir)
        if problems:
            raise AlertConfigError([str(p) for p in problems])
        notifier_sections: Mapping[str, Mapping[str, Any]] = self.context.sections.get("notifier", {})
        self.workers: dict[str, NotifierWorker] = {
            name: NotifierWorker.for_options(notifier, notifier_sections[name]) for name, notifier in notifiers.items()
        }
        self.rules: dict[str, RuleState] = {
            name: RuleState(rule, now, self.config["forget_after"]) for name, rule in rules.items()
        }
        if not self.rules:
            self.log.warning("alerts backend %s has no [alert:NAME] rules to evaluate", self.name)
        #: (sender, datagram) of the event being observed, shared with every rule's cardinality guard
        self._admission: list[Any] = [None, None]
        for state in self.rules.values():
            state.admission = self._admission
        self._metric_rules = [r for r in self.rules.values() if r.rule.kind != NOT_SEEN]
        self._source_rules = [r for r in self.rules.values() if r.rule.kind == NOT_SEEN]
        path = self.config["state_file"]
        self.state_path = (self.context.config_dir / path) if path else None
        # Silences and acknowledgements the dashboard writes beside the state file (backends/alerts/silences.py).
        self.silences = Silences(self.state_path.with_name(SILENCES_FILE) if self.state_path else None)
        self.silences.reload()
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=HISTORY_KEPT)
        self._load_state()
        for worker in self.workers.values():
            worker.start()
        self.context.http_routes[self.config["http_path"]] = self.http_get

    def handle(self, batch: list[RawEvent]) -> None:
        out: list[Transition] = []
        with self._lock:
            for raw in batch:
                try:
                    self._observe(raw, out)
                except Exception as exc:  # bad data in this event (e.g. a value no float holds): it alone is dropped
                    self.reject(raw, exc)
            self._commit(out)

    def _observe(self, raw: RawEvent, out: list[Transition]) -> None:
        """Feed one event to the rules (under the lock), adding the transitions it causes to `out`."""
        msg = raw.message
        prog_id, host = getattr(msg, "prog_id", None), getattr(msg, "host", None)
        if not isinstance(prog_id, str) or not isinstance(host, str):
            return
        t = raw.receipt_ms / 1000.0
        admission = self._admission
        admission[0], admission[1] = guard_sender(raw.sender_ip, raw.listener), raw
        for state in self._source_rules:
            if state.rule.selector.matches_source(prog_id, host):
                out += state.seen(prog_id, host, t)
        if not isinstance(msg, StatsMsg):
            return
        for state in self._metric_rules:
            if not state.rule.selector.matches_source(prog_id, host):
                continue
            for metric in msg.metrics:
                out += state.observe(prog_id, host, metric.name, msg.context, metric.type.value, metric.value, t)

    def flush(self) -> None:
        now = time.time()
        with self._lock:
            self.silences.reload()
            out: list[Transition] = []
            for state in self.rules.values():
                out += state.tick(now)
            self._commit(out, periodic=True)

    def close(self) -> None:
        with self._lock:
            if any(state.dirty for state in self.rules.values()):
                self._save_state()
        for worker in self.workers.values():
            worker.close(self.config["shutdown_timeout"])
        if self.context.http_routes.get(self.config["http_path"]) == self.http_get:
            del self.context.http_routes[self.config["http_path"]]

    def counters(self) -> dict[str, float]:
        values: dict[str, float] = {
            "rules": len(self.rules),
            "firing": sum(state.firing for state in self.rules.values()),
            "series": sum(len(state.series) for state in self.rules.values()),
            "series_overflow": sum(state.overflow for state in self.rules.values()),
            "series_refused": sum(state.refused for state in self.rules.values()),
            "transitions": self.transitions,
            "state_writes": self.state_writes,
            "state_errors": self.state_errors,
            "notify_muted": self.silences.muted if hasattr(self, "silences") else 0,
        }
        for state in self.rules.values():  # refusals by reason and source, summed over the rules
            if state.guard is not None:
                for key, value in state.guard.counters().items():
                    values[key] = values.get(key, 0) + value
        for key in ("sent", "failed", "retried", "dropped"):
            values[f"notify_{key}"] = sum(w.counters()[key] for w in self.workers.values())
        return values

    # -- transitions ---------------------------------------------------------------

    def _commit(self, transitions: list[Transition], periodic: bool = False) -> None:
        """Persist (on any change, or new series at a periodic flush), then queue the notifications."""
        outgoing = []
        for transition in transitions:
            document = payload(transition, self.context.hostname, tenant_of(self.name))
            key = series_key(transition.labels)
            muted = self.silences.mutes(transition.rule, key, transition.state, transition.repeat, transition.since,
                                        transition.time)
            self.recent.append({**document, "key": key, "muted": muted})
            outgoing.append((transition, document, muted))
        if transitions or (periodic and any(state.dirty for state in self.rules.values())):
            self._save_state()
        for transition, document, muted in outgoing:
            self.transitions += 1
            rule = self.rules[transition.rule].rule
            level = logging.WARNING if transition.state == "firing" else logging.INFO
            self.log.log(level, "alert %s %s%s: %s", transition.rule, transition.state.upper(),
                         " (reminder)" if transition.repeat else "", document["summary"])  # escaped: one line
            if muted:
                continue  # silenced, or a reminder of an acknowledged episode: state kept, nobody told
            for target in rule.notify:
                self.workers[target].submit(document)

    # -- state file ------------------------------------------------------------------

    def _load_state(self) -> None:
        path = self.state_path
        if path is None or not path.exists():
            return
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("version") != STATE_VERSION \
                    or not isinstance(data.get("alerts"), dict):
                raise ValueError(f"not a version {STATE_VERSION} alert state document")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            aside = path.with_name(f"{path.name}.bad-{int(time.time())}")
            try:
                path.replace(aside)
            except OSError:
                aside = path
            self.state_errors += 1
            self.log.error("alert state file %s is unreadable (%s); moved it to %s and starting with every alert "
                           "ok", path, exc, aside.name)
            return
        history = data.get("history")
        if isinstance(history, list):
            self.recent.extend(h for h in history if isinstance(h, dict) and h.get("alert") in self.rules)
        restored = skipped = 0
        for name, series in data["alerts"].items():
            state = self.rules.get(name)
            if state is None or not isinstance(series, dict):
                continue  # a rule that is gone (or renamed) from routes.ini
            skipped += state.restore(series)
            restored += len(series)
        if skipped:
            self.state_errors += 1
            self.log.error("alert state file %s: skipped %d malformed series entries", path, skipped)
        self.log.info("alert state restored from %s: %d series, %d firing", path, restored - skipped,
                      sum(state.firing for state in self.rules.values()))

    def _save_state(self) -> None:
        path = self.state_path
        for state in self.rules.values():
            state.dirty = False
        if path is None:
            return
        document = {"version": STATE_VERSION, "saved": round(time.time(), 3),
                    "alerts": {name: state.snapshot() for name, state in self.rules.items()},
                    "history": list(self.recent)}
        try:
            write_json_atomic(path, document)
        except OSError as exc:
            self.state_errors += 1
            self.log.error("cannot write alert state file %s: %s (states are kept in memory)", path, exc)
            return
        self.state_writes += 1

    # -- HTTP -------------------------------------------------------------------------

    def http_get(self, path: str, query: Mapping[str, str]) -> tuple[int, Any]:
        """`/alerts` (every rule), `/alerts/NAME` (one rule); `?state=firing` keeps only firing series."""
        rest = path[len(self.config["http_path"]):].strip("/")
        only = query.get("state")
        with self._lock:
            if rest and rest not in self.rules:
                return 404, {"error": f"no alert rule {rest!r}"}
            names = [rest] if rest else list(self.rules)
            now = time.time()
            rules = {name: self._describe_rule(self.rules[name], only) for name in names}
            for name, described in rules.items():
                for entry in described["series"]:
                    entry["silenced_until"] = self.silences.silenced_until(name, entry["key"], now)
                    entry["acked"] = entry["state"] == "firing" and self.silences.acked(name, entry["key"],
                                                                                        entry["since_time"])
            document = {"server": self.context.hostname, "time": round(now, 3), "rules": rules,
                        "history": list(self.recent)[::-1], "silences": self.silences.document,
                        "firing": sum(state.firing for state in self.rules.values()),
                        "notifiers": {name: {"target": w.notifier.describe(), "last_error": w.last_error,
                                             **w.counters()} for name, w in self.workers.items()}}
        return 200, document

    @staticmethod
    def _describe_rule(state: RuleState, only: str | None) -> dict[str, Any]:
        rule = state.rule
        series = []
        for entry in state.series.values():
            if only and entry.state != only:
                continue
            series.append({"labels": clean_payload(entry.labels), "state": entry.state, "since": _iso(entry.since),
                           "value": entry.value, "last_seen": _iso(entry.last_seen),
                           "key": series_key(entry.labels), "since_time": entry.since})
        series.sort(key=lambda s: (s["state"] != "firing", json.dumps(s["labels"], sort_keys=True)))
        limits = {key: getattr(rule, key) for key in ("above", "below", "clear_above", "clear_below")}
        return {"kind": rule.kind, "selector": str(rule.selector), "notify": list(rule.notify), "window": rule.window,
                "window_mode": rule.window_mode, "timeout": rule.timeout, "repeat": rule.repeat,
                **{key: value for key, value in limits.items() if value is not None},
                "firing": state.firing, "series": series}


@hookimpl
def register_backend_types(register) -> None:
    register("alerts", AlertsBackend)


@hookimpl
def register_section_types(register) -> None:
    register("alert", ALERT_OPTIONS)
    register("notifier", NOTIFIER_OPTIONS)


@hookimpl
def server_started(server: Any) -> None:
    """Warn about rules no alerts backend evaluates, or that several do (each would notify)."""
    rules = getattr(server.context, "sections", {}).get("alert", {})
    # From the configuration, not the instances: the backends may run in worker processes.
    wanted = [list(section.options.get("rules") or rules) for section in server.config.backends.values()
              if issubclass(section.cls, AlertsBackend)]
    for name in rules:
        count = sum(1 for names in wanted if name in names)
        if count != 1:
            logging.getLogger("mondemand.alerts").warning(
                "[alert:%s] is evaluated by %d alerts backends%s", name, count,
                "; add a [backend:NAME] with type = alerts and route StatsMsg to it" if not count
                else "; each notifies (use their rules option to split)")
