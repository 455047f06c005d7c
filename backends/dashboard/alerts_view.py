"""The dashboard's alert view: the alerts backend's state read over HTTP, silences and acks written to a file.

The alerts backend runs in another worker process and serves its state at
the server's HTTP port (`/alerts`, GET only). The dashboard reads that
document (`alerts_url`) and, for the buttons of its alert view, writes
`silences.json` beside the alerts backend's state file (`alerts_state_file`)
with `mondemand.backends.alerts.silences`, which the alerts backend rereads at
every flush. A silence or acknowledgement is only accepted for a rule (and
series) that the alerts document lists, so the page cannot fill the file
with names of its own.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..alerts.silences import SILENCES_FILE, acknowledge, silence

__all__ = ["MAX_SILENCE", "AlertsLink", "AlertsViewError"]

#: Longest silence accepted: 30 days.
MAX_SILENCE = 30 * 86400.0


class AlertsViewError(ValueError):
    """A request the alert view refuses (unknown rule or series, a silence too long); `status` is the HTTP code."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class AlertsLink:
    """Where the alerts state is read (`url`) and where silences are written (`state_file`'s directory)."""

    def __init__(self, url: str, state_file: Path | None, timeout: float = 3.0, *, key: str | None = None,
                 cafile: str | None = None) -> None:
        self.url = url
        self.silences_path = state_file.with_name(SILENCES_FILE) if state_file is not None else None
        self.timeout = timeout
        #: Service mode: the server's internal key (the status port wants an admin key), sent as Bearer.
        self.key = key
        #: An https `url`: trusted besides the system's CAs (the server's own certificate, self-signed or not).
        self.tls: ssl.SSLContext | None = None
        if url.startswith("https:"):
            self.tls = ssl.create_default_context()
            if cafile:
                self.tls.load_verify_locations(cafile)
                self.tls.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a leaf certificate as its own anchor

    def document(self) -> dict[str, Any]:
        """The alerts backend's `/alerts` document; AlertsViewError (502) when it cannot be read."""
        request = urllib.request.Request(self.url, headers={"Authorization": f"Bearer {self.key}"} if self.key else {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.tls) as resp:
                data = json.load(resp)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise AlertsViewError(f"cannot read {self.url}: {exc}", 502) from None
        if not isinstance(data, dict) or not isinstance(data.get("rules"), dict):
            raise AlertsViewError(f"{self.url} did not answer an alerts document", 502)
        data["writable"] = self.silences_path is not None
        return data

    def _series(self, rule: str, series: str | None) -> dict[str, Any] | None:
        if self.silences_path is None:
            raise AlertsViewError("silences are off: set alerts_state_file in the dashboard's section", 404)
        rules = self.document()["rules"]
        if rule not in rules:
            raise AlertsViewError(f"no alert rule {rule!r}")
        if series is None:
            return None
        for entry in rules[rule]["series"]:
            if entry.get("key") == series:
                return entry
        raise AlertsViewError(f"rule {rule!r} has no series {series!r}")

    def silence(self, rule: str, series: str | None, seconds: float, by: str = "") -> dict[str, Any]:
        """Silence `rule` (one series, or all) for `seconds` (0 lifts the silence)."""
        if not 0 <= seconds <= MAX_SILENCE:
            raise AlertsViewError(f"a silence lasts 0 to {MAX_SILENCE:g} seconds")
        self._series(rule, series)
        now = time.time()
        assert self.silences_path is not None
        return silence(self.silences_path, rule, series, now + seconds, by, now=now)

    def acknowledge(self, rule: str, series: str, by: str = "") -> dict[str, Any]:
        """Acknowledge the current firing episode of one series (its reminders stop)."""
        entry = self._series(rule, series)
        if entry is None or entry.get("state") != "firing":
            raise AlertsViewError(f"series {series!r} of {rule!r} is not firing")
        assert self.silences_path is not None
        return acknowledge(self.silences_path, rule, series, float(entry["since_time"]), by)
