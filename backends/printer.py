"""`print` backend: one line per decoded event, to stdout or a file.

LWES strings are bytes: what is not UTF-8 is written as ``\\xe9`` (`mondemand.text`),
so every line is valid UTF-8. A file's directory is created when missing.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.options import Option
from mondemand.plugin_api import Backend
from mondemand.text import escape_bytes, escape_repr, escape_value


def _value_text(value: object) -> str:
    if isinstance(value, str):
        return escape_repr(value) if " " in value or not value else value
    if isinstance(value, list):
        return "[" + ", ".join(escape_repr(v) if isinstance(v, str) else repr(v) for v in value) + "]"
    return str(value)


def format_text(raw: RawEvent) -> str:
    """`<receipt time> <sender> <name> key=value ...` on one line."""
    ms, ip, port = raw.original_headers()
    when = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    skip = ("ReceiptTime", "SenderIP", "SenderPort")
    attrs = " ".join(f"{k}={_value_text(v)}" for k, v in raw.event.to_dict().items() if k not in skip)
    return escape_bytes(f"{when} {ip}:{port} {raw.name} {attrs}")


def format_json(raw: RawEvent) -> str:
    """One JSON object: name, attrs, receipt_time, sender."""
    ms, ip, port = raw.original_headers()
    return json.dumps(
        {"name": escape_bytes(raw.name), "attrs": escape_value(raw.event.to_dict()), "receipt_time": ms,
         "sender": f"{ip}:{port}", "listener": raw.listener},
        ensure_ascii=False, default=str,
    )


class PrintBackend(Backend):
    """Write every event it receives as a line of text or JSON."""

    type_name = "print"
    needs = "event"
    options = (
        Option("path", "str", "-", help="file to append to; - for standard output"),
        Option("format", "str", "text", choices=("text", "json")),
    )

    def start(self) -> None:
        self._format = format_json if self.config["format"] == "json" else format_text
        self._out: IO[str] = self._open()
        self.lines = 0

    def _open(self) -> IO[str]:
        path = self.config["path"]
        if path == "-":
            return sys.stdout
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Strings from the wire may hold bytes that are not UTF-8 (decoded as surrogates): written escaped.
        return open(path, "a", encoding="utf-8", errors="backslashreplace")

    def handle(self, batch: list[RawEvent]) -> None:
        lines = []
        for raw in batch:
            try:
                lines.append(self._format(raw) + "\n")
            except Exception as exc:  # bad data in this event (e.g. a receipt time past year 9999)
                self.reject(raw, exc)
        text = "".join(lines)
        try:
            self._out.write(text)
        except UnicodeEncodeError:  # standard output with a strict encoding
            encoding = getattr(self._out, "encoding", None) or "utf-8"
            self._out.write(text.encode(encoding, "backslashreplace").decode(encoding))
        self.lines += len(lines)

    def flush(self) -> None:
        self._out.flush()

    def reopen(self) -> None:
        if self._out is not sys.stdout:
            self._out.close()
            self._out = self._open()

    def close(self) -> None:
        self._out.flush()
        if self._out is not sys.stdout:
            self._out.close()

    def counters(self) -> dict[str, Any]:
        return {"lines": self.lines}


@hookimpl
def register_backend_types(register) -> None:
    register("print", PrintBackend)
