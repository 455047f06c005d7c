"""Every reference vector, through the fast codec and the construct spec."""

from __future__ import annotations

from typing import Any

import pytest

from mondemand.lwes import LwesDecodeError, decode, encode, spec
from mondemand.lwes.codec import decode_value
from tests.conftest import load_vectors

VECTORS = load_vectors()
DECODERS = {"fast": decode, "spec": spec.parse_event}
# X4 carries a boolean byte 0x02: every decoder reads it as true, and our
# encoder writes canonical 0x01, so it is the one valid vector that cannot
# re-encode to identical bytes.
NON_CANONICAL = {"X4"}


def by_expectation(*kinds: str) -> list[dict[str, Any]]:
    return [v for v in VECTORS if v["expect"].split(":")[0] in kinds]


def as_triples(event) -> list[list[Any]]:
    return [[k, t.type_name, v] for k, (t, v) in event.attrs.items()]


def test_every_vector_is_classified():
    assert len(VECTORS) >= 30
    assert {v["expect"].split(":")[0] for v in VECTORS} == {"ok", "lax", "err", "frag"}


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("vec", by_expectation("ok"), ids=lambda v: v["id"])
def test_valid_vector_decodes_to_documented_value(vec, decoder):
    event = DECODERS[decoder](bytes.fromhex(vec["hex"]), strict=True)
    assert event.name == vec["name"]
    assert event.declared_count == vec["count"]
    assert as_triples(event) == vec["attrs"]


@pytest.mark.parametrize("vec", by_expectation("ok"), ids=lambda v: v["id"])
def test_valid_vector_reencodes_byte_identical(vec):
    raw = bytes.fromhex(vec["hex"])
    event = decode(raw, strict=True)
    if vec["id"] in NON_CANONICAL:
        assert encode(event) != raw
        assert decode(encode(event)) == event
    else:
        assert encode(event) == raw
        assert spec.build_event(event) == raw


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("vec", by_expectation("lax"), ids=lambda v: v["id"])
def test_lax_vector_fails_strict_and_decodes_lax(vec, decoder):
    raw = bytes.fromhex(vec["hex"])
    with pytest.raises(LwesDecodeError) as info:
        DECODERS[decoder](raw, strict=True)
    assert info.value.kind == ("count-mismatch" if decoder == "fast" else info.value.kind)
    event = DECODERS[decoder](raw)
    assert event.name == vec["name"]
    assert as_triples(event) == vec["attrs"]
    assert event.declared_count == vec["count"]
    assert not event.count_matches


@pytest.mark.parametrize("vec", by_expectation("err"), ids=lambda v: v["id"])
def test_malformed_vector_gives_its_error_class(vec):
    raw = bytes.fromhex(vec["hex"])
    with pytest.raises(LwesDecodeError) as info:
        decode(raw, strict=True)
    assert info.value.kind == vec["expect"].split(":", 1)[1]
    assert 0 <= info.value.offset < len(raw)
    with pytest.raises(LwesDecodeError):
        spec.parse_event(raw, strict=True)


def test_duplicate_lax_keeps_last_value(vectors):
    event = decode(bytes.fromhex(vectors["X3"]["hex"]))
    assert event["a"] == 2
    assert not event.count_matches


def test_long_string_extension_reads_m8_when_enabled(vectors):
    raw = bytes.fromhex(vectors["M8"]["hex"])
    for parse in (decode, spec.parse_event):
        event = parse(raw, long_strings=True, strict=True)
        assert event["s"] == "hi"
        assert event.type_of("s").type_name == "long_string"
    assert encode(decode(raw, long_strings=True)) == raw


def test_enc_zero_first_means_latin1(vectors):
    assert decode(bytes.fromhex(vectors["X5"]["hex"]))["s"] == "Ã©"
    assert decode(bytes.fromhex(vectors["X6"]["hex"]))["s"] == "é"


FRAGMENTS = {
    "R8a": [[123, 5432, 54321], ["foo", "BarBar"]],
    "R8b": [[123, None, 5432, None, 54321, None, None, None, None], [None, "foo", None, "BarBar", None]],
    "R8c": [[None, "test", "should ", "pass"]],
}


@pytest.mark.parametrize("vec", by_expectation("frag"), ids=lambda v: v["id"])
def test_attribute_fragments(vec):
    raw = bytes.fromhex(vec["hex"])
    values, p = [], 0
    while p < len(raw):
        value, p = decode_value(raw, p + 1, raw[p])
        values.append(value)
    assert p == len(raw)
    assert values == FRAGMENTS[vec["id"]]
