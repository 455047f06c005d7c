"""An optional backend whose module is not installed is reported once, with the `pip install` that fixes it.

The missing module is simulated in a real subprocess: a `None` in `sys.modules`
makes its import fail exactly as an absent package does.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

from mondemand.backends.dashboard import DashboardBackend

from mondemand.plugins import MissingDependency, PluginHost, install_hint

#: Run a tool's `main` with the comma-separated modules of argv[1] made unimportable.
RUN_WITHOUT = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
tool, sys.argv = sys.argv[2], [sys.argv[2], *sys.argv[3:]]
module = {"mondemand-server": "server", "mondemand-rrd": "rrd"}[tool]
__import__(f"mondemand.cli.{module}", fromlist=["main"]).main()
"""

RRD_HINT = "backend type 'rrd' needs the rrdtool module: pip install 'mondemand-server[rrd]'"
WEB_HINT = "backend type 'dashboard' needs the aiohttp module: pip install 'mondemand-server[web]'"


def run_without(modules: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", RUN_WITHOUT, modules, *args], capture_output=True, text=True,
                          timeout=60)


def write_config(tmp_path: Path, backends: str, names: str) -> Path:
    path = tmp_path / "routes.ini"
    path.write_text(f"""
[listener:udp]
type = lwes-udp
port = 0

{backends}

[route:all]
events = *
backends = {names}
""")
    return path


def test_config_using_rrd_without_rrdtool_names_the_extra_once_per_place(tmp_path):
    path = write_config(tmp_path, f"[backend:graphs]\ntype = rrd\nroot = {tmp_path}/rrd\n", "graphs")
    result = run_without("rrdtool", "mondemand-server", "-c", str(path), "--check")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines.count(f"warning: plugin mondemand.backends:rrd: {RRD_HINT}") == 1
    assert f"error: routes.ini: [backend:graphs] type: {RRD_HINT}" in lines
    assert sum("rrdtool" in line for line in lines) == 2, result.stderr  # plugin load + config, nothing else
    assert "unknown backend type" not in result.stderr
    assert "no [backend:graphs] section" not in result.stderr


def test_core_only_install_reports_rrdtool_once_and_still_runs_a_config_without_rrd(tmp_path):
    path = write_config(tmp_path, "[backend:out]\ntype = sink\n", "out")
    result = run_without("rrdtool", "mondemand-server", "-c", str(path), "--check")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [f"warning: plugin mondemand.backends:rrd: {RRD_HINT}"]
    assert "ok: 1 listeners, 1 backends, 1 routes" in result.stdout


def test_dashboard_without_aiohttp_names_the_web_extra(tmp_path):
    path = write_config(tmp_path, "[backend:page]\ntype = dashboard\nport = 0\n", "page")
    result = run_without("aiohttp", "mondemand-server", "-c", str(path), "--check")
    assert result.returncode == 2
    assert result.stderr.count(WEB_HINT) == 2, result.stderr
    assert f"error: routes.ini: [backend:page] type: {WEB_HINT}" in result.stderr.splitlines()
    assert "No module named" not in result.stderr


def test_dashboard_plots_without_rrdtool_are_a_config_error(tmp_path):
    path = write_config(tmp_path, f"[backend:page]\ntype = dashboard\nport = 0\nrrd_root = {tmp_path}\n", "page")
    result = run_without("rrdtool", "mondemand-server", "-c", str(path), "--check")
    assert result.returncode == 2
    assert ("error: routes.ini: [backend:page] rrd_root: the plots need the rrdtool module: "
            "pip install 'mondemand-server[rrd]'") in result.stderr.splitlines()


def test_mondemand_rrd_without_rrdtool_says_how_to_install_it(tmp_path):
    result = run_without("rrdtool", "mondemand-rrd", "list", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: mondemand-rrd needs the rrdtool module: pip install 'mondemand-server[rrd]'"


def test_every_installed_optional_type_loads_here():
    host = PluginHost.discover()
    assert {"rrd", "dashboard"} <= set(host.backend_types)
    assert not host.unavailable


def test_a_type_with_a_missing_required_module_is_unavailable_not_registered(monkeypatch):
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    host = PluginHost()
    host.register(sys.modules[DashboardBackend.__module__], "mondemand.backends:dashboard")
    host.collect_types()
    assert "dashboard" not in host.backend_types
    assert host.unavailable["backend:dashboard"] == MissingDependency(
        "backend", "dashboard", "aiohttp", "pip install 'mondemand-server[web]'")
    assert [str(p) for p in host.problems] == [f"plugin mondemand.backends:dashboard: {WEB_HINT}"]


def test_a_plugin_whose_own_module_is_missing_is_a_load_failure_not_a_missing_dependency():
    host = PluginHost(log_problems=False)
    host.load_entry_point(EntryPoint(name="broken", value="no_such_module_xyz", group="mondemand.backends"))
    assert not host.unavailable
    assert "failed to load no_such_module_xyz" in host.problems[0].message


def test_install_hint_prefers_the_extra_then_falls_back_to_the_module():
    assert install_hint("rrdtool") == "pip install 'mondemand-server[rrd]'"
    assert install_hint("aiohttp.web") == "pip install 'mondemand-server[web]'"
    assert install_hint("no_such_module_xyz") == "pip install no_such_module_xyz"
