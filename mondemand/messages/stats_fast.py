"""StatsMsg datagrams straight to plain tuples: the per-event path of the stats backends.

`decode_stats(data)` gives the same information as
``StatsMsg.from_lwes(decode(data))`` without building an `Event`, a
`StatsMsg` or a `Metric` per metric. The result is a `StatsRecord`, a plain
9-tuple indexed by the constants below:

==============  ==========================================================
`PROG_ID`       str
`HOST`          str, ``"unknown"`` without a ``host`` context pair
`CONTEXT`       tuple of (key, value) str pairs sorted by key, ``host`` left out
`SEND_TIME`     int or None
`COLLECT_TIME`  int or None
`RECEIPT_TIME`  int or None: the datagram's own ReceiptTime attribute only
                (the listener's time is `RawEvent.receipt_ms`)
`TYPES`         tuple of str: ``counter``, ``gauge``, ``statset`` or the type
                name as sent (an empty one reads ``unknown``, as `Metric` does)
`NAMES`         tuple of str, the metric names
`VALUES`        tuple: an int per counter or gauge, a tuple of 11 ``int | None``
                per statset (`Statset.FIELDS` order), the value as sent otherwise
==============  ==========================================================

Three ways through, fastest first:

1. *Shape hit.* Events from one sender keep one byte layout; only fixed-width
   numbers change (values, send_time, ReceiptTime). After a full parse the
   datagram's layout is remembered as one `struct.Struct` that unpacks every
   constant stretch (as bytes) and every number (as int) in one call. The
   constant stretches joined are the key of a dict holding the finished
   constant parts of the record, so a hit is verified exactly: every byte that
   is not a number is the same as in a datagram already parsed, hence so is
   the structure, and each number is valid whatever its value.
2. *Fast parse.* One flat loop over the records into a small dict, then the
   StatsMsg rules; it gives up (returns None) on anything unusual: arrays,
   long strings, bad bytes, schema errors.
3. *Typed path.* ``StatsMsg.from_lwes(decode(...))`` converted by
   `record_from_msg`: it raises the canonical `LwesDecodeError` or
   `MessageError` for malformed input and handles whatever (2) gave up on.

Every cache is bounded and cleared when full: hostile variety costs speed,
never memory.
"""

from __future__ import annotations

import struct
from operator import itemgetter
from typing import Any

from mondemand.lwes import MAX_DECODE_SIZE, decode
from mondemand.messages.stats import STATS_MSG, MetricType, Statset, StatsMsg

__all__ = [
    "COLLECT_TIME",
    "CONTEXT",
    "HOST",
    "NAMES",
    "PROG_ID",
    "RECEIPT_TIME",
    "SEND_TIME",
    "TYPES",
    "VALUES",
    "StatsRecord",
    "clear_caches",
    "decode_stats",
    "record_from_msg",
]

PROG_ID, HOST, CONTEXT, SEND_TIME, COLLECT_TIME, RECEIPT_TIME, TYPES, NAMES, VALUES = range(9)

#: (prog_id, host, context, send_time, collect_time, receipt_time, types, names, values); see the module text.
StatsRecord = tuple[
    str, str, tuple[tuple[str, str], ...], int | None, int | None, int | None,
    tuple[str, ...], tuple[str, ...], tuple[Any, ...],
]  # fmt: skip

_COUNTER, _GAUGE, _STATSET, _UNKNOWN = (MetricType.COUNTER.value, MetricType.GAUGE.value,
                                         MetricType.STATSET.value, MetricType.UNKNOWN.value)  # fmt: skip
_UNKNOWN_HOST = "unknown"

_NAME_PREFIX = bytes([len(STATS_MSG)]) + STATS_MSG.encode()
_HEADER = len(_NAME_PREFIX) + 2  # name, then the u16 attribute count
_ENC_LATIN1 = b"\x03enc\x02\x00\x00"

# Type ids: the integer types a count or number may have (any of them, as the typed getters).
_INT_IDS = frozenset((1, 2, 3, 4, 7, 8, 10))
_STRING = 5
_IP_ADDR = 6
# Fixed-width scalars: width and struct code, the code None where struct cannot give the decoded value.
_FIXED: dict[int, tuple[int, str | None]] = {
    1: (2, "H"), 2: (2, "h"), 3: (4, "I"), 4: (4, "i"), 6: (4, None), 7: (8, "q"),
    8: (8, "Q"), 9: (1, "?"), 10: (1, "B"), 11: (4, "f"), 12: (8, "d"),
}  # fmt: skip
_WIDTH = [0] * 256
_READ: list[Any] = [None] * 256
for _t, (_w, _code) in _FIXED.items():
    _WIDTH[_t] = _w
    if _code is not None:
        _READ[_t] = struct.Struct(">" + _code).unpack_from


