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
        if tenant in self.series_limited and event.startswith(_STATS_NAME) and not self._series_fit(tenant, event):
            self.over_quota += 1
            return None
        return event, tenant

    def _series_fit(self, tenant: str, event: bytes) -> bool:
        """False when the StatsMsg's series would take the tenant over `max_series` (a bad StatsMsg passes:
        the backends count it as undecodable)."""
        try:
            record = decode_stats(event)
        except (LwesDecodeError, ValueError):
            return True
        prog = record[PROG_ID]
        return self.tenants.admit_series(tenant, [(prog, name) for name in record[NAMES]])

    def counters(self) -> dict[str, int]:
        """verified, each refusal reason and over_quota."""
        return {**self.verifier.counters(), "over_quota": self.over_quota}
