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

import base64
import json
import logging
import os
import queue
import re
import shlex
import smtplib
import ssl
import subprocess
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from mondemand.options import DAY, HOUR, Option
from mondemand.redact import redact_text, redact_url, url_secrets

from .rules import RuleError

log = logging.getLogger("mondemand.alerts.notify")

#: What `escape_text` replaces: C0 controls, DEL, the C1 and Unicode line breaks the email package
#: folds on, and lone surrogates (bytes that were not UTF-8 on the wire, kept by surrogateescape).
_UNSAFE = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    c = m.group(0)
    code = ord(c)
    if c in _NAMED:
        return _NAMED[c]
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape of the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_text(text: str) -> str:
    """`text` on one line, valid UTF-8 and without NUL: controls, line breaks and non-UTF-8 bytes as escapes.

    Wire names (prog_id, metric names, context values) reach mail subjects,
    HTTP bodies and command environments; `\\n`, `\\x00` or `\\xe9` there
    can neither inject a header nor make the delivery fail. Backslashes are
    kept as they are, so escaping twice changes nothing.
    """
    return _UNSAFE.sub(_escape, text)


def clean_payload(value: Any) -> Any:
    """`value` (a payload, or any part of one) with every string, key or value, through `escape_text`."""
    if isinstance(value, str):
        return escape_text(value)
    if isinstance(value, Mapping):
        return {clean_payload(k): clean_payload(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_payload(v) for v in value]
    return value


def parse_headers(text: str) -> dict[str, str]:
    """`Name: value` lines (one per line) as a dict; ValueError for a line without a name.

    The message names the line by number only: header values are secrets (`Authorization`).
    """
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
            raise ValueError(f"expected 'Name: value' lines (line {number} has no name before a colon)")
        if _UNSAFE.search(value.strip()) or _UNSAFE.search(name):
            raise ValueError(f"line {number}: a control character in a header")
        headers[name.strip()] = value.strip()
    return headers


def _check_headers(text: str) -> None:
    parse_headers(text)


def _check_url(url: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")


def _check_command(text: str) -> None:
    if "\x00" in text:
        raise ValueError("a NUL character in the command")
    if not shlex.split(text):
        raise ValueError("empty command")


#: Keys of a `[notifier:NAME]` section; which apply depends on `type` (checked at load, with the alerts).
NOTIFIER_OPTIONS = (
    Option("type", "str", required=True, choices=("smtp", "webhook", "command", "apprise"), help="how to notify"),
    Option("retries", "int", 3, minimum=0, help="further attempts after a failed one"),
    Option("retry_delay", "duration", 1.0, minimum=0, maximum=DAY,
           help="wait before the first retry; doubles each time"),
    Option("retry_max", "duration", 60.0, minimum=0, maximum=DAY, help="longest wait between retries"),
    Option("timeout", "duration", 10.0, minimum=0.01, maximum=HOUR, help="limit of one attempt"),
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
    Option("url", "str", None, check=_check_url,
           help="webhook: where the JSON is POSTed; user:password@ in it is sent as basic authentication"),
    Option("headers", "str", None, check=_check_headers, help="webhook: extra 'Name: value' lines"),
    Option("follow_redirects", "bool", None,
           help="webhook: follow redirects within the same origin (scheme, host, port); default false"),
    # command
    Option("command", "str", None, check=_check_command, help="command: argv, split like a shell; JSON on stdin"),
    # apprise (backends/alerts/notify_apprise.py)
    Option("urls", "list", None, help="apprise: Apprise URLs (SMS, voice, chat, mail: docs/alerts.md)"),
)
_COMMON = {"type", "retries", "retry_delay", "retry_max", "timeout", "queue_size"}


def subject_of(payload: Mapping[str, Any]) -> str:
    """`ALERT: SUMMARY`, led by `[TENANT]` in service mode (a notifier shared by tenants tells them apart)."""
    tenant = f"[{payload['tenant']}] " if payload.get("tenant") else ""
    return f"{tenant}{payload['alert']}: {payload['summary']}"


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
        """Where this notifier delivers, for logs and /alerts: never with a secret in it."""
        return self.type_name

    def secrets(self) -> list[str]:
        """Configured strings that must not appear in a log line or HTTP answer."""
        return []

    def redact(self, text: str) -> str:
        """`text` (an error message, a traceback) with this notifier's secrets and every URL's redacted."""
        return redact_text(text, self.secrets())


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

    def secrets(self) -> list[str]:
        return [self.options["password"]] if self.options.get("password") else []

    def _port(self) -> int:
        port = self.options.get("port")
        return int(port) if port is not None else (465 if self.options.get("ssl") else 25)

    def message(self, payload: Mapping[str, Any]) -> EmailMessage:
        """The mail for `payload` (its strings escaped first: no header injection, no encoding error)."""
        opts = self.options
        payload = clean_payload(payload)
        prefix = opts.get("subject_prefix") or "[mondemand]"
        state = "REMINDER" if payload.get("repeat") else str(payload["state"]).upper()
        msg = EmailMessage()
        msg["Subject"] = f"{prefix} {state} {subject_of(payload)}"
        msg["From"] = opts["from"]
        msg["To"] = ", ".join(opts["to"])
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain="mondemand")
        tenant = [f"tenant: {payload['tenant']}"] if payload.get("tenant") else []
        lines = [str(payload["summary"]), "", *tenant, f"alert: {payload['alert']}", f"state: {payload['state']}",
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
    """POST the payload as JSON; a 2xx answer is success, anything else (a 3xx too) a failure.

    Redirects are not followed unless `follow_redirects` is true, and then only
    within the URL's origin, re-sending the same body and headers (307 and 308
    by definition, 301 and 302 as curl's --post301/--post302 do); a redirect to
    another origin, or a 303 (which would turn the POST into a GET without the
    alert), is a failure, so credentials never leave the configured origin.
    """

    type_name = "webhook"
    keys = ("url", "headers", "follow_redirects")
    required = ("url",)
    #: Most redirects followed for one delivery.
    MAX_REDIRECTS = 5
    _FOLLOWED = (301, 302, 307, 308)

    def describe(self) -> str:
        return redact_url(str(self.options["url"]))

    def secrets(self) -> list[str]:
        configured = parse_headers(self.options.get("headers") or "")
        return url_secrets(str(self.options["url"])) + list(configured.values())

    def request_parts(self) -> tuple[str, dict[str, str]]:
        """The URL without userinfo, and the headers (basic authentication from the userinfo, if any)."""
        parts = urlsplit(self.options["url"])
        headers = {"Content-Type": "application/json", "User-Agent": "mondemand-alerts"}
        url = self.options["url"]
        if "@" in parts.netloc:
            userinfo, _, hostport = parts.netloc.rpartition("@")
            user, _, password = userinfo.partition(":")
            token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
            url = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
        headers.update(parse_headers(self.options.get("headers") or ""))
        return url, headers

    def send(self, payload: Mapping[str, Any]) -> None:
        body = json.dumps(clean_payload(payload), sort_keys=True, default=str).encode("utf-8")
        url, headers = self.request_parts()
        opener = urllib.request.build_opener(_NoRedirects)
        for _ in range(self.MAX_REDIRECTS + 1):
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with opener.open(request, timeout=self.timeout) as resp:
                    status, reason = resp.status, resp.reason
                    resp.read(65536)
            except urllib.error.HTTPError as exc:
                status, reason, location = exc.code, exc.reason, exc.headers.get("Location")
                exc.close()
                if not 300 <= status < 400:
                    raise NotifierError(f"{redact_url(url)}: HTTP {status} {reason}") from None
                url = self._redirect(url, status, reason, location)
                continue
            except urllib.error.URLError as exc:
                raise NotifierError(f"{redact_url(url)}: {exc.reason}") from None
            except ValueError as exc:  # http.client's InvalidURL and the like
                raise NotifierError(f"{redact_url(url)}: {exc}") from None
            if not 200 <= status < 300:
                raise NotifierError(f"{redact_url(url)}: HTTP {status} {reason}")
            return
        raise NotifierError(f"{self.describe()}: more than {self.MAX_REDIRECTS} redirects")

    def _redirect(self, url: str, status: int, reason: str, location: str | None) -> str:
        """The URL to POST to next, or NotifierError saying why this redirect is not followed."""
        where = f"{redact_url(url)}: HTTP {status} {reason}"
        if not location:
            raise NotifierError(f"{where} without a Location")
        target = urljoin(url, location)
        if not self.options.get("follow_redirects"):
            raise NotifierError(f"{where} to {redact_url(target)}: not followed (follow_redirects = false)")
        if status not in self._FOLLOWED:
            raise NotifierError(f"{where} to {redact_url(target)}: not followed (it would drop the body)")
        if _origin(target) != _origin(url):
            raise NotifierError(f"{where} to {redact_url(target)}: another origin, not followed "
                                "(credentials are never sent there)")
        return target


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Let every 3xx through as an HTTPError: WebhookNotifier decides (urllib would turn the POST into a GET)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default


class CommandNotifier(Notifier):
    """Run a program with the payload as JSON on stdin and MONDEMAND_ALERT_* environment variables."""

    type_name = "command"
    keys = ("command",)
    required = ("command",)

    def describe(self) -> str:
        return redact_text(str(self.options["command"]))

    @staticmethod
    def environment(payload: Mapping[str, Any]) -> dict[str, str]:
        """The MONDEMAND_ALERT_* variables for `payload` (escaped: no NUL, valid UTF-8, one line each)."""
        payload = clean_payload(payload)
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
        body = json.dumps(clean_payload(payload), sort_keys=True, default=str).encode("utf-8")
        try:
            result = subprocess.run(argv, input=body, capture_output=True, timeout=self.timeout, check=False,
                                    cwd=self.config_dir, env={**os.environ, **self.environment(payload)})
        except subprocess.TimeoutExpired:
            raise NotifierError(f"{argv[0]}: still running after {self.timeout:g}s; killed") from None
        except OSError as exc:
            raise NotifierError(f"{argv[0]}: cannot run: {exc.strerror or exc}") from None
        except ValueError as exc:  # an embedded NUL that got past the checks: a failure, not a crash
            raise NotifierError(f"{argv[0]}: cannot run: {exc}") from None
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
        what = escape_text(f"alert {payload.get('alert')} ({payload.get('state')})")
        redact = self.notifier.redact
        for attempt in range(1, attempts + 1):
            try:
                self.notifier.send(payload)
            except (NotifierError, OSError) as exc:
                reason = self.last_error = redact(str(exc))
                if attempt == attempts or self._abort.is_set():
                    self.failed += 1
                    log.error("notifier %s: gave up on %s after %d attempt(s): %s", name, what, attempt, reason)
                    return
                delay = min(self.retry_delay * 2 ** (attempt - 1), self.retry_max)
                self.retried += 1
                log.warning("notifier %s: sending %s failed (attempt %d of %d): %s; retrying in %.1fs", name, what,
                            attempt, attempts, reason, delay)
                if self._abort.wait(delay):
                    self.failed += 1
                    log.error("notifier %s: gave up on %s at shutdown after %d attempt(s): %s", name, what, attempt,
                              reason)
                    return
                continue
            except Exception as exc:  # a bug or an unexpected library error: never kill the worker
                self.failed += 1
                self.last_error = redact(repr(exc))
                # The traceback as text, redacted: exception messages may carry the URL or a header.
                log.error("notifier %s: unexpected error sending %s; not retried\n%s", name, what,
                          redact("".join(traceback.format_exception(exc))).rstrip())
                return
            self.sent += 1
            log.info("notifier %s: sent %s to %s", name, what, self.notifier.describe())
            return