def _read_ip(buf: bytes, q: int) -> tuple[str]:
    return (f"{buf[q + 3]}.{buf[q + 2]}.{buf[q + 1]}.{buf[q]}",)


_READ[_IP_ADDR] = _read_ip

# Whole string records (key length, key, type, value) -> (key bytes, value), one table per text codec.
_STRINGS: dict[str, dict[bytes, tuple[bytes, str]]] = {"utf-8": {}, "latin-1": {}}
_STRING_RECORD_MAX = 160
_STRINGS_MAX = 16384

# Statset text -> its 11 fields.
_STATSETS: dict[str, tuple[int | None, ...]] = {}
_STATSETS_MAX = 4096

# Datagram length -> layouts of that length: (unpack_from, constant-stretch getter, templates).
# A template: constant stretches joined -> (prog_id, host, context, types, names, extra, times getter,
# values getter); the getters pick from the unpacked numbers followed by `extra`.
_LAYOUTS: dict[int, list[tuple[Any, Any, dict[bytes, tuple[Any, ...]]]]] = {}
_LAYOUTS_PER_LENGTH = 8
_TEMPLATES_MAX = 8192
_TEMPLATE_BYTES_MAX = 8 << 20
_template_count = 0
_template_bytes = 0
_STRUCTS: dict[str, Any] = {}

# Attribute names of metric i, context pair j.
_METRIC_KEYS: list[tuple[bytes, bytes, bytes]] = []
_CONTEXT_KEYS: list[tuple[bytes, bytes]] = []


def clear_caches(*, strings: bool = True) -> None:
    """Forget every cached shape, and unless `strings` is False every string and statset (tests, benchmarks)."""
    global _template_count, _template_bytes
    if strings:
        for table in _STRINGS.values():
            table.clear()
        _STATSETS.clear()
    _LAYOUTS.clear()
    _STRUCTS.clear()
    _template_count = _template_bytes = 0


def cache_sizes() -> dict[str, int]:
    """Entries in each cache, for tests and status pages."""
    return {
        "strings": sum(len(t) for t in _STRINGS.values()),
        "statsets": len(_STATSETS),
        "lengths": len(_LAYOUTS),
        "layouts": sum(len(v) for v in _LAYOUTS.values()),
        "templates": _template_count,
        "template_bytes": _template_bytes,
        "structs": len(_STRUCTS),
    }


def decode_stats(data: bytes, *, long_strings: bool = False, max_size: int = MAX_DECODE_SIZE) -> StatsRecord:
    """The `StatsRecord` of one MonDemand::StatsMsg datagram.

    Equal to ``record_from_msg(StatsMsg.from_lwes(decode(data, long_strings=..., max_size=...)))``
    and raising what that raises: `LwesDecodeError` for bytes that are not an
    LWES event, `MessageError` (or its `StatsetFormatError`) for an event that
    is not a well-formed StatsMsg.
    """
    if type(data) is not bytes:
        data = bytes(data)
    layouts = _LAYOUTS.get(len(data))
    if layouts is not None and len(data) <= max_size:
        for unpack, constants, templates in layouts:
            numbers = unpack(data)
            template = templates.get(b"".join(constants(numbers)))
            if template is not None:
                prog_id, host, context, types, names, extra, times, values = template
                numbers += extra
                send, collect, receipt = times(numbers)
                return prog_id, host, context, send, collect, receipt, types, names, values(numbers)
    record = _parse(data, max_size)
    if record is None:
        return record_from_msg(StatsMsg.from_lwes(decode(data, long_strings=long_strings, max_size=max_size)))
    return record


def record_from_msg(msg: StatsMsg) -> StatsRecord:
    """The `StatsRecord` of a typed message (its receipt_time as it is, sender fields left out)."""
    values = tuple(tuple(getattr(m.value, f) for f in Statset.FIELDS) if m.type is MetricType.STATSET else m.value
                   for m in msg.metrics)  # fmt: skip
    return (
        msg.prog_id, msg.host, tuple(sorted(msg.context.items())), msg.send_time, msg.collect_time,
        msg.receipt_time, tuple(m.type_name for m in msg.metrics), tuple(m.name for m in msg.metrics), values,
    )  # fmt: skip


