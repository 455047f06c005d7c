"""Python logging to the dashboard's error stream: `MondemandLogHandler` through a real server and dashboard."""

from __future__ import annotations

import json
import logging
import socket
import urllib.request
from pathlib import Path
from typing import Any

from mondemand.client import Client, MondemandLogHandler
from mondemand.client.loghandler import priority_of

from mondemand.messages import Priority
from tests.e2e.harness import ServerProcess, free_port, wait_for


def _config(port: int, dashboard_port: int) -> str:
    return f"""
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = {port}

[backend:dashboard]
type = dashboard
port = {dashboard_port}

[route:logs]
events = MonDemand::LogMsg
backends = dashboard
"""


def _errors(port: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/errors?after=0", timeout=5) as resp:
        document = json.load(resp)
    return document["errors"] if isinstance(document, dict) else document


def test_warnings_and_errors_reach_the_dashboard_collapsed(tmp_path: Path) -> None:
    port, dashboard_port = free_port(), free_port(socket.SOCK_STREAM)
    server = ServerProcess(tmp_path, _config(port, dashboard_port))
    client = Client("shop", host="web01", transports=[f"udp://127.0.0.1:{port}"], flush_interval=3600)
    logger = logging.getLogger("tests.shop")
    logger.propagate = False
    handler = MondemandLogHandler(client)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.info("served one request")  # below WARNING: not sent
        logger.warning("disk %s is %d%% full", "/var", 91)
        for _ in range(500):
            logger.error("payment backend timed out")  # one line, repeat 500
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("checkout failed")
        client.flush()
        lines = wait_for(lambda: len(_errors(dashboard_port)) >= 3 and _errors(dashboard_port),
                         what="three lines in the dashboard's error stream")
        by_message = {line["message"].splitlines()[0]: line for line in lines}
        assert set(by_message) == {"disk /var is 91% full", "payment backend timed out", "checkout failed"}
        assert by_message["payment backend timed out"]["repeat"] == 500
        assert by_message["payment backend timed out"]["priority"] == "error"
        assert by_message["disk /var is 91% full"]["priority"] == "warning"
        assert by_message["disk /var is 91% full"]["prog_id"] == "shop"
        assert by_message["disk /var is 91% full"]["file"] == "test_log_handler.py"
        assert "RuntimeError: boom" in by_message["checkout failed"]["message"]  # the traceback travels along
    finally:
        logger.removeHandler(handler)
        client.close()
        server.stop()


def test_rate_limit_holds_back_new_lines_and_reports_them() -> None:
    client = Client("shop", host="web01", transports=["udp://127.0.0.1:9"], flush_interval=3600)
    logger = logging.getLogger("tests.shop.flood")
    logger.propagate = False
    handler = MondemandLogHandler(client, max_lines=10)
    logger.addHandler(handler)
    try:
        for i in [*range(25), 3]:  # the second "request 3" was let through already: it collapses, not held back
            logger.warning("request %d failed", i)
        queued = {line.message: line.repeat for line in client._logs.values()}
        assert len(queued) == 10 and queued["request 3 failed"] == 2 and handler.dropped == 15
        handler._window_start -= 3600  # the next window
        logger.warning("later")
        queued = {line.message: line.repeat for line in client._logs.values()}
        assert "15 log lines held back: over 10 distinct lines in 3600s" in queued and "later" in queued
    finally:
        logger.removeHandler(handler)
        client.close()
    assert [priority_of(level) for level in (50, 40, 30, 20, 10)] == [
        Priority.CRIT, Priority.ERROR, Priority.WARNING, Priority.INFO, Priority.DEBUG]
