"""`routes.ini` loading: a valid file, and every mistake named by file, section and key."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from mondemand.backends import printer, sink
from mondemand.backends.printer import PrintBackend
from mondemand.backends.sink import SinkBackend
from mondemand.listeners import http, udp
from mondemand.listeners.udp import LwesUdpListener

from mondemand import hookimpl
from mondemand.config import ConfigError, load_config
from mondemand.options import Option
from mondemand.plugins import PluginHost
from mondemand.router import Route


@pytest.fixture
def host() -> PluginHost:
    """The built-in listener and backend types, plus one plugin-declared section kind."""
    host = PluginHost()
    for module in (udp, http, printer, sink):
        host.register(module, module.__name__)
    host.register(AlarmSections(), "alarm-sections")
    host.collect_types()
    assert host.problems == []
    return host


class AlarmSections:
    """A plugin that declares `[alarm:NAME]` sections."""

    @hookimpl
    def register_section_types(self, register) -> None:
        register("alarm", (Option("limit", "int", required=True),))


LISTENER = """
[listener:main]
type = lwes-udp
address = 127.0.0.1
port = 20402
"""
BACKEND = """
[backend:out]
type = sink
"""
ROUTE = """
[route:all]
events = *
backends = out
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routes.ini"
    path.write_text(text)
    return path


def problems(tmp_path: Path, host: PluginHost, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), host)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def test_valid_file(tmp_path, host):
    path = write(tmp_path, """
[server]
log_level = debug           ; inline comments are stripped
stats_interval = 500ms
stats_channel = 127.0.0.1:21612

[http]
port = 0

[listener:main]
type = lwes-udp
address = 239.5.1.1
port = 20402
interface = 127.0.0.1
receive_buffer = 4MiB

[backend:console]
type = print
format = json
path = var/stats-%Y%m%d.log # taken literally: no interpolation
queue_size = 500
flush_interval = 2s

[backend:spare]
type = sink

[route:stats]
listeners = main
events = MonDemand::StatsMsg,
    MonDemand::LogMsg
backends = console
stop = yes

[route:rest]
events = *
backends = console spare

[alarm:disk]
limit = 90
""")
    config = load_config(path, host)
    assert config.path == path
    assert config.server["log_level"] == "debug"
    assert config.server["stats_interval"] == 0.5
    assert config.server["stats_channel"] == ("127.0.0.1", 21612)
    assert config.server["drain_timeout"] == 30.0
    assert config.server["hostname"] == socket.gethostname()
    assert config.http == {"address": "127.0.0.1", "port": 0, "header_timeout": 10.0, "body_timeout": 30.0,
                           "idle_timeout": 30.0, "max_connections": 256, "tls_certificate": "", "tls_key": ""}
    main = config.listeners["main"]
    assert (main.kind, main.type_name, main.cls) == ("listener", "lwes-udp", LwesUdpListener)
    assert main.options["receive_buffer"] == 4 << 20
    assert main.options["ttl"] == 1  # default filled
    console = config.backends["console"]
    assert console.cls is PrintBackend
    assert console.options == {"path": "var/stats-%Y%m%d.log", "format": "json"}
    assert console.runner["queue_size"] == 500
    assert console.runner["flush_interval"] == 2.0
    assert console.runner["batch_size"] == 1000
    assert config.backends["spare"].cls is SinkBackend
    assert config.routes == [
        Route("stats", ("MonDemand::StatsMsg", "MonDemand::LogMsg"), ("console",), ("main",), True),
        Route("rest", ("*",), ("console", "spare"), (), False),
    ]
    assert config.sections == {"alarm": {"disk": {"limit": 90}}}
    assert config.warnings == []


def test_minimal_file_gets_server_defaults_and_warns_about_unused_backends(tmp_path, host):
    config = load_config(write(tmp_path, LISTENER + BACKEND + ROUTE + "[backend:idle]\ntype = sink\n"), host)
    assert config.server["log_level"] == "info"
    assert config.server["stats_interval"] == 60.0
    assert config.http is None
    assert config.warnings == ["routes.ini: [backend:idle] is not used by any route"]


def test_unknown_type_names_section_and_known_types(tmp_path, host):
    found = problems(tmp_path, host, LISTENER + ROUTE + "[backend:out]\ntype = nosuch\n")
    assert found[0] == "routes.ini: [backend:out] type: unknown backend type 'nosuch' (known: print, sink)"
    # The section exists, so the route that names it is not also reported as naming a missing section.
    assert found[1:] == []


def test_missing_type(tmp_path, host):
    problem = problems(tmp_path, host, LISTENER + ROUTE + "[backend:out]\nformat = json\n")[0]
    assert problem == "routes.ini: [backend:out] type: required option missing (known backend types: print, sink)"


def test_unknown_option(tmp_path, host):
    [problem] = problems(tmp_path, host, LISTENER + ROUTE + "[backend:out]\ntype = print\ncolour = red\n")
    assert problem.startswith("routes.ini: [backend:out] colour: unknown option (known: format, path)")


