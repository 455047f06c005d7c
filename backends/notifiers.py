"""Alert notifiers: email over SMTP, a webhook (HTTP POST of JSON) and a command.

Each `[notifier:NAME]` section builds one `Notifier`, whose `send(payload)`
delivers one alert or raises `NotifierError`. A `NotifierWorker` runs one
notifier on its own thread behind a bounded queue, retries with a growing
back-off, logs each failure and the final give-up, and counts sent, failed,
retried and dropped notifications, so a slow or dead destination never holds
up event handling or the other notifiers.

The standard library's smtplib, urllib.request and subprocess do all three
jobs with timeouts and TLS; no extra dependency is needed (docs/alerts.md).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shlex
import smtplib
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, ClassVar

from mondemand.options import Option

from .alert_rules import RuleError

log = logging.getLogger("mondemand.alerts.notify")


def parse_headers(text: str) -> dict[str, str]:
    """`Name: value` lines (one per line) as a dict; ValueError for a line without a name."""
    headers: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
            raise ValueError(f"expected 'Name: value' lines (got {line.strip()!r})")
        headers[name.strip()] = value.strip()
    return headers


def _check_headers(text: str) -> None:
    parse_headers(text)


def _check_url(url: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")


def _check_command(text: str) -> None:
    if not shlex.split(text):
        raise ValueError("empty command")


#: Keys of a `[notifier:NAME]` section; which apply depends on `type` (checked at load, with the alerts).
NOTIFIER_OPTIONS = (
    Option("type", "str", required=True, choices=("smtp", "webhook", "command", "apprise"), help="how to notify"),
    Option("retries", "int", 3, minimum=0, help="further attempts after a failed one"),
    Option("retry_delay", "duration", 1.0, minimum=0, help="wait before the first retry; doubles each time"),
    Option("retry_max", "duration", 60.0, minimum=0, help="longest wait between retries"),
    Option("timeout", "duration", 10.0, minimum=0.01, help="limit of one attempt"),
    Option("queue_size", "int", 1000, minimum=1, help="notifications waiting before new ones are dropped"),
    # smtp
    Option("host", "str", None, help="smtp: mail server"),
    Option("port", "port", None, help="smtp: port (default 25, or 465 with ssl)"),
    Option("from", "str", None, help="smtp: sender address"),
    Option("to", "list", None, help="smtp: recipient addresses"),
    Option("starttls", "bool", None, help="smtp: upgrade the connection with STARTTLS"),
    Option("ssl", "bool", None, help="smtp: connect with TLS from the start (SMTPS)"),
    Option("username", "str", None, help="smtp: log in with this user (use ${ENV} for secrets)"),
    Option("password", "str", None, help="smtp: password (use ${ENV})"),
    Option("subject_prefix", "str", None, help="smtp: start of the subject (default [mondemand])"),
    # webhook
    Option("url", "str", None, check=_check_url, help="webhook: where the JSON is POSTed"),
    Option("headers", "str", None, check=_check_headers, help="webhook: extra 'Name: value' lines"),
    # command
    Option("command", "str", None, check=_check_command, help="command: argv, split like a shell; JSON on stdin"),
    # apprise (backends/notify_apprise.py)
    Option("urls", "list", None, help="apprise: Apprise URLs (SMS, voice, chat, mail: docs/alerts.md)"),
)
_COMMON = {"type", "retries", "retry_delay", "retry_max", "timeout", "queue_size"}


class NotifierError(Exception):
    """One delivery attempt failed; the message says why."""


class Notifier:
    """Delivers one alert payload per `send` call, or raises NotifierError/OSError."""

    type_name: ClassVar[str] = ""
    keys: ClassVar[tuple[str, ...]] = ()
    required: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, options: Mapping[str, Any], config_dir: Path) -> None:
        self.name = name
        self.options = dict(options)
        self.config_dir = config_dir
        self.timeout = float(options.get("timeout") or 10.0)
        self.check()

    def check(self) -> None:
        """Raise RuleError for a key this type does not take or lacks."""
        for key, value in self.options.items():
            if value is not None and key not in _COMMON and key not in self.keys:
                raise RuleError(key, f"does not apply to type = {self.type_name} (it takes: {', '.join(self.keys)})")
        for key in self.required:
            if not self.options.get(key):
                raise RuleError(key, f"required for type = {self.type_name}")

    def send(self, payload: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        return self.type_name


class SmtpNotifier(Notifier):
    """A plain-text mail per alert, with the JSON payload at the end."""

    type_name = "smtp"
    keys = ("host", "port", "from", "to", "starttls", "ssl", "username", "password", "subject_prefix")
    required = ("host", "from", "to")

    def check(self) -> None:
        super().check()
        if self.options.get("ssl") and self.options.get("starttls"):
            raise RuleError("starttls", "use either ssl (SMTPS) or starttls, not both")
        if bool(self.options.get("username")) != bool(self.options.get("password")):
            raise RuleError("password" if self.options.get("username") else "username",
                            "username and password go together")

    def describe(self) -> str:
        return f"smtp://{self.options['host']}:{self._port()}"

    def _port(self) -> int:
        port = self.options.get("port")
        return int(port) if port is not None else (465 if self.options.get("ssl") else 25)

    def message(self, payload: Mapping[str, Any]) -> EmailMessage:
        """The mail for `payload`."""
        opts = self.options
        prefix = opts.get("subject_prefix") or "[mondemand]"
        state = "REMINDER" if payload.get("repeat") else str(payload["state"]).upper()
        msg = EmailMessage()
        msg["Subject"] = f"{prefix} {state} {payload['alert']}: {payload['summary']}"
        msg["From"] = opts["from"]
        msg["To"] = ", ".join(opts["to"])
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain="mondemand")
        lines = [str(payload["summary"]), "", f"alert: {payload['alert']}", f"state: {payload['state']}",
                 f"time: {payload['time_iso']}", f"server: {payload.get('server', '')}", "",
                 json.dumps(payload, indent=1, sort_keys=True, default=str)]
        msg.set_content("\n".join(lines) + "\n")
        return msg

    def send(self, payload: Mapping[str, Any]) -> None:
        opts = self.options
        host, port = opts["host"], self._port()
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if opts.get("ssl"):
            client = smtplib.SMTP_SSL(host, port, timeout=self.timeout, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=self.timeout)
        try:
            if opts.get("starttls"):
                client.starttls(context=context)
            if opts.get("username"):
                client.login(opts["username"], opts["password"])
            refused = client.send_message(self.message(payload), from_addr=opts["from"], to_addrs=list(opts["to"]))
        except smtplib.SMTPException as exc:
            raise NotifierError(f"{self.describe()}: {exc}") from exc
        finally:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()
        if refused:
            # Some recipients took it: retrying would duplicate theirs, so report and stop here.
            log.error("notifier %s: %s refused recipients %s", self.name, self.describe(), ", ".join(refused))


class WebhookNotifier(Notifier):
    """POST the payload as JSON; any 2xx answer is success."""

    type_name = "webhook"
    keys = ("url", "headers")
    required = ("url",)

    def describe(self) -> str:
        return str(self.options["url"])

    def send(self, payload: Mapping[str, Any]) -> None:
        body = json.dumps(payload, sort_keys=True, default=str).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "mondemand-alerts",
                   **parse_headers(self.options.get("headers") or "")}
        request = urllib.request.Request(self.options["url"], data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                status = resp.status
                resp.read(65536)
        except urllib.error.HTTPError as exc:
            raise NotifierError(f"{self.describe()}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise NotifierError(f"{self.describe()}: {exc.reason}") from None
        if not 200 <= status < 300:
            raise NotifierError(f"{self.describe()}: HTTP {status}")


class CommandNotifier(Notifier):
    """Run a program with the payload as JSON on stdin and MONDEMAND_ALERT_* environment variables."""

    type_name = "command"
    keys = ("command",)
    required = ("command",)

    def describe(self) -> str:
        return str(self.options["command"])

    @staticmethod
    def environment(payload: Mapping[str, Any]) -> dict[str, str]:
        """The MONDEMAND_ALERT_* variables for `payload`."""
        series = payload.get("series") or {}
        value = payload.get("value")
        return {
            "MONDEMAND_ALERT": str(payload["alert"]),
            "MONDEMAND_ALERT_STATE": str(payload["state"]),
            "MONDEMAND_ALERT_REPEAT": "1" if payload.get("repeat") else "0",
            "MONDEMAND_ALERT_SUMMARY": str(payload["summary"]),
            "MONDEMAND_ALERT_VALUE": "" if value is None else f"{value:g}",
            "MONDEMAND_ALERT_PROG_ID": str(series.get("prog_id", "")),
            "MONDEMAND_ALERT_HOST": str(series.get("host", "")),
            "MONDEMAND_ALERT_METRIC": str(series.get("metric") or ""),
            "MONDEMAND_ALERT_TIME": str(payload["time"]),
        }

    def send(self, payload: Mapping[str, Any]) -> None:
        argv = shlex.split(self.options["command"])
        body = json.dumps(payload, sort_keys=True, default=str).encode()
        try:
            result = subprocess.run(argv, input=body, capture_output=True, timeout=self.timeout, check=False,
                                    cwd=self.config_dir, env={**os.environ, **self.environment(payload)})
        except subprocess.TimeoutExpired:
            raise NotifierError(f"{argv[0]}: still running after {self.timeout:g}s; killed") from None
        except OSError as exc:
            raise NotifierError(f"{argv[0]}: cannot run: {exc.strerror or exc}") from None
        if result.returncode != 0:
            tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise NotifierError(f"{argv[0]} exited with {result.returncode}: {tail[0][:200]}")


NOTIFIER_TYPES: dict[str, type[Notifier]] = {cls.type_name: cls for cls in (SmtpNotifier, WebhookNotifier,
                                                                             CommandNotifier)}


def build_notifier(name: str, options: Mapping[str, Any], config_dir: Path) -> Notifier:
    """The notifier a `[notifier:NAME]` section describes; RuleError names the key at fault."""
    cls = NOTIFIER_TYPES.get(options.get("type") or "")
    if options.get("type") == "apprise":
        from .notify_apprise import AppriseNotifier  # the alerts extra

        cls = AppriseNotifier
    if cls is None:
        raise RuleError("type", f"expected one of {', '.join(NOTIFIER_TYPES)}")
    return cls(name, options, config_dir)


_STOP = object()


class NotifierWorker:
    """One notifier on its own thread: bounded queue, retries with back-off, counters."""

    def __init__(self, notifier: Notifier, *, queue_size: int = 1000, retries: int = 3, retry_delay: float = 1.0,
                 retry_max: float = 60.0) -> None:
        self.notifier = notifier
        self.retries = retries
        self.retry_delay = retry_delay
        self.retry_max = retry_max
        self._queue: queue.Queue[Any] = queue.Queue(queue_size)
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"notifier-{notifier.name}", daemon=True)
        self.sent = 0
        self.failed = 0
        self.retried = 0
        self.dropped = 0
        self.last_error = ""

    @classmethod
    def for_options(cls, notifier: Notifier, options: Mapping[str, Any]) -> NotifierWorker:
        return cls(notifier, queue_size=int(options.get("queue_size") or 1000), retries=int(options.get("retries", 3)),
                   retry_delay=float(options.get("retry_delay", 1.0)), retry_max=float(options.get("retry_max", 60.0)))

    def start(self) -> None:
        self._thread.start()

    def submit(self, payload: Mapping[str, Any]) -> bool:
        """Queue one notification; never blocks. False (logged, counted) when the queue is full."""
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self.dropped += 1
            log.error("notifier %s: queue full (%d waiting); dropped alert %s (%s)", self.notifier.name,
                      self._queue.qsize(), payload.get("alert"), payload.get("state"))
            return False
        return True

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued, waiting at most `timeout` seconds, then give up on the rest (logged)."""
        if not self._thread.is_alive():
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._abort.set()
            self._thread.join(self.notifier.timeout + 1.0)
            left = self._queue.qsize()
            if left:
                log.error("notifier %s: shutting down with %d notifications undelivered", self.notifier.name, left)

    def counters(self) -> dict[str, float]:
        return {"sent": self.sent, "failed": self.failed, "retried": self.retried, "dropped": self.dropped,
                "pending": self.pending}

    def _run(self) -> None:
        while not self._abort.is_set():
            payload = self._queue.get()
            if payload is _STOP:
                return
            self._deliver(payload)

    def _deliver(self, payload: Mapping[str, Any]) -> None:
        name, attempts = self.notifier.name, self.retries + 1
        what = f"alert {payload.get('alert')} ({payload.get('state')})"
        for attempt in range(1, attempts + 1):
            try:
                self.notifier.send(payload)
            except (NotifierError, OSError) as exc:
                self.last_error = str(exc)
                if attempt == attempts or self._abort.is_set():
                    self.failed += 1
                    log.error("notifier %s: gave up on %s after %d attempt(s): %s", name, what, attempt, exc)
                    return
                delay = min(self.retry_delay * 2 ** (attempt - 1), self.retry_max)
                self.retried += 1
                log.warning("notifier %s: sending %s failed (attempt %d of %d): %s; retrying in %.1fs", name, what,
                            attempt, attempts, exc, delay)
                if self._abort.wait(delay):
                    self.failed += 1
                    log.error("notifier %s: gave up on %s at shutdown after %d attempt(s): %s", name, what, attempt,
                              exc)
                    return
                continue
            except Exception as exc:  # a bug or an unexpected library error: never kill the worker
                self.failed += 1
                self.last_error = repr(exc)
                log.exception("notifier %s: unexpected error sending %s; not retried", name, what)
                return
            self.sent += 1
            log.info("notifier %s: sent %s to %s", name, what, self.notifier.describe())
            return
