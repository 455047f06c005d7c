"""`PluginHost`: built-ins through entry points, in-process plugins, and plugins that fail."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest
from mondemand.backends.printer import PrintBackend
from mondemand.backends.sink import SinkBackend
from mondemand.listeners.http import LwesHttpListener
from mondemand.listeners.udp import LwesUdpListener

from mondemand import hookimpl
from mondemand.options import Option
from mondemand.plugin_api import Backend
from mondemand.plugins import DISABLE_ENV, PluginHost


class DemoBackend(Backend):
    type_name = "demo"

    def handle(self, batch) -> None:
        pass


class OtherDemoBackend(DemoBackend):
    pass


class DemoPlugin:
    """An in-process plugin: registers one backend type and a section kind."""

    def __init__(self, cls: type = DemoBackend, type_name: str = "demo") -> None:
        self.cls = cls
        self.type_name = type_name
        self.started: list[object] = []

    @hookimpl
    def register_backend_types(self, register) -> None:
        register(self.type_name, self.cls)

    @hookimpl
    def register_section_types(self, register) -> None:
        register("demo_rule", (Option("threshold", "int", required=True),))

    @hookimpl
    def server_started(self, server) -> None:
        self.started.append(server)


class RaisingPlugin:
    @hookimpl
    def register_backend_types(self, register) -> None:
        raise RuntimeError("plugin bug")

    @hookimpl
    def server_started(self, server) -> None:
        raise RuntimeError("lifecycle bug")


@pytest.fixture(autouse=True)
def no_disabled_plugins(monkeypatch):
    monkeypatch.delenv(DISABLE_ENV, raising=False)


def test_builtins_are_discovered_through_entry_points():
    host = PluginHost.discover(builtins_only=True)
    assert host.problems == []
    assert host.listener_types["lwes-udp"] is LwesUdpListener
    assert host.listener_types["lwes-http"] is LwesHttpListener
    assert host.backend_types["print"] is PrintBackend
    assert host.backend_types["sink"] is SinkBackend
    assert host.origins["listener:lwes-udp"] == "mondemand.listeners:lwes-udp"
    assert host.origins["backend:sink"] == "mondemand.backends:sink"


def test_blocked_plugins_are_skipped(monkeypatch):
    host = PluginHost.discover(builtins_only=True, blocked=["sink"])
    assert "sink" not in host.backend_types
    assert "print" in host.backend_types
    monkeypatch.setenv(DISABLE_ENV, "print, lwes-http")
    host = PluginHost.discover(builtins_only=True)
    assert "print" not in host.backend_types
    assert "lwes-http" not in host.listener_types
    assert {"sink", "lwes-udp"} <= set(host.backend_types) | set(host.listener_types)


def test_in_process_plugin_registers_its_types():
    host = PluginHost()
    plugin = DemoPlugin()
    host.register(plugin, "demo-plugin")
    host.collect_types()
    assert host.problems == []
    assert host.backend_types == {"demo": DemoBackend}
    assert host.origins["backend:demo"] == "demo-plugin"
    assert [o.name for o in host.section_types["demo_rule"]] == ["threshold"]
    host.notify("server_started", server="the server")
    assert plugin.started == ["the server"]


def test_registering_the_same_plugin_twice_is_harmless():
    host = PluginHost()
    plugin = DemoPlugin()
    host.register(plugin, "demo-plugin")
    host.register(plugin, "demo-plugin-again")
    host.collect_types()
    assert host.problems == []
    assert host.backend_types == {"demo": DemoBackend}


def test_a_raising_hook_is_reported_and_other_plugins_still_register():
    host = PluginHost()
    host.register(RaisingPlugin(), "broken-plugin")
    good = DemoPlugin()
    host.register(good, "good-plugin")
    host.collect_types()
    assert host.backend_types == {"demo": DemoBackend}
    [problem] = host.problems
    assert problem.plugin == "broken-plugin"
    assert "register_backend_types raised RuntimeError('plugin bug')" in problem.message
    assert str(problem).startswith("plugin broken-plugin: ")
    host.notify("server_started", server="srv")
    assert good.started == ["srv"]
    assert "server_started raised RuntimeError('lifecycle bug')" in host.problems[-1].message


def test_two_plugins_claiming_one_type_name_keep_the_first():
    host = PluginHost()
    host.register(DemoPlugin(DemoBackend), "first")
    host.register(DemoPlugin(OtherDemoBackend), "second")
    host.collect_types()
    assert host.backend_types["demo"] is DemoBackend
    assert host.origins["backend:demo"] == "first"
    assert [(p.plugin, p.message) for p in host.problems] == [
        ("second", "backend type 'demo' is already provided by first; ignored"),
        ("second", "section type 'demo_rule' is already provided by first; ignored"),
    ]


def test_a_plugin_with_an_unknown_hook_argument_is_rejected_not_fatal():
    class Misspelt:
        @hookimpl
        def register_backend_types(self, register, colour) -> None:
            register("never", DemoBackend)

    host = PluginHost()
    host.register(Misspelt(), "misspelt")
    host.register(DemoPlugin(), "good")
    host.collect_types()
    assert "never" not in host.backend_types
    assert host.backend_types == {"demo": DemoBackend}
    [problem] = host.problems
    assert problem.plugin == "misspelt"
    assert problem.message.startswith("rejected: ")


def test_a_broken_entry_point_is_reported_not_fatal():
    host = PluginHost()
    broken = EntryPoint(name="broken", value="no_such_module_xyz", group="mondemand.backends")
    host.load_entry_point(broken)
    host.load_entry_point(EntryPoint(name="sink", value="mondemand.backends.sink", group="mondemand.backends"))
    host.collect_types()
    [problem] = host.problems
    assert problem.plugin == "mondemand.backends:broken"
    assert "failed to load no_such_module_xyz" in problem.message
    assert "ModuleNotFoundError" in problem.message
    assert host.backend_types == {"sink": SinkBackend}
