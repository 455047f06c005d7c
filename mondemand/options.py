"""Typed options that listeners and backends declare for their `routes.ini` section.

A plugin type lists its `Option`s; the config loader hands each section's raw
strings to `parse_options`, which converts them, fills defaults and reports
every unknown, missing or malformed key at once, named by section and key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


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


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
               "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def _size(raw: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", raw)
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError("expected a size such as 16777216, 512k or 16MiB")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def _duration(raw: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", raw)
    if not m or m.group(2).lower() not in _DURATION_UNITS:
        raise ValueError("expected a duration such as 60, 60s, 500ms or 5m")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]


def _int(raw: str) -> int:
    try:
        return int(raw.strip(), 0)
    except ValueError:
        raise ValueError("expected an integer") from None


def _float(raw: str) -> float:
    try:
        return float(raw.strip())
    except ValueError:
        raise ValueError("expected a number") from None


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
    port, address); `choices` restricts the converted value; `check` may
    raise ValueError for anything else.
    """

    name: str
    kind: str = "str"
    default: Any = None
    required: bool = False
    help: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    check: Callable[[Any], None] | None = field(default=None, compare=False)

    def convert(self, raw: str) -> Any:
        """The typed value of `raw`, or OptionError naming this key."""
        try:
            value = CONVERTERS[self.kind](raw)
            if self.choices is not None and value not in self.choices:
                raise ValueError("expected one of " + ", ".join(map(str, self.choices)))
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"must be at least {self.minimum:g}")
            if self.check is not None:
                self.check(value)
        except ValueError as exc:
            raise OptionError(self.name, f"{exc} (got {raw.strip()!r})") from None
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
