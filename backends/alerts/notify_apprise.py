"""`type = apprise` notifier: SMS, phone calls, chat and mail through the Apprise library.

`urls` lists Apprise URLs (https://github.com/caronc/apprise/wiki): `twilio://`
(SMS and voice), `vonage://`, `signal://`, `tgram://`, `mailto://`,
`json://` and many more. Each alert is one Apprise notification with the
summary as its title and the summary plus the JSON document as its body,
sent to every URL; Apprise reports one overall success, and a failure is
retried by the `NotifierWorker` like any other notifier's. Apprise is the
`alerts` extra (`pip install -e '.[alerts]'`); docs/alerts.md says which
gateways the tests cover.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .notifiers import Notifier, NotifierError, subject_of
from .rules import RuleError

__all__ = ["AppriseNotifier"]


class AppriseNotifier(Notifier):
    """One Apprise notification per alert, to every URL in `urls`."""

    type_name = "apprise"
    keys = ("urls",)
    required = ("urls",)

    def __init__(self, name: str, options: Mapping[str, Any], config_dir: Path) -> None:
        try:
            import apprise
        except ImportError:
            raise RuleError("type", "apprise is not installed: pip install 'mondemand-server[alerts]'") from None
        super().__init__(name, options, config_dir)
        self._apprise = apprise
        self.apprise = apprise.Apprise()
        for url in self.options["urls"]:
            if not self.apprise.add(url):
                raise RuleError("urls", f"Apprise does not understand {_redact(url)!r}")

    def describe(self) -> str:
        return ", ".join(_redact(u) for u in self.options["urls"])

    def send(self, payload: Mapping[str, Any]) -> None:
        state = "REMINDER" if payload.get("repeat") else str(payload["state"]).upper()
        title = f"{state} {subject_of(payload)}"
        body = f"{payload['summary']}\n\n{json.dumps(payload, indent=1, sort_keys=True, default=str)}"
        kind = self._apprise.NotifyType.FAILURE if payload["state"] == "firing" else self._apprise.NotifyType.SUCCESS
        if not self.apprise.notify(title=title, body=body, notify_type=kind):
            raise NotifierError(f"apprise: at least one of {self.describe()} failed")


def _redact(url: str) -> str:
    """Only the scheme and host of `url`: Apprise URLs carry tokens and passwords in every other part."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***"
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    host = authority.rsplit("@", 1)[-1]
    return f"{scheme}://{'***@' if '@' in authority else ''}{host}/..." if rest != authority else f"{scheme}://{host}"
