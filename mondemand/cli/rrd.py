"""`mondemand-rrd`: look at what the `rrd` backend stored.

    mondemand-rrd list /var/lib/mondemand/rrd
    mondemand-rrd fetch app/hits/app-counter-hits-web1.rrd --root /var/lib/mondemand/rrd --csv
    mondemand-rrd fetch app.md.hits.host.web1.counter --root /var/lib/mondemand/rrd --start -2h
    mondemand-rrd graph app.md.hits.host.web1.counter --root /var/lib/mondemand/rrd --minmax -o hits.png

A series is named by its file (a path, or a path relative to ``--root``) or by
its Graphite name, which is looked up in the Graphite tree (``--root`` with
``g`` appended, or ``--tree``). ``--daemon`` (or the RRDCACHED_ADDRESS
environment variable) asks rrdcached to write out the values it still holds
for those files before they are read (unix socket or TCP).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

try:
    import rrdtool
except ImportError:  # the `rrd` extra is not installed: `main` says how to install it
    rrdtool = None

from mondemand.backends.rrd.rrdcached import RrdcachedClient, RrdcachedCommandError, RrdcachedError, classify
from mondemand.backends.series import SeriesKey, file_path, parse_file_path
from mondemand.cli import version_option
from mondemand.plugins import install_hint

_COLOURS = ("1f77b4", "d62728", "2ca02c", "ff7f0e", "9467bd", "8c564b", "e377c2", "7f7f7f", "bcbd22", "17becf")


class SeriesNotFound(click.ClickException):
    """No file answers to the name given."""


def series_files(root: Path) -> list[Path]:
    """Every ``*.rrd`` in the primary layout (``<prog>/<metric>/<file>.rrd``) under `root`, sorted."""
    return sorted(p for p in root.glob("*/*/*.rrd") if p.is_file())


def key_of(root: Path, path: Path) -> SeriesKey | None:
    """The series stored in `path`, when its name parses back to exactly that path."""
    rel = path.relative_to(root).as_posix()
    key = parse_file_path(rel)
    if key is None or file_path(key).as_posix() != rel:
        return None
    return key


def resolve(target: str, root: Path | None, tree: Path | None) -> Path:
    """The RRD file `target` names: a file, a path under `root`, or a Graphite name under the tree."""
    direct = Path(target)
    if direct.is_file():
        return direct
    if root is not None:
        under = root / target
        if under.is_file():
            return under
        tree = tree or Path(f"{root}g")
    if tree is not None and "/" not in target:
        dotted = tree.joinpath(*target.split(".")).with_suffix("")
        candidate = dotted.parent / f"{dotted.name}.rrd"
        if candidate.is_file():
            return candidate
    where = f" (looked under {root} and {tree})" if root is not None or tree is not None else ""
    raise SeriesNotFound(f"no RRD file for {target!r}{where}")


def consolidations(path: Path) -> set[str]:
    """The consolidation functions `path` has archives for."""
    info = rrdtool.info(str(path))
    return {value for key, value in info.items() if key.startswith("rra[") and key.endswith("].cf")}


def flush_daemon(daemon: str | None, paths: list[Path]) -> None:
    """Have rrdcached write out what it holds for `paths` (librrd's --daemon refuses absolute paths over TCP)."""
    if not daemon:
        return
    try:
        with RrdcachedClient(daemon) as client:
            for path in paths:
                try:
                    client.flush(str(path.absolute()))
                except RrdcachedCommandError as exc:
                    if classify(exc.message) != "no_file":  # nothing queued for that file
                        raise click.ClickException(f"rrdcached: {exc.message}") from None
    except (RrdcachedError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    # Done: librrd would otherwise also read this variable, and refuse absolute paths over TCP.
    os.environ.pop("RRDCACHED_ADDRESS", None)


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.10g}"


@click.group()
@version_option()
def main() -> None:
    """List, fetch and graph the series the rrd backend stored."""
    if rrdtool is None:
        raise click.ClickException(f"mondemand-rrd needs the rrdtool module: {install_hint('rrdtool')}")


@main.command("list")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--prog", "prog_glob", default=None, help="only series of prog_ids matching this glob")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def list_cmd(root: Path, prog_glob: str | None, as_json: bool) -> None:
    """List every series file under ROOT with the series it holds."""
    import fnmatch

    count = 0
    for path in series_files(root):
        key = key_of(root, path)
        if prog_glob is not None and (key is None or not fnmatch.fnmatchcase(key.prog_id, prog_glob)):
            continue
        rel = path.relative_to(root).as_posix()
        count += 1
        if as_json:
            record: dict[str, Any] = {"path": rel, "parsed": key is not None}
            if key is not None:
                record.update(namespace=key.namespace, prog_id=key.prog_id, type=key.metric_type,
                              name=key.name, host=key.host, context=dict(key.context))
            click.echo(json.dumps(record, ensure_ascii=False))
        else:
            click.echo(f"{rel}\t{key if key is not None else '(name not parsable)'}")
    if not as_json:
        click.echo(f"{count} series", err=True)


def _fetch(path: Path, cf: str, start: str, end: str, resolution: int | None,
           daemon: str | None) -> tuple[list[str], list[tuple[int, tuple[float | None, ...]]]]:
    flush_daemon(daemon, [path])
    args = [str(path), cf, "--start", start, "--end", end]
    if resolution:
        args += ["--resolution", str(resolution)]
    try:
        (first, _last, step), names, rows = rrdtool.fetch(*args)
    except rrdtool.OperationalError as exc:
        raise click.ClickException(f"fetch {path}: {exc}") from None
    # A row's timestamp is the end of the interval it covers.
    return list(names), [(first + step * (i + 1), row) for i, row in enumerate(rows)]


@main.command()
@click.argument("target")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), help="the rrd backend's root")
@click.option("--tree", type=click.Path(file_okay=False, path_type=Path), help="Graphite tree (default: ROOT + 'g')")
@click.option("--cf", default="AVERAGE", show_default=True,
              type=click.Choice(["AVERAGE", "MIN", "MAX", "LAST"], case_sensitive=False))
