"""Turn names that arrive on the wire into file names that stay inside a data directory.

prog_id, host, trace owner, trace id, metric names and context values are
chosen by whoever sends an event. Backends that build paths from them put
every name through `safe_name`, which maps any string to one path component:

- bytes outside ``A-Z a-z 0-9 . _ - + = ,`` are written as ``%XX`` (upper-case
  hex) of the bytes the name came as: UTF-8, and a byte that was not UTF-8
  (a lone surrogate from ``surrogateescape``) as itself, ``0xE9`` as ``%E9``;
  so ``/``, ``\\``, NUL, spaces and ``%`` itself never appear raw; a leading ``.`` is
  escaped too, so ``.``, ``..`` and hidden files cannot be produced;
- the empty string becomes ``%`` (every real ``%`` is escaped, so this is
  unambiguous);
- a result longer than `max_bytes` (default 200, under every common
  filesystem's 255-byte limit, leaving room for suffixes such as ``.rrd``) is
  cut and ended with ``~`` and 16 hex digits of the name's SHA-256; ``~`` is
  always escaped in ordinary names, so a shortened name never equals another
  name's full form.

The mapping is one-to-one for names that fit, and `unsafe_name` reverses it
for every name the decoders produce (any byte string, decoded as UTF-8 with
``surrogateescape``), so listings (trace owners, series) show what the sender
sent. (A str holding other lone surrogates cannot come off the wire; it is
escaped through ``surrogatepass`` and does not come back unchanged.)
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

__all__ = ["MAX_NAME_BYTES", "UnsafePathError", "join_under", "safe_name", "unsafe_name"]

#: Longest component `safe_name` returns by default.
MAX_NAME_BYTES = 200

_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-+=,")
_ESCAPE = {b: chr(b) if b in _PLAIN else f"%{b:02X}" for b in range(256)}
_PLAIN_TEXT = re.compile(r"[A-Za-z0-9_\-+=,][A-Za-z0-9._\-+=,]*\Z")
_HEX = re.compile(r"%([0-9A-F]{2})")


class UnsafePathError(ValueError):
    """A path built from names would leave its root directory."""


def safe_name(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """One file-name component for `name`, escaped and shortened as the module describes."""
    if not name:
        return "%"
    if _PLAIN_TEXT.match(name):
        escaped = name
    else:
        data = _wire_bytes(name)
        escaped = "".join(_ESCAPE[b] for b in data)
        if escaped[0] == ".":
            escaped = "%2E" + escaped[1:]
    if len(escaped) <= max_bytes:
        return escaped
    digest = hashlib.sha256(_wire_bytes(name)).hexdigest()[:16]
    keep = escaped[: max_bytes - 17]
    cut = keep.rfind("%", len(keep) - 2)  # do not split a %XX escape
    if cut >= 0:
        keep = keep[:cut]
    return f"{keep}~{digest}"


def unsafe_name(component: str) -> str:
    """The name `safe_name` was given (for shortened names, the kept prefix and the ``~hash``)."""
    if component == "%":
        return ""
    if "%" not in component:
        return component
    data = _HEX.sub(lambda m: chr(int(m.group(1), 16)), component).encode("latin-1")
    return data.decode("utf-8", "surrogateescape")


def _wire_bytes(name: str) -> bytes:
    """The bytes `name` was decoded from (UTF-8 with surrogateescape)."""
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate outside U+DC80..U+DCFF: not from the wire
        return name.encode("utf-8", "surrogatepass")


def join_under(root: Path, *names: str, max_bytes: int = MAX_NAME_BYTES) -> Path:
    """`root` joined with each name made safe; UnsafePathError if the result is somehow outside `root`."""
    path = root.joinpath(*(safe_name(name, max_bytes) for name in names))
    base = root.resolve()
    if not path.resolve().is_relative_to(base):
        raise UnsafePathError(f"{path} is outside {root}")
    return path
