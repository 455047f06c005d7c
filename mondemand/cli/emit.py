"""`mondemand-emit`: build MonDemand (or any LWES) events on the command line and send them over UDP."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from mondemand.cli import version_option
from mondemand.lwes import Event, LwesEncodeError, LwesType, decode, encode
from mondemand.lwes.types import INT_RANGES
from mondemand.messages import (
    DEFAULT_MAX_METRICS,
    AnnotationMsg,
    LogLine,
    LogMsg,
    MessageError,
    Metric,
    MetricType,
    PerfMsg,
    Priority,
    Statset,
    StatsMsg,
    Timing,
    TraceMsg,
    to_events,
)
from mondemand.transport import UdpSender, is_multicast, resolve

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 20402
#: IP_MULTICAST_IF used for a multicast destination when --interface is not given.
DEFAULT_MULTICAST_INTERFACE = "127.0.0.1"


@dataclass
class EmitOptions:
    """The group options every subcommand sends with."""

    host: str
    port: int
    ttl: int
    interface: str | None
    count: int
    rate: float
    dry_run: bool


# --------------------------------------------------------------------------- argument types


def _option_error(param: click.Parameter | None, ctx: click.Context | None, message: str) -> NoReturn:
    """A usage error that reads `--option value: reason`."""
    opt = param.opts[0] if param is not None and param.opts else ""
    raise click.UsageError(f"{opt} {message}".strip(), ctx)


class KeyValue(click.ParamType):
    """`key=value` -> (key, value), with the value converted by `convert_value`."""

    name = "key=value"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        key, sep, text = str(value).partition("=")
        if not sep or not key:
            _option_error(param, ctx, f"{value}: expected {self.name}")
        try:
            return key, self.convert_value(text)
        except (ValueError, MessageError) as exc:
            _option_error(param, ctx, f"{value}: {_reason(exc)}")

    def convert_value(self, text: str) -> Any:
        """The value part; raise ValueError with a short reason when it is bad."""
        return text


class KeyInt(KeyValue):
    """`name=123` -> (name, int64)."""

    name = "name=value"

    def convert_value(self, text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise ValueError("value must be an integer") from None
        lo, hi = INT_RANGES[LwesType.INT64]
        if not lo <= number <= hi:
            raise ValueError("value is out of the int64 range")
        return number


class KeyStatset(KeyValue):
    """`name=count:sum:min:max[:avg:median:p75:p90:p95:p98:p99]` -> (name, Statset); missing fields are empty."""

    name = "name=count:sum:min:max:..."

    def convert_value(self, text: str) -> Statset:
        fields = text.split(":")
        if len(fields) > len(Statset.FIELDS):
            raise ValueError(f"a statset has at most {len(Statset.FIELDS)} fields, got {len(fields)}")
        return Statset.parse(":".join(fields + [""] * (len(Statset.FIELDS) - len(fields))))


class TimingType(click.ParamType):
    """`label:start_ms:end_ms` -> Timing."""

    name = "label:start_ms:end_ms"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Timing):
            return value
        parts = str(value).rsplit(":", 2)
        if len(parts) != 3 or not parts[0]:
            _option_error(param, ctx, f"{value}: expected label:start_ms:end_ms")
        try:
            start, end = int(parts[1]), int(parts[2])
        except ValueError:
            _option_error(param, ctx, f"{value}: start and end must be integers (ms since the epoch)")
        if end < start:
            _option_error(param, ctx, f"{value}: end is before start")
        try:
            return Timing(parts[0], start, end)
        except MessageError as exc:
            _option_error(param, ctx, f"{value}: {exc.reason}")


class PriorityType(click.ParamType):
    """A log priority by name (emerg .. all) or number (0..8)."""

    name = "priority"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join(p.label for p in Priority) + "]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Priority):
            return value
        try:
            return Priority.from_name(str(value))
        except MessageError as exc:
            self.fail(exc.reason, param, ctx)


class IPv4(click.ParamType):
    """A dotted-quad IPv4 address."""

    name = "ipv4"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            self.fail(f"{value!r} is not an IPv4 address", param, ctx)


_RELATIVE = re.compile(r"[+-]\d+(?:ms|s|m|h|d|w)(?:[+-]?\d+(?:ms|s|m|h|d|w))*")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"([+-]?)(\d+)(ms|s|m|h|d|w)")


def parse_time(text: str, now: float | None = None) -> int:
    """`now`, a time relative to now (`-7d`, `-1h30m`, `-7d+2h`), or an ISO time -> ms since the epoch.

    An ISO time without an offset is local time; a bare date is its local midnight.
    ValueError for anything else.
    """
    text = text.strip()
    base_ms = int((time.time() if now is None else now) * 1000)
    if text == "now":
        return base_ms
    if _RELATIVE.fullmatch(text):
        total, sign = 0, 1
        for mark, n, unit in _PART.findall(text):  # a part without a sign takes the one before it: -1h30m
            sign = {"+": 1, "-": -1}.get(mark, sign)
            total += sign * int(n) * _UNIT_MS[unit]
        return base_ms + total
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("expected now, a relative time such as -7d or -90m, or an ISO time such as "
                         "2026-11-24T13:00 or 2026-11-24") from None
    return int(when.timestamp() * 1000)


def parse_step(text: str) -> int:
    """A duration such as `60s`, `1m`, `5m`, `1h` (a bare number is seconds) -> ms; ValueError if not positive."""
    text = text.strip()
    ms = int(float(text) * 1000) if re.fullmatch(r"\d+(\.\d+)?", text) else None
    if ms is None:
        if not _RELATIVE.fullmatch("+" + text):
            raise ValueError("expected a duration such as 60s, 1m or 1h")
        ms = parse_time("+" + text, now=0)
    if ms <= 0:
        raise ValueError("must be positive")
    return ms


class TimeType(click.ParamType):
    """`--time`: now, -7d, -90m, or an ISO time -> ms since the epoch."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        try:
            return parse_time(str(value))
        except ValueError as exc:
            _option_error(param, ctx, f"{value}: {exc}")


