"""`lwes` backend: forward events to other LWES listeners (a global tier, a backup, a shard).

Events go out unchanged (the original bytes) unless something must change:
`extra_context` pairs to add, or a StatsMsg to split because its metrics hash
to different destinations. Destinations are chosen per event: all of them,
`copies` of them at random (the reference's N of M), or by consistent hashing
on (prog_id, metric) so one series always reaches the same server, which
the reference cannot do. docs/forwarding.md has the details.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Mapping
from typing import Any

from mondemand.envelope import RawEvent
from mondemand.hashring import HashRing
from mondemand.hookspecs import hookimpl
from mondemand.lwes import MAX_DATAGRAM, LwesDecodeError, add_headers, encode
from mondemand.messages import MessageError, StatsMsg, to_events
from mondemand.options import Option, OptionError
from mondemand.plugin_api import Backend, ServerContext
from mondemand.runner import RateLimitedLog
from mondemand.signing import sign
from mondemand.transport import UdpSender

__all__ = ["LwesForwarder", "parse_pairs"]

#: Context key that marks a server-made aggregate (docs/aggregation.md).
STAT_KEY = "stat"


def _check_destinations(items: list[str]) -> None:
    if not items:
        raise ValueError("give at least one host:port")
    for item in items:
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 0xFFFF:
            raise ValueError(f"{item!r} is not host:port")
    if len(set(items)) != len(items):
        raise ValueError("a destination is listed twice")


def parse_pairs(items: list[str]) -> dict[str, str]:
    """["k=v", ...] -> {k: v}; ValueError naming an item without '=' or with an empty key."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not key=value")
        pairs[key] = value
    return pairs


