"""`mondemand-dump`: listen on a channel and print every event, the tcpdump of LWES.

    mondemand-dump -p 20402
    mondemand-dump --address 239.5.1.1 --interface 127.0.0.1 --json --name 'MonDemand::*'

Receiving is done by the `lwes-udp` listener on its own thread; events are
handed to the main thread through a bounded queue and printed there, one
line each, flushed as they come. A datagram that does not decode is shown as
a line starting `! malformed:`. A "listening on ..." line and a summary go to
stderr.
"""

from __future__ import annotations

import fnmatch
import json
import os
import queue
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import click

from mondemand.cli import version_option
from mondemand.envelope import RawEvent
from mondemand.listeners.errors import ListenerError
from mondemand.listeners.udp import LwesUdpListener
from mondemand.lwes import Event, LwesDecodeError
from mondemand.options import parse_options
from mondemand.plugin_api import ServerContext
from mondemand.text import escape_bytes, escape_value
from mondemand.transport import is_multicast

#: Events waiting to be printed; beyond this they are dropped (and counted) rather than eat memory.
QUEUE_SIZE = 100_000
_HEADER_KEYS = ("ReceiptTime", "SenderIP", "SenderPort")


def format_time(ms: int) -> str:
    """Milliseconds since the epoch as 2026-11-22T10:00:00.123Z."""
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        needs_quotes = (not value or any(c.isspace() or c in "\"'=" for c in value)
                        or not escape_bytes(value).isprintable())  # a byte that is not UTF-8 prints as \xe9
        return json.dumps(value, ensure_ascii=False) if needs_quotes else value
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return str(value)


def format_text(raw: RawEvent, event: Event) -> str:
    """`<receipt time> <sender ip:port> <name> key=value ...` on one line.

    The receipt headers are left out when they are just what this process
    stamped; headers a forwarder put in the event are shown.
    """
    attrs = event.to_dict()
    if (attrs.get("ReceiptTime"), attrs.get("SenderPort")) == (raw.receipt_ms, raw.sender_port):
        for key in _HEADER_KEYS:
            attrs.pop(key, None)
    fields = " ".join(f"{key}={_value_text(value)}" for key, value in attrs.items())
    line = f"{format_time(raw.receipt_ms)} {raw.sender_ip}:{raw.sender_port} {raw.name}"
    return escape_bytes(f"{line} {fields}" if fields else line)  # bytes that are not UTF-8 as \xe9


def format_json(raw: RawEvent, event: Event) -> str:
    """One JSON object: name, attrs, receipt_time, sender."""
    return json.dumps(
        {"name": escape_bytes(raw.name), "attrs": escape_value(event.to_dict()), "receipt_time": raw.receipt_ms,
         "sender": f"{raw.sender_ip}:{raw.sender_port}"},
        ensure_ascii=False, default=str,
    )


def format_malformed(ms: int, ip: str, port: int, size: int, error: LwesDecodeError, name: str | None) -> str:
    """`! malformed: <error> (<bytes> bytes from ip:port at time[, name])`."""
    what = f", name {escape_bytes(name)!r}" if name is not None else ""
    return f"! malformed: {error} ({size} bytes from {ip}:{port} at {format_time(ms)}{what})"