def parse_statset(text: str) -> tuple[int | None, ...] | None:
    """The 11 fields of a statset string, None when `Statset.parse` would refuse it."""
    fields = _STATSETS.get(text)
    if fields is not None:
        return fields
    parts = text.split(":")
    if len(parts) != 11:
        return None
    out: list[int | None] = []
    for part in parts:
        if not part:
            out.append(None)
        elif part.isascii() and (part.isdigit() or (part[0] == "-" and part[1:].isdigit())):
            try:
                out.append(int(part))
            except ValueError:  # beyond int()'s digit limit: the typed path raises that ValueError
                return None
        else:
            return None
    fields = tuple(out)
    if len(_STATSETS) >= _STATSETS_MAX:
        _STATSETS.clear()
    _STATSETS[text] = fields
    return fields


def _metric_keys(num: int) -> list[tuple[bytes, bytes, bytes]]:
    keys = _METRIC_KEYS
    for i in range(len(keys), num):
        keys.append((b"t%d" % i, b"k%d" % i, b"v%d" % i))
    return keys


def _context_keys(num: int) -> list[tuple[bytes, bytes]]:
    keys = _CONTEXT_KEYS
    for j in range(len(keys), num):
        keys.append((b"ctxt_k%d" % j, b"ctxt_v%d" % j))
    return keys


def _records(data: bytes, n: int, text: str) -> dict[bytes, tuple[int, Any, int]] | None:
    """Key bytes -> (type id, value, value offset) of every record; None for anything unusual.

    A repeated key keeps its last record, as the lax decoder does.
    """
    strings = _STRINGS[text]
    widths = _WIDTH
    reads = _READ
    attrs: dict[bytes, tuple[int, Any, int]] = {}
    p = _HEADER
    try:
        while p < n:
            q = p + 2 + data[p]  # first byte of the value
            t = data[q - 1]
            if t == _STRING:
                e = q + 2 + ((data[q] << 8) | data[q + 1])
                if e > n:
                    return None
                hit = strings.get(data[p:e])
                if hit is None:
                    hit = (data[p + 1 : q - 1], data[q + 2 : e].decode(text, "surrogateescape"))
                    if e - p <= _STRING_RECORD_MAX:
                        if len(strings) >= _STRINGS_MAX:
                            strings.clear()
                        strings[data[p:e]] = hit
                attrs[hit[0]] = (_STRING, hit[1], q)
                p = e
            else:
                e = q + widths[t]
                if e == q or e > n:
                    return None
                attrs[data[p + 1 : q - 1]] = (t, reads[t](data, q)[0], q)
                p = e
    except IndexError:
        return None
    return attrs


def _parse(data: bytes, max_size: int) -> StatsRecord | None:
    """Parse without the typed path; None when the typed path must decide (or raise)."""
    n = len(data)
    if n > max_size or n < _HEADER or not data.startswith(_NAME_PREFIX):
        return None
    text = "latin-1" if data.startswith(_ENC_LATIN1, _HEADER) else "utf-8"
    attrs = _records(data, n, text)
    if attrs is None:
        return None
    get = attrs.get
    ints = _INT_IDS

    item = get(b"prog_id")
    if item is None or item[0] != _STRING:
        return None
    prog_id = item[1]
    item = get(b"num")
    if item is None or item[0] not in ints:
        return None
    num = item[1]
    if not 0 <= num <= len(attrs) // 3:
        return None
    types: list[str] = []
    names: list[str] = []
    values: list[Any] = []
    slots: list[tuple[int, int, int | None]] = []  # (type id, offset, metric index) of each number
    constant = True  # no string values, so the layout is worth remembering
    for i, (tk, kk, vk) in enumerate(_metric_keys(num)[:num]):
        t_item, k_item, v_item = get(tk), get(kk), get(vk)
        if t_item is None or k_item is None or v_item is None or t_item[0] != _STRING or k_item[0] != _STRING:
            return None
        kind = t_item[1]
        vt = v_item[0]
        if kind in (_COUNTER, _GAUGE):
            if vt not in ints:
                return None
            value = v_item[1]
        elif kind == _STATSET:
            if vt != _STRING:
                return None
            value = parse_statset(v_item[1])
            if value is None:
                return None
        else:
            value = v_item[1]
            if not kind:
                kind = _UNKNOWN
        if vt == _STRING:
            constant = False
        elif vt != _IP_ADDR:
            slots.append((vt, v_item[2], i))
        types.append(kind)
        names.append(k_item[1])
        values.append(value)

    context: dict[str, str] = {}
    item = get(b"ctxt_num")
    if item is not None:
        if item[0] not in ints or not 0 <= item[1] <= len(attrs) // 2:
            return None
        for ck, cv in _context_keys(item[1])[: item[1]]:
            k_item, v_item = get(ck), get(cv)
            if k_item is None or v_item is None or k_item[0] != _STRING or v_item[0] != _STRING:
                return None
            context[k_item[1]] = v_item[1]
    host = context.pop("host", _UNKNOWN_HOST)

    times: list[int | None] = []
    for role, key in enumerate((b"send_time", b"collect_time", b"ReceiptTime")):
        item = get(key)
        if item is None:
            times.append(None)
        elif item[0] not in ints:
            return None
        else:
            times.append(item[1])
            slots.append((item[0], item[2], -1 - role))
    ignored: list[tuple[int, int]] = []  # (offset, width) of values that only need the right type
    item = get(b"SenderIP")
    if item is not None:
        if item[0] != _IP_ADDR:
            return None
        ignored.append((item[2], 4))
    item = get(b"SenderPort")
    if item is not None:
        if item[0] not in ints:
            return None
        ignored.append((item[2], _WIDTH[item[0]]))

    record = (prog_id, host, tuple(sorted(context.items())), times[0], times[1], times[2],
              tuple(types), tuple(names), tuple(values))  # fmt: skip
    if constant:
        _remember(data, record, slots, ignored)
    return record