class LwesForwarder(Backend):
    """Send events on to other LWES listeners over UDP."""

    type_name = "lwes"
    needs = "raw"
    options = (
        Option("destinations", "list", required=True, check=_check_destinations,
               help="host:port of each listener (unicast or multicast)"),
        Option("mode", "str", "all", choices=("all", "random", "hash"),
               help="all destinations, `copies` at random, or by consistent hash of (prog_id, metric)"),
        Option("copies", "int", 1, minimum=1, help="destinations per event in random and hash modes"),
        Option("hash_key", "str", "series", choices=("series", "tenant"),
               help="hash mode: by (prog_id, metric), or by the event's tenant (service mode) so that each tenant "
                    "stays on its servers"),
        Option("sign", "bool", False,
               help="service mode: sign each tenant's event again with that tenant's first hmac key, so that the "
                    "next server knows its tenant (events without a tenant go unsigned)"),
        Option("filter", "str", "none", choices=("none", "aggregates", "raw"),
               help="aggregates: only StatsMsg with a stat context (the agg output); raw: everything else"),
        Option("extra_context", "list", [], check=parse_pairs, help="key=value pairs set in every message's context"),
        Option("include_headers", "bool", False, help="append the original ReceiptTime, SenderIP, SenderPort"),
        Option("max_metrics", "int", 512, minimum=1, help="metrics per re-encoded StatsMsg"),
        Option("ttl", "int", 1, minimum=0, help="multicast TTL"),
        Option("interface", "str", "", help="address of the interface multicast goes out of"),
    )  # fmt: skip

    def __init__(self, name: str, config: Mapping[str, Any], context: ServerContext) -> None:
        super().__init__(name, config, context)
        problems = self.check_options(self.config)
        if problems:
            raise problems[0]
        self.destinations: list[str] = list(self.config["destinations"])
        self.mode: str = self.config["mode"]
        self.copies: int = self.config["copies"]
        self.filter: str = self.config["filter"]
        self.extra_context = parse_pairs(self.config["extra_context"])
        self.include_headers: bool = self.config["include_headers"]
        self.ring = HashRing(self.destinations)
        self.by_tenant = self.config["hash_key"] == "tenant"
        self.sign = bool(self.config["sign"])
        self._ratelog = RateLimitedLog(logging.getLogger(f"mondemand.backend.{name}"))
        self.senders: dict[str, UdpSender] = {}
        self.stats = dict.fromkeys(
            ("events", "forwarded", "filtered", "reencoded", "send_errors", "too_large", "undecodable", "unsigned"), 0
        )
        self.sent = dict.fromkeys(self.destinations, 0)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[OptionError]:
        if options["copies"] > len(options["destinations"]):
            return [OptionError("copies", f"is {options['copies']}, more than the "
                                          f"{len(options['destinations'])} destinations")]  # fmt: skip
        return []

    def start(self) -> None:
        interface = self.config["interface"] or None
        for dest in self.destinations:
            host, _, port = dest.rpartition(":")
            self.senders[dest] = UdpSender(host.strip("[]"), int(port), ttl=self.config["ttl"], interface=interface)

    def close(self) -> None:
        for sender in self.senders.values():
            sender.close()

    def handle(self, batch: list[RawEvent]) -> None:
        for raw in batch:
            self.stats["events"] += 1
            try:
                self._forward(raw)
            except (LwesDecodeError, MessageError) as exc:
                self.stats["undecodable"] += 1
                self._ratelog.error("undecodable", "%s: cannot forward %s from %s:%s: %s", self.name, raw.name,
                                    raw.sender_ip, raw.sender_port, exc)  # fmt: skip
            except Exception as exc:  # any other data error in this event: it alone is dropped
                self.reject(raw, exc)

    def _forward(self, raw: RawEvent) -> None:
        if self.sign or self.by_tenant:
            self._forward_tenant(raw)
            return
        msg = raw.message if self.filter != "none" or self.extra_context or self.mode == "hash" else None
        if self.filter != "none":
            aggregate = isinstance(msg, StatsMsg) and STAT_KEY in msg.context
            if aggregate != (self.filter == "aggregates"):
                self.stats["filtered"] += 1
                return
        if self.mode == "hash" and isinstance(msg, StatsMsg) and len(msg.metrics) > 1:
            self._forward_sharded(raw, msg)
            return
        targets = self._targets(raw, msg)
        if self.extra_context and msg is not None and hasattr(msg, "context"):
            for data in self._reencode(raw, msg):
                self._send(data, targets)
        else:
            self._send(raw.with_headers() if self.include_headers else raw.data, targets)

    def _forward_tenant(self, raw: RawEvent) -> None:
        """Service mode: the whole event to its tenant's destinations (hash_key = tenant), signed when asked."""
        msg = raw.message if self.filter != "none" or self.extra_context or not self.by_tenant else None
        if self.filter != "none":
            aggregate = isinstance(msg, StatsMsg) and STAT_KEY in msg.context
            if aggregate != (self.filter == "aggregates"):
                self.stats["filtered"] += 1
                return
        if self.by_tenant and self.mode == "hash" and raw.tenant:
            targets = self.ring.nodes_for(f"tenant\0{raw.tenant}", self.copies)
        else:
            targets = self._targets(raw, msg)
        if self.extra_context and msg is not None and hasattr(msg, "context"):
            datagrams = self._reencode(raw, msg)
        else:
            datagrams = [raw.with_headers() if self.include_headers else raw.data]
        tenants = self.context.tenants
        key = tenants.signing_key(raw.tenant) if self.sign and raw.tenant and tenants is not None else None
        if self.sign and raw.tenant and key is None:
            self.stats["unsigned"] += 1
        for data in datagrams:
            self._send(sign(data, *key) if key is not None else data, targets)

    def _targets(self, raw: RawEvent, msg: Any) -> list[str]:
        if self.mode == "all":
            return self.destinations
        if self.mode == "random":
            start = random.randrange(len(self.destinations))
            return [self.destinations[(start + i) % len(self.destinations)] for i in range(self.copies)]
        if isinstance(msg, StatsMsg) and msg.metrics:
            key = f"{msg.prog_id}\0{msg.metrics[0].name}"
        else:
            key = getattr(msg, "prog_id", None) or raw.name
        return self.ring.nodes_for(key, self.copies)

    def _forward_sharded(self, raw: RawEvent, msg: StatsMsg) -> None:
        """Hash mode: each metric to the destinations of its (prog_id, name); split when they differ."""
        groups: dict[tuple[str, ...], list[Any]] = {}
        for metric in msg.metrics:
            targets = tuple(self.ring.nodes_for(f"{msg.prog_id}\0{metric.name}", self.copies))
            groups.setdefault(targets, []).append(metric)
        if len(groups) == 1 and not self.extra_context:
            [targets] = groups
            self._send(raw.with_headers() if self.include_headers else raw.data, list(targets))
            return
        for targets, metrics in groups.items():
            part = dataclasses.replace(msg, metrics=metrics)
            for data in self._reencode(raw, part):
                self._send(data, list(targets))

    def _reencode(self, raw: RawEvent, msg: Any) -> list[bytes]:
        """`msg` with the extra context, without the listener headers unless asked, as datagrams."""
        changes: dict[str, Any] = {"context": {**msg.context, **self.extra_context}}
        if isinstance(msg, StatsMsg):
            changes.update(receipt_time=None, sender_ip=None, sender_port=None)
        message = dataclasses.replace(msg, **changes)
        events = (message.to_lwes(max_metrics=self.config["max_metrics"]) if isinstance(message, StatsMsg)
                  else to_events(message))  # fmt: skip
        self.stats["reencoded"] += 1
        out = []
        for event in events:
            data = encode(event)
            if self.include_headers:
                receipt, ip, port = raw.original_headers()
                data = add_headers(data, receipt, ip if ":" not in ip else "0.0.0.0", port)
            out.append(data)
        return out

    def _send(self, data: bytes, targets: list[str]) -> None:
        if len(data) > MAX_DATAGRAM:
            self.stats["too_large"] += 1
            self._ratelog.error("too_large", "%s: a %d-byte datagram is over the UDP limit; dropped", self.name,
                                len(data))  # fmt: skip
            return
        for dest in targets:
            try:
                self.senders[dest].send(data)
            except OSError as exc:
                self.stats["send_errors"] += 1
                self._ratelog.error(f"send {dest}", "%s: sending to %s failed: %s", self.name, dest, exc)
            else:
                self.stats["forwarded"] += 1
                self.sent[dest] += 1

    def counters(self) -> dict[str, float]:
        return {**self.stats, **{f"sent.{dest}": n for dest, n in self.sent.items()}}


@hookimpl
def register_backend_types(register) -> None:
    register("lwes", LwesForwarder)

