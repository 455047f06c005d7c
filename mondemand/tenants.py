"""Tenants: who may send, with which keys, and how much (service mode, docs/service.md).

A `[tenant:NAME]` section names a keys file (or lists key hashes inline) and
optional quotas. Bearer keys are kept only as their SHA-256: a stolen config
or keys file does not let anyone send as the tenant. HMAC signing secrets
(`hmac:` lines) cannot be hashed, since the server must recompute each
signature; they live in the keys file only, never in routes.ini.

`Tenants` is the live table: `authenticate` (HTTP keys), `secret` (UDP key
ids), `admit` (quotas, token buckets refilled per second or minute) and
`reload` (SIGHUP: keys files are read again; a file with a mistake keeps the
old keys and the problem is logged). Nothing here logs or returns a key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mondemand.options import GIB, Option

#: Key ids: what a signed datagram names, at most 32 characters.
KEY_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,32}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: How long a series counts as live for `max_series` after it was last seen.
SERIES_TTL = 600.0
#: Most distinct series remembered per tenant when it has no `max_series` (memory bound).
SERIES_CAP = 1_000_000

TENANT_OPTIONS = (
    Option("keys_file", "str", "", help="file of `KEY_ID sha256:HEX` and `KEY_ID hmac:SECRET` lines "
                                        "(relative: to the config's directory)"),
    Option("keys", "list", (), help="inline `KEY_ID=sha256:HEX` bearer key hashes (no secrets in routes.ini)"),
    Option("admin", "bool", False, help="this tenant's keys also open /status, /alerts and every tenant's data"),
    Option("max_series", "int", 0, minimum=0, help="live series at most (0: no limit)"),
    Option("max_events_per_second", "int", 0, minimum=0, help="events per second at most (0: no limit)"),
    Option("max_bytes_per_second", "size", 0, minimum=0, maximum=64 * GIB,
           help="bytes of events per second at most (0: no limit)"),
    Option("max_log_lines_per_minute", "int", 0, minimum=0, help="LogMsg events per minute at most (0: no limit)"),
    Option("alert_rules", "list", (), help="[alert:NAME] rules this tenant's alerts evaluate (default: all)"),
)


def hash_key(key: str) -> str:
    """The `sha256:HEX` form of a bearer key, as keys files and `keys =` hold it."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class TenantSpec:
    """One `[tenant:NAME]` section, validated."""

    name: str
    keys_file: Path | None
    inline: tuple[tuple[str, str], ...]  # (key id, 64 hex digits)
    admin: bool = False
    max_series: int = 0
    max_events_per_second: int = 0
    max_bytes_per_second: int = 0
    max_log_lines_per_minute: int = 0
    alert_rules: tuple[str, ...] = ()


@dataclass
class KeyTable:
    """One snapshot of every tenant's keys: replaced whole on reload, never mutated."""

    by_hash: dict[bytes, tuple[str, str]] = field(default_factory=dict)  # sha256 digest -> (tenant, key id)
    secrets: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # key id -> (tenant, secret)