class _Dumper:
    """Collects from the listener thread, prints from the main thread."""

    def __init__(self, out: TextIO, as_json: bool, name_glob: str | None) -> None:
        self.out = out
        self.format = format_json if as_json else format_text
        self.name_glob = name_glob
        self.queue: queue.Queue[RawEvent | str] = queue.Queue(QUEUE_SIZE)
        self.dropped = 0
        self.printed = 0
        self.malformed = 0

    # -- listener thread --------------------------------------------------------

    def deliver(self, batch: list[RawEvent]) -> None:
        glob = self.name_glob
        for raw in batch:
            if glob is None or fnmatch.fnmatchcase(raw.name, glob):
                self._put(raw)

    def on_malformed(self, data: bytes, ip: str, port: int, error: LwesDecodeError) -> None:
        if self.name_glob is None:  # no name to match a filter against
            self._put(format_malformed(int(time.time() * 1000), ip, port, len(data), error, None))

    def _put(self, item: RawEvent | str) -> None:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    # -- main thread --------------------------------------------------------------

    def show(self, item: RawEvent | str) -> bool:
        """Print one item; True when it was a decoded event (what --count counts)."""
        if isinstance(item, str):
            line, event = item, False
            self.malformed += 1
        else:
            try:
                line, event = self.format(item, item.event), True
            except LwesDecodeError as exc:
                line = format_malformed(item.receipt_ms, item.sender_ip, item.sender_port, len(item.data), exc,
                                        item.name)
                event = False
                self.malformed += 1
        self.out.write(line + "\n")
        self.out.flush()
        if event:
            self.printed += 1
        return event

    def run(self, count: int | None, timeout: float | None) -> None:
        """Print until `count` events were printed or nothing arrived for `timeout` seconds."""
        get = self.queue.get
        while count is None or self.printed < count:
            try:
                # A finite wait even without --timeout, so that Ctrl-C is seen promptly.
                item = get(timeout=timeout if timeout is not None else 0.5)
            except queue.Empty:
                if timeout is not None:
                    return
                continue
            self.show(item)


@click.command(context_settings={"max_content_width": 100})
@version_option()
@click.option("--address", default="0.0.0.0", show_default=True,
              help="Address to listen on; a multicast group (224.0.0.0/4) is joined.")
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=20402, show_default=True, help="UDP port.")
@click.option("--interface", default="0.0.0.0", show_default=True,
              help="IPv4 address of the interface to join a multicast group on.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line: name, attrs, receipt_time, sender.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Exit after printing N events.")
@click.option("--name", "name_glob", default=None, metavar="GLOB",
              help="Only events whose name matches GLOB (e.g. 'MonDemand::*').")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Exit 0 when no event arrived for SECONDS.")
def main(address: str, port: int, interface: str, as_json: bool, count: int | None, name_glob: str | None,
         timeout: float | None) -> None:
    """Listen for LWES events on a UDP channel and print each one as it arrives.

    Text lines read `<receipt time> <sender> <event name> key=value ...`.
    Undecodable datagrams print as `! malformed: <error> ...`. Stop with Ctrl-C.

    \b
    Examples:
      mondemand-dump -p 20402
      mondemand-dump --address 239.5.1.1 --interface 127.0.0.1 --name 'MonDemand::Stats*' --json
      mondemand-dump -p 20402 --count 10 --timeout 5
    """
    raw_options = {"address": address, "port": str(port), "interface": interface,
                   # A unicast port shared by SO_REUSEPORT would divide a running server's traffic
                   # with this dump; only multicast (where every socket gets a copy) shares it.
                   "reuse_port": "true" if is_multicast(address) else "false"}
    values, problems = parse_options(LwesUdpListener.options, raw_options)
    if problems:
        raise click.UsageError("; ".join(str(p) for p in problems))
    listener = LwesUdpListener("dump", values, ServerContext())
    dumper = _Dumper(sys.stdout, as_json, name_glob)
    listener.on_malformed = dumper.on_malformed
    try:
        listener.start(dumper.deliver)
    except ListenerError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"listening on {listener.describe()} (Ctrl-C to stop)", err=True)
    interrupted = False
    try:
        dumper.run(count, timeout)
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, with stdout pointed somewhere harmless.
        _silence_stdout()
        sys.exit(0)
    finally:
        listener.stop()
    counters = listener.counters()
    summary = (f"{dumper.printed} events printed, {int(counters['received'])} datagrams received, "
               f"{dumper.malformed} malformed")
    if dumper.dropped:
        summary += f", {dumper.dropped} dropped (printing fell behind)"
    click.echo(("\n" if interrupted else "") + summary, err=True)


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    main()