def test_bad_value(tmp_path, host):
    text = LISTENER.replace("port = 20402", "port = twenty") + BACKEND + ROUTE
    [problem] = problems(tmp_path, host, text)
    assert problem == "routes.ini: [listener:main] port: expected an integer (got 'twenty')"


def test_bad_runner_option(tmp_path, host):
    [problem] = problems(tmp_path, host, LISTENER + ROUTE + "[backend:out]\ntype = sink\nqueue_size = 0\n")
    assert problem == "routes.ini: [backend:out] queue_size: must be at least 1 (got '0')"


def test_queue_bytes_defaults_to_64_mib_and_takes_a_size(tmp_path, host):
    text = LISTENER + BACKEND + ROUTE + "[backend:big]\ntype = sink\nqueue_bytes = 256MiB\n"
    config = load_config(write(tmp_path, text), host)
    assert config.backends["out"].runner["queue_bytes"] == 64 << 20
    assert config.backends["big"].runner["queue_bytes"] == 256 << 20
    assert config.server["memory_budget"] == 1 << 30


def test_queues_over_the_memory_budget_are_an_error_naming_the_key(tmp_path, host):
    backends = "".join(f"[backend:b{i}]\ntype = sink\nqueue_bytes = 400MiB\n" for i in range(3))
    route = "[route:all]\nevents = *\nbackends = b0, b1, b2\n"
    [problem] = problems(tmp_path, host, LISTENER + backends + route)
    assert problem == ("routes.ini: [server] memory_budget: is 1024 MiB but the queues add up to "
                       "1200 MiB (b0 400 MiB, b1 400 MiB, b2 400 MiB); raise it or lower queue_bytes")
    config = load_config(write(tmp_path, "[server]\nmemory_budget = 2GiB\n" + LISTENER + backends + route), host)
    assert sum(b.runner["queue_bytes"] for b in config.backends.values()) == 1200 << 20


def test_the_budget_counts_the_main_process_queue_of_each_worker(tmp_path, host):
    backends = "".join(f"[backend:p{i}]\ntype = print\nqueue_bytes = 100MiB\n" for i in range(3))
    backends += "[backend:q]\ntype = print\nqueue_bytes = 100MiB\nprocess = p0\n"
    route = "[route:all]\nevents = *\nbackends = p0, p1, p2, q\n"
    text = "[server]\nmemory_budget = 400MiB\nworker_queue_bytes = 10MiB\n" + LISTENER + backends + route
    [problem] = problems(tmp_path, host, text)
    assert "the queues add up to 430 MiB" in problem and "3 worker queues of 10 MiB" in problem
    assert load_config(write(tmp_path, text.replace("400MiB", "430MiB")), host)
    assert load_config(write(tmp_path, text.replace("[server]\n", "[server]\nworkers = false\n")), host)


def test_route_naming_a_missing_backend_or_listener(tmp_path, host):
    text = LISTENER + BACKEND + ROUTE + "[route:bad]\nevents = *\nbackends = out, ghost\nlisteners = nowhere\n"
    assert problems(tmp_path, host, text) == [
        "routes.ini: [route:bad] backends: no [backend:ghost] section",
        "routes.ini: [route:bad] listeners: no [listener:nowhere] section",
    ]


def test_route_without_events(tmp_path, host):
    assert problems(tmp_path, host, LISTENER + BACKEND + "[route:r]\nbackends = out\n") == [
        "routes.ini: [route:r] events: required option missing",
    ]  # the section is there: no "no [route:NAME] section" line on top


def test_no_listener(tmp_path, host):
    [problem] = problems(tmp_path, host, BACKEND + ROUTE)
    assert problem == "routes.ini: no [listener:NAME] section; the server would receive nothing"


def test_no_route(tmp_path, host):
    [problem] = problems(tmp_path, host, LISTENER + BACKEND)
    assert problem == "routes.ini: no [route:NAME] section; nothing would be delivered"


def test_environment_variables_are_expanded(tmp_path, host, monkeypatch):
    monkeypatch.setenv("MD_TEST_PORT", "21000")
    monkeypatch.setenv("MD_TEST_DIR", "/srv/md")
    backend = "[backend:out]\ntype = print\npath = ${MD_TEST_DIR}/x.log\n"
    text = LISTENER.replace("20402", "${MD_TEST_PORT}") + ROUTE + backend
    config = load_config(write(tmp_path, text), host)
    assert config.listeners["main"].options["port"] == 21000
    assert config.backends["out"].options["path"] == "/srv/md/x.log"


def test_unset_environment_variable_is_an_error(tmp_path, host, monkeypatch):
    monkeypatch.delenv("MD_TEST_UNSET", raising=False)
    text = LISTENER + ROUTE + "[backend:out]\ntype = print\npath = ${MD_TEST_UNSET}/x.log\n"
    [problem] = problems(tmp_path, host, text)
    assert problem == "routes.ini: [backend:out] path: environment variable MD_TEST_UNSET is not set"


