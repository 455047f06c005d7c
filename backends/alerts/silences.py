"""Silences and acknowledgements of alerts, kept in `silences.json` beside the alerts backend's state file.

The alerts backend and the dashboard run in separate worker processes, and
the server's HTTP port only serves GETs. So the dashboard *writes* this small
file (atomically: a temporary file, fsync, one rename) and the alerts backend
*reads* it at every flush when its modification time changed:

- a **silence** (`rule`, `series` key or null for every series of the rule,
  `until` epoch seconds) keeps every notification of what it covers from
  being sent until then; states still change and are persisted;
- an **acknowledgement** (`rule`, `series`, `since` = the start of the firing
  episode acknowledged) stops the reminders (`repeat`) of that episode; the
  `ok` notification when it clears still goes out, and a new episode (another
  `since`) is not acknowledged.

Series keys are `rules.series_key` of the series' labels, as the
alerts backend's `/alerts` document shows them (`key`).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from mondemand.atomicfile import write_json_atomic

__all__ = ["SILENCES_FILE", "Silences", "acknowledge", "silence"]

SILENCES_FILE = "silences.json"
_VERSION = 1
_write_lock = threading.Lock()


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"version": _VERSION, "silences": [], "acks": []}
    if not isinstance(data, dict):
        return {"version": _VERSION, "silences": [], "acks": []}
    return {"version": _VERSION, "silences": [s for s in data.get("silences") or [] if isinstance(s, dict)],
            "acks": [a for a in data.get("acks") or [] if isinstance(a, dict)]}


def _write(path: Path, document: dict[str, Any]) -> None:
    write_json_atomic(path, document, indent=1)


def silence(path: Path, rule: str, series: str | None, until: float, by: str = "", now: float | None = None) -> dict:
    """Add a silence of `rule` (one series, or all when `series` is None) until `until`; expired ones are dropped."""
    now = time.time() if now is None else now
    with _write_lock:
        document = _read(path)
        document["silences"] = [s for s in document["silences"] if float(s.get("until") or 0) > now
                                and not (s.get("rule") == rule and s.get("series") == series)]
        entry = {"rule": rule, "series": series, "until": float(until), "by": by, "created": round(now, 3)}
        if until > now:
            document["silences"].append(entry)
        _write(path, document)
        return entry


def acknowledge(path: Path, rule: str, series: str, since: float, by: str = "", now: float | None = None) -> dict:
    """Acknowledge the firing episode of `series` that started at `since` (its reminders stop)."""
    now = time.time() if now is None else now
    with _write_lock:
        document = _read(path)
        document["acks"] = [a for a in document["acks"] if not (a.get("rule") == rule and a.get("series") == series)]
        entry = {"rule": rule, "series": series, "since": float(since), "by": by, "created": round(now, 3)}
        document["acks"].append(entry)
        _write(path, document)
        return entry


class Silences:
    """What the alerts backend knows of `silences.json`; `reload` rereads it when it changed."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mtime: float | None = None
        self.document: dict[str, Any] = {"version": _VERSION, "silences": [], "acks": []}
        self.muted = 0

    def reload(self) -> None:
        """Reread the file if its modification time changed (a missing file means no silences)."""
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            mtime = None
        if mtime != self._mtime:
            self._mtime = mtime
            self.document = _read(self.path) if mtime is not None else {"silences": [], "acks": []}

    def silenced_until(self, rule: str, series: str, now: float) -> float | None:
        """The end of the longest silence covering the series now, or None."""
        ends = [float(s.get("until") or 0) for s in self.document["silences"]
                if s.get("rule") == rule and s.get("series") in (None, series)]
        end = max(ends, default=0.0)
        return end if end > now else None

    def acked(self, rule: str, series: str, since: float) -> bool:
        """True when the firing episode that started at `since` is acknowledged."""
        return any(a.get("rule") == rule and a.get("series") == series and abs(float(a.get("since") or 0) - since)
                   < 0.002 for a in self.document["acks"])

    def mutes(self, rule: str, series: str, state: str, repeat: bool, since: float, now: float) -> bool:
        """Whether a notification (`state`, a reminder or not) must not be sent; counts the muted ones."""
        muted = self.silenced_until(rule, series, now) is not None or (
            repeat and state == "firing" and self.acked(rule, series, since))
        self.muted += muted
        return muted
