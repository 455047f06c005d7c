"""Typed section options: every converter, and how problems are reported."""

from __future__ import annotations

import pytest

from mondemand.options import CONVERTERS, Option, OptionError, parse_options, split_list


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        ("str", "  hello world ", "hello world"),
        ("str", "stats-%Y%m%d.log", "stats-%Y%m%d.log"),
        ("int", "42", 42),
        ("int", " -7 ", -7),
        ("int", "0x10", 16),
        ("int", "1_000", 1000),
        ("float", "2.5", 2.5),
        ("float", "1e3", 1000.0),
        ("bool", "true", True),
        ("bool", "Yes", True),
        ("bool", "on", True),
        ("bool", "1", True),
        ("bool", "FALSE", False),
        ("bool", "no", False),
        ("bool", "off", False),
        ("bool", "0", False),
        ("size", "16777216", 16777216),
        ("size", "512k", 512 << 10),
        ("size", "512KB", 512 << 10),
        ("size", "16MiB", 16 << 20),
        ("size", "16 M", 16 << 20),
        ("size", "2g", 2 << 30),
        ("size", "100b", 100),
        ("duration", "60", 60.0),
        ("duration", "60s", 60.0),
        ("duration", "500ms", 0.5),
        ("duration", "1.5s", 1.5),
        ("duration", "5m", 300.0),
        ("duration", "5min", 300.0),
        ("duration", "2h", 7200.0),
        ("duration", "1d", 86400.0),
        ("list", "a, b  c", ["a", "b", "c"]),
        ("list", "rrd,\n  agg,journal", ["rrd", "agg", "journal"]),
        ("list", "  ", []),
        ("port", "0", 0),
        ("port", "20402", 20402),
        ("port", "65535", 65535),
        ("address", "127.0.0.1:20402", ("127.0.0.1", 20402)),
        ("address", "collector.example.com:9191", ("collector.example.com", 9191)),
        ("address", "[::1]:80", ("::1", 80)),
    ],
)
def test_converters_accept_good_values(kind, raw, expected):
    assert Option("key", kind).convert(raw) == expected


@pytest.mark.parametrize(
    ("kind", "raw", "message"),
    [
        ("int", "1.5", "expected an integer"),
        ("int", "ten", "expected an integer"),
        ("float", "fast", "expected a number"),
        ("bool", "maybe", "expected true or false"),
        ("size", "-1", "expected a size"),
        ("size", "1.5M", "expected a size"),
        ("size", "16 parsecs", "expected a size"),
        ("duration", "fast", "expected a duration"),
        ("duration", "5 fortnights", "expected a duration"),
        ("duration", "-5s", "expected a duration"),
        ("port", "65536", "expected a port number"),
        ("port", "-1", "expected a port number"),
        ("port", "http", "expected an integer"),
        ("address", "localhost", "expected host:port"),
        ("address", ":80", "expected host:port"),
        ("address", "localhost:99999", "expected a port number"),
    ],
)
def test_converters_refuse_bad_values_naming_key_and_value(kind, raw, message):
    with pytest.raises(OptionError) as info:
        Option("the_key", kind).convert(raw)
    assert info.value.key == "the_key"
    assert message in info.value.message
    assert str(info.value) == f"the_key: {info.value.message}"
    assert info.value.message.endswith(f"(got {raw.strip()!r})")


def test_every_documented_kind_has_a_converter():
    assert set(CONVERTERS) == {"str", "int", "float", "bool", "size", "duration", "list", "port", "address"}


def test_choices_restrict_the_converted_value():
    opt = Option("format", "str", choices=("text", "json"))
    assert opt.convert(" json ") == "json"
    with pytest.raises(OptionError, match=r"format: expected one of text, json \(got 'xml'\)"):
        opt.convert("xml")


def test_minimum_applies_after_conversion():
    opt = Option("queue_size", "int", minimum=1)
    assert opt.convert("1") == 1
    with pytest.raises(OptionError, match="must be at least 1"):
        opt.convert("0")
    assert Option("interval", "duration", minimum=0.05).convert("50ms") == pytest.approx(0.05)
    with pytest.raises(OptionError, match=r"must be at least 0\.05"):
        Option("interval", "duration", minimum=0.05).convert("10ms")


def test_check_may_refuse_anything_else():
    def even(value: int) -> None:
        if value % 2:
            raise ValueError("expected an even number")

    opt = Option("n", "int", check=even)
    assert opt.convert("4") == 4
    with pytest.raises(OptionError, match=r"n: expected an even number \(got '3'\)"):
        opt.convert("3")


SCHEMA = (
    Option("path", "str", required=True),
    Option("port", "port", 20402),
    Option("verbose", "bool", False),
    Option("tags", "list", ()),
)


def test_parse_options_fills_defaults_and_converts():
    values, problems = parse_options(SCHEMA, {"path": "/tmp/x", "port": "9"})
    assert problems == []
    assert values == {"path": "/tmp/x", "port": 9, "verbose": False, "tags": ()}


def test_parse_options_reports_every_problem_at_once():
    values, problems = parse_options(SCHEMA, {"prot": "9", "verbose": "perhaps", "colour": "red"})
    by_key = {p.key: p.message for p in problems}
    assert set(by_key) == {"prot", "colour", "verbose", "path"}
    assert by_key["prot"] == "unknown option (known: path, port, tags, verbose)"
    assert by_key["colour"].startswith("unknown option")
    assert by_key["verbose"].startswith("expected true or false")
    assert by_key["path"] == "required option missing"
    # What was good is still converted and defaulted.
    assert values == {"port": 20402, "tags": ()}


def test_unknown_key_with_an_empty_schema_says_so():
    _, [problem] = parse_options((), {"anything": "1"})
    assert problem.message == "unknown option (known: none)"


def test_split_list_separates_on_commas_and_whitespace():
    assert split_list("a,b , c\n\td,,e") == ["a", "b", "c", "d", "e"]
    assert split_list("") == []
