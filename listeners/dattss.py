"""`dattss`: the DaTtSs HTTP ingest (`PUT /agg?auth=KEY`, `PUT /process`) for service mode.

A DaTtSs client pushes, every 5 s, `PUT /agg?auth=KEY` with the JSON body
`{"prt": {"c": [...], "ms": [...], "g": [...]}}`, one partial per metric
(`typ pth pct sum cnt max min fst lst bot top emp`). Each partial becomes the
statset and BOT10/TOP10 gauges `mondemand.client.process` sends over UDP
(`mondemand.client.partials.Partial.to_metrics`), in one StatsMsg of the
key's tenant whose context marks it as partials, so the agg backend and the
storage backends take it exactly like a UDP client's partial. The process
name is `nam` in the body or `?process=`; the host `hst` or `?host=`, else
the sender's address. `PUT /process?auth=KEY&process=NAME` is DaTtSs's
liveness long poll: it records that the process is alive and is answered
after `process_poll` (10 s, as DaTtSs's server), so a client that polls again
at once sends one request per 10 s, not one per round trip. A process is up
while it polls or has polled within PROCESS_DOWN_AFTER (DaTtSs: 40 s; a poll
is held 30 s at most, so a polling process is always up). There is no kill
switch.

Answers: 200 with the number of partials taken; 400 for a body that is not
that JSON (nothing of it is kept); 401 for a missing or wrong key; 429 with
Retry-After over the tenant's quota; 413 over `max_body`. Each is counted.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from mondemand.client.partials import PARTIAL_CONTEXT_KEY, Partial
from mondemand.listeners.errors import ListenerError
from mondemand.listeners.httpsurface import SurfaceListener
from mondemand.listeners.udp import plain_ip

from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.httplimits import limit_options
from mondemand.lwes import MAX_DATAGRAM, encode
from mondemand.messages import StatsMsg
from mondemand.options import Option
from mondemand.plugin_api import ServerContext
from mondemand.runner import RateLimitedLog

if TYPE_CHECKING:
    from aiohttp import web
    from aiohttp.web_request import BaseRequest


#: DaTtSs's path rule (`clients/nodejs/lib/dattss.js`), plus a length bound.
PATH = re.compile(r"^[A-Za-z0-9\-_.!]{1,200}$")
TYPES = ("c", "ms", "g")
#: DaTtSs's push period: the interval every partial covers.
INTERVAL_MS = 5000
#: Processes remembered for /process liveness (bounded; the oldest are forgotten).
MAX_PROCESSES = 10_000
#: A process that has not polled /process for this long is down (DaTtSs's rule).
PROCESS_DOWN_AFTER = 40.0


class BadBody(ValueError):
    """A body that is not DaTtSs partials (400)."""


def _number(item: Mapping[str, Any], key: str) -> float:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadBody(f"partial {str(item.get('pth'))[:60]!r}: {key} must be a finite number")
    return float(value)


def parse_partials(body: bytes) -> tuple[list[tuple[str, Partial]], str, str]:
    """((path, Partial) of every partial, `nam`, `hst`) of a DaTtSs `/agg` body; BadBody for anything else."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadBody(f"not JSON: {exc}") from None
    prt = doc.get("prt") if isinstance(doc, dict) else None
    if not isinstance(prt, dict):
        raise BadBody('expected {"prt": {"c": [...], "ms": [...], "g": [...]}}')
    out: list[tuple[str, Partial]] = []
    for typ, items in prt.items():
        if typ not in TYPES or not isinstance(items, list):
            raise BadBody(f"prt.{str(typ)[:20]}: expected one of c, ms, g with a list of partials")
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("pth"), str) or not PATH.match(item["pth"]):
                raise BadBody(f"prt.{typ}: a partial needs pth matching {PATH.pattern}")
            count = _number(item, "cnt")
            if count < 1 or count != int(count):
                raise BadBody(f"partial {item['pth']!r}: cnt must be a positive integer")
            out.append((item["pth"], Partial(int(count), _number(item, "sum"), _number(item, "min"),
                                             _number(item, "max"), _number(item, "bot"), _number(item, "top"))))
    name, host = doc.get("nam", ""), doc.get("hst", "")
    return out, name if isinstance(name, str) else "", host if isinstance(host, str) else ""


