"""Hypothesis strategies for arbitrary LWES events."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

from mondemand.lwes import Event, LwesType
from mondemand.lwes.types import INT_RANGES

NAMES = st.text(min_size=1, max_size=30).filter(lambda s: len(s.encode("utf-8")) <= 255)
KEYS = NAMES.filter(lambda s: s != "enc")

SCALARS: dict[LwesType, st.SearchStrategy[Any]] = {
    t: st.integers(lo, hi) for t, (lo, hi) in INT_RANGES.items()
}
SCALARS |= {
    LwesType.STRING: st.text(max_size=40),
    LwesType.LONG_STRING: st.text(max_size=40),
    LwesType.IP_ADDR: st.ip_addresses(v=4).map(str),
    LwesType.BOOLEAN: st.booleans(),
    LwesType.FLOAT: st.floats(width=32, allow_nan=False),
    LwesType.DOUBLE: st.floats(allow_nan=False),
}
ARRAYABLE = [t for t in SCALARS if t is not LwesType.LONG_STRING]


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[LwesType, Any]:
    kind = draw(st.sampled_from(["scalar", "array", "nullable"]))
    if kind == "scalar":
        t = draw(st.sampled_from(list(SCALARS)))
        return t, draw(SCALARS[t])
    base = draw(st.sampled_from(ARRAYABLE))
    if kind == "array":
        return base.array_of(), draw(st.lists(SCALARS[base], max_size=10))
    return base.array_of(nullable=True), draw(st.lists(st.none() | SCALARS[base], max_size=20))


@st.composite
def events(draw: st.DrawFn) -> Event:
    keys = draw(st.lists(KEYS, unique=True, max_size=12))
    return Event(draw(NAMES), {k: draw(typed_values()) for k in keys})


def canonical(value: Any) -> Any:
    """NaN-safe comparison form of decoded values (NaN != NaN otherwise)."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def canonical_event(event: Event) -> tuple[str, list[tuple[str, int, Any]]]:
    return event.name, [(k, int(t), canonical(v)) for k, (t, v) in event.attrs.items()]