def parse_inline(values: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """`KEY_ID=sha256:HEX` items -> (key id, hex) pairs and problems."""
    pairs, problems = [], []
    for item in values:
        kid, sep, value = item.partition("=")
        if not sep or not KEY_ID.match(kid):
            problems.append(f"{item[:40]!r} is not KEY_ID=sha256:HEX")
            continue
        if value.startswith("hmac:"):
            problems.append(f"key {kid}: hmac secrets belong in a keys_file, not in routes.ini")
            continue
        digest = value.removeprefix("sha256:")
        if not value.startswith("sha256:") or not _HEX64.match(digest):
            problems.append(f"key {kid}: expected sha256: and 64 lowercase hex digits")
            continue
        pairs.append((kid, digest))
    return pairs, problems


def read_keys_file(path: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(key id, kind, value) lines of a keys file and problems, each naming the file and line (never a key)."""
    entries, problems = [], []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"{path}: cannot read: {exc.__class__.__name__}"]
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not KEY_ID.match(parts[0]) or ":" not in parts[1]:
            problems.append(f"{path}:{number}: expected `KEY_ID sha256:HEX` or `KEY_ID hmac:SECRET`")
            continue
        kid, (kind, _, value) = parts[0], parts[1].partition(":")
        if kind == "sha256" and _HEX64.match(value):
            entries.append((kid, "sha256", value))
        elif kind == "hmac" and len(value) >= 16:
            entries.append((kid, "hmac", value))
        else:
            problems.append(f"{path}:{number}: key {kid}: expected sha256: and 64 lowercase hex digits, "
                            "or hmac: and a secret of at least 16 characters")
    return entries, problems


def build_table(specs: dict[str, TenantSpec]) -> tuple[KeyTable, list[str]]:
    """The key table of every tenant, and problems (duplicate key ids, unreadable files)."""
    table = KeyTable()
    problems: list[str] = []
    owners: dict[str, str] = {}
    for spec in specs.values():
        entries = [(kid, "sha256", digest) for kid, digest in spec.inline]
        if spec.keys_file is not None:
            found, file_problems = read_keys_file(spec.keys_file)
            entries += found
            problems += file_problems
        for kid, kind, value in entries:
            if kid in owners:
                problems.append(f"[tenant:{spec.name}] key id {kid} is already a key of [tenant:{owners[kid]}]")
                continue
            owners[kid] = spec.name
            if kind == "sha256":
                table.by_hash[bytes.fromhex(value)] = (spec.name, kid)
            else:
                secret = value.encode()
                table.secrets[kid] = (spec.name, secret)
                table.by_hash[hashlib.sha256(secret).digest()] = (spec.name, kid)
    return table, problems


class _Bucket:
    """A token bucket holding at most one period's worth."""

    __slots__ = ("capacity", "level", "period", "stamp")

    def __init__(self, capacity: int, period: float) -> None:
        self.capacity = capacity
        self.period = period
        self.level = float(capacity)
        self.stamp = time.monotonic()

    def take(self, amount: int, now: float) -> float:
        """0 when `amount` was taken; else seconds until it could be."""
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.capacity / self.period)
        self.stamp = now
        if amount <= self.level:
            self.level -= amount
            return 0.0
        return (amount - self.level) * self.period / self.capacity


class Tenants:
    """The live tenant table of one server: keys, admin rights and quotas."""

    def __init__(self, specs: dict[str, TenantSpec]) -> None:
        self.specs = specs
        table, problems = build_table(specs)
        if problems:
            raise ValueError("; ".join(problems))
        self._table = table
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        for spec in specs.values():
            for kind, capacity, period in (("events", spec.max_events_per_second, 1.0),
                                           ("bytes", spec.max_bytes_per_second, 1.0),
                                           ("logs", spec.max_log_lines_per_minute, 60.0)):
                if capacity:
                    self._buckets[(spec.name, kind)] = _Bucket(capacity, period)
        self._series: dict[str, dict[Any, float]] = {name: {} for name in specs}
        #: Per tenant: events refused over a quota.
        self.over_quota: dict[str, int] = dict.fromkeys(specs, 0)
        #: The server's own admin key, random per start and known only to its processes (the workers inherit it):
        #: the dashboard reads the alerts documents on the status port with it. Never written anywhere.
        self._internal_key = secrets.token_urlsafe(32)

    @property
    def names(self) -> list[str]:
        """Tenant names in config order."""
        return list(self.specs)

    def authenticate(self, key: str | None) -> str | None:
        """The tenant a bearer key belongs to, or None."""
        if not key:
            return None
        found = self._table.by_hash.get(hashlib.sha256(key.encode()).digest())
        return found[0] if found is not None else None

    def is_admin(self, key: str | None) -> bool:
        """True for a key of a tenant with `admin = true`, or the server's internal key."""
        if self.is_internal(key):
            return True
        tenant = self.authenticate(key)
        return tenant is not None and self.specs[tenant].admin

    def is_internal(self, key: str | None) -> bool:
        """True for the server's internal key (`internal_key`)."""
        return bool(key) and hmac.compare_digest(str(key).encode(), self._internal_key.encode())

    def internal_key(self) -> str:
        """The key this server's own processes present to its status port (the dashboard's alert view)."""
        return self._internal_key

    def secret(self, kid: str) -> tuple[str, bytes] | None:
        """(tenant, HMAC secret) of a key id, or None."""
        return self._table.secrets.get(kid)

    def signing_key(self, tenant: str) -> tuple[str, bytes] | None:
        """(key id, secret) of the tenant's first hmac key (a forwarder re-signing its events), or None."""
        for kid, (owner, secret) in self._table.secrets.items():
            if owner == tenant:
                return kid, secret
        return None

    def reload(self) -> list[str]:
        """Read the keys files again (SIGHUP). Problems (without keys) are returned and the old keys kept."""
        table, problems = build_table(self.specs)
        if not problems:
            self._table = table
        return problems

    def admit(self, tenant: str, events: int, nbytes: int, log_lines: int = 0) -> float:
        """Take `events`, `nbytes` and `log_lines` from the tenant's quotas: 0 when admitted, else Retry-After seconds.

        Nothing is taken when any quota refuses.
        """
        buckets = self._buckets
        if not buckets:
            return 0.0
        now = time.monotonic()
        with self._lock:
            wanted = [(buckets.get((tenant, "events")), events), (buckets.get((tenant, "bytes")), nbytes),
                      (buckets.get((tenant, "logs")), log_lines)]
            saved = [(b, b.level, b.stamp) for b, n in wanted if b is not None and n]
            for bucket, amount in wanted:
                if bucket is None or not amount:
                    continue
                wait = bucket.take(amount, now)
                if wait:
                    for b, level, stamp in saved:
                        b.level, b.stamp = level, stamp
                    self.over_quota[tenant] = self.over_quota.get(tenant, 0) + events
                    return max(wait, 0.001)
        return 0.0

    def admit_series(self, tenant: str, series: list[Any]) -> bool:
        """Note `series` as live for the tenant; False (nothing noted) when they would exceed `max_series`."""
        limit = self.specs[tenant].max_series if tenant in self.specs else 0
        now = time.monotonic()
        with self._lock:
            live = self._series.setdefault(tenant, {})
            new = [s for s in series if s not in live]
            if new and len(live) + len(new) > (limit or SERIES_CAP):
                for key in [k for k, seen in live.items() if now - seen > SERIES_TTL]:
                    del live[key]
                if len(live) + len(new) > (limit or SERIES_CAP):
                    if limit:
                        self.over_quota[tenant] = self.over_quota.get(tenant, 0) + 1
                        return False
                    live.clear()
            for s in series:
                live[s] = now
        return True

    def status(self) -> dict[str, Any]:
        """Per tenant: key count, admin, quotas, over_quota and live series. No key nor hash."""
        table = self._table
        counts: dict[str, int] = {}
        for tenant, _kid in table.by_hash.values():
            counts[tenant] = counts.get(tenant, 0) + 1
        with self._lock:
            return {name: {"keys": counts.get(name, 0), "admin": spec.admin, "over_quota": self.over_quota.get(name, 0),
                           "live_series": len(self._series.get(name, ())),
                           "quotas": {"max_series": spec.max_series,
                                      "max_events_per_second": spec.max_events_per_second,
                                      "max_bytes_per_second": spec.max_bytes_per_second,
                                      "max_log_lines_per_minute": spec.max_log_lines_per_minute}}
                    for name, spec in self.specs.items()}


def compare(a: bytes, b: bytes) -> bool:
    """Constant-time equality (signatures)."""
    return hmac.compare_digest(a, b)
