"""`lwes-udp`: receive LWES datagrams over UDP, unicast or multicast.

One thread per listener blocks in `poll()` on the socket and a wake-up pipe,
then drains the non-blocking socket with `recvfrom` until it would block. That
path empties a full receive buffer several times faster than asyncio's
datagram protocol, and the large receive buffer (SO_RCVBUFFORCE when the
process may use it) absorbs bursts while the thread is busy.

With the compiled hot path (`mondemand._speedups`) a drain is a loop of
`recvmmsg()` calls, 64 datagrams each, that builds the RawEvents in C, the
sender's address and port interned per socket and the receipt time read once
per call; without it, `recvfrom` in Python. Both give the same events.

Each datagram becomes a `RawEvent` stamped with its receipt time and sender;
one whose name cannot be read is counted as `malformed`, logged at info
(sender, length, reason, first 16 bytes; at most one line per 10 s with the
count of those not logged) and dropped, and an exception from `deliver` is
counted as an error and logged (rate-limited): bad input never ends the
receiving thread.

A unicast port is not shared unless `reuse_port = true` says so, so a second
server on a taken port fails to start instead of quietly taking its traffic;
a multicast group's port is always shared (every socket gets a copy).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import math
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from mondemand.listeners import udpauth
from mondemand.listeners.errors import ListenerError

from mondemand import envelope
from mondemand.envelope import RawEvent
from mondemand.hookspecs import hookimpl
from mondemand.lwes import LwesDecodeError
from mondemand.options import Option
from mondemand.plugin_api import Listener, ServerContext
from mondemand.portcheck import UdpEndpoint, normalise
from mondemand.transport import is_multicast, resolve

# Linux values that Python 3.11 does not export.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)

#: Largest receive_buffer accepted: setsockopt takes a C int, and Linux doubles the value and caps it at
#: INT_MAX / 2, so more than 1 GiB cannot be granted (and 2 GiB or more would not even be passed).
MAX_RECEIVE_BUFFER = 1 << 30
#: Datagrams read in one drain before the thread checks the wake-up pipe again.
MAX_BURST = 4096
#: Bytes read in one drain at most (plus one recvmmsg call's): a drain is one batch held in memory and
#: handed on whole, so 4096 datagrams of 50 KB would be 200 MB, and a worker link takes batches whole.
MAX_BURST_BYTES = 4 << 20
#: After a drain of fewer datagrams than this, the thread waits LINGER seconds before polling again.
LINGER_BELOW = 512
LINGER = 0.002
#: At most one logged error line per listener in this many seconds.
ERROR_LOG_INTERVAL = 10.0
#: At most one logged malformed-input line per listener in this many seconds.
MALFORMED_LOG_INTERVAL = 10.0
#: Bytes of a malformed datagram shown (as hex) in its log line.
MALFORMED_LOG_BYTES = 16
#: How long `stop` waits for the receiving thread.
STOP_TIMEOUT = 5.0

MalformedHook = Callable[[bytes, str, int, LwesDecodeError], None]


def _check_ipv4(value: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError("expected an IPv4 address such as 127.0.0.1") from None


def _check_ttl(value: int) -> None:
    if not 0 <= value <= 255:
        raise ValueError("expected a TTL of 0..255")


def _check_datagram(value: int) -> None:
    if not 1 <= value <= 65535:
        raise ValueError("expected 1..65535 bytes")


class MalformedLog:
    """Info lines about malformed input: at most one per `interval` seconds, with the count of those held back."""

    def __init__(self, logger: logging.Logger, listener: str, what: str = "datagram",
                 interval: float = MALFORMED_LOG_INTERVAL) -> None:
        self.logger = logger
        self.listener = listener
        self.what = what
        self.interval = interval
        self.suppressed = 0
        self._last = -math.inf
        self._lock = threading.Lock()

    def report(self, data: bytes, ip: str, port: int, reason: object) -> None:
        """Log one malformed `data` from ip:port, unless a line went out less than `interval` seconds ago."""
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.interval:
                self.suppressed += 1
                return
            suppressed, self.suppressed, self._last = self.suppressed, 0, now
        more = f" ({suppressed} more malformed not logged)" if suppressed else ""
        self.logger.info("listener %s: malformed %s from %s:%d, %d bytes: %s; first bytes: %s%s", self.listener,
                         self.what, ip, port, len(data), reason, data[:MALFORMED_LOG_BYTES].hex(" ") or "(none)", more)


def plain_ip(ip: str) -> str:
    """An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as plain a.b.c.d; anything else unchanged."""
    if ip[:7].lower() == "::ffff:" and "." in ip:
        return ip[7:]
    return ip


class LwesUdpListener(Listener):
    """Receive LWES events on a UDP port, unicast or (for a 224.0.0.0/4 address) multicast.

    `on_malformed`, when set, is called from the receiving thread with
    (data, sender_ip, sender_port, error) for every datagram whose name is
    unreadable (mondemand-dump uses it to show them).
    """

    type_name = "lwes-udp"
    options = (
        Option("address", "str", "0.0.0.0", help="address to bind; a 224.0.0.0/4 group is joined (multicast)"),
        Option("port", "port", 20402, help="UDP port; 0 picks a free one"),
        Option("interface", "str", "0.0.0.0", check=_check_ipv4,
               help="IPv4 address of the interface to join the multicast group on"),
        Option("ttl", "int", 1, check=_check_ttl, help="IP_MULTICAST_TTL of the socket (multicast only)"),
        Option("reuse_port", "bool", False,
               help="share a unicast port with other sockets (SO_REUSEPORT); multicast ports are always shared"),
        Option("receive_buffer", "size", 16 << 20, minimum=0, maximum=MAX_RECEIVE_BUFFER,
               help="receive buffer to ask for (SO_RCVBUFFORCE when permitted); 0 keeps the system default"),
        Option("max_datagram", "size", 65535, maximum=65535, check=_check_datagram,
               help="largest datagram read; longer ones are truncated"),
        *udpauth.OPTIONS,
        udpauth.TENANT_OPTION,
    )

    def __init__(self, name: str, config: Mapping[str, Any], context: ServerContext) -> None:
        super().__init__(name, config, context)
        settings = {opt.name: opt.default for opt in self.options} | self.config
        self.address: str = str(settings["address"]).strip("[]")
        self.port: int = int(settings["port"])
        self.interface: str = str(settings["interface"])
        self.ttl: int = int(settings["ttl"])
        self.reuse_port: bool = bool(settings["reuse_port"])
        self.receive_buffer: int = int(settings["receive_buffer"])
        self.max_datagram: int = int(settings["max_datagram"])
        self.family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        self.multicast = self.family == socket.AF_INET and is_multicast(self.address)
        self.on_malformed: MalformedHook | None = None
        #: Stamped on every event received (RawEvent.tenant); "" = no tenant.
        self.tenant = ""
        self._receiver: tuple[socket.socket, Any] | None = None
        #: SO_RCVBUF as the kernel reports it after start (Linux reports twice the usable size).
        self.receive_buffer_granted = 0
        self.received = 0
        self.malformed = 0
        self.errors = 0
        self.bytes = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_r = -1
        self._wake_w = -1
        self._bound: tuple[str, int] | None = None
        self._stopping = False
        self._last_error_log = -math.inf
        self._suppressed = 0
        self._malformed_log = MalformedLog(self.log, name)
        #: Signature checks (listeners/udpauth.py); None when `signatures = off`.
        self.gate: udpauth.DatagramGate | udpauth.PortGate | None = None
        if settings.get("signatures", "off") != "off" and context.tenants is not None:
            self.gate = udpauth.DatagramGate(context.tenants, settings["signatures"], settings["signature_window"],
                                             settings["replay_memory"])
        elif settings.get("tenant") and context.tenants is not None and settings["tenant"] in context.tenants.specs:
            self.tenant = str(settings["tenant"])
            if udpauth.has_quotas(context.tenants.specs[self.tenant]):  # quotas take the Python loop, one check each
                self.gate = udpauth.PortGate(context.tenants, self.tenant)

    @classmethod
    def udp_endpoint(cls, options: Mapping[str, Any]) -> UdpEndpoint:
        """Where a section with these (validated) options receives, for the config's port check."""
        settings = {opt.name: opt.default for opt in cls.options} | dict(options)
        address = normalise(str(settings["address"]))
        multicast = ":" not in address and is_multicast(address)
        return UdpEndpoint(address, int(settings["port"]), multicast, normalise(str(settings["interface"])),
                           reuse=multicast or bool(settings["reuse_port"]),
                           group_filter=sys.platform.startswith("linux"))

    # -- life cycle -----------------------------------------------------------

    def start(self, deliver: Callable[[list[RawEvent]], None]) -> None:
        """Open, bind (and join) the socket, then start the receiving thread; ListenerError when that fails."""
        if self._thread is not None:
            raise RuntimeError(f"listener {self.name!r} is already started")
        sock = self._open_socket()
        try:
            wake_r, wake_w = os.pipe()
        except OSError:
            sock.close()
            raise
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self._sock, self._wake_r, self._wake_w = sock, wake_r, wake_w
        self._bound = tuple(sock.getsockname()[:2])  # type: ignore[assignment]
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, args=(sock, wake_r, deliver), name=f"listener-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Wake the receiving thread, wait for it to end, then close the socket."""
        stop_receiving(self)

    # -- description and counters ---------------------------------------------

    @property
    def bound_address(self) -> tuple[str, int]:
        """(host, port) the socket is bound to: the real port after `start`, the configured one before."""
        return self._bound if self._bound is not None else (self.address, self.port)

    def sockets(self) -> list[socket.socket]:
        """The socket, once started (for the kernel's drop counters)."""
        return [] if self._sock is None else [self._sock]

    def describe(self) -> str:
        """udp://host:port, or udp+multicast://group:port@interface."""
        host, port = self.bound_address
        if self.multicast:
            return f"udp+multicast://{host}:{port}@{self.interface}"
        if ":" in host:
            return f"udp://[{host}]:{port}"
        return f"udp://{host}:{port}"

    def counters(self) -> dict[str, float]:
        """received (every datagram read), malformed, errors and bytes; with signatures on, also verified and each
        refusal reason (listeners/udpauth.py); on a tenant's port with quotas, over_quota."""
        counters = {"received": self.received, "malformed": self.malformed, "errors": self.errors, "bytes": self.bytes}
        if self.gate is not None:
            counters.update(self.gate.counters())
        return counters

    # -- the socket -------------------------------------------------------------

    def _open_socket(self) -> socket.socket:
        where = self.describe()
        host = self.address
        if self.family == socket.AF_INET:
            try:
                host = resolve(self.address)
            except OSError as exc:
                raise ListenerError(self.name, where, f"cannot resolve {self.address!r}: {exc}") from None
        try:
            sock = socket.socket(self.family, socket.SOCK_DGRAM)
        except OSError as exc:
            raise ListenerError(self.name, where, f"cannot create a UDP socket: {exc}") from None
        try:
            self._configure(sock, host, where)
        except BaseException:
            sock.close()
            raise
        return sock

    def _configure(self, sock: socket.socket, host: str, where: str) -> None:
        step = "set socket options"
        try:
            share = self.multicast or self.reuse_port
            if share:
                # Linux lets every UDP socket with SO_REUSEADDR bind one unicast port and hands
                # all its traffic to the newest, so a unicast port is shared only when asked.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if share and hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if self.family == socket.AF_INET6:
                with contextlib.suppress(OSError):  # also receive IPv4, as ::ffff:a.b.c.d
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self._set_receive_buffer(sock)
            if self.family == socket.AF_INET and sys.platform.startswith("linux"):
                # Only the groups this socket joined (none for unicast), not every group joined on the
                # port by anyone: else a 0.0.0.0 listener also gets a multicast listener's datagrams.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            if self.multicast:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.ttl)
            step = "bind"
            sock.bind((host, self.port))
            if self.multicast:
                step = f"join group {host} on interface {self.interface}"
                mreq = socket.inet_aton(host) + socket.inet_aton(self.interface)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            sock.setblocking(False)
        except OSError as exc:
            reason = f"cannot {step}: {exc.strerror or exc}"
            if step == "bind" and exc.errno == errno.EADDRINUSE and not self.multicast:
                reason += (" (another process, perhaps a second mondemand-server, has this port; stop it, pick"
                           " another port, or set reuse_port = true on every listener that is to share it)")
            if self.multicast and step.startswith("join") and self.interface == "0.0.0.0":
                reason += " (set `interface` to the IPv4 address of the interface to join on, e.g. 127.0.0.1)"
            raise ListenerError(self.name, where, reason) from None

    def _set_receive_buffer(self, sock: socket.socket) -> None:
        want = self.receive_buffer
        how = "system default"
        if want > 0:
            how = "SO_RCVBUF"
            if sys.platform.startswith("linux"):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, want)
                    how = "SO_RCVBUFFORCE"
                except OSError:  # EPERM without CAP_NET_ADMIN: capped by net.core.rmem_max
                    pass
            if how == "SO_RCVBUF":
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, want)
                except OSError as exc:
                    self.log.warning("listener %s: cannot set SO_RCVBUF to %d: %s", self.name, want, exc)
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.receive_buffer_granted = granted
        hint = ""
        if want > 0 and granted < want:
            hint = " (less than asked: raise net.core.rmem_max or run with CAP_NET_ADMIN)"
        self.log.info("listener %s: receive buffer %d bytes granted, %d asked via %s%s",
                      self.name, granted, want, how, hint)

    # -- the receiving thread ---------------------------------------------------

    def _run(self, sock: socket.socket, wake_fd: int, deliver: Callable[[list[RawEvent]], None]) -> None:
        poller = select.poll()
        sock_fd = sock.fileno()
        poller.register(sock_fd, select.POLLIN)
        poller.register(wake_fd, select.POLLIN)
        while not self._stopping:
            ready = poller.poll()
            if self._stopping:
                return
            for fd, flags in ready:
                if fd == wake_fd:
                    return
                if flags & select.POLLNVAL:
                    self.log.error("listener %s: socket closed under the receiving thread", self.name)
                    return
            before = self.received
            try:
                self._drain(sock, deliver)
            except OSError as exc:
                if self._stopping:
                    return
                self.errors += 1
                self._log_error("receive failed", exc)
            except Exception as exc:  # a safety net: the thread must keep receiving
                self.errors += 1
                self._log_error("unexpected error", exc)
            if self.received - before < LINGER_BELOW:
                # A short drain: we are keeping up. Let datagrams gather for a moment rather than wake
                # (and hand batches on) for every few of them; the receive buffer holds far more.
                time.sleep(LINGER)

    def _drain(self, sock: socket.socket, deliver: Callable[[list[RawEvent]], None]) -> None:
        """Read up to MAX_BURST datagrams or MAX_BURST_BYTES, until the socket would block; deliver one batch."""
        fast = envelope.SPEEDUPS
        if fast is not None and self.gate is None:  # signed datagrams take the Python loop (one check each)
            receiver = self._receiver
            if receiver is None or receiver[0] is not sock:
                receiver = self._receiver = (sock, fast.Receiver(sock.fileno(), self.max_datagram))
            self._drain_compiled(receiver[1], deliver)
            return
        recvfrom = sock.recvfrom
        size = self.max_datagram
        name = self.name
        mapped = self.family == socket.AF_INET6
        clock = time.time
        tenant = self.tenant
        received = nbytes = 0
        batch: list[RawEvent] = []
        append = batch.append
        gate = self.gate.check if self.gate is not None else None
        try:
            while received < MAX_BURST and nbytes < MAX_BURST_BYTES:
                try:
                    data, addr = recvfrom(size)
                except BlockingIOError:
                    break
                received += 1
                nbytes += len(data)
                ip = plain_ip(addr[0]) if mapped else addr[0]
                if gate is not None:  # signatures = optional | required: verify, strip, apply the quotas
                    checked = gate(data, int(clock() * 1000))
                    if checked is None:
                        continue
                    data, tenant = checked
                try:
                    append(RawEvent(data, int(clock() * 1000), ip, addr[1], name, None, tenant))
                except LwesDecodeError as exc:
                    self.malformed += 1
                    self._malformed_log.report(data, ip, addr[1], exc)
                    if self.on_malformed is not None:
                        self._report_malformed(data, ip, addr[1], exc)
        finally:
            self.received += received
            self.bytes += nbytes
            if batch:
                try:
                    deliver(batch)
                except Exception as exc:
                    self.errors += 1
                    self._log_error(f"delivering {len(batch)} events failed", exc)

    def _drain_compiled(self, receiver: Any, deliver: Callable[[list[RawEvent]], None]) -> None:
        """`_drain` through `mondemand._speedups.Receiver`: the same events, counters and errors."""
        events, slow, received, nbytes, err = receiver.drain(MAX_BURST, MAX_BURST_BYTES, self.name, self.tenant,
                                                             envelope._NAMES)
        try:
            for data, ms, ip, port in slow:  # a name not seen yet (learnt here) or unreadable (malformed)
                try:
                    events.append(RawEvent(data, ms, ip, port, self.name, None, self.tenant))
                except LwesDecodeError as exc:
                    self.malformed += 1
                    self._malformed_log.report(data, ip, port, exc)
                    if self.on_malformed is not None:
                        self._report_malformed(data, ip, port, exc)
        finally:
            self.received += received
            self.bytes += nbytes
            if events:
                try:
                    deliver(events)
                except Exception as exc:
                    self.errors += 1
                    self._log_error(f"delivering {len(events)} events failed", exc)
        if err:
            raise OSError(err, os.strerror(err))

    def _report_malformed(self, data: bytes, ip: str, port: int, exc: LwesDecodeError) -> None:
        hook = self.on_malformed
        if hook is None:
            return
        try:
            hook(data, ip, port, exc)
        except Exception as hook_exc:
            self.errors += 1
            self._log_error("on_malformed hook failed", hook_exc)

    def _log_error(self, what: str, exc: BaseException) -> None:
        """Log at most one line per ERROR_LOG_INTERVAL; the others are counted in the next line."""
        now = time.monotonic()
        if now - self._last_error_log < ERROR_LOG_INTERVAL:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more errors not logged)" if self._suppressed else ""
        self._last_error_log = now
        self._suppressed = 0
        self.log.error("listener %s: %s: %r%s", self.name, what, exc, more, exc_info=exc)


def stop_receiving(listener: Any) -> None:
    """Stop a listener's receiving thread: set `_stopping`, wake it through its pipe, join it, close its socket.

    Shared by the listeners built the same way (a thread polling `_sock` and
    the read end of a wake-up pipe). A thread that does not end within
    STOP_TIMEOUT keeps its pipe open, so that the descriptors are not reused
    under its poll.
    """
    listener._stopping = True
    thread, listener._thread = listener._thread, None
    if listener._wake_w >= 0:
        with contextlib.suppress(OSError):
            os.write(listener._wake_w, b"x")
    alive = False
    if thread is not None and thread is not threading.current_thread():
        thread.join(STOP_TIMEOUT)
        alive = thread.is_alive()
        if alive:
            listener.log.warning("listener %s: receiving thread still busy after %.0f s", listener.name, STOP_TIMEOUT)
    if listener._sock is not None:
        listener._sock.close()
        listener._sock = None
    if not alive:
        for fd in (listener._wake_r, listener._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
    listener._wake_r = listener._wake_w = -1


@hookimpl
def register_listener_types(register: Callable[[str, type], None]) -> None:
    """Register the `lwes-udp` listener type."""
    register("lwes-udp", LwesUdpListener)
