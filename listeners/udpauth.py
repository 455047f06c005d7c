"""The `signatures` option of lwes-udp: one call per datagram that verifies it and applies its tenant's quotas.

`required`: only datagrams signed with a tenant's key pass (as that tenant).
`optional`: unsigned ones pass too, without a tenant (the original backends);
signed ones must verify. Refusals are counted per reason; nothing is logged
per datagram.
"""

from __future__ import annotations

from typing import Any

from mondemand.lwes import LwesDecodeError
from mondemand.messages.stats_fast import NAMES, PROG_ID, decode_stats
from mondemand.options import HOUR, Option
from mondemand.signing import UNSIGNED, Verifier

_LOG_NAME = b"\x11MonDemand::LogMsg"
_STATS_NAME = b"\x13MonDemand::StatsMsg"

OPTIONS = (
    Option("signatures", "str", "off", choices=("off", "optional", "required"),
           help="HMAC-signed events (docs/wire-format.md): required drops unsigned ones; needs [tenant:NAME] keys"),
    Option("signature_window", "duration", 60.0, minimum=1, maximum=HOUR,
           help="a signed event's timestamp may differ from the server's clock by this much at most"),
    Option("replay_memory", "int", 100_000, minimum=1000, maximum=10_000_000,
           help="signatures remembered to refuse replays; when full, new signed events are refused (counted)"),
)


#: A port dedicated to one tenant (lwes-udp and statsd): the port is the boundary, not a key.
TENANT_OPTION = Option("tenant", "str", "",
                       help="with [tenant:NAME] sections: every event received here is NAME's (docs/service.md "
                            "says what that trusts); excludes signatures")


def series_fit(tenants: Any, tenant: str, event: bytes) -> bool:
    """False when a StatsMsg's series would take the tenant over `max_series` (a bad StatsMsg passes: the
    backends count it as undecodable)."""
    try:
        record = decode_stats(event)
    except (LwesDecodeError, ValueError):
        return True
    prog = record[PROG_ID]
    return tenants.admit_series(tenant, [(prog, name) for name in record[NAMES]])


class PortGate:
    """`tenant = NAME`: every datagram is NAME's, within NAME's quotas; `check` as DatagramGate's."""

    def __init__(self, tenants: Any, tenant: str) -> None:
        self.tenants = tenants
        self.tenant = tenant
        self.over_quota = 0
        self.series_limited = bool(tenants.specs[tenant].max_series)

    def check(self, data: bytes, now_ms: int) -> tuple[bytes, str] | None:
        """(data, tenant), or None over a quota (counted)."""
        tenant = self.tenant
        if self.tenants.admit(tenant, 1, len(data), 1 if data.startswith(_LOG_NAME) else 0) or (
                self.series_limited and data.startswith(_STATS_NAME) and not series_fit(self.tenants, tenant, data)):
            self.over_quota += 1
            return None
        return data, tenant

    def counters(self) -> dict[str, int]:
        """over_quota."""
        return {"over_quota": self.over_quota}


def has_quotas(spec: Any) -> bool:
    """Whether a tenant has any quota (a dedicated port without one needs no per-datagram check)."""
    return bool(spec.max_series or spec.max_events_per_second or spec.max_bytes_per_second
                or spec.max_log_lines_per_minute)


class DatagramGate:
    """Verifies one listener's datagrams; `check` returns (data, tenant) or None (dropped, counted)."""

    def __init__(self, tenants: Any, mode: str, window: float, memory: int) -> None:
        self.tenants = tenants
        self.required = mode == "required"
        self.verifier = Verifier(tenants, window, memory)
        self.over_quota = 0
        #: Tenants with a `max_series` quota: their StatsMsg are read (names only) to count live series.
        self.series_limited = {name for name, spec in tenants.specs.items() if spec.max_series}

    def check(self, data: bytes, now_ms: int) -> tuple[bytes, str] | None:
        """The event without its signature and its tenant; None when refused."""
        result = self.verifier.verify(data, now_ms)
        if type(result) is str:
            if result == UNSIGNED and not self.required:
                self.verifier.refused[UNSIGNED] -= 1
                return data, ""
            return None
        tenant, event = result
        if self.tenants.admit(tenant, 1, len(event), 1 if event.startswith(_LOG_NAME) else 0):
            self.over_quota += 1
            return None
        if tenant in self.series_limited and event.startswith(_STATS_NAME) and not series_fit(self.tenants, tenant,
                                                                                                 event):
            self.over_quota += 1
            return None
        return event, tenant

    def counters(self) -> dict[str, int]:
        """verified, each refusal reason and over_quota."""
        return {**self.verifier.counters(), "over_quota": self.over_quota}