class DattssListener(SurfaceListener):
    """Take DaTtSs partials over HTTP as the key's tenant's StatsMsg partials."""

    type_name = "dattss"
    #: Takes tenants' keys: without TLS off loopback, loading warns (docs/service.md).
    carries_keys = True
    options = (
        Option("address", "str", "127.0.0.1", help="address to listen on (loopback by default)"),
        Option("port", "port", 20605, help="TCP port; 0 picks a free one"),
        Option("max_body", "size", 1 << 20, minimum=1, maximum=64 << 20,
               help="largest body accepted; larger ones get 413"),
        Option("process_poll", "duration", 10.0, minimum=0.0, maximum=30.0,
               help="PUT /process is answered after this long (DaTtSs's long poll); 0: at once"),
        *limit_options(),
    )

    def __init__(self, name: str, config: Mapping[str, Any], context: ServerContext) -> None:
        super().__init__(name, config, context)
        settings = {opt.name: opt.default for opt in self.options} | self.config
        self._take_surface_settings(settings)
        self.tenants = context.tenants
        self.counts = dict.fromkeys(("received", "partials", "bad_request", "unauthorized", "over_quota",
                                     "too_large", "errors", "process_polls", "processes_polling"), 0)
        self.processes: dict[tuple[str, str], float] = {}
        self.process_poll = float(settings["process_poll"])
        self._lock = threading.Lock()
        self._ratelog = RateLimitedLog(self.log)  # at most one line per 10 s

    def start(self, deliver: Callable[[list[RawEvent]], None]) -> None:
        """Bind and serve; ListenerError when the port cannot be bound or there are no tenants."""
        if self.tenants is None:
            raise ListenerError(self.name, self.describe(), "needs [tenant:NAME] sections (keys)")
        super().start(deliver)

    def _seen(self, tenant: str, name: str) -> None:
        """The process polls now: remembered as up, most recent last."""
        with self._lock:
            self.processes.pop((tenant, name), None)
            self.processes[(tenant, name)] = time.monotonic()
            while len(self.processes) > MAX_PROCESSES:
                self.processes.pop(next(iter(self.processes)))

    def _count(self, **increments: int) -> None:
        with self._lock:
            for key, value in increments.items():
                self.counts[key] += value

    async def _handle(self, request: BaseRequest) -> web.StreamResponse:
        from aiohttp import web

        from mondemand.httpserve import over_quota, request_key, unauthorized

        path = request.path
        if path not in ("/agg", "/process"):
            return web.json_response({"error": f"no such path {path!r}; PUT /agg or /process"}, status=404)
        if request.method not in ("PUT", "POST"):
            return web.json_response({"error": "use PUT"}, status=405, headers={"Allow": "PUT"})
        tenant = self.tenants.authenticate(request_key(request))
        if tenant is None:
            self._count(unauthorized=1)
            response = unauthorized()
            if not request.content.is_eof():
                response.force_close()
            return response
        surface = self._surface
        assert surface is not None
        if path == "/process":
            name = request.query.get("process", "")[:200] or "dattss"
            self._count(process_polls=1)
            self._seen(tenant, name)
            if self.process_poll > 0:
                self._count(processes_polling=1)
                try:  # held: cancelled (the client is gone) when its connection closes or the server stops
                    await asyncio.sleep(self.process_poll)
                finally:
                    self._count(processes_polling=-1)
                self._seen(tenant, name)
            return web.json_response({"ok": True}, status=200)

        def too_large(length: int | None) -> Exception:
            return BadBody(f"body over the limit of {self.max_body} bytes")

        try:
            body = await surface.read_body(request, self.max_body, too_large)
        except BadBody as exc:
            self._count(too_large=1)
            response = web.json_response({"error": str(exc)}, status=413)
            response.force_close()
            return response
        self._count(received=1)
        try:
            partials, doc_name, doc_host = parse_partials(body)
        except BadBody as exc:
            self._count(bad_request=1)
            return web.json_response({"error": str(exc)}, status=400)
        prog_id = request.query.get("process") or doc_name or "dattss"
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        ip, port = (plain_ip(peer[0]), int(peer[1])) if peer else ("", 0)
        host = request.query.get("host") or doc_host or ip or "unknown"
        try:
            raws = self._events(tenant, prog_id[:200], host[:200], partials, ip, port)
        except ValueError as exc:
            self._count(bad_request=1)
            return web.json_response({"error": str(exc)}, status=400)
        nbytes = sum(len(r.data) for r in raws)
        wait = self.tenants.admit(tenant, len(raws), nbytes) if raws else 0.0
        if not wait and not self.tenants.admit_series(tenant, [(prog_id, p) for p, _ in partials]):
            wait = 60.0
        if wait:
            self._count(over_quota=1)
            return over_quota(wait)
        if raws:
            try:
                assert self._deliver is not None and self._deliverer is not None
                await asyncio.get_running_loop().run_in_executor(self._deliverer, self._deliver, raws)
            except Exception as exc:
                self._count(errors=1)
                self._ratelog.error("deliver", "listener %s: delivering partials failed: %r", self.name, exc)
                return web.json_response({"error": "the partials could not be routed"}, status=500)
        self._count(partials=len(partials))
        return web.json_response({"ok": True, "partials": len(partials)}, status=200)

    def _events(self, tenant: str, prog_id: str, host: str, partials: list[tuple[str, Partial]], ip: str,
                port: int) -> list[RawEvent]:
        """The StatsMsg events (one or more datagrams) carrying the partials, stamped with the tenant."""
        if not partials:
            return []
        now = int(time.time() * 1000)
        metrics = [m for path, partial in partials for m in partial.to_metrics(path)]
        msg = StatsMsg(prog_id, host, {PARTIAL_CONTEXT_KEY: str(INTERVAL_MS)}, metrics, send_time=now,
                       collect_time=now - INTERVAL_MS)
        events = msg.to_lwes(max_size=MAX_DATAGRAM)
        return [RawEvent(encode(ev), now, ip, port, self.name, ev.name, tenant) for ev in events]

    def counters(self) -> dict[str, float]:
        """received, partials, ..., process_polls; processes (remembered), processes_up, processes_polling."""
        cutoff = time.monotonic() - PROCESS_DOWN_AFTER
        with self._lock:
            up = sum(1 for seen in self.processes.values() if seen >= cutoff)
            return {**self.counts, "processes": len(self.processes), "processes_up": up}


@hookimpl
def register_listener_types(register: Callable[[str, type], None]) -> None:
    """Register the `dattss` listener type."""
    register("dattss", DattssListener)