class StepType(click.ParamType):
    """`--step`: a duration -> ms."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        try:
            return parse_step(str(value))
        except ValueError as exc:
            _option_error(param, ctx, f"{value}: {exc}")


def _time_option(f: Any) -> Any:
    return click.option(
        "--time", "at", type=TimeType(), default=None,
        help="Event time: now, relative (-7d, -90m, -7d+2h) or ISO (2026-11-24T13:00, a date = its local "
        "midnight; no offset = local time) [default: now].",
    )(f)


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, MessageError) else str(exc)


# --------------------------------------------------------------------------- the group


@click.group(context_settings={"max_content_width": 100})
@version_option()
@click.option("--host", "-H", default=DEFAULT_HOST, show_default=True, help="Destination address or name.")
@click.option(
    "--port", "-p", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True, help="Destination port."
)
@click.option(
    "--ttl", type=click.IntRange(0, 255), default=1, show_default=True, help="Multicast TTL (multicast only)."
)
@click.option(
    "--interface",
    type=IPv4(),
    default=None,
    help=f"IPv4 address of the interface for multicast (IP_MULTICAST_IF) [default: {DEFAULT_MULTICAST_INTERFACE} "
    "for a multicast destination].",
)
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True, help="Send everything N times.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Datagrams per second; 0 sends as fast as possible.",
)
@click.option("--dry-run", is_flag=True, help="Print each datagram (hex and decoded) instead of sending it.")
@click.pass_context
def main(
    ctx: click.Context,
    host: str,
    port: int,
    ttl: int,
    interface: str | None,
    count: int,
    rate: float,
    dry_run: bool,
) -> None:
    """Send MonDemand and LWES events over UDP (one event per datagram).

    The options here come before the subcommand. Progress and a summary line
    go to stderr; the exit status is 1 when any datagram failed to send.

    \b
    Examples:
      mondemand-emit stats --prog-id myapp --counter requests=10
      mondemand-emit -H 239.5.1.1 -p 10201 --ttl 1 --interface 127.0.0.1 \\
          log --prog-id myapp --priority error --message "disk full"
      mondemand-emit --count 100 --rate 50 stats --prog-id load --gauge queue=3
      mondemand-emit --dry-run raw Demo n=uint16:7 who=string:me
    """
    ctx.obj = EmitOptions(host, port, ttl, interface, count, rate, dry_run)


def _emit(events: Sequence[Event]) -> None:
    """Encode `events` and send (or print) them as the group options say."""
    ctx = click.get_current_context()
    opts = ctx.find_object(EmitOptions)
    assert opts is not None
    try:
        datagrams = [encode(e) for e in events]
    except LwesEncodeError as exc:
        raise click.UsageError(f"cannot encode the event: {exc}") from None
    if opts.dry_run:
        _print_datagrams(datagrams, opts.count)
    else:
        _send(ctx, opts, datagrams)


def _print_datagrams(datagrams: list[bytes], count: int) -> None:
    total = count * len(datagrams)
    for n in range(total):
        raw = datagrams[n % len(datagrams)]
        event = decode(raw, long_strings=True)
        click.echo(f"# datagram {n + 1}/{total}: {event.name}, {len(raw)} bytes")
        click.echo(raw.hex())
        click.echo(_describe(event))


def _describe(event: Event) -> str:
    lines = [event.name]
    lines += [f"  {key}: {typ.type_name} = {value!r}" for key, (typ, value) in event.attrs.items()]
    return "\n".join(lines)


def _send(ctx: click.Context, opts: EmitOptions, datagrams: list[bytes]) -> None:
    try:
        address = resolve(opts.host)
    except OSError as exc:
        raise click.BadParameter(f"cannot resolve {opts.host!r}: {exc}", param_hint="'--host'") from None
    interface = opts.interface
    if interface is None and is_multicast(address):
        interface = DEFAULT_MULTICAST_INTERFACE
    total = opts.count * len(datagrams)
    interval = 1.0 / opts.rate if opts.rate > 0 else 0.0
    sent = nbytes = errors = 0
    first_error: OSError | None = None
    try:
        sender = UdpSender(address, opts.port, ttl=opts.ttl, interface=interface)
    except OSError as exc:
        raise click.ClickException(f"cannot open a socket for {address}:{opts.port}: {exc}") from None
    start = time.monotonic()
    with sender, _progress(total, opts.count > 1, sys.stderr) as advance:
        for n in range(total):
            if interval:
                delay = start + n * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            raw = datagrams[n % len(datagrams)]
            try:
                sender.send(raw)
            except OSError as exc:
                errors += 1
                first_error = first_error or exc
            else:
                sent += 1
                nbytes += len(raw)
            advance()
    elapsed = time.monotonic() - start
    per_second = sent / elapsed if elapsed > 0 else 0.0
    click.echo(
        f"sent {sent} events ({nbytes} bytes) in {elapsed:.3f} s, {per_second:.1f} events/s, {errors} errors",
        err=True,
    )
    if errors:
        click.echo(f"first error: {first_error}", err=True)
        ctx.exit(1)


@contextlib.contextmanager
def _progress(total: int, show: bool, stream: Any) -> Iterator[Any]:
    """Yield a callable that advances a progress bar by one, or does nothing when `show` is false."""
    if not show:
        yield lambda: None
        return
    with click.progressbar(length=total, label="sending", file=stream, show_pos=True) as bar:
        yield lambda: bar.update(1)


def _host_and_context(host_name: str | None, context: Sequence[tuple[str, str]]) -> tuple[str, dict[str, str]]:
    """The host to send: --host-name, else a `host` context pair, else this machine's name."""
    pairs = dict(context)
    if host_name is None:
        host_name = pairs.pop("host", None) or socket.gethostname()
    return host_name, pairs