@click.option("--start", default="-1d", show_default=True, help="rrdtool time: -2h, now-1w, epoch seconds")
@click.option("--end", default="now", show_default=True)
@click.option("--resolution", type=int, default=None, help="seconds per row (picks the archive)")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header: timestamp,time,<data sources>")
@click.option("--skip-unknown", is_flag=True, help="leave out rows with no value")
@click.option("--daemon", default=None, envvar="RRDCACHED_ADDRESS", help="rrdcached to flush through first")
def fetch(target: str, root: Path | None, tree: Path | None, cf: str, start: str, end: str,
          resolution: int | None, as_csv: bool, skip_unknown: bool, daemon: str | None) -> None:
    """Print one series (TARGET: file, path under --root, or Graphite name) as a table or CSV."""
    path = resolve(target, root, tree)
    names, rows = _fetch(path, cf.upper(), start, end, resolution, daemon)
    if skip_unknown:
        rows = [r for r in rows if any(v is not None for v in r[1])]
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["timestamp", "time", *names])
        for ts, values in rows:
            writer.writerow([ts, _iso(ts), *(_number(v) for v in values)])
        return
    click.echo("time                  " + "  ".join(f"{n:>16}" for n in names))
    for ts, values in rows:
        click.echo(f"{_iso(ts)}  " + "  ".join(f"{_number(v) or '-':>16}" for v in values))


def graph_args(paths: list[tuple[Path, str]], cf: str, minmax: bool) -> list[str]:
    """DEF/LINE (and MIN-MAX band) arguments for ``rrdtool graph``, one series per (path, label)."""
    args: list[str] = []
    for i, (path, label) in enumerate(paths):
        colour = _COLOURS[i % len(_COLOURS)]
        escaped = str(path).replace(":", "\\:")
        text = label.replace("\\", "\\\\").replace(":", "\\:")
        args.append(f"DEF:v{i}={escaped}:value:{cf}")
        if minmax and {"MIN", "MAX"} <= consolidations(path):
            args += [f"DEF:lo{i}={escaped}:value:MIN", f"DEF:hi{i}={escaped}:value:MAX",
                     f"CDEF:band{i}=hi{i},lo{i},-", f"LINE:lo{i}", f"AREA:band{i}#{colour}33::STACK"]
        args.append(f"LINE2:v{i}#{colour}:{text}")
    return args


@main.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG to write")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), help="the rrd backend's root")
@click.option("--tree", type=click.Path(file_okay=False, path_type=Path), help="Graphite tree (default: ROOT + 'g')")
@click.option("--cf", default="AVERAGE", show_default=True,
              type=click.Choice(["AVERAGE", "MIN", "MAX", "LAST"], case_sensitive=False))
@click.option("--start", default="-1d", show_default=True)
@click.option("--end", default="now", show_default=True)
@click.option("--title", default=None)
@click.option("--width", type=int, default=800, show_default=True)
@click.option("--height", type=int, default=250, show_default=True)
@click.option("--minmax", is_flag=True, help="shade the MIN-MAX band around each line (files with MIN/MAX archives)")
@click.option("--daemon", default=None, envvar="RRDCACHED_ADDRESS", help="rrdcached to flush through first")
def graph(targets: tuple[str, ...], output: Path, root: Path | None, tree: Path | None, cf: str, start: str,
          end: str, title: str | None, width: int, height: int, minmax: bool, daemon: str | None) -> None:
    """Draw TARGETS (files, paths under --root, or Graphite names) into a PNG with rrdtool graph."""
    paths = [(resolve(t, root, tree), t) for t in targets]
    args = [str(output), "--imgformat", "PNG", "--start", start, "--end", end,
            "--width", str(width), "--height", str(height)]
    flush_daemon(daemon, [p for p, _ in paths])
    if title:
        args += ["--title", title]
    args += graph_args(paths, cf.upper(), minmax)
    try:
        rrdtool.graph(*args)
    except rrdtool.OperationalError as exc:
        raise click.ClickException(f"graph: {exc}") from None
    click.echo(f"wrote {output} ({os.path.getsize(output)} bytes)", err=True)


if __name__ == "__main__":
    main()
