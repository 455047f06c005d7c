"""Every option of every registered section type refuses absurd values with a clean problem line.

Issue 18: values that passed `--check` and then broke the server (a 3G receive
buffer, a 10^10 s stats interval, `stop = maybe` in a route raising a
traceback). Each option here gets values of its kind that are too large,
negative or of the wrong type; `load_config` must report `[section] key:` for
it, and the real `mondemand-server --check` must exit 2 with that line on
stderr and no traceback.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mondemand.config import HTTP_OPTIONS, ROUTE_OPTIONS, RUNNER_OPTIONS, SERVER_OPTIONS, ConfigError, load_config
from mondemand.options import DAY, DEFAULT_MAXIMUM, GIB, TIB, Option, OptionError, format_value
from mondemand.plugin_api import ServerContext
from mondemand.plugins import PluginHost
from mondemand.tenants import TENANT_OPTIONS
from tests.e2e.harness import BIN

HOST = PluginHost.discover()

#: A valid rest of the file, so that only the section under test has problems.
BASE = """
[listener:base]
type = lwes-udp
address = 127.0.0.1
port = 0

[backend:base]
type = sink

[route:base]
events = *
backends = base
"""

#: Values no option of the kind should take: too large, negative, and not of the kind at all.
ABSURD: dict[str, list[str]] = {
    "duration": ["10000000000s", "400000d", "-5s", "ten minutes", "9" * 60],
    "size": ["2000T", "-1", "lots", "9" * 60],
    "int": ["99999999999999999999", "-99999999999999999999", "1.5", "ten", "9" * 5000],
    "float": ["nan", "inf", "-1e999", "fast"],
    "bool": ["maybe", "2"],
    "port": ["70000", "-1", "http"],
    "address": ["nohost", "host:99999"],
}
#: str/list options with a check that legitimately accept the generic bogus value below.
ACCEPT_ANY_TEXT = {("journal", "name"), ("rrd", "daemon"), ("rrd", "host_dir"), ("rrd", "aggregate_dir"),
                   ("notifier", "command"), ("statsd", "prog_id")}
BOGUS_TEXT = "::bogus::"


def sections() -> list[tuple[str, str, tuple[Option, ...]]]:
    """(section header, lines it needs besides the key, options) for every section type there is."""
    found = [("server", "", SERVER_OPTIONS), ("http", "", HTTP_OPTIONS),
             ("route:t", "", ROUTE_OPTIONS),
             ("backend:t", "type = sink\n", RUNNER_OPTIONS[1:])]
    for name, cls in sorted(HOST.listener_types.items()):
        found.append((f"listener:{name}", f"type = {name}\n", tuple(cls.options)))
    for name, cls in sorted(HOST.backend_types.items()):
        found.append((f"backend:{name}", f"type = {name}\n", tuple(getattr(cls, "options", ()))))
    for kind, options in sorted(HOST.section_types.items()):
        found.append((f"{kind}:t", "", tuple(options)))
    found.append(("tenant:t", f"keys = k=sha256:{'0' * 64}\n", TENANT_OPTIONS))
    return found


def absurd_values(type_name: str, opt: Option) -> list[str]:
    """The absurd values for `opt`, or [] when its kind takes any text."""
    if opt.kind in ABSURD:
        return ABSURD[opt.kind]
    if opt.choices is not None:
        return ["no-such-choice"]
    if opt.check is not None and (type_name, opt.name) not in ACCEPT_ANY_TEXT:
        return [BOGUS_TEXT]
    return []


def _type_name(header: str, extra: str) -> str:
    if extra.startswith("type = "):
        return extra.split("=", 1)[1].strip()
    return header.partition(":")[0]


CASES = [
    pytest.param(header, extra, opt.name, value, id=f"{header}-{opt.name}-{value[:20]}")
    for header, extra, options in sections()
    for opt in options
    for value in absurd_values(_type_name(header, extra), opt)
]


def config_text(header: str, extra: str, values: dict[str, str]) -> str:
    """BASE plus the section under test."""
    lines = "".join(f"{key} = {value}\n" for key, value in values.items())
    return BASE + f"\n[{header}]\n{extra}{lines}"


def option(options: tuple[Option, ...], name: str) -> Option:
    return next(o for o in options if o.name == name)


def test_every_kind_of_option_is_covered():
    kinds = {opt.kind for _, _, options in sections() for opt in options}
    assert kinds - {"str", "list"} <= set(ABSURD)
    assert len(CASES) > 300


@pytest.mark.parametrize(("header", "extra", "key", "value"), CASES)
def test_absurd_value_is_a_clean_problem_naming_section_and_key(tmp_path, header, extra, key, value):
    path = tmp_path / "routes.ini"
    path.write_text(config_text(header, extra, {key: value}))
    with pytest.raises(ConfigError) as info:
        load_config(path, HOST)
    mine = [p for p in info.value.problems if p.startswith(f"routes.ini: [{header}] {key}: ")]
    assert mine, info.value.problems


@pytest.mark.parametrize("variant", [0, -1], ids=["too-large", "wrong-type"])
@pytest.mark.parametrize(("header", "extra", "options"), [
    pytest.param(*s, id=s[0]) for s in sections() if any(absurd_values(_type_name(s[0], s[1]), o) for o in s[2])
])
def test_check_subprocess_reports_every_key_and_exits_2(tmp_path, header, extra, options, variant):
    """The real `mondemand-server --check`, every option of the section absurd at once."""
    type_name = _type_name(header, extra)
    values = {o.name: absurd_values(type_name, o)[variant] for o in options if absurd_values(type_name, o)}
    path = tmp_path / "routes.ini"
    path.write_text(config_text(header, extra, values))
    result = subprocess.run([str(BIN / "mondemand-server"), "-c", str(path), "--check"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for key in values:
        assert f"routes.ini: [{header}] {key}: " in result.stderr, (key, result.stderr)


# -- the bounds themselves -----------------------------------------------------------


def test_defaults_per_kind_and_the_help_says_so():
    assert Option("d", "duration").maximum == 30 * DAY
    assert Option("s", "size").maximum == TIB
    assert Option("i", "int").maximum == 2**31 - 1 and Option("i", "int").minimum == -(2**31)
    assert Option("d", "duration", help="a period").help == "a period (at most 30d)"
    assert Option("d", "duration", maximum=DAY, help="x").help == "x (at most 1d)"
    assert Option("p", "port").maximum is None and Option("f", "float").maximum is None


def test_every_bounded_option_declared_anywhere_has_a_default_or_own_maximum():
    for header, _, options in sections():
        for opt in options:
            if opt.kind in DEFAULT_MAXIMUM:
                # Only retention-like durations (forget_after) may go past the default, and not past 400 days.
                ceiling = 400 * DAY if opt.kind == "duration" else DEFAULT_MAXIMUM[opt.kind]
                assert opt.maximum is not None and opt.maximum <= ceiling, (header, opt.name)
                assert opt.default is None or opt.default <= opt.maximum, (header, opt.name)
                assert "at most" in opt.help, (header, opt.name)


def test_maximum_message_uses_units():
    with pytest.raises(OptionError, match=r"receive_buffer: must be at most 1GiB \(got '3G'\)"):
        option(HOST.listener_types["lwes-udp"].options, "receive_buffer").convert("3G")
    with pytest.raises(OptionError, match=r"must be at most 1d \(got '10000000000s'\)"):
        option(SERVER_OPTIONS, "stats_interval").convert("10000000000s")
    assert format_value("size", GIB - 1) == "1073741823"
    assert format_value("duration", 0.5) == "500ms"
    assert format_value("duration", 90) == "90s"


@pytest.mark.parametrize(("header", "key", "value", "bound"), [
    ("listener:u", "receive_buffer", "1025MiB", "1GiB"),
    ("server", "stats_interval", "25h", "1d"),
    ("server", "drain_timeout", "2d", "1d"),
    ("server", "memory_budget", "2T", "1TiB"),
    ("server", "worker_queue_bytes", "65GiB", "64GiB"),
    ("backend:b", "queue_bytes", "65GiB", "64GiB"),
    ("listener:h", "max_body", "2G", "1GiB"),
])
def test_documented_bounds(tmp_path, header, key, value, bound):
    extra = {"listener:u": "type = lwes-udp\nport = 0\n", "listener:h": "type = lwes-http\nport = 0\n",
             "backend:b": "type = sink\n"}.get(header, "")
    path = tmp_path / "routes.ini"
    path.write_text(BASE + f"[{header}]\n{extra}{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, HOST)
    assert f"routes.ini: [{header}] {key}: must be at most {bound} (got {value!r})" in info.value.problems


def test_every_size_and_duration_bound_is_in_the_limits_table():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    for header, _, options in sections():
        kind, _, name = header.partition(":")
        label = {"server": "`[server]`", "http": "`[http]`", "alert": "`[alert:NAME]`",
                 "notifier": "`[notifier:NAME]`", "tenant": "`[tenant:NAME]`"}.get(kind) or f"`{name}`"
        if header == "backend:t":
            label = "every backend"
        for opt in options:
            if opt.kind in ("size", "duration"):
                row = f"| {label} | `{opt.name}` | {format_value(opt.kind, opt.maximum)} |"
                assert row in doc, f"docs/configuration.md lacks the row {row}"


def test_largest_receive_buffer_is_accepted_and_opens(tmp_path):
    path = tmp_path / "routes.ini"
    path.write_text(BASE.replace("port = 0\n", "port = 0\nreceive_buffer = 1GiB\n"))
    config = load_config(path, HOST)
    section = config.listeners["base"]
    listener = section.cls("base", section.options, ServerContext())
    listener.start(lambda batch: None)  # setsockopt takes the C int; the kernel grants what it may
    try:
        assert listener.receive_buffer_granted > 0
    finally:
        listener.stop()


def test_a_bad_bool_in_a_route_is_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "routes.ini"
    path.write_text(BASE.replace("backends = base\n", "backends = base\nstop = maybe\n"))
    with pytest.raises(ConfigError) as info:
        load_config(path, HOST)
    assert info.value.problems == ["routes.ini: [route:base] stop: expected true or false (got 'maybe')"]
    result = subprocess.run([str(BIN / "mondemand-server"), "-c", str(path), "--check"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: routes.ini: [route:base] stop: expected true or false (got 'maybe')"