def _build(factory: Any, *args: Any, **kwargs: Any) -> Any:
    """Construct a message, turning MessageError into a usage error."""
    try:
        return factory(*args, **kwargs)
    except MessageError as exc:
        raise click.UsageError(str(exc)) from None


def _host_option(f: Any) -> Any:
    return click.option(
        "--host-name",
        default=None,
        help="Host the message is about, sent as the `host` context pair [default: a --context host=... "
        "pair, else this machine's name].",
    )(f)


def _context_option(f: Any) -> Any:
    return click.option(
        "--context", "-c", "context", type=KeyValue(), multiple=True, help="Context pair (repeatable)."
    )(f)


# --------------------------------------------------------------------------- MonDemand subcommands


@main.command()
@click.option("--prog-id", required=True, help="Program id.")
@_host_option
@click.option("--counter", "counters", type=KeyInt(), multiple=True, help="Counter metric (repeatable).")
@click.option("--gauge", "gauges", type=KeyInt(), multiple=True, help="Gauge metric (repeatable).")
@click.option("--statset", "statsets", type=KeyStatset(), multiple=True, help="Statset metric (repeatable).")
@_context_option
@click.option(
    "--max-metrics",
    type=click.IntRange(1, 65535),
    default=DEFAULT_MAX_METRICS,
    show_default=True,
    help="Most metrics in one event; more are split over several events.",
)
@_time_option
@click.option("--until", type=TimeType(), default=None,
              help="Backfill: send the message at --time, then every --step, up to and including this time.")
