"""Plugins can declare their own `[kind:NAME]` sections in routes.ini."""

from __future__ import annotations

from pathlib import Path

import pytest

from mondemand.config import ConfigError, load_config
from mondemand.hookspecs import hookimpl
from mondemand.options import Option
from mondemand.plugins import PluginHost


class _AlertPlugin:
    @hookimpl
    def register_section_types(self, register):
        register("alert", (Option("metric", "str", required=True), Option("above", "float", None)))


BASE = """
[listener:main]
type = lwes-udp
port = 0

[backend:out]
type = sink

[route:all]
events = *
backends = out
"""


def _host() -> PluginHost:
    # The built-in alerts plugin declares [alert:NAME] itself; leave it out so this test's plugin does.
    host = PluginHost.discover(builtins_only=True, blocked=("alerts",))
    host.register(_AlertPlugin(), "test-alerts")
    host.collect_types()
    return host


def test_declared_sections_are_validated_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "routes.ini"
    path.write_text(BASE + "\n[alert:slow]\nmetric = latency\nabove = 2.5\n")
    config = load_config(path, _host())
    assert config.sections["alert"] == {"slow": {"metric": "latency", "above": 2.5}}


def test_errors_in_declared_sections_name_section_and_key(tmp_path: Path) -> None:
    path = tmp_path / "routes.ini"
    path.write_text(BASE + "\n[alert:slow]\nabove = lots\ncolour = red\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, _host())
    text = str(info.value)
    assert "[alert:slow] above" in text
    assert "[alert:slow] colour" in text
    assert "[alert:slow] metric" in text


def test_undeclared_kinds_are_still_unknown(tmp_path: Path) -> None:
    path = tmp_path / "routes.ini"
    path.write_text(BASE + "\n[alert:slow]\nmetric = x\n")
    with pytest.raises(ConfigError, match=r"\[alert:slow\]: unknown section"):
        load_config(path, PluginHost.discover(builtins_only=True, blocked=("alerts",)))
