"""`mondemand-server -c routes.ini`: the router process."""

from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from mondemand.cli import version_option
from mondemand.config import ConfigError, load_config
from mondemand.plugins import PluginHost
from mondemand.server import Server, ServerStartError
from mondemand.workers import relax_gc


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@version_option()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="routes.ini to run.")
@click.option("--check", is_flag=True, help="Validate the configuration, print a summary and exit.")
@click.option("--no-plugins", is_flag=True, help="Load only mondemand's built-in listeners and backends.")
def main(config_path: str, check: bool, no_plugins: bool) -> None:
    """Listen for LWES events and route them to backends as routes.ini says.

    \b
    Examples:
      mondemand-server -c examples/routes.ini
      mondemand-server -c /etc/mondemand/routes.ini --check

    SIGTERM or SIGINT: stop listening, drain every backend's queue, flush,
    close and exit 0. SIGHUP: backends reopen their files (log rotation).
    """
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
    for warning in config.warnings:
        click.echo(f"warning: {warning}", err=True)
    if check:
        click.echo(
            f"{config_path}: ok: {len(config.listeners)} listeners, {len(config.backends)} backends, "
            f"{len(config.routes)} routes"
        )
        for name, section in config.listeners.items():
            click.echo(f"  listener {name}: {section.type_name}")
        for name, section in config.backends.items():
            click.echo(f"  backend {name}: {section.type_name}")
        for route in config.routes:
            click.echo(f"  route {route.name}: {', '.join(route.events)} -> {', '.join(route.backends)}")
        if config.tenants:
            from mondemand.tenants import Tenants

            for name, info in Tenants(config.tenants).status().items():
                limits = ", ".join(f"{k} {v}" for k, v in info["quotas"].items() if v) or "no quotas"
                click.echo(f"  tenant {name}: {info['keys']} keys{', admin' if info['admin'] else ''}; {limits}")
        return

    logging.basicConfig(
        level=getattr(logging, config.server["log_level"].upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    server = Server(config, host)
    stop = threading.Event()
    reopen = threading.Event()
    # Handlers only set flags; the main loop does the work, never inside a signal handler.
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reopen.set())
    try:
        server.start()
    except ServerStartError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    relax_gc()  # what start-up built is not looked at again by the collector (mondemand.workers)
    logging.getLogger("mondemand.server").info("mondemand-server running (%s)", config_path)
    while not stop.wait(0.2):
        if reopen.is_set():
            reopen.clear()
            logging.getLogger("mondemand.server").info("SIGHUP: reopening files")
            server.reopen()
    logging.getLogger("mondemand.server").info("stopping: draining backends")
    server.stop()
    logging.getLogger("mondemand.server").info("stopped")
