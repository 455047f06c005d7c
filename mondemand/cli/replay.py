"""`mondemand-replay JOURNAL...`: play journals back, to an LWES channel or straight through a routes.ini.

    mondemand-replay -p 20402 all_events.log.20260101120000.1767268740.1767268800.gz
    mondemand-replay --speed 10 -H 239.5.1.1 -p 21512 journals/*.gz
    mondemand-replay -c recovery.ini journals/*.gz          # rebuild files or RRDs

Sending to a channel keeps the original timing (`--speed 1`, the default;
`--speed N` is N times faster, `--speed 0` as fast as possible) and appends
the original ReceiptTime/SenderIP/SenderPort to each event, which receiving
listeners keep instead of stamping their own (`--no-headers` sends the bytes
untouched). With `-c routes.ini` the events go through that configuration's
backends in this process, exactly as the server would route them (each from
the listener it was journalled from), as fast as the slowest backend takes
them; nothing is dropped, and every backend is drained and closed before the
command exits. Journals are read in the order given; rotated journal names
sort in time order. A journal cut short (a killed writer) is read up to its
last complete record and reported; a damaged one too, and the exit status is 1.
"""

from __future__ import annotations

import contextlib
import fnmatch
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from mondemand.cli import version_option
from mondemand.envelope import RawEvent
from mondemand.journal import JournalReader, JournalRecord
from mondemand.lwes import LwesDecodeError, add_headers, peek_name
from mondemand.transport import UdpSender

#: Largest UDP payload over IPv4.
MAX_UDP_PAYLOAD = 65507
#: Records handed to the pipeline at once.
BATCH = 256


@dataclass
class Summary:
    """What a replay did, for the closing report."""

    replayed: int = 0
    bytes: int = 0
    filtered: int = 0
    too_large: int = 0
    malformed: int = 0
    errors: int = 0
    first_error: str = ""
    journals: list[tuple[Path, JournalReader | None, str]] = field(default_factory=list)