def _remember(data: bytes, record: StatsRecord, slots: list[tuple[int, int, int | None]],
              ignored: list[tuple[int, int]]) -> None:
    """Keep the layout of `data` so that the next datagram of this shape is a hit."""
    global _template_count, _template_bytes
    n = len(data)
    if _template_count >= _TEMPLATES_MAX or _template_bytes + n > _TEMPLATE_BYTES_MAX:
        _LAYOUTS.clear()
        _STRUCTS.clear()
        _template_count = _template_bytes = 0
    # One format: constant stretches as bytes ("Ns"), numbers by their code, ignored values skipped ("Nx").
    fields = sorted([(off, _FIXED[t][0], _FIXED[t][1], role) for t, off, role in slots]
                    + [(off, w, "x", None) for off, w in ignored])  # fmt: skip
    fmt = [">"]
    pos = 0
    constant_idx: list[int] = []
    index: dict[int, int] = {}  # role -> position in the unpacked tuple
    count = 0
    for off, width, code, role in fields:
        if off > pos:
            fmt.append(f"{off - pos}s")
            constant_idx.append(count)
            count += 1
        if code == "x":
            fmt.append(f"{width}x")
        else:
            fmt.append(code)  # type: ignore[arg-type]
            index[role] = count  # type: ignore[index]
            count += 1
        pos = off + width
    if n > pos:
        fmt.append(f"{n - pos}s")
        constant_idx.append(count)
        count += 1
    fmt_text = "".join(fmt)
    unpack = _STRUCTS.get(fmt_text)
    if unpack is None:
        if len(_STRUCTS) >= _TEMPLATES_MAX:
            _STRUCTS.clear()
        unpack = _STRUCTS[fmt_text] = struct.Struct(fmt_text).unpack_from
    numbers = unpack(data)
    key = b"".join(numbers[i] for i in constant_idx)

    # Whatever is not unpacked (absent times, ip_addr values) comes from `extra`, after the numbers.
    extra: list[Any] = []

    def pick(role: int, value: Any) -> int:
        at = index.get(role)
        if at is None:
            at = count + len(extra)
            extra.append(value)
        return at

    times = itemgetter(*(pick(-1 - r, record[SEND_TIME + r]) for r in range(3)))
    value_idx = [pick(i, v) for i, v in enumerate(record[VALUES])]
    if not value_idx:
        values: Any = _empty
    elif len(value_idx) == 1:
        values = _single(value_idx[0])
    else:
        values = itemgetter(*value_idx)
    template = (record[PROG_ID], record[HOST], record[CONTEXT], record[TYPES], record[NAMES], tuple(extra),
                times, values)  # fmt: skip

    layouts = _LAYOUTS.setdefault(n, [])
    templates = next((t for u, _, t in layouts if u is unpack), None)
    if templates is None:
        if len(layouts) >= _LAYOUTS_PER_LENGTH:
            return
        templates = {}
        layouts.append((unpack, itemgetter(*constant_idx) if len(constant_idx) > 1 else _single(constant_idx[0]),
                        templates))  # fmt: skip
    if key not in templates:
        _template_count += 1
        _template_bytes += n
    templates[key] = template


def _empty(numbers: tuple[Any, ...]) -> tuple[()]:
    return ()


def _single(i: int) -> Any:
    def get(numbers: tuple[Any, ...]) -> tuple[Any]:
        return (numbers[i],)

    return get