def test_duplicate_section(tmp_path, host):
    [problem] = problems(tmp_path, host, LISTENER + BACKEND + BACKEND + ROUTE)
    assert problem.startswith(f"{tmp_path / 'routes.ini'}: ")
    assert "section 'backend:out' already exists" in problem
    assert "line" in problem


def test_duplicate_key(tmp_path, host):
    [problem] = problems(tmp_path, host, LISTENER + ROUTE + "[backend:out]\ntype = sink\ntype = print\n")
    assert "option 'type' in section 'backend:out' already exists" in problem


def test_unknown_section_kind_and_bad_names(tmp_path, host):
    bad = "[DEFAULT]\nx = 1\n[backends:b]\ntype = sink\n[backend:bad name!]\ntype = sink\n"
    text = LISTENER + BACKEND + ROUTE + bad
    found = problems(tmp_path, host, text)
    assert len(found) == 3
    assert found[0].startswith("routes.ini: [DEFAULT]: unknown section; expected [server], [http], ")
    assert found[0].endswith("[route:NAME], [tenant:NAME], [alarm:NAME]")
    assert found[1].startswith("routes.ini: [backends:b]: unknown section")
    assert found[2] == "routes.ini: [backend:bad name!]: names may hold only letters, digits, '_', '.' and '-'"


def test_plugin_section_is_validated_by_its_declared_options(tmp_path, host):
    [problem] = problems(tmp_path, host, LISTENER + BACKEND + ROUTE + "[alarm:disk]\nlimit = lots\n")
    assert problem == "routes.ini: [alarm:disk] limit: expected an integer (got 'lots')"


def test_every_problem_is_reported_together(tmp_path, host):
    text = """
[server]
log_level = loud
[listener:main]
type = lwes-udp
port = 70000
[backend:out]
type = print
format = xml
[route:all]
events = *
backends = out, missing
"""
    found = problems(tmp_path, host, text)
    assert [p.split(":")[1].strip() for p in found] == [
        "[server] log_level", "[listener", "[backend", "[route",
    ]
    assert len(found) == 4
    assert "expected a port number 0..65535 (got '70000')" in found[1]
    assert "format: expected one of text, json (got 'xml')" in found[2]


def test_unreadable_file(tmp_path, host):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.ini", host)
    [problem] = info.value.problems
    assert problem.startswith(f"{tmp_path / 'missing.ini'}: cannot read: ")


class AlarmBackend(SinkBackend):
    """A backend whose `alarms` option must name [alarm:NAME] sections: a check across sections."""

    options = (Option("alarms", "list", ()),)

    @classmethod
    def check_config(cls, name, options, sections, config_dir):
        from mondemand.options import SectionProblem

        assert config_dir.is_absolute()
        if "boom" in options["alarms"]:
            raise RuntimeError("check bug")
        return [SectionProblem(f"backend:{name}", "alarms", f"no [alarm:{a}] section")
                for a in options["alarms"] if a not in sections["alarm"]]


class AlarmBackendPlugin:
    @hookimpl
    def register_backend_types(self, register) -> None:
        register("alarming", AlarmBackend)


def test_checks_across_sections_run_at_load_with_every_section_seen(tmp_path, host):
    host.register(AlarmBackendPlugin(), "alarm-backend")
    host.collect_types()
    # The backend comes before the sections it names: the check runs once every section is read.
    text = LISTENER + ROUTE + "[backend:out]\ntype = alarming\nalarms = high, low\n\n[alarm:high]\nlimit = 3\n"
    assert problems(tmp_path, host, text) == ["routes.ini: [backend:out] alarms: no [alarm:low] section"]
    load_config(write(tmp_path, text.replace("high, low", "high")), host)


def test_a_raising_cross_section_check_is_reported_not_fatal(tmp_path, host):
    host.register(AlarmBackendPlugin(), "alarm-backend")
    host.collect_types()
    text = LISTENER + ROUTE + "[backend:out]\ntype = alarming\nalarms = boom\n"
    assert problems(tmp_path, host, text) == [
        "routes.ini: [backend:out]: check_config of type 'alarming' raised RuntimeError('check bug')"]


def test_memory_budget_counts_a_queue_per_tenant_copy(tmp_path, host):
    tenants = "".join(f"[tenant:t{i}]\nkeys = k{i}=sha256:{str(i) * 64}\n" for i in range(3))
    text = LISTENER + ROUTE.replace("backends = out", "backends = files") + tenants + (
        "[backend:files]\ntype = print\npath = var/x.txt\nqueue_bytes = 300MiB\n")
    [problem] = problems(tmp_path, host, text)
    assert "[server] memory_budget: is 1024 MiB" in problem and "files 300 MiB x 4 (one per tenant" in problem
