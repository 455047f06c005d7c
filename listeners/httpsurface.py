"""What every HTTP listener shares: its aiohttp surface's start, stop, TLS reload and counters.

A subclass calls `_take_surface_settings` in its `__init__` and defines
`_handle(request)`; `start` binds the port,
keeps one thread that hands events to the router in arrival order
(`_deliverer`), and serves on the surface's own loop thread.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mondemand.listeners.errors import ListenerError

from mondemand.envelope import RawEvent
from mondemand.httplimits import Limits
from mondemand.plugin_api import Listener

if TYPE_CHECKING:
    from mondemand.httpserve import Surface


class SurfaceListener(Listener):
    """A listener served by a `mondemand.httpserve.Surface` (lwes-http, dattss)."""

    address: str
    port: int
    limits: Limits
    #: Connections this listener may hold; the server may lower it to fit the open-file limit.
    max_connections: int
    _surface: Surface | None = None
    _deliver: Callable[[list[RawEvent]], None] | None = None
    _deliverer: concurrent.futures.ThreadPoolExecutor | None = None
    _bound: tuple[str, int] | None = None

    def _take_surface_settings(self, settings: Mapping[str, Any]) -> None:
        """address, port, max_body and the connection limits, from the listener's settings."""
        self.address = str(settings["address"]).strip("[]")
        self.port = int(settings["port"])
        self.max_body: int = int(settings["max_body"])
        self.limits = Limits.from_options(settings)
        self.max_connections = self.limits.max_connections

    async def _handle(self, request: Any) -> Any:
        raise NotImplementedError

    def start(self, deliver: Callable[[list[RawEvent]], None]) -> None:
        """Bind the port and serve on a background thread; ListenerError when the port cannot be bound."""
        if self._surface is not None:
            raise RuntimeError(f"listener {self.name!r} is already started")
        from mondemand.httpserve import Surface

        surface = Surface(f"listener-{self.name}", replace(self.limits, max_connections=self.max_connections),
                          self._handle, pool_size=1)
        try:
            self._bound = surface.bind(self.address, self.port)
        except OSError as exc:
            raise ListenerError(self.name, self.describe(), f"cannot listen: {exc.strerror or exc}") from None
        self._deliver = deliver
        # One thread hands events to the router, in arrival order (deliver is called from one thread at a time).
        self._deliverer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"listener-{self.name}")
        self._surface = surface  # before start: the handler uses it as soon as a request arrives
        surface.start()

    def stop(self) -> None:
        """Stop accepting, close the port and every connection, and wait for the serving thread."""
        surface, self._surface = self._surface, None
        if surface is not None:
            surface.stop()
        deliverer, self._deliverer = self._deliverer, None
        if deliverer is not None:
            deliverer.shutdown(wait=True, cancel_futures=True)

    def reload_tls(self) -> str | None:
        """SIGHUP: read the certificate again (`Surface.reload_tls`); the problem, if any."""
        return self._surface.reload_tls() if self._surface is not None else None

    def surface_counters(self) -> dict[str, int]:
        """The port's connection counters (`mondemand.httpserve.Surface.counters`), empty before `start`."""
        return self._surface.counters() if self._surface is not None else {}

    @property
    def bound_address(self) -> tuple[str, int]:
        """(host, port) listened on: the real port after `start`, the configured one before."""
        return self._bound if self._bound is not None else (self.address, self.port)

    def describe(self) -> str:
        """http://host:port (https with tls_certificate)"""
        host, port = self.bound_address
        scheme = "https" if self.limits.tls_certificate else "http"
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
