"""The context block (`ctxt_num`, `ctxt_k<j>`, `ctxt_v<j>`) and the host convention.

Stats, Log, Perf and Annotation messages carry string key/value context pairs.
The Erlang client sends the host name as one more pair keyed `host`, and its
decoder lifts that pair out into a separate host field, "unknown" when absent;
this module does the same. `ctxt_num` is written only when there is at least
one pair (the C client's way), and a missing `ctxt_num` reads as no context.
"""

from __future__ import annotations

from collections.abc import Mapping

from mondemand.lwes import Event, LwesType
from mondemand.messages.errors import MessageError
from mondemand.messages.fields import attr_size, check_str, get_count, get_str, string_size

CTXT_NUM = "ctxt_num"
HOST_KEY = "host"
#: The host a message has when no `host` context pair was sent.
UNKNOWN_HOST = "unknown"


def ctxt_key(j: int) -> str:
    """Attribute name of the j-th context key."""
    return f"ctxt_k{j}"


def ctxt_value(j: int) -> str:
    """Attribute name of the j-th context value."""
    return f"ctxt_v{j}"


def read_context(event: Event) -> dict[str, str]:
    """Every context pair of `event`, in index order, `host` included."""
    num = get_count(event, CTXT_NUM, 0)
    context: dict[str, str] = {}
    for j in range(num):
        key = get_str(event, ctxt_key(j), None)
        value = get_str(event, ctxt_value(j), None)
        if key is None or value is None:
            missing = ctxt_key(j) if key is None else ctxt_value(j)
            raise MessageError(f"{CTXT_NUM} is {num} but {missing!r} is missing", event.name)
        context[key] = value
    return context


def read_context_and_host(event: Event) -> tuple[str, dict[str, str]]:
    """(host, context without the `host` pair); host is "unknown" when no pair carries it."""
    context = read_context(event)
    host = context.pop(HOST_KEY, UNKNOWN_HOST)
    return host, context


def write_context(event: Event, context: Mapping[str, str], host: str | None = None) -> Event:
    """Append the context block to `event`, with `host` as a last pair unless it is None or "unknown".

    Returns `event`. Nothing is written when there are no pairs.
    """
    pairs = list(context.items())
    if host is not None and host != UNKNOWN_HOST:
        pairs.append((HOST_KEY, host))
    if not pairs:
        return event
    if len(pairs) > 0xFFFF:
        raise MessageError(f"{len(pairs)} context pairs exceed 65535", event.name)
    event.set(CTXT_NUM, LwesType.UINT16, len(pairs))
    for j, (key, value) in enumerate(pairs):
        event.set(ctxt_key(j), LwesType.STRING, check_str(key, "context key", event.name))
        event.set(ctxt_value(j), LwesType.STRING, check_str(value, f"context value of {key!r}", event.name))
    return event


def context_size(context: Mapping[str, str], host: str | None = None) -> int:
    """Encoded size in bytes of the block `write_context` would add."""
    pairs = list(context.items())
    if host is not None and host != UNKNOWN_HOST:
        pairs.append((HOST_KEY, host))
    if not pairs:
        return 0
    size = attr_size(CTXT_NUM, 2)
    for j, (key, value) in enumerate(pairs):
        size += attr_size(ctxt_key(j), string_size(key)) + attr_size(ctxt_value(j), string_size(value))
    return size


def split_host(host: str, context: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """Normalise a (host, context) pair so that the context never holds `host`.

    A `host` context entry becomes the host when the host is "unknown"; when
    both are given and disagree the result would be ambiguous, so it is a
    MessageError.
    """
    context = dict(context)
    if HOST_KEY in context:
        from_context = context.pop(HOST_KEY)
        if host == UNKNOWN_HOST:
            host = from_context
        elif host != from_context:
            raise MessageError(f"host {host!r} conflicts with context host {from_context!r}")
    return host, context
