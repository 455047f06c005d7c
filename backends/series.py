"""Series identity and naming shared by the RRD and whisper backends and the dashboard.

A *series* is one stored time series: one (prog_id, metric type, metric name,
host, sorted context) as the reference RRD backend keys its files
(reference-server.md §3.3). A statset metric gives one series per present
sub-statistic; its `metric_type` is the sub-statistic name (``count``,
``sum``, ``min``, ... ``pctl_99``), exactly the ``<type>`` part of the
reference file name, so `SeriesKey.is_statset` can tell it apart from
``counter`` and ``gauge``.

Namespaces (§3.3, §4.2): a series whose context holds a ``stat`` pair is a
server-made aggregate and lives in namespace ``agg``; every other series is raw
per-host data in ``md``. The namespace is derived from the context, never
chosen separately, so two keys differing only in namespace cannot exist.

Two relative paths are defined for a key; each path component goes through
`mondemand.safepath.safe_name`, so nothing a sender writes can leave the data
directory, and no component is longer than 255 bytes:

- `file_path` -- the reference's primary ("legacy") layout,
  ``<prog_id>/<name>/<prog_id>-<type>-<name>-<host>[-k=v...]<suffix>``.
  The file name joins several safe names with ``-``; when that would exceed
  `MAX_FILE_NAME` bytes it is cut and ended with ``~`` plus 16 hex digits of a
  SHA-256 over the whole key (``~`` is always escaped inside safe names).
- `tree_path` -- the Graphite-compatible tree,
  ``<prog>/<md|agg>/<name>/<k1>/<v1>/.../host/<shorthost>/<type><suffix>``
  without the ``stat`` pair, every token with each character outside
  ``[A-Za-z0-9_]`` replaced by ``_`` and ``shorthost`` the host up to its first
  dot, as in the reference. `graphite_name` is the same tokens joined with
  ``.``: since ``.`` is one of the replaced characters, a component's dots
  become ``_`` and can never split it.

Both layouts can map different keys to one path (``host="a-b=c"`` versus
``host="a"`` with context ``b=c``; hosts differing after the first dot in the
tree). `PathRegistry` notices when a second, different key claims a path,
counts it and logs it once, so it is reported rather than silently merged.

`parse_file_path` inverts `file_path` where the layout allows; callers that
need certainty check ``file_path(parse_file_path(p)) == p``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, NamedTuple

from mondemand.messages.stats import MetricType, Statset, StatsMsg
from mondemand.messages.stats_fast import StatsRecord, record_from_msg
from mondemand.safepath import safe_name, unsafe_name

__all__ = [
    "AGG",
    "AGG_CONTEXT_KEY",
    "MAX_FILE_NAME",
    "MD",
    "STATSET_FIELDS",
    "CounterRates",
    "PathRegistry",
    "ProgIdFilter",
    "SeriesKey",
    "SeriesNameError",
    "SeriesPoint",
    "file_path",
    "graphite_name",
    "graphite_token",
    "parse_file_path",
    "series_from_record",
    "series_from_stats",
    "series_key",
    "tree_path",
]

#: Namespace of raw per-host series.
MD = "md"
#: Namespace of server-made aggregates.
AGG = "agg"
#: A context pair with this key marks an aggregate (the stats aggregator adds ``stat=gauge``, ``stat=sum`` ...).
AGG_CONTEXT_KEY = "stat"
#: Sub-statistic names of a statset, in wire order; each is a `SeriesKey.metric_type`.
STATSET_FIELDS: tuple[str, ...] = Statset.FIELDS
#: Longest file name `file_path` produces, in bytes: under the common 255-byte limit with room for the
#: temporary names tools derive from it (librrd creates ``<name>XXXXXX`` and renames it).
MAX_FILE_NAME = 240
#: Longest relative path produced; beyond it a key is refused with SeriesNameError (PATH_MAX is 4096).
MAX_REL_PATH = 3072

_SIMPLE_TYPES = frozenset((MetricType.COUNTER.value, MetricType.GAUGE.value))
_STATSET = MetricType.STATSET.value
_STATSET_SET = frozenset(STATSET_FIELDS)
_NON_WORD = re.compile(r"[^A-Za-z0-9_]")
_TOKEN_MAX = 200

log = logging.getLogger("mondemand.series")


class SeriesNameError(ValueError):
    """A key whose names cannot be turned into a path (for instance, far too long altogether)."""


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """Identity of one stored series.

    `metric_type` is ``counter``, ``gauge`` or a statset sub-statistic name.
    `context` is the message context without ``host``, as sorted
    ``(key, value)`` pairs; it keeps the ``stat`` pair of aggregates.
    `namespace` is `AGG` exactly when the context has a ``stat`` key, else `MD`;
    use `SeriesKey.make` to have it derived and the context sorted.
    """

    namespace: str
    prog_id: str
    metric_type: str
    name: str
    host: str
    context: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.metric_type not in _SIMPLE_TYPES and self.metric_type not in _STATSET_SET:
            raise ValueError(f"metric_type must be counter, gauge or a statset field, got {self.metric_type!r}")
        if list(self.context) != sorted(self.context) or len({k for k, _ in self.context}) != len(self.context):
            raise ValueError("context must be sorted (key, value) pairs with distinct keys")
        expected = AGG if any(k == AGG_CONTEXT_KEY for k, _ in self.context) else MD
        if self.namespace != expected:
            raise ValueError(f"namespace must be {expected!r} for this context, got {self.namespace!r}")

    @classmethod
    def make(cls, prog_id: str, metric_type: str, name: str, host: str,
             context: Iterable[tuple[str, str]] | dict[str, str] = ()) -> SeriesKey:
        """Build a key, sorting the context and deriving the namespace from it."""
        pairs = tuple(sorted(context.items() if isinstance(context, dict) else context))
        namespace = AGG if any(k == AGG_CONTEXT_KEY for k, _ in pairs) else MD
        return cls(namespace, prog_id, metric_type, name, host, pairs)

    @property
    def is_statset(self) -> bool:
        """True for a statset sub-statistic series."""
        return self.metric_type in _STATSET_SET

    @property
    def kind(self) -> str:
        """``counter``, ``gauge`` or ``statset``: what decides how the value is stored."""
        return "statset" if self.is_statset else self.metric_type

    @property
    def is_counter(self) -> bool:
        """True when the stored value should be a rate (a counter, kept by RRD as DERIVE)."""
        return self.metric_type == MetricType.COUNTER.value

    def context_dict(self) -> dict[str, str]:
        """The context as a dict."""
        return dict(self.context)

    def digest(self) -> str:
        """16 hex digits of a SHA-256 over every field; stable across runs and machines."""
        parts = [self.prog_id, self.metric_type, self.name, self.host]
        for k, v in self.context:
            parts += [k, v]
        text = "\0".join(parts).encode("utf-8", "surrogatepass")
        return hashlib.sha256(text).hexdigest()[:16]

    def __str__(self) -> str:
        ctx = ",".join(f"{k}={v}" for k, v in self.context)
        text = f"{self.namespace}:{self.prog_id}:{self.metric_type}:{self.name}@{self.host}"
        return f"{text}[{ctx}]" if ctx else text


class SeriesPoint(NamedTuple):
    """One value for one series: `timestamp` in whole seconds since the epoch."""

    key: SeriesKey
    timestamp: int
    value: int | float


def _seconds(ms: int | None) -> int | None:
    return None if ms is None else ms // 1000


def series_from_stats(msg: StatsMsg, *, now: float | None = None,
                      unknown_as: str | None = None) -> Iterator[SeriesPoint]:
    """Every series value a StatsMsg carries, in metric order: `series_from_record` of its record."""
    return series_from_record(record_from_msg(msg), now=now, unknown_as=unknown_as)


def series_from_record(record: StatsRecord, *, receipt_ms: int | None = None, now: float | None = None,
                       unknown_as: str | None = None) -> Iterator[SeriesPoint]:
    """Every series value of a StatsMsg record (`RawEvent.stats`), in metric order.

    Counters and gauges give one point each, statsets one point per present
    sub-statistic. Timestamps follow the reference formatter (§1.5): statsets
    use ``collect_time``, everything else ``send_time``; a missing one falls
    back to the record's receipt time, then `receipt_ms` (the listener's),
    then to `now` (default: the current time). Metrics of a type this library
    does not know are skipped, unless `unknown_as` is ``counter`` or
    ``gauge`` (the reference stores them as counters) and their value is a number.
    """
    if unknown_as not in (None, "counter", "gauge"):
        raise ValueError(f"unknown_as must be None, 'counter' or 'gauge', got {unknown_as!r}")
    prog_id, host, context, send, collect, receipt, types, names, values = record
    if receipt is None:
        receipt = receipt_ms
    fallback = int(time.time() if now is None else now) if receipt is None else receipt // 1000
    plain_ts = fallback if send is None else send // 1000
    statset_ts = fallback if collect is None else collect // 1000
    namespace = AGG if any(k == AGG_CONTEXT_KEY for k, _ in context) else MD
    return _points(prog_id, host, context, namespace, plain_ts, statset_ts, types, names, values, unknown_as)


#: (namespace, prog_id, type, name, host, context) -> its SeriesKey: senders repeat their series, and a key
#: checks its fields when built. Bounded; cleared when full.
_KEYS: dict[tuple[str, str, str, str, str, tuple[tuple[str, str], ...]], SeriesKey] = {}
_KEYS_MAX = 1 << 17


def series_key(namespace: str, prog_id: str, kind: str, name: str, host: str,
               context: tuple[tuple[str, str], ...]) -> SeriesKey:
    """The `SeriesKey` of these fields (checked), the same object as `series_from_record` gives while cached."""
    cache_key = (namespace, prog_id, kind, name, host, context)
    key = _KEYS.get(cache_key)
    if key is None:
        key = SeriesKey(namespace, prog_id, kind, name, host, context)
        if len(_KEYS) >= _KEYS_MAX:
            _KEYS.clear()
        _KEYS[cache_key] = key
    return key


def _points(prog_id: str, host: str, context: tuple[tuple[str, str], ...], namespace: str, plain_ts: int,
            statset_ts: int, types: tuple[str, ...], names: tuple[str, ...], values: tuple[Any, ...],
            unknown_as: str | None) -> Iterator[SeriesPoint]:
    for kind, name, value in zip(types, names, values, strict=True):
        if kind in _SIMPLE_TYPES:
            yield SeriesPoint(series_key(namespace, prog_id, kind, name, host, context), plain_ts, value)
        elif kind == _STATSET:
            for field_name, field_value in zip(STATSET_FIELDS, value, strict=True):
                if field_value is not None:
                    yield SeriesPoint(series_key(namespace, prog_id, field_name, name, host, context), statset_ts,
                                      field_value)
        elif unknown_as is not None and not isinstance(value, bool) and isinstance(value, int | float):
            yield SeriesPoint(series_key(namespace, prog_id, unknown_as, name, host, context), plain_ts, value)


def _cap(stem: str, suffix: str, key: SeriesKey) -> str:
    """`stem + suffix`, or a cut of `stem` ended by ``~<key digest>`` when that exceeds MAX_FILE_NAME bytes."""
    name = stem + suffix
    if len(name.encode()) <= MAX_FILE_NAME:
        return name
    room = MAX_FILE_NAME - len(suffix.encode()) - 17
    keep = stem[:room]  # safe names are ASCII, so characters are bytes
    cut = keep.rfind("%", len(keep) - 2)
    if cut >= 0:
        keep = keep[:cut]
    return f"{keep}~{key.digest()}{suffix}"


def _check_length(path: PurePosixPath) -> PurePosixPath:
    if len(str(path).encode()) > MAX_REL_PATH:
        raise SeriesNameError(f"series path would be {len(str(path))} bytes, over {MAX_REL_PATH}")
    return path


def file_path(key: SeriesKey, suffix: str = ".rrd") -> PurePosixPath:
    """The reference's primary layout, relative to the data root.

    ``<prog_id>/<name>/<prog_id>-<type>-<name>-<host>[-k=v...]<suffix>`` with
    every name made safe; the file name is capped at MAX_FILE_NAME bytes.
    Raises SeriesNameError when the whole path would exceed MAX_REL_PATH.
    """
    prog = safe_name(key.prog_id)
    name = safe_name(key.name)
    parts = [prog, key.metric_type, name, safe_name(key.host)]
    parts += [f"{safe_name(k)}={safe_name(v)}" for k, v in key.context]
    return _check_length(PurePosixPath(prog, name, _cap("-".join(parts), suffix, key)))


def graphite_token(text: str) -> str:
    """One Graphite tree token: each character outside ``[A-Za-z0-9_]`` becomes ``_`` (the reference's rule).

    An empty name gives ``_``; a token over 200 characters is cut and ended
    with ``_`` plus 16 hex digits of its SHA-256, so it stays a valid component.
    """
    token = _NON_WORD.sub("_", text) or "_"
    if len(token) > _TOKEN_MAX:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        token = f"{token[: _TOKEN_MAX - 17]}_{digest}"
    return token


def _tree_tokens(key: SeriesKey, short_host: bool, md_dir: str, agg_dir: str) -> list[str]:
    host = key.host.split(".", 1)[0] if short_host else key.host
    tokens = [graphite_token(key.prog_id), agg_dir if key.namespace == AGG else md_dir, graphite_token(key.name)]
    for k, v in key.context:
        if k != AGG_CONTEXT_KEY:
            tokens += [graphite_token(k), graphite_token(v)]
    tokens += ["host", graphite_token(host), key.metric_type]
    return tokens


def tree_path(key: SeriesKey, suffix: str = ".rrd", *, short_host: bool = True,
              md_dir: str = MD, agg_dir: str = AGG) -> PurePosixPath:
    """The Graphite-compatible tree path, relative to the tree root (the reference's ``<prefix>g``).

    ``<prog>/<md_dir|agg_dir>/<name>/<k>/<v>/.../host/<host>/<type><suffix>``;
    the ``stat`` pair is left out and `short_host` keeps the host up to its
    first dot, as the reference does. Lossy: see `PathRegistry`.
    """
    tokens = _tree_tokens(key, short_host, md_dir, agg_dir)
    tokens[-1] += suffix
    return _check_length(PurePosixPath(*tokens))


def graphite_name(key: SeriesKey, *, short_host: bool = True, md_dir: str = MD, agg_dir: str = AGG) -> str:
    """The Graphite metric name of `key`: the `tree_path` tokens joined with dots (component dots become ``_``)."""
    return ".".join(_tree_tokens(key, short_host, md_dir, agg_dir))


def parse_file_path(path: str | PurePosixPath, suffix: str = ".rrd") -> SeriesKey | None:
    """The key whose `file_path` is `path` (relative to the root), or None when `path` is not one.

    Host and context are separated at ``-`` before the first ``k=v`` piece,
    which is exact unless the host holds ``=`` or a context value holds
    ``-x=y``; names cut to fit (containing ``~``) cannot be recovered. Check
    ``file_path(key) == path`` when certainty matters.
    """
    parts = PurePosixPath(path).parts
    if len(parts) != 3 or not parts[2].endswith(suffix):
        return None
    prog_dir, name_dir, file_name = parts
    stem = file_name[: len(file_name) - len(suffix)] if suffix else file_name
    if "~" in stem:
        return None
    head = f"{prog_dir}-"
    if not stem.startswith(head):
        return None
    rest = stem[len(head):]
    metric_type, sep, rest = rest.partition("-")
    if not sep or (metric_type not in _SIMPLE_TYPES and metric_type not in _STATSET_SET):
        return None
    if not rest.startswith(f"{name_dir}-"):
        return None
    pieces = rest[len(name_dir) + 1:].split("-")
    first_ctx = next((i for i, piece in enumerate(pieces) if "=" in piece), len(pieces))
    if first_ctx == 0:
        return None
    host = "-".join(pieces[:first_ctx])
    context: list[tuple[str, str]] = []
    for piece in pieces[first_ctx:]:
        if "=" in piece or not context:
            k, _, v = piece.partition("=")
            context.append((k, v))
        else:
            k, v = context[-1]
            context[-1] = (k, f"{v}-{piece}")
    try:
        return SeriesKey.make(unsafe_name(prog_dir), metric_type, unsafe_name(name_dir), unsafe_name(host),
                              [(unsafe_name(k), unsafe_name(v)) for k, v in context])
    except ValueError:
        return None


class PathRegistry:
    """Which key owns each path, so that two different keys meeting at one path are reported.

    `claim` is True when the path is free or already owned by the same key;
    otherwise it counts the collision and logs it once per (path, key), and
    the caller must not write that key there. Ownership lasts for the
    process: after a restart the first key to arrive owns the path again.
    """

    def __init__(self, what: str = "series", logger: logging.Logger | None = None) -> None:
        self.what = what
        self.log = logger or log
        self._owners: dict[str, SeriesKey] = {}
        self._reported: set[tuple[str, SeriesKey]] = set()
        #: Claims refused because another key owns the path.
        self.collisions = 0

    def claim(self, path: str | PurePosixPath, key: SeriesKey) -> bool:
        """Own `path` for `key` if nobody else does; False (counted, logged once) when another key owns it."""
        spath = str(path)
        owner = self._owners.setdefault(spath, key)
        if owner == key:
            return True
        self.collisions += 1
        if (spath, key) not in self._reported:
            self._reported.add((spath, key))
            self.log.warning("%s path collision: %s wanted %s, which already belongs to %s; not written",
                             self.what, key, spath, owner)
        return False

    def owner(self, path: str | PurePosixPath) -> SeriesKey | None:
        """The key that owns `path`, if any."""
        return self._owners.get(str(path))

    def colliding(self) -> list[tuple[str, SeriesKey, SeriesKey]]:
        """(path, owner, refused key) for every collision seen, for status pages and tests."""
        return sorted(((p, self._owners[p], k) for p, k in self._reported), key=lambda t: (t[0], str(t[2])))

    def __len__(self) -> int:
        return len(self._owners)


class ProgIdFilter:
    """The reference's prog_id whitelist/blacklist (§3.7), with shell-style globs.

    A non-empty whitelist admits only matching prog_ids and the blacklist is
    then ignored; otherwise blacklisted prog_ids are refused and everything
    else is admitted. Decisions are cached per prog_id.
    """

    def __init__(self, whitelist: Iterable[str] = (), blacklist: Iterable[str] = ()) -> None:
        self.whitelist = tuple(whitelist)
        self.blacklist = tuple(blacklist)
        self._cache: dict[str, bool] = {}

    def allows(self, prog_id: str) -> bool:
        """True when series of `prog_id` should be stored."""
        decision = self._cache.get(prog_id)
        if decision is None:
            if self.whitelist:
                decision = any(fnmatch.fnmatchcase(prog_id, pat) for pat in self.whitelist)
            else:
                decision = not any(fnmatch.fnmatchcase(prog_id, pat) for pat in self.blacklist)
            if len(self._cache) >= 65536:
                self._cache.clear()
            self._cache[prog_id] = decision
        return decision


class CounterRates:
    """A counter's reports -> its increase since the last one, or that increase per second.

    Shared by the backends that store rates rather than the running total
    (whisper, graphite), as RRD's DERIVE does. `step` returns the number, or
    the name of the counter that explains why there is none: the first report
    of a series, a reset (the value went down), or a report no newer than the
    last (an honest rate needs time to pass).
    """

    FIRST, RESET, NOT_NEWER = "first_counter_reports", "counter_resets", "not_newer"

    def __init__(self, delta: bool = False) -> None:
        self.delta = delta
        self.last: dict[SeriesKey, tuple[int, float]] = {}

    def step(self, key: SeriesKey, timestamp: int, value: float) -> float | str:
        previous = self.last.get(key)
        if previous is not None and timestamp <= previous[0]:
            return self.NOT_NEWER
        self.last[key] = (timestamp, value)
        if previous is None:
            return self.FIRST
        last_ts, last_value = previous
        if value < last_value:
            return self.RESET
        increase = value - last_value
        return increase if self.delta else increase / (timestamp - last_ts)