class Pacer:
    """Sleeps so that records go out `speed` times as fast as they arrived, and at most `rate` per second."""

    def __init__(self, speed: float, rate: float = 0.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.speed = speed
        self.min_gap = 1.0 / rate if rate > 0 else 0.0
        self.sleep = sleep
        self._origin: tuple[int, float] | None = None
        self._next = 0.0

    def delay(self, receipt_ms: int) -> float:
        """Seconds to wait before the record received at `receipt_ms` is due (0 when it is due now)."""
        now = time.monotonic()
        due = self._next
        if self.speed > 0:
            if self._origin is None:
                self._origin = (receipt_ms, now)
            first_ms, start = self._origin
            due = max(due, start + (receipt_ms - first_ms) / 1000.0 / self.speed)
        return max(0.0, due - now)

    def sent(self) -> None:
        """Note that a record went out now (for `rate`)."""
        if self.min_gap:
            self._next = max(self._next, time.monotonic()) + self.min_gap


def read_all(paths: Sequence[Path], fmt: str, summary: Summary, progress: Callable[[int], None]) -> Iterator[
        JournalRecord]:
    """Every record of every journal in order; each journal's reader (or the error opening it) goes in `summary`."""
    for path in paths:
        try:
            reader = JournalReader(path, fmt)  # type: ignore[arg-type]
        except OSError as exc:
            summary.journals.append((path, None, str(exc)))
            continue
        summary.journals.append((path, reader, ""))
        done = 0
        try:
            for record in reader:
                if reader.position != done:
                    progress(reader.position - done)
                    done = reader.position
                yield record
        except OSError as exc:
            summary.journals[-1] = (path, reader, str(exc))
        progress(reader.size - done)


class UdpTarget:
    """Send each record as one datagram, with the original header attributes unless told not to."""

    def __init__(self, sender: UdpSender, headers: bool, summary: Summary) -> None:
        self.sender = sender
        self.headers = headers
        self.summary = summary

    def put(self, record: JournalRecord) -> None:
        data = record.data
        if self.headers:
            ip = record.sender_ip if record.sender_ip.count(".") == 3 else "0.0.0.0"
            try:
                with_headers = add_headers(data, record.receipt_ms, ip, record.sender_port)
            except LwesDecodeError:
                with_headers = data
            if len(with_headers) <= MAX_UDP_PAYLOAD:
                data = with_headers
        if len(data) > MAX_UDP_PAYLOAD:
            self.summary.too_large += 1
            return
        try:
            self.sender.send(data)
        except OSError as exc:
            self.summary.errors += 1
            self.summary.first_error = self.summary.first_error or str(exc)
            return
        self.summary.replayed += 1
        self.summary.bytes += len(record.data)

    def flush(self) -> None:
        """Nothing is held back."""

    def close(self) -> None:
        self.sender.close()


class PipelineTarget:
    """Route records through a routes.ini's backends in this process (no listeners, no HTTP port).

    Records are handed over in batches of consecutive records from one
    listener, so that the journal's order is kept across listeners too.
    """

    def __init__(self, server: Any, listener: str | None, summary: Summary) -> None:
        self.server = server
        self.listener = listener
        self.summary = summary
        self._dispatchers: dict[str, Callable[[list[RawEvent]], None]] = {}
        self._batch: list[RawEvent] = []
        self._source = ""

    def put(self, record: JournalRecord) -> None:
        source = self.listener or record.listener or "replay"
        try:
            raw = RawEvent(record.data, record.receipt_ms, record.sender_ip, record.sender_port, source)
        except (LwesDecodeError, IndexError):
            self.summary.malformed += 1
            return
        if source != self._source:
            self.flush()
            self._source = source
        self._batch.append(raw)
        self.summary.replayed += 1
        self.summary.bytes += len(record.data)
        if len(self._batch) >= BATCH:
            self.flush()

    def flush(self) -> None:
        """Hand the pending batch to the router, waiting for room in the backends' queues."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        dispatch = self._dispatchers.get(self._source)
        if dispatch is None:
            dispatch = self._dispatchers[self._source] = self.server.router.dispatcher(self._source)
        runners = list(self.server.runners.values())
        step = max(1, min((r.queue_size for r in runners), default=BATCH))
        for i in range(0, len(batch), step):
            chunk = batch[i : i + step]
            self._wait_for_room(runners, len(chunk), sum(len(raw.data) for raw in chunk))
            dispatch(chunk)

    def _wait_for_room(self, runners: list[Any], n: int, nbytes: int) -> None:
        """Back-pressure: wait until every backend's queue can take `n` more events of `nbytes` (or is empty).

        A stuck backend is waited for at most drain_timeout.
        """
        deadline = time.monotonic() + self.server.config.server["drain_timeout"]
        while (any(r.depth and not r.has_room(n, nbytes) for r in runners)
               and time.monotonic() < deadline):
            time.sleep(0.001)

    def close(self) -> None:
        self.flush()
        timeout = self.server.config.server["drain_timeout"]
        for runner in self.server.runners.values():
            runner.stop(timeout=timeout)


def start_pipeline(config_path: str, no_plugins: bool) -> Any:
    """A `Server` for `config_path` with its backends running and its listeners not started."""
    from mondemand.config import ConfigError, load_config
    from mondemand.plugins import PluginHost
    from mondemand.server import Server

    host = PluginHost.discover(builtins_only=no_plugins, log_problems=False)
    for problem in host.problems:  # printed here, once; later problems (hooks at run time) are logged
        click.echo(f"warning: {problem}", err=True)
    host.log_problems = True
    try:
        config = load_config(config_path, host)
    except ConfigError as exc:
        for line in exc.problems:
            click.echo(f"error: {line}", err=True)
        sys.exit(2)
    # In this process: replay waits on full queues instead of dropping, which needs the runners at hand.
    server = Server(config, host, workers=False)
    started = []
    for name, runner in server.runners.items():
        try:
            runner.start()
        except Exception as exc:
            click.echo(f"error: [backend:{name}] failed to start: {exc}", err=True)
            for other in started:
                other.stop(timeout=5)
            sys.exit(1)
        started.append(runner)
    return server


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@version_option()
@click.argument("journals", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-H", "--host", default="127.0.0.1", show_default=True, help="Channel address to send to.")
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=20402, show_default=True, help="Channel port.")
@click.option("--ttl", type=click.IntRange(0, 255), default=1, show_default=True, help="Multicast TTL.")
@click.option("--interface", default=None, help="IPv4 address of the multicast interface [default: 127.0.0.1 for "
              "a multicast channel].")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False, exists=True),
              help="Feed the events through this routes.ini's backends instead of sending them.")
@click.option("--listener", default=None, help="With -c: route every event as if from this listener "
              "[default: the listener it was journalled from].")
@click.option("--no-plugins", is_flag=True, help="With -c: load only mondemand's built-in backends.")
@click.option("--speed", type=click.FloatRange(min=0), default=None,
              help="N times the original pace; 0 = as fast as possible [default: 1 to a channel, 0 with -c].")
@click.option("--rate", type=click.FloatRange(min=0), default=0.0, help="At most this many events per second "
              "(0 = no limit).")
@click.option("--name", "names", multiple=True, help="Only events whose name matches this glob (repeatable).")
@click.option("--no-headers", is_flag=True, help="Send the event bytes untouched (receivers stamp their own "
              "ReceiptTime and sender).")
@click.option("--format", "fmt", type=click.Choice(["auto", "mondemand", "lwes"]), default="auto",
              show_default=True, help="Journal format: mondemand's, or the 22-byte header of the C/Erlang "
              "journallers (IPv4, events under 64 KB).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def main(journals: tuple[Path, ...], host: str, port: int, ttl: int, interface: str | None, config_path: str | None,
         listener: str | None, no_plugins: bool, speed: float | None, rate: float, names: tuple[str, ...],
         no_headers: bool, fmt: str, quiet: bool) -> None:
    """Re-emit journalled events to a channel, or feed them through a routes.ini.

    \b
    Examples:
      mondemand-replay -p 20402 journals/all_events.log.20260101*.gz
      mondemand-replay --speed 10 -H 239.5.1.1 -p 21512 journals/*.gz
      mondemand-replay -c recovery.ini --name 'MonDemand::StatsMsg' journals/*.gz

    To a channel the original pace is kept (--speed 1) and each event carries
    its original ReceiptTime and sender. With -c the events go through that
    routes.ini's backends in this process, as fast as they take them, and
    every backend is drained before exiting. Exit status 1 when a journal
    cannot be read or is damaged; a journal cut short by a killed server is
    read up to its last complete record. See docs/journal.md.
    """
    summary = Summary()
    if config_path is not None:
        import logging

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        target: UdpTarget | PipelineTarget = PipelineTarget(start_pipeline(config_path, no_plugins), listener,
                                                            summary)
        speed = 0.0 if speed is None else speed
    else:
        from mondemand.transport import is_multicast, resolve

        try:
            multicast = is_multicast(resolve(host))
            sender = UdpSender(host, port, ttl, interface or ("127.0.0.1" if multicast else None))
        except (OSError, ValueError) as exc:
            raise click.UsageError(f"cannot send to {host}:{port}: {exc}") from None
        target = UdpTarget(sender, not no_headers, summary)
        speed = 1.0 if speed is None else speed
    pacer = Pacer(speed, rate)
    total = sum(p.stat().st_size for p in journals if p.is_file())
    started = time.monotonic()
    try:
        with _progress(total, not quiet) as advance:
            for record in read_all(journals, fmt, summary, advance):
                if names and not _matches(record.data, names):
                    summary.filtered += 1
                    continue
                wait = pacer.delay(record.receipt_ms)
                if wait > 0:
                    target.flush()
                    time.sleep(wait)
                target.put(record)
                pacer.sent()
            target.flush()
    finally:
        target.close()
    _report(summary, time.monotonic() - started, target)


def _matches(data: bytes, globs: Sequence[str]) -> bool:
    try:
        name = peek_name(data)
    except LwesDecodeError:
        return False
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


@contextlib.contextmanager
def _progress(total: int, show: bool) -> Iterator[Callable[[int], None]]:
    """Yield `advance(nbytes)`: a progress bar over the journals' bytes on stderr, or nothing when not shown."""
    if not show:
        yield lambda n: None
        return
    with click.progressbar(length=max(total, 1), label="replaying", file=sys.stderr) as bar:
        yield bar.update


def _report(summary: Summary, elapsed: float, target: UdpTarget | PipelineTarget) -> None:
    rate = summary.replayed / elapsed if elapsed > 0 else 0.0
    line = (f"replayed {summary.replayed} events ({summary.bytes} bytes) from {len(summary.journals)} journals "
            f"in {elapsed:.2f} s ({rate:.0f} events/s)")
    skipped = [f"{n} {what}" for n, what in ((summary.filtered, "filtered by name"),
                                              (summary.too_large, "too large for UDP"),
                                              (summary.malformed, "without a readable name"),
                                              (summary.errors, "send errors")) if n]
    if skipped:
        line += "; skipped: " + ", ".join(skipped)
    click.echo(line, err=True)
    if summary.first_error:
        click.echo(f"first send error: {summary.first_error}", err=True)
    failed = False
    for path, reader, error in summary.journals:
        if reader is None or error:
            click.echo(f"  {path}: cannot read: {error}", err=True)
            failed = True
            continue
        detail = f": {reader.problem}" if reader.problem else ""
        click.echo(f"  {path}: {reader.records} records, {reader.status}{detail}", err=True)
        failed = failed or reader.status == "corrupt"
    if isinstance(target, PipelineTarget):
        totals = target.server.router.totals()
        click.echo(f"  routed {totals['events_dispatched']} events; {totals['no_route']} matched no route", err=True)
        for name, runner in target.server.runners.items():
            c = runner.counters()
            click.echo(f"  backend {name}: {c['events_processed']} processed, {c['dropped']} dropped, "
                       f"{c['failed']} failed, {c['errors']} errors", err=True)
    if failed or summary.errors:
        sys.exit(1)
