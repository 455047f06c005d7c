"""`print` backend: one line per event, text or JSON, to a file or standard output."""

from __future__ import annotations

import json
from pathlib import Path

from mondemand.backends.printer import PrintBackend, format_text

from mondemand.envelope import RawEvent
from mondemand.lwes import Event, LwesType, add_headers, encode
from mondemand.options import parse_options
from mondemand.plugin_api import ServerContext
from mondemand.runner import BackendRunner

RECEIPT = 1_700_000_000_123  # 2023-11-14T22:13:20.123Z


def backend(**options: str) -> PrintBackend:
    values, problems = parse_options(PrintBackend.options, options)
    assert problems == []
    return PrintBackend("out", values, ServerContext())


def raw_event(**attrs: object) -> RawEvent:
    event = Event("Demo::Thing")
    for key, value in attrs.items():
        event.set(key, LwesType.STRING if isinstance(value, str) else LwesType.INT64, value)
    return RawEvent(encode(event), RECEIPT, "10.0.0.7", 4242, "main")


def test_json_lines_to_a_file(tmp_path):
    path = tmp_path / "events.jsonl"
    b = backend(path=str(path), format="json")
    b.start()
    b.handle([raw_event(who="alice", n=1), raw_event(who="bob", n=2)])
    b.flush()
    objects = [json.loads(line) for line in path.read_text().splitlines()]
    assert [o["attrs"]["who"] for o in objects] == ["alice", "bob"]
    first = objects[0]
    assert first["name"] == "Demo::Thing"
    assert first["receipt_time"] == RECEIPT
    assert first["sender"] == "10.0.0.7:4242"
    assert first["listener"] == "main"
    assert first["attrs"] == {"who": "alice", "n": 1, "ReceiptTime": RECEIPT, "SenderIP": "10.0.0.7",
                              "SenderPort": 4242}
    b.close()
    assert b.counters() == {"lines": 2}


def test_text_lines_quote_strings_with_spaces():
    line = format_text(raw_event(who="alice smith", empty="", n=3))
    assert line == "2023-11-14T22:13:20.123Z 10.0.0.7:4242 Demo::Thing who='alice smith' empty='' n=3"


def test_text_line_shows_the_headers_a_forwarder_stamped():
    data = add_headers(encode(Event("Fwd").set("n", LwesType.UINT16, 1)), RECEIPT, "10.1.2.3", 34567)
    line = format_text(RawEvent(data, RECEIPT + 5000, "127.0.0.1", 1))
    assert line == "2023-11-14T22:13:20.123Z 10.1.2.3:34567 Fwd n=1"


def test_appends_to_an_existing_file_and_reopens_after_rotation(tmp_path):
    path = tmp_path / "events.log"
    path.write_text("earlier line\n")
    b = backend(path=str(path))
    b.start()
    b.handle([raw_event(n=1)])
    b.flush()
    rotated = tmp_path / "events.log.1"
    path.rename(rotated)
    b.reopen()
    b.handle([raw_event(n=2)])
    b.close()
    assert rotated.read_text().splitlines()[0] == "earlier line"
    assert rotated.read_text().splitlines()[1].endswith(" n=1")
    assert path.read_text().splitlines() == [format_text(raw_event(n=2))]


def test_standard_output_is_the_default_and_is_not_closed(capsys):
    b = backend()
    assert b.config == {"path": "-", "format": "text"}
    b.start()
    b.handle([raw_event(n=9)])
    b.reopen()
    b.close()
    print("still open")
    assert capsys.readouterr().out == format_text(raw_event(n=9)) + "\nstill open\n"


def test_unknown_format_is_refused_by_the_options():
    _, [problem] = parse_options(PrintBackend.options, {"format": "xml"})
    assert (problem.key, problem.message) == ("format", "expected one of text, json (got 'xml')")


def test_undecodable_events_never_reach_it_through_a_runner(tmp_path: Path):
    path = tmp_path / "events.log"
    values, _ = parse_options(PrintBackend.options, {"path": str(path)})
    runner = BackendRunner("out", lambda: PrintBackend("out", values, ServerContext()), linger=0.001)
    broken = RawEvent(b"\x06Broken\x00\x01\x01a\x42", RECEIPT, "10.0.0.7", 1)
    runner.offer_many([raw_event(n=1), broken, raw_event(n=2)])
    runner.start()
    runner.stop(timeout=10)
    assert path.read_text().splitlines() == [format_text(raw_event(n=1)), format_text(raw_event(n=2))]
    assert (runner.processed, runner.decode_errors) == (2, 1)