@click.option("--step", type=StepType(), default="60s", show_default=True, help="Spacing of --until's messages.")
def stats(
    prog_id: str,
    host_name: str | None,
    counters: tuple[tuple[str, int], ...],
    gauges: tuple[tuple[str, int], ...],
    statsets: tuple[tuple[str, Statset], ...],
    context: tuple[tuple[str, str], ...],
    max_metrics: int,
    at: int | None,
    until: int | None,
    step: int,
) -> None:
    """Send a MonDemand::StatsMsg.

    Counters are absolute running totals, gauges the current value. A statset
    gives count:sum:min:max:avg:median:pctl_75:pctl_90:pctl_95:pctl_98:pctl_99;
    trailing fields may be left out and any field may be empty.

    \b
    Examples:
      mondemand-emit stats --prog-id myapp --counter requests=1234 --gauge queue_depth=17
      mondemand-emit stats --prog-id svc --statset latency=5:100:10:30 -c cluster=eu
      mondemand-emit stats --prog-id shop --gauge queue=3 --time -7d --until -6d --step 1m

    With --time the message's send_time and collect_time are that time; with
    --until one message is sent per --step from --time to --until (a
    backfill: counters then grow by their value at each step).
    """
    metrics = [Metric(MetricType.COUNTER, k, v) for k, v in counters]
    metrics += [Metric(MetricType.GAUGE, k, v) for k, v in gauges]
    metrics += [Metric(MetricType.STATSET, k, v) for k, v in statsets]
    if not metrics:
        raise click.UsageError("give at least one --counter, --gauge or --statset")
    if until is not None and at is None:
        raise click.UsageError("--until needs --time (where the backfill starts)")
    times: list[int | None] = [at]
    if until is not None and at is not None:
        if until < at:
            raise click.UsageError("--until is before --time")
        if (until - at) // step >= 1_000_000:
            raise click.UsageError("--until is more than a million --step after --time")
        times = list(range(at, until + 1, step))
    host, ctxt = _host_and_context(host_name, context)
    events = []
    for n, when in enumerate(times):
        grown = [Metric(MetricType.COUNTER, m.name, m.value * (n + 1)) if m.type is MetricType.COUNTER else m
                 for m in metrics]
        msg = _build(StatsMsg, prog_id, host, ctxt, grown, send_time=when, collect_time=when)
        try:
            events += msg.to_lwes(max_metrics=max_metrics)
        except MessageError as exc:
            raise click.UsageError(str(exc)) from None
    _emit(events)


@main.command()
@click.option("--prog-id", required=True, help="Program id.")
@click.option("--priority", type=PriorityType(), required=True, help="Priority name or number 0..8.")
@click.option("--message", "-m", required=True, help="Log message text.")
@click.option("--file", "file_name", default="mondemand-emit", show_default=True, help="Source file of the line.")
@click.option("--line", type=click.IntRange(0, 0xFFFFFFFF), default=0, show_default=True, help="Line number.")
@click.option(
    "--repeat", type=click.IntRange(1, 0xFFFF), default=1, show_default=True, help="How many times it happened."
)
@click.option("--trace-id", type=click.IntRange(0, 0xFFFFFFFFFFFFFFFF), default=None, help="uint64 trace id.")
@_host_option
@_context_option
@_time_option
def log(
    prog_id: str,
    priority: Priority,
    message: str,
    file_name: str,
    line: int,
    repeat: int,
    trace_id: int | None,
    host_name: str | None,
    context: tuple[tuple[str, str], ...],
    at: int | None,
) -> None:
    """Send a MonDemand::LogMsg with one line.

    \b
    Examples:
      mondemand-emit log --prog-id myapp --priority error --message "disk full"
      mondemand-emit log --prog-id myapp --priority 3 -m oops --file main.c --line 42 --repeat 3
    """
    host, ctxt = _host_and_context(host_name, context)
    entry = _build(LogLine, file_name, line, priority, message, repeat, trace_id)
    _emit(to_events(_build(LogMsg, prog_id, host, ctxt, [entry], send_time=at)))


