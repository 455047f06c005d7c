"""ESF parsing, error reporting and event validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mondemand.lwes import EsfError, Event, LwesType, ValidationError
from mondemand.lwes.esf import EsfAttribute, EsfDatabase, EsfEventDef, load_esf, parse_esf

EXAMPLE_ESF = Path(__file__).resolve().parents[2] / "examples" / "mondemand.esf"

# Realistic file: comments everywhere, MetaEventInfo between two events,
# arrays (bounded and unbounded), nullable arrays and every kind of default.
REALISTIC = """\
# Ad server events
Ad::Click {   # a click
    required string  campaign-id;     # '-' is allowed in names
    optional uint32  cost = 4294967295;
    int16            delta = -32768;
    nullable int32   slots[8];
    string           tags[];
    boolean          billable = true;
    double           ratio = 0.25;
    float            score = -1.5e3;
    ip_addr          origin = 10.0.0.1;
    string           note = "say \\"hi\\"\\n";
    long_string      body;
    byte             flags = 255;
}

MetaEventInfo {
    ip_addr SenderIP;
    uint16  SenderPort;
    int64   ReceiptTime;
    int16   enc;
    required uint16 SiteID;
}

Ad::Empty { }
my.app:event_2 {
    uint64 big = 18446744073709551615;
    required nullable string names[4];
}
"""


@pytest.fixture
def db() -> EsfDatabase:
    return parse_esf(REALISTIC, "ads.esf")


def error_position(excinfo: pytest.ExceptionInfo[EsfError], source: str = "<esf>") -> tuple[int, int]:
    """The (line, column) an EsfError message points at."""
    match = re.match(rf"{re.escape(source)}:(\d+):(\d+): ", str(excinfo.value))
    assert match, f"no source:line:column prefix in {excinfo.value}"
    return int(match.group(1)), int(match.group(2))


# ---------------------------------------------------------------- parsing


def test_events_are_parsed_and_meta_is_kept_apart(db):
    assert list(db.events) == ["Ad::Click", "Ad::Empty", "my.app:event_2"]
    assert "MetaEventInfo" not in db.events
    assert db.meta is not None
    assert db.meta.name == "MetaEventInfo"
    assert list(db.meta.attributes) == ["SenderIP", "SenderPort", "ReceiptTime", "enc", "SiteID"]
    assert db.events["Ad::Empty"] == EsfEventDef("Ad::Empty", {})


def test_scalar_attributes_and_qualifiers(db):
    click = db.events["Ad::Click"].attributes
    assert click["campaign-id"] == EsfAttribute("campaign-id", LwesType.STRING, True, False, None, None)
    assert click["cost"].required is False
    assert click["delta"].required is False
    assert click["body"].type is LwesType.LONG_STRING
    assert db.meta.attributes["SiteID"].required is True


def test_arrays_and_nullable_arrays(db):
    click = db.events["Ad::Click"].attributes
    assert click["slots"] == EsfAttribute("slots", LwesType.NULLABLE_INT32_ARRAY, False, True, 8, None)
    assert click["tags"].type is LwesType.STRING_ARRAY
    assert click["tags"].max_size is None
    assert click["tags"].nullable is False
    names = db.events["my.app:event_2"].attributes["names"]
    assert (names.type, names.required, names.nullable, names.max_size) == (
        LwesType.NULLABLE_STRING_ARRAY,
        True,
        True,
        4,
    )


def test_defaults_are_typed_values(db):
    click = db.events["Ad::Click"].attributes
    defaults = {name: attr.default for name, attr in click.items()}
    assert defaults == {
        "campaign-id": None,
        "cost": 4294967295,
        "delta": -32768,
        "slots": None,
        "tags": None,
        "billable": True,
        "ratio": 0.25,
        "score": -1500.0,
        "origin": "10.0.0.1",
        "note": 'say "hi"\n',
        "body": None,
        "flags": 255,
    }
    assert db.events["my.app:event_2"].attributes["big"].default == 2**64 - 1


def test_remaining_default_forms():
    db = parse_esf('E { boolean off = false; ip_addr gw = "192.168.1.254"; double whole = 3; float f = .5; }')
    attrs = db.events["E"].attributes
    assert attrs["off"].default is False
    assert attrs["gw"].default == "192.168.1.254"
    assert attrs["whole"].default == 3.0
    assert isinstance(attrs["whole"].default, float)
    assert attrs["f"].default == 0.5


def test_modifiers_in_either_order():
    db = parse_esf("E { nullable required int16 a[2]; optional nullable byte b[]; }")
    a, b = db.events["E"].attributes.values()
    assert (a.type, a.required, a.nullable) == (LwesType.NULLABLE_INT16_ARRAY, True, True)
    assert (b.type, b.required, b.nullable) == (LwesType.NULLABLE_BYTE_ARRAY, False, True)


def test_empty_and_comment_only_files():
    assert parse_esf("") == EsfDatabase(events={}, meta=None)
    assert parse_esf("# nothing\n   # here\n").events == {}


def test_attributes_may_be_named_like_keywords():
    db = parse_esf("E { string string; int32 required; uint16 nullable; }")
    assert {n: a.type for n, a in db.events["E"].attributes.items()} == {
        "string": LwesType.STRING,
        "required": LwesType.INT32,
        "nullable": LwesType.UINT16,
    }


def test_example_mondemand_esf_parses():
    db = load_esf(EXAMPLE_ESF)
    assert set(db.events) == {
        "MonDemand::StatsMsg",
        "MonDemand::LogMsg",
        "MonDemand::TraceMsg",
        "MonDemand::PerfMsg",
        "MonDemand::AnnotationMsg",
    }
    assert db.meta is not None
    assert {n: a.type for n, a in db.meta.attributes.items()} == {
        "SenderIP": LwesType.IP_ADDR,
        "SenderPort": LwesType.UINT16,
        "ReceiptTime": LwesType.INT64,
        "enc": LwesType.INT16,
        "SiteID": LwesType.UINT16,
    }
    stats = db.events["MonDemand::StatsMsg"].attributes
    assert stats["num"].type is LwesType.UINT16
    assert stats["prog_id"].required
    assert stats["collect_time"].type is LwesType.INT64
    assert db.events["MonDemand::TraceMsg"].attributes["mondemand.trace_id"].type is LwesType.STRING


def test_example_esf_checks_the_fixed_part_of_a_stats_event():
    db = load_esf(EXAMPLE_ESF)
    event = Event("MonDemand::StatsMsg")
    event.set("prog_id", LwesType.STRING, "demo").set("num", LwesType.UINT16, 1)
    event.set("ReceiptTime", LwesType.INT64, 1700000000123)
    assert db.problems(event) == []
    # Indexed attributes cannot be declared in ESF; the example says so.
    event.set("k0", LwesType.STRING, "requests")
    assert db.problems(event) == ["unknown attribute k0"]


def test_load_esf_from_file(tmp_path):
    path = tmp_path / "routes.esf"
    path.write_text("# routes\nRoute {\n  required string dest;\n}\n", encoding="utf-8")
    db = load_esf(path)
    assert db.events["Route"].attributes["dest"].required
    assert load_esf(str(path)) == db


def test_load_esf_names_the_file_in_errors(tmp_path):
    path = tmp_path / "routes.esf"
    path.write_text("Route {\n  string dest\n}\n")
    with pytest.raises(EsfError) as excinfo:
        load_esf(path)
    assert error_position(excinfo, str(path)) == (3, 1)
    assert "expected ';' after attribute name" in str(excinfo.value)


def test_load_esf_rejects_invalid_utf8(tmp_path):
    path = tmp_path / "bad.esf"
    path.write_bytes(b"E { string s; } # caf\xe9\n")
    with pytest.raises(EsfError, match=r"bad\.esf: not valid UTF-8 at byte 21"):
        load_esf(path)


# ---------------------------------------------------------------- errors

ERROR_CASES = [
    # (source text, line, column, message fragment)
    ("E {\n  int32 x\n}", 3, 1, "expected ';' after attribute name, got '}'"),
    ("E {\n  int32 x = 5\n}", 3, 1, "expected ';' after default value"),
    ("E {\n  int32 x;\n", 3, 1, "expected an attribute or '}' to close event 'E', got end of file"),
    ("E\n  int32 x;", 2, 3, "expected '{' after event name 'E', got 'int32'"),
    ("# c\n{ }", 2, 1, "expected an event name, got '{'"),
    ("E {\n  integer x;\n}", 2, 3, "unknown type 'integer'"),
    ("E {\n  int32 ;\n}", 2, 9, "expected an attribute name after type 'int32', got ';'"),
    ("E {\n  int32 5x;\n}", 2, 9, "expected an attribute name"),
    ("E {\n  required;\n}", 2, 11, "expected a type name, got ';'"),
    ("E {\n  required optional int32 x;\n}", 2, 12, "at most one qualifier"),
    ("E {\n  nullable nullable int32 x[];\n}", 2, 12, "'nullable' given twice"),
    ("E {\n  int32 a;\n  nullable int32 x;\n}", 3, 3, "'nullable' is only valid for arrays"),
    ("E {\n  int32 x[4;\n}", 2, 12, "expected ']' to close the array size, got ';'"),
    ("E {\n  int32 x[y];\n}", 2, 11, "expected an array size or ']'"),
    ("E {\n  int32 x[0];\n}", 2, 11, "array size 0 out of range"),
    ("E {\n  int32 x[70000];\n}", 2, 11, "array size 70000 out of range"),
    ("E {\n  long_string x[2];\n}", 2, 16, "long_string cannot be an array"),
    ("E {\n  int32 x[2] = 1;\n}", 2, 14, "array attribute 'x' cannot have a default"),
    ("E {\n  int16 x = 32768;\n}", 2, 13, "32768 is out of range -32768..32767"),
    ("E {\n  uint16 x = -1;\n}", 2, 14, "-1 is out of range 0..65535"),
    ("E {\n  uint64 x = 18446744073709551616;\n}", 2, 14, "out of range"),
    ("E {\n  byte x = 256;\n}", 2, 12, "out of range 0..255"),
    ("E {\n  int32 x = 1.5;\n}", 2, 13, "expected an integer, got '1.5'"),
    ("E {\n  int32 x = true;\n}", 2, 13, "expected an integer"),
    ("E {\n  double x = yes;\n}", 2, 14, "expected a number"),
    ("E {\n  float x = 1e39;\n}", 2, 13, "does not fit in a float"),
    ("E {\n  boolean x = 1;\n}", 2, 15, "expected true or false, got '1'"),
    ("E {\n  string x = hello;\n}", 2, 14, "expected a quoted string, got 'hello'"),
    ("E {\n  ip_addr x = 10.0.0.256;\n}", 2, 15, "expected a dotted IPv4 address"),
    ('E {\n  string x = "a\\qb";\n}', 2, 16, "unknown escape"),
    ('E {\n  string x = "open;\n}', 2, 14, "unterminated string"),
    ("E {\n  int32 x = ;\n}", 2, 13, "expected a default value for 'x', got ';'"),
    ("E {\n  int32 $x;\n}", 2, 9, "unexpected character '$'"),
    ("E {\n  int32 x;\n  string x;\n}", 3, 10, "duplicate attribute 'x' in event 'E' (first declared on line 2)"),
    ("E { }\n\n# again\nE { }", 4, 1, "duplicate event 'E' (first defined on line 1)"),
    ("MetaEventInfo { }\nMetaEventInfo { }", 2, 1, "duplicate event 'MetaEventInfo'"),
]


@pytest.mark.parametrize(("text", "line", "column", "fragment"), ERROR_CASES)
def test_parse_errors_name_source_line_and_column(text, line, column, fragment):
    with pytest.raises(EsfError) as excinfo:
        parse_esf(text, "routes.esf")
    assert error_position(excinfo, "routes.esf") == (line, column)
    assert fragment in str(excinfo.value)


def test_default_source_name():
    with pytest.raises(EsfError, match=r"^<esf>:1:5: "):
        parse_esf("E { x }")


# ---------------------------------------------------------------- validation


def click_event() -> Event:
    """An Ad::Click that satisfies the realistic ESF, headers included."""
    event = Event("Ad::Click")
    event.set("campaign-id", LwesType.STRING, "c-1")
    event.set("slots", LwesType.NULLABLE_INT32_ARRAY, [1, None, 3])
    event.set("tags", LwesType.STRING_ARRAY, ["a"] * 100)
    event.set("SiteID", LwesType.UINT16, 7)
    return event


def test_valid_event_has_no_problems(db):
    event = click_event()
    assert db.problems(event) == []
    db.validate(event)  # must not raise


def test_meta_event_info_attributes_are_accepted(db):
    event = click_event()
    event.set("ReceiptTime", LwesType.INT64, 1700000000123)
    event.set("SenderIP", LwesType.IP_ADDR, "10.1.2.3")
    event.set("SenderPort", LwesType.UINT16, 34567)
    event.set("enc", LwesType.INT16, 1)
    assert db.problems(event) == []
    assert db.lookup("Ad::Click", "SenderIP") == db.meta.attributes["SenderIP"]


def test_unknown_event(db):
    with pytest.raises(ValidationError) as excinfo:
        db.validate(Event("Ad::View", {"SiteID": (LwesType.UINT16, 1)}))
    assert excinfo.value.event_name == "Ad::View"
    assert excinfo.value.problems == ["unknown event Ad::View"]


def test_meta_event_info_is_not_an_event(db):
    assert db.problems(Event("MetaEventInfo")) == ["unknown event MetaEventInfo"]


def test_unknown_attribute(db):
    event = click_event().set("clicks", LwesType.INT32, 3)
    assert db.problems(event) == ["unknown attribute clicks"]


def test_wrong_type(db):
    event = click_event().set("cost", LwesType.STRING, "12")
    assert db.problems(event) == ["cost: expected uint32, got string"]


def test_nullable_and_plain_arrays_are_different_types(db):
    event = click_event().set("slots", LwesType.INT32_ARRAY, [1, 2])
    assert db.problems(event) == ["slots: expected nullable int32[], got int32[]"]


def test_header_attribute_with_wrong_type(db):
    event = click_event().set("ReceiptTime", LwesType.UINT64, 5)
    assert db.problems(event) == ["ReceiptTime: expected int64, got uint64"]


def test_header_attributes_need_a_declaration():
    db = parse_esf("E { int32 x; }")
    event = Event("E").set("x", LwesType.INT32, 1).set("ReceiptTime", LwesType.INT64, 1)
    assert db.problems(event) == ["unknown attribute ReceiptTime"]


def test_missing_required_including_meta(db):
    event = Event("Ad::Click").set("cost", LwesType.UINT32, 1)
    assert db.problems(event) == [
        "missing required attribute campaign-id",
        "missing required attribute SiteID",
    ]


def test_array_too_long(db):
    event = click_event().set("slots", LwesType.NULLABLE_INT32_ARRAY, [None] * 9)
    problems = db.problems(event)
    assert len(problems) == 1
    assert problems[0].startswith("slots: 9 elements")
    assert "maximum of 8" in problems[0]
    event.set("slots", LwesType.NULLABLE_INT32_ARRAY, [None] * 8)
    assert db.problems(event) == []


def test_validate_lists_every_problem(db):
    event = Event("Ad::Click")
    event.set("cost", LwesType.INT64, 1)
    event.set("bogus", LwesType.BOOLEAN, True)
    event.set("slots", LwesType.NULLABLE_INT32_ARRAY, list(range(10)))
    with pytest.raises(ValidationError) as excinfo:
        db.validate(event)
    assert excinfo.value.problems == [
        "cost: expected uint32, got int64",
        "unknown attribute bogus",
        "slots: 10 elements, more than the declared maximum of 8",
        "missing required attribute campaign-id",
        "missing required attribute SiteID",
    ]
    assert str(excinfo.value).startswith("Ad::Click: cost: expected uint32")


def test_event_declaration_overrides_meta():
    db = parse_esf("MetaEventInfo { required uint16 SiteID; }\nE { optional uint32 SiteID; }\nF { }")
    assert db.lookup("E", "SiteID").type is LwesType.UINT32
    assert db.problems(Event("E")) == []
    assert db.problems(Event("F")) == ["missing required attribute SiteID"]
    assert db.problems(Event("E").set("SiteID", LwesType.UINT16, 1)) == ["SiteID: expected uint32, got uint16"]


def test_lookup(db):
    assert db.lookup("Ad::Click", "cost").type is LwesType.UINT32
    assert db.lookup("Ad::Click", "nope") is None
    assert db.lookup("Ad::Empty", "enc").type is LwesType.INT16
    assert db.lookup("Ad::View", "enc") is None
    assert db.lookup("MetaEventInfo", "SiteID").required
    assert parse_esf("E { }").lookup("E", "enc") is None


def test_meta_after_events_still_applies():
    db = parse_esf("E { int32 x; }\nMetaEventInfo { int64 ReceiptTime; }")
    event = Event("E").set("x", LwesType.INT32, 1).set("ReceiptTime", LwesType.INT64, 2)
    assert db.problems(event) == []


def test_definitions_are_frozen(db):
    attr = db.events["Ad::Click"].attributes["cost"]
    with pytest.raises(AttributeError):
        attr.required = True  # type: ignore[misc]
