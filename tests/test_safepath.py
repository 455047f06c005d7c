"""safe_name: every string maps to one harmless, reversible path component."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mondemand.safepath import MAX_NAME_BYTES, UnsafePathError, join_under, safe_name, unsafe_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("web01", "web01"),
        ("my_app-2.1", "my_app-2.1"),
        ("", "%"),
        (".", "%2E"),
        ("..", "%2E."),
        (".hidden", "%2Ehidden"),
        ("a/b", "a%2Fb"),
        ("../../etc/passwd", "%2E.%2F..%2Fetc%2Fpasswd"),
        ("nul\x00byte", "nul%00byte"),
        ("100%", "100%25"),
        ("sp ace", "sp%20ace"),
        ("é", "%C3%A9"),
        ("back\\slash", "back%5Cslash"),
        # ISO-8859-1 "café": 0xE9 is not UTF-8; the decoders keep it as U+DCE9, the file name as %E9.
        (b"caf\xe9".decode("utf-8", "surrogateescape"), "caf%E9"),
        (b"\xff\xfe".decode("utf-8", "surrogateescape"), "%FF%FE"),
    ],
)
def test_known_mappings(name: str, expected: str) -> None:
    assert safe_name(name) == expected
    assert unsafe_name(expected) == name


@given(st.text())
def test_any_text_gives_one_harmless_component(name: str) -> None:
    out = safe_name(name)
    assert out not in ("", ".", "..")
    assert not out.startswith(".")
    assert "/" not in out and "\\" not in out and "\x00" not in out
    assert len(out.encode()) <= MAX_NAME_BYTES
    if "~" not in out:
        assert unsafe_name(out) == name


@given(st.text(), st.text())
def test_distinct_names_stay_distinct(a: str, b: str) -> None:
    if a != b:
        assert safe_name(a) != safe_name(b)


def test_long_names_are_shortened_with_a_hash() -> None:
    a, b = "x" * 300, "x" * 299 + "y"
    assert len(safe_name(a)) == MAX_NAME_BYTES
    assert safe_name(a) != safe_name(b)
    assert safe_name(a).startswith("x" * 100)
    assert "~" in safe_name(a)
    # an escape is never split in half
    out = safe_name("/" * 300)
    assert out.split("~")[0].endswith("%2F")


def test_join_under_stays_inside(tmp_path: Path) -> None:
    path = join_under(tmp_path, "..", "../..", "/etc", "passwd")
    assert path.resolve().is_relative_to(tmp_path.resolve())
    assert path == tmp_path / "%2E." / "%2E.%2F.." / "%2Fetc" / "passwd"


def test_join_under_refuses_a_symlink_escape(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError):
        join_under(tmp_path / "root", "link", "x")


def check_component(out: str) -> None:
    assert out not in ("", ".", "..")
    assert not out.startswith(".")
    assert "/" not in out and "\\" not in out and "\x00" not in out
    assert len(Path(out).parts) == 1
    out.encode("ascii")  # nothing left for a file system to reinterpret


@given(st.binary())
def test_any_byte_string_round_trips(data: bytes) -> None:
    """What the decoders make of any bytes (UTF-8 with surrogateescape) comes back byte for byte."""
    name = data.decode("utf-8", "surrogateescape")
    out = safe_name(name, max_bytes=10 * len(data) + 10)  # long enough never to shorten
    check_component(out)
    assert unsafe_name(out) == name
    assert unsafe_name(out).encode("utf-8", "surrogateescape") == data


@given(st.binary(max_size=400))
def test_any_byte_string_gives_one_component_within_the_limit(data: bytes) -> None:
    name = data.decode("utf-8", "surrogateescape")
    out = safe_name(name)
    check_component(out)
    assert len(out) <= MAX_NAME_BYTES
    if "~" not in out:
        assert unsafe_name(out) == name