@main.command()
@click.option("--prog-id", required=True, help="Program id.")
@click.option("--owner", required=True, help="Who owns the trace.")
@click.option("--trace-id", required=True, help="Trace id (a string).")
@click.option("--message", "-m", required=True, help="Trace message.")
@click.option("--src-host", default=None, help="Sending host [default: this machine's name].")
@click.option("--field", "fields", type=KeyValue(), multiple=True, help="Extra string field (repeatable).")
@_time_option
def trace(
    prog_id: str,
    owner: str,
    trace_id: str,
    message: str,
    src_host: str | None,
    fields: tuple[tuple[str, str], ...],
    at: int | None,
) -> None:
    """Send a MonDemand::TraceMsg.

    \b
    Examples:
      mondemand-emit trace --prog-id myapp --owner alice --trace-id t-42 -m checkout --field cart="3 items"
    """
    msg = _build(TraceMsg, prog_id, trace_id, owner, src_host or socket.gethostname(), message, dict(fields),
                 send_time=at)
    _emit(to_events(msg))


@main.command()
@click.option("--id", "ident", required=True, help="Request or trace id.")
@click.option("--caller-label", required=True, help="Who measured.")
@click.option("--timing", "timings", type=TimingType(), multiple=True, required=True, help="Span (repeatable).")
@_host_option
@_context_option
@_time_option
def perf(
    ident: str,
    caller_label: str,
    timings: tuple[Timing, ...],
    host_name: str | None,
    context: tuple[tuple[str, str], ...],
    at: int | None,
) -> None:
    """Send a MonDemand::PerfMsg; times are ms since the epoch, or ms after --time when it is given.

    \b
    Examples:
      mondemand-emit perf --id req-1 --caller-label frontend --timing db:1700000000000:1700000000042
    """
    host, ctxt = _host_and_context(host_name, context)
    if at is not None:
        timings = tuple(_build(Timing, t.label, at + t.start, at + t.end) for t in timings)
    _emit(to_events(_build(PerfMsg, ident, caller_label, list(timings), host, ctxt)))


@main.command()
@click.option("--id", "ident", required=True, help="Annotation id.")
@click.option("--description", required=True, help="Short description.")
@click.option("--text", default=None, help="Long text.")
@click.option("--tag", "tags", multiple=True, help="Tag (repeatable).")
@click.option(
    "--timestamp",
    type=click.IntRange(*INT_RANGES[LwesType.INT64]),
    default=None,
    help="ms since the epoch [default: now].",
)
@_context_option
@_time_option
def annotation(
    ident: str,
    description: str,
    text: str | None,
    tags: tuple[str, ...],
    timestamp: int | None,
    context: tuple[tuple[str, str], ...],
    at: int | None,
) -> None:
    """Send a MonDemand::AnnotationMsg.

    \b
    Examples:
      mondemand-emit annotation --id deploy-7 --description deploy --text v1.2.3 --tag release
    """
    if timestamp is not None and at is not None:
        raise click.UsageError("give --timestamp or --time, not both")
    when = timestamp if timestamp is not None else at if at is not None else int(time.time() * 1000)
    _emit(to_events(_build(AnnotationMsg, ident, when, description, text, list(tags), dict(context))))


# --------------------------------------------------------------------------- raw LWES


_TRUE = {"true", "t", "yes", "y", "on", "1"}
_FALSE = {"false", "f", "no", "n", "off", "0"}


