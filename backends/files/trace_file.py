"""`trace_file` backend: each trace event as its own JSON file, and a JSON API to browse them.

Path: `<root>/<owner>/<trace_id>/trace-<ReceiptTime>-<n>-<prog_id>[-<extra value>...]`.
owner and trace_id come from `mondemand.owner` and `mondemand.trace_id`
("unknown" when missing); `n` counts up from 0 until a name is free (the file
is created exclusively, at most 100 tries); the extra values are those of the
attributes named in `extra_fields`, in that order, missing ones skipped. Every
wire name goes through `mondemand.safepath` (docs/files.md).

The file holds one JSON object: `EventName`, then every attribute of the event
including ReceiptTime, SenderIP and SenderPort. A string attribute whose text
is a JSON object or array is stored as that JSON value.

Browsing (GET on the server's HTTP port, under `http_path`, default /traces):
`/traces` lists owners, `/traces/<owner>` its trace ids, `/traces/<owner>/<id>`
the trace's events sorted by ReceiptTime, `/traces/<owner>/<id>/<file>` one
stored event. `?term=` filters the lists by prefix.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.lwes import Event, LwesType
from mondemand.options import Option
from mondemand.plugin_api import Backend
from mondemand.runner import RateLimitedLog
from mondemand.safepath import UnsafePathError, join_under, safe_name, unsafe_name

OWNER_KEY = "mondemand.owner"
TRACE_ID_KEY = "mondemand.trace_id"
PROG_ID_KEY = "mondemand.prog_id"
SRC_HOST_KEY = "mondemand.src_host"
MESSAGE_KEY = "mondemand.message"
UNKNOWN = "unknown"
#: Names tried per event (n = 0..99) before giving up with a conflict, as the reference does.
MAX_ATTEMPTS = 100
#: Most events `/traces/<owner>/<id>` returns unless `?limit=` says otherwise.
DEFAULT_LIMIT = 1000

_STRING_TYPES = frozenset({LwesType.STRING, LwesType.LONG_STRING})
_FILE_NAME = re.compile(r"trace-(-?\d+)-(\d+)-")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _text(value: Any) -> str:
    """An owner, id or name of any LWES type as text (the reference normalises them the same way)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join("" if v is None else str(v) for v in value)
    return str(value)


def event_document(event: Event) -> dict[str, Any]:
    """The JSON object stored for `event`: EventName first, then each attribute in wire order."""
    doc: dict[str, Any] = {"EventName": event.name}
    for key, (typ, value) in event.attrs.items():
        if typ in _STRING_TYPES and value[:1] in ("{", "[") and value[-1:] in ("}", "]"):
            with contextlib.suppress(ValueError, RecursionError):
                value = json.loads(value)
        doc[key] = value
    return doc


def file_name(receipt_ms: int, n: int, prog_id: str, extras: list[str]) -> str:
    """`trace-<ReceiptTime>-<n>-<prog_id>[-extra...]`, made one safe file-name component."""
    return safe_name("-".join([f"trace-{receipt_ms}-{n}", prog_id, *extras]))


class TraceFileBackend(Backend):
    """Store every event it receives as `<root>/<owner>/<trace_id>/trace-...` JSON."""

    type_name = "trace_file"
    needs = "event"
    options = (
        Option("root", "str", required=True, help="directory of the <owner>/<trace_id> tree (relative: to the "
               "working directory)"),
        Option("extra_fields", "list", (), help="attributes whose values are appended to the file name"),
        Option("http_path", "str", "/traces", help="URL prefix of the browsing API on the server's HTTP port; "
               "empty: no API"),
    )

    def start(self) -> None:
        self.root = Path(self.config["root"]).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.extra_fields: tuple[str, ...] = tuple(self.config.get("extra_fields") or ())
        self._ratelog = RateLimitedLog(self.log)
        self._dirs: set[Path] = set()
        self.traces_written = 0
        self.conflicts = 0
        self.write_errors = 0
        self.path_errors = 0
        self._register_http(str(self.config.get("http_path") or ""))

    def _register_http(self, prefix: str) -> None:
        if not prefix:
            return
        prefix = "/" + prefix.strip("/")
        routes = self.context.http_routes
        current = routes.get(prefix)
        if current is not None and getattr(current, "backend", None) != self.name:
            self.log.warning("%s: %s is already served by another backend; set http_path to browse these traces",
                             self.name, prefix)
            return
        routes[prefix] = TraceBrowser(self.root, prefix, self.name)

    def handle(self, batch: list[RawEvent]) -> None:
        for raw in batch:
            try:
                self._store(raw, raw.event)
            except Exception as exc:  # bad data in this event (e.g. JSON nested too deep): it alone is dropped
                self.reject(raw, exc)

    def _store(self, raw: RawEvent, event: Event) -> None:
        owner = _text(event.get(OWNER_KEY, UNKNOWN))
        trace_id = _text(event.get(TRACE_ID_KEY, UNKNOWN))
        prog_id = _text(event.get(PROG_ID_KEY, UNKNOWN))
        receipt = event.receipt_time
        receipt_ms = receipt if isinstance(receipt, int) else raw.receipt_ms
        extras = [_text(event[key]) for key in self.extra_fields if key in event]
        try:
            directory = join_under(self.root, owner, trace_id)
        except UnsafePathError as exc:
            self.path_errors += 1
            self._ratelog.error("path", "%s: refusing to write outside the root: %s", self.name, exc)
            return
        data = json.dumps(event_document(event), separators=(",", ":"), default=str).encode()
        try:
            written = self._create(directory, receipt_ms, prog_id, extras, data)
        except OSError as exc:
            self._dirs.discard(directory)
            self.write_errors += 1
            self._ratelog.error("write", "%s: cannot write a trace under %s: %s", self.name, directory, exc)
            return
        if written:
            self.traces_written += 1
            return
        self.conflicts += 1
        self._ratelog.error("conflict", "%s: %d trace files for %s/%s at %d already exist; event dropped",
                            self.name, MAX_ATTEMPTS, owner, trace_id, receipt_ms)

    def _create(self, directory: Path, receipt_ms: int, prog_id: str, extras: list[str], data: bytes) -> bool:
        """Write `data` to the first free `trace-<rt>-<n>-...` name; False when all MAX_ATTEMPTS are taken."""
        if directory not in self._dirs:
            directory.mkdir(parents=True, exist_ok=True)
            if len(self._dirs) > 10_000:
                self._dirs.clear()
            self._dirs.add(directory)
        for n in range(MAX_ATTEMPTS):
            try:
                fd = os.open(directory / file_name(receipt_ms, n, prog_id, extras), _CREATE, 0o644)
            except FileExistsError:
                continue
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            return True
        return False

    def counters(self) -> dict[str, float]:
        return {"traces_written": self.traces_written, "conflicts": self.conflicts,
                "write_errors": self.write_errors, "path_errors": self.path_errors}


