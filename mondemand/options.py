"""Typed options that listeners and backends declare for their `routes.ini` section.

A plugin type lists its `Option`s; the config loader hands each section's raw
strings to `parse_options`, which converts them, fills defaults and reports
every unknown, missing or malformed key at once, named by section and key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mondemand.redact import redact_text


class OptionError(ValueError):
    """One bad value; the config loader adds the file and section."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class SectionProblem:
    """A problem across sections (an alert naming a missing notifier): section as "kind:NAME", key, message."""

    section: str
    key: str | None
    message: str

    def __str__(self) -> str:
        return f"[{self.section}] {self.key}: {self.message}" if self.key else f"[{self.section}] {self.message}"


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


KIB, MIB, GIB, TIB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
_SIZE_UNITS = {"": 1, "b": 1, "k": KIB, "kb": KIB, "kib": KIB, "m": MIB, "mb": MIB, "mib": MIB,
               "g": GIB, "gb": GIB, "gib": GIB, "t": TIB, "tb": TIB, "tib": TIB}
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": MINUTE, "min": MINUTE, "h": HOUR, "d": DAY}
#: Longest number text converted at all (Python refuses ints of more than 4300 digits with an odd message).
_MAX_DIGITS = 40

#: Upper bounds of an option that does not declare its own `maximum`, by kind: nothing the server does
#: needs more, and each is far below what the code under it can hold (C ints, timestamps, thread timeouts).
DEFAULT_MAXIMUM: dict[str, float] = {
    "int": 2**31 - 1,
    "size": TIB,
    "duration": 30 * DAY,
}
#: Lower bounds by kind, for an option that declares no `minimum` (sizes and durations cannot be negative).
DEFAULT_MINIMUM: dict[str, float] = {"int": -(2**31)}


def _size(raw: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", raw)
    if not m or m.group(2).lower() not in _SIZE_UNITS or len(m.group(1)) > _MAX_DIGITS:
        raise ValueError("expected a size such as 16777216, 512k or 16MiB")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def _duration(raw: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", raw)
    if not m or m.group(2).lower() not in _DURATION_UNITS or len(m.group(1)) > _MAX_DIGITS:
        raise ValueError("expected a duration such as 60, 60s, 500ms or 5m")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]


def _int(raw: str) -> int:
    text = raw.strip()
    if len(text) > _MAX_DIGITS:
        raise ValueError("expected an integer (this one is far too long)")
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError("expected an integer") from None


def _float(raw: str) -> float:
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def format_size(size: float) -> str:
    """`size` bytes in the largest unit that divides it (16MiB, 1GiB); plain bytes otherwise."""
    for unit, factor in (("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= factor and size % factor == 0:
            return f"{int(size // factor)}{unit}"
    return f"{int(size)}" if float(size).is_integer() else f"{size:g}"


def format_duration(seconds: float) -> str:
    """`seconds` in the largest unit that divides it (30d, 1h, 500ms)."""
    for unit, factor in (("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", 1.0)):
        if seconds >= factor and (seconds / factor).is_integer():
            return f"{int(seconds // factor)}{unit}"
    if seconds < 1 and (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


def format_value(kind: str, value: float) -> str:
    """A bound as routes.ini would write it: sizes and durations with a unit, numbers plainly."""
    if kind == "size":
        return format_size(value)
    if kind == "duration":
        return format_duration(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def split_list(raw: str) -> list[str]:
    """Items separated by commas and/or whitespace (including continuation lines)."""
    return [item for item in re.split(r"[,\s]+", raw.strip()) if item]


def _port(raw: str) -> int:
    port = _int(raw)
    if not 0 <= port <= 65535:
        raise ValueError("expected a port number 0..65535")
    return port


def _address(raw: str) -> tuple[str, int]:
    host, sep, port = raw.strip().rpartition(":")
    if not sep or not host:
        raise ValueError("expected host:port")
    return host.strip("[]"), _port(port)


CONVERTERS: dict[str, Callable[[str], Any]] = {
    "str": lambda raw: raw.strip(),
    "int": _int,
    "float": _float,
    "bool": _bool,
    "size": _size,
    "duration": _duration,
    "list": split_list,
    "port": _port,
    "address": _address,
}


@dataclass(frozen=True)
class Option:
    """One key a section may hold.

    `kind` names a converter (str, int, float, bool, size, duration, list,
    port, address); `choices` restricts the converted value; `minimum` and
    `maximum` bound it (ints, sizes and durations get DEFAULT_MINIMUM and
    DEFAULT_MAXIMUM when not given; the upper bound is appended to `help`);
    `check` may raise ValueError for anything else.
    """

    name: str
    kind: str = "str"
    default: Any = None
    required: bool = False
    help: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    check: Callable[[Any], None] | None = field(default=None, compare=False)
    maximum: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in CONVERTERS:
            raise ValueError(f"option {self.name}: unknown kind {self.kind!r}")
        if self.minimum is None and self.kind in DEFAULT_MINIMUM:
            object.__setattr__(self, "minimum", DEFAULT_MINIMUM[self.kind])
        if self.maximum is None and self.kind in DEFAULT_MAXIMUM:
            object.__setattr__(self, "maximum", DEFAULT_MAXIMUM[self.kind])
        if self.maximum is not None and "at most" not in self.help:
            bound = f"at most {format_value(self.kind, self.maximum)}"
            object.__setattr__(self, "help", f"{self.help} ({bound})" if self.help else bound)

    def convert(self, raw: str) -> Any:
        """The typed value of `raw`, or OptionError naming this key (a secret in the value is not repeated)."""
        try:
            value = CONVERTERS[self.kind](raw)
            if self.choices is not None and value not in self.choices:
                raise ValueError("expected one of " + ", ".join(map(str, self.choices)))
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"must be at least {self.minimum:g}")
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"must be at most {format_value(self.kind, self.maximum)}")
            if self.check is not None:
                try:
                    self.check(value)
                except ValueError:
                    raise
                except Exception as exc:  # a checker's bug: still a clean problem line, never a traceback
                    raise ValueError(f"cannot be checked ({type(exc).__name__}: {exc})") from None
        except ValueError as exc:
            raise OptionError(self.name, f"{exc} (got {redact_text(raw.strip())!r})") from None
        return value


def parse_options(schema: Iterable[Option], raw: Mapping[str, str]) -> tuple[dict[str, Any], list[OptionError]]:
    """Convert `raw` by `schema`: (values with defaults filled, every problem found)."""
    by_name = {opt.name: opt for opt in schema}
    values: dict[str, Any] = {}
    problems: list[OptionError] = []
    for key, text in raw.items():
        opt = by_name.get(key)
        if opt is None:
            known = ", ".join(sorted(by_name)) or "none"
            problems.append(OptionError(key, f"unknown option (known: {known})"))
            continue
        try:
            values[key] = opt.convert(text)
        except OptionError as exc:
            problems.append(exc)
    for opt in by_name.values():
        if opt.name not in values and opt.name not in raw:
            if opt.required:
                problems.append(OptionError(opt.name, "required option missing"))
            else:
                values[opt.name] = opt.default
    return values, problems