def parse_scalar(typ: LwesType, text: str) -> Any:
    """A scalar value of `typ` from its command-line text; ValueError with a reason when it is bad."""
    if typ in (LwesType.STRING, LwesType.LONG_STRING):
        return text
    if typ is LwesType.BOOLEAN:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"{text!r} is not a boolean (true/false)")
    if typ is LwesType.IP_ADDR:
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError:
            raise ValueError(f"{text!r} is not an IPv4 address") from None
    if typ in (LwesType.FLOAT, LwesType.DOUBLE):
        try:
            number = float(text)
            if typ is LwesType.FLOAT:
                struct.pack(">f", number)
        except (ValueError, OverflowError, struct.error):
            raise ValueError(f"{text!r} is not a {typ.type_name}") from None
        return number
    try:
        number = int(text, 0) if text.lower().lstrip("+-").startswith("0x") else int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None
    lo, hi = INT_RANGES[typ]
    if not lo <= number <= hi:
        raise ValueError(f"{number} is out of range for {typ.type_name} ({lo}..{hi})")
    return number


def parse_value(typ: LwesType, text: str) -> Any:
    """A value of `typ`; arrays are comma-separated, and a nullable array's empty or `null` items are None."""
    if not typ.is_array:
        return parse_scalar(typ, text)
    items = text.split(",") if text else []
    return [None if typ.is_nullable and item in ("", "null") else parse_scalar(typ.base, item) for item in items]


def _split_typed(token: str) -> tuple[str, LwesType | None, str, str | None]:
    """`key=type:value` -> (key, type or None, value, unknown type name or None); ValueError without `=`."""
    key, sep, rest = token.partition("=")
    if not sep or not key:
        raise ValueError("expected key=type:value")
    type_name, colon, text = rest.partition(":")
    if colon:
        try:
            return key, LwesType.from_name(type_name), text, None
        except ValueError:
            return key, None, rest, type_name
    return key, None, rest, None


@main.command()
@click.argument("name")
@click.argument("attributes", nargs=-1, metavar="[KEY=TYPE:VALUE]...")
@click.option(
    "--esf",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="ESF file: look up omitted types (KEY=VALUE) and validate the event.",
)
@_time_option
def raw(name: str, attributes: tuple[str, ...], esf: Path | None, at: int | None) -> None:
    """Send any LWES event NAME with typed attributes.

    TYPE is an LWES type name: uint16, int16, uint32, int32, int64, uint64,
    string, ip_addr, boolean, byte, float, double, `T[]` for an array
    (comma-separated values) or `nullable T[]` (empty items are null). With
    --esf the type may be left out and is taken from the ESF, and the whole
    event is validated against it.

    \b
    Examples:
      mondemand-emit raw Demo n=uint16:7 who=string:me ok=boolean:true
      mondemand-emit raw Demo 'xs=int32[]:1,2,3' 'ys=nullable string[]:a,,c'
      mondemand-emit raw --esf events.esf MonDemand::StatsMsg prog_id=myapp num=0

    --time adds an int64 `send_time` attribute with that time.
    """
    db = None
    if esf is not None:
        from mondemand.lwes.errors import EsfError
        from mondemand.lwes.esf import load_esf

        try:
            db = load_esf(esf)
        except (EsfError, OSError) as exc:
            raise click.BadParameter(str(exc), param_hint="'--esf'") from None
    event = Event(name)
    for token in attributes:
        try:
            key, typ, text, bad_type = _split_typed(token)
        except ValueError as exc:
            raise click.UsageError(f"{token}: {exc}") from None
        if key in event:
            raise click.UsageError(f"{token}: attribute {key!r} given twice")
        if typ is None:
            if db is None:
                why = f"unknown type {bad_type!r}" if bad_type is not None else "no type given"
                raise click.UsageError(f"{token}: {why} (use key=type:value, or --esf FILE)")
            declared = db.lookup(name, key)
            if declared is None:
                raise click.UsageError(f"{token}: {key!r} is not declared for {name} in {esf}")
            typ = declared.type
        try:
            event.set(key, typ, parse_value(typ, text))
        except ValueError as exc:
            raise click.UsageError(f"{token}: {exc}") from None
    if at is not None:
        if "send_time" in event:
            raise click.UsageError("give send_time=... or --time, not both")
        event.set("send_time", LwesType.INT64, at)
    if db is not None:
        from mondemand.lwes.errors import ValidationError

        try:
            db.validate(event)
        except ValidationError as exc:
            raise click.UsageError(f"the event does not match {esf}: " + "; ".join(exc.problems)) from None
    _emit([event])


__all__ = ["main", "parse_scalar", "parse_step", "parse_time", "parse_value"]