class TraceBrowser:
    """The GET handler of the browsing API: (path, query) -> (HTTP status, JSON-able body)."""

    def __init__(self, root: Path, prefix: str, backend: str = "") -> None:
        self.root = root
        self.prefix = prefix
        self.backend = backend

    def __call__(self, path: str, query: Mapping[str, str]) -> tuple[int, Any]:
        parts = [unquote(p) for p in path[len(self.prefix):].split("/") if p]
        term = query.get("term", "")
        try:
            if not parts:
                return 200, {"owners": self._listing(self.root, term, [])}
            directory = self._child(self.root, parts[0])
            if len(parts) == 1:
                return self._found(directory, lambda: {"owner": parts[0],
                                                       "traces": self._listing(directory, term, parts[:1])})
            directory = self._child(directory, parts[1])
            if len(parts) == 2:
                limit = int(query.get("limit", DEFAULT_LIMIT))
                return self._found(directory, lambda: self._events(directory, parts[0], parts[1], limit))
            if len(parts) == 3:
                return self._document(self._child(directory, parts[2], plain=True))
        except (UnsafePathError, ValueError) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"no resource at {path}"}

    def _child(self, directory: Path, name: str, plain: bool = False) -> Path:
        """`directory/<name made safe>`; or the component as stored, as listings and event rows show it."""
        if not plain:
            path = join_under(directory, name)
            if path.exists():
                return path
        if not name or "/" in name or "\0" in name or name.startswith("."):
            raise UnsafePathError(f"{name!r} is not a stored name")
        path = directory / name
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise UnsafePathError(f"{name!r} leads outside the trace root")
        return path

    @staticmethod
    def _found(directory: Path, body: Any) -> tuple[int, Any]:
        if not directory.is_dir():
            return 404, {"error": f"no such trace directory {directory.name!r}"}
        return 200, body()

    def _href(self, *parts: str) -> str:
        return "/".join([self.prefix, *(quote(p, safe="") for p in parts)])

    def _listing(self, directory: Path, term: str, above: list[str]) -> list[dict[str, str]]:
        entries = []
        with os.scandir(directory) as it:
            for entry in it:
                if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                    continue
                name = unsafe_name(entry.name)
                if name.startswith(term):
                    entries.append({"name": name, "href": self._href(*above, entry.name)})
        return sorted(entries, key=lambda e: e["name"])

    def _events(self, directory: Path, owner: str, trace_id: str, limit: int) -> dict[str, Any]:
        names = []
        with os.scandir(directory) as it:
            for entry in it:
                if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
                    m = _FILE_NAME.match(entry.name)
                    order = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
                    names.append((order, entry.name))
        names.sort()
        rows, unreadable = [], 0
        for _, name in names[: max(limit, 0)]:
            doc = _read_json(directory / name)
            if not isinstance(doc, dict):
                unreadable += 1
                continue
            rows.append({
                "file": name,
                "href": self._href(directory.parent.name, directory.name, name),
                "receipt_time": doc.get("ReceiptTime"),
                "prog_id": doc.get(PROG_ID_KEY),
                "src_host": doc.get(SRC_HOST_KEY),
                "message": doc.get(MESSAGE_KEY),
                "event": doc,
            })
        rows.sort(key=lambda r: (r["receipt_time"] if isinstance(r["receipt_time"], int) else 0, r["file"]))
        return {"owner": owner, "trace_id": trace_id, "total": len(names), "truncated": len(names) > limit,
                "unreadable": unreadable, "events": rows}

    @staticmethod
    def _document(path: Path) -> tuple[int, Any]:
        if not path.is_file():
            return 404, {"error": f"no such trace event {path.name!r}"}
        doc = _read_json(path)
        if doc is None:
            return 500, {"error": f"trace event {path.name!r} is not readable JSON"}
        return 200, doc


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


@hookimpl
def register_backend_types(register) -> None:
    register("trace_file", TraceFileBackend)
