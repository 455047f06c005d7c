"""Property tests: the fast codec agrees with the construct spec on everything."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mondemand.lwes import LwesDecodeError, decode, encode, spec
from tests.lwes.strategies import canonical_event, events

FAST = settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(events())
def test_fast_encoder_matches_construct_build(event):
    assert encode(event) == spec.build_event(event)


@FAST
@given(events())
def test_decode_inverts_encode(event):
    raw = encode(event)
    decoded = decode(raw, strict=True, long_strings=True)
    assert decoded == event
    assert decoded.declared_count == len(event)
    assert spec.parse_event(raw, strict=True, long_strings=True) == decoded


def outcome(parse, raw: bytes, **kw):
    try:
        return "ok", canonical_event(parse(raw, **kw))
    except LwesDecodeError:
        return "error", None


@FAST
@given(st.binary(max_size=300), st.booleans(), st.booleans())
def test_arbitrary_bytes_decode_or_fail_cleanly(raw, strict, long_strings):
    # Any other exception type escaping here fails the test.
    assert outcome(decode, raw, strict=strict, long_strings=long_strings) == outcome(
        spec.parse_event, raw, strict=strict, long_strings=long_strings
    )


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A valid datagram cut short, with bytes overwritten, or with junk appended."""
    raw = bytearray(encode(draw(events())))
    for _ in range(draw(st.integers(0, 3))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    raw = raw[: draw(st.integers(0, len(raw)))]
    return bytes(raw) + draw(st.binary(max_size=4))


@FAST
@given(damaged(), st.booleans())
def test_damaged_datagrams_decode_or_fail_cleanly(raw, strict):
    assert outcome(decode, raw, strict=strict, long_strings=True) == outcome(
        spec.parse_event, raw, strict=strict, long_strings=True
    )


@FAST
@given(st.binary(min_size=1, max_size=64))
def test_opaque_string_bytes_survive_a_round_trip(payload):
    # C and Erlang treat strings as bytes: invalid UTF-8 must come back unchanged.
    raw = b"\x01E\x00\x01\x01s\x05" + len(payload).to_bytes(2, "big") + payload
    assert encode(decode(raw)) == raw


COMPILED_COUNTED = spec.LWES_EVENT_COUNTED.compile()


@FAST
@given(events())
def test_compiled_counted_spec_reads_what_the_fast_encoder_writes(event):
    # The benchmark's compiled baseline must parse the same format.
    if any(t.is_nullable or t.base.type_name == "long_string" for t, _ in event.attrs.values()):
        return
    parsed = COMPILED_COUNTED.parse(encode(event))
    assert [a.key.decode("utf-8", "surrogateescape") for a in parsed.attributes] == list(event.attrs)
    assert parsed.count == len(event)
