"""Show LWES strings, which are bytes, as text.

The decoders turn every string into `str` with UTF-8 and ``surrogateescape``:
a byte that is not part of valid UTF-8 becomes a lone surrogate U+DC80..U+DCFF,
which no UTF-8 file or terminal accepts. The text outputs (the `print`
backend, mondemand-dump, the stats and log files) put what they write through
`escape_bytes`, which writes such a byte as ``\\xe9``; any other lone surrogate
becomes ``\\udXXX``. Valid UTF-8 text is returned as it is.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["escape_bytes", "escape_repr", "escape_value"]

_SURROGATE = re.compile("[\ud800-\udfff]")
# In repr() output a lone surrogate reads \udcXX after an even number of backslashes.
_REPR_SURROGATE = re.compile(r"(?<!\\)((?:\\\\)*)\\udc([89a-f][0-9a-f])")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def escape_bytes(text: str) -> str:
    """`text` with each byte that was not UTF-8 on the wire written as ``\\xXX``; safe to encode as UTF-8."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(_escape, text)
    return text


def escape_repr(text: str) -> str:
    """`repr(text)` with non-UTF-8 bytes as ``\\xXX`` rather than ``\\udcXX``."""
    quoted = repr(text)
    if "\\udc" not in quoted:
        return quoted
    return _REPR_SURROGATE.sub(lambda m: f"{m.group(1)}\\x{m.group(2)}", quoted)


def escape_value(value: Any) -> Any:
    """`value` with `escape_bytes` applied to every string in it, list items and dict keys included (for JSON)."""
    if isinstance(value, str):
        return escape_bytes(value)
    if isinstance(value, list | tuple):
        return [escape_value(v) for v in value]
    if isinstance(value, dict):
        return {escape_value(k): escape_value(v) for k, v in value.items()}
    return value
