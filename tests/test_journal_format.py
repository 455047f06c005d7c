"""The journal record format and its gzip files: round trips, events over 64 KB, IPv6, damage."""

from __future__ import annotations

import gzip
import ipaddress
import struct
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mondemand.journal import (
    HEADER,
    JournalFormatError,
    JournalReader,
    JournalRecord,
    JournalWriter,
    encode_record,
    parse_legacy_records,
    parse_records,
)

ADDRESSES = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.just(""),
)
#: Mostly small events, sometimes well over the 64 KB a u16 size could hold.
DATA = st.one_of(
    st.binary(max_size=300),
    # A short pattern repeated: big events without asking hypothesis for 200 KB of entropy.
    st.tuples(st.binary(min_size=1, max_size=16), st.integers(65_536, 200_000)).map(
        lambda t: (t[0] * (t[1] // len(t[0]) + 1))[: t[1]]
    ),
)
RECORDS = st.builds(
    JournalRecord,
    data=DATA,
    receipt_ms=st.integers(-(1 << 63), (1 << 63) - 1),
    sender_ip=ADDRESSES,
    sender_port=st.integers(0, 0xFFFF),
    listener=st.text(max_size=40),
)


def canonical(record: JournalRecord) -> JournalRecord:
    """What a reader gives back: the address in its canonical spelling."""
    ip = str(ipaddress.ip_address(record.sender_ip)) if record.sender_ip else ""
    return JournalRecord(record.data, record.receipt_ms, ip, record.sender_port, record.listener)


@settings(max_examples=60, deadline=None)
@given(st.lists(RECORDS, max_size=5))
def test_records_round_trip_including_big_events_and_ipv6(records):
    buf = b"".join(encode_record(r) for r in records)
    parsed, end = parse_records(buf)
    assert parsed == [canonical(r) for r in records]
    assert end == len(buf)


@settings(max_examples=60, deadline=None)
@given(st.lists(RECORDS, min_size=1, max_size=4), st.data())
def test_a_cut_buffer_gives_the_complete_records_before_the_cut(records, data):
    encoded = [encode_record(r) for r in records]
    buf = b"".join(encoded)
    cut = data.draw(st.integers(0, len(buf) - 1))
    parsed, end = parse_records(buf[:cut])
    complete = 0
    boundary = 0
    for chunk in encoded:
        if boundary + len(chunk) > cut:
            break
        boundary += len(chunk)
        complete += 1
    assert parsed == [canonical(r) for r in records[:complete]]
    assert end == boundary


def test_header_layout_is_the_documented_36_bytes():
    record = JournalRecord(b"\x01E\x00\x00" + b"x" * 70_000, 1_700_000_000_123, "2001:db8::7", 40_001, "main")
    blob = encode_record(record)
    assert HEADER.size == 36
    assert blob[:2] == b"MJ" and blob[2] == 1 and blob[3] == 6
    assert struct.unpack(">I", blob[4:8])[0] == 70_004
    assert struct.unpack(">q", blob[8:16])[0] == 1_700_000_000_123
    assert blob[16:32] == ipaddress.IPv6Address("2001:db8::7").packed
    assert struct.unpack(">H", blob[32:34])[0] == 40_001
    assert blob[34] == 4 and blob[35] == 0
    assert blob[36:40] == b"main"
    assert blob[40:] == record.data
    v4 = encode_record(JournalRecord(b"e", 1, "10.1.2.3", 9))
    assert v4[3] == 4 and v4[16:32] == bytes([10, 1, 2, 3]) + bytes(12)


def test_bad_values_are_refused_with_a_clear_error():
    with pytest.raises(JournalFormatError, match="port"):
        encode_record(JournalRecord(b"e", 1, "10.0.0.1", 70_000))
    with pytest.raises(JournalFormatError, match="int64"):
        encode_record(JournalRecord(b"e", 1 << 63, "10.0.0.1", 1))
    with pytest.raises(JournalFormatError, match="magic"):
        parse_records(b"XX" + bytes(40))
    with pytest.raises(JournalFormatError, match="version"):
        parse_records(b"MJ\x07" + bytes(40))


def test_a_long_listener_name_is_cut_to_255_bytes_on_a_character_boundary():
    record = JournalRecord(b"e", 1, "", 0, "é" * 200)
    [parsed], _ = parse_records(encode_record(record))
    assert parsed.listener == "é" * 127
    assert parsed.sender_ip == ""


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(RECORDS, max_size=4), min_size=1, max_size=4), st.integers(1, 9))
def test_writer_and_reader_round_trip_through_a_file(batches, level):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "j.gz"
        writer = JournalWriter(path, level)
        for batch in batches:
            for record in batch:
                writer.write(record)
            writer.sync()
        writer.close()
        reader = JournalReader(path, chunk_size=4096)
        assert list(reader) == [canonical(r) for batch in batches for r in batch]
        assert reader.status == "complete" and reader.problem is None
        assert reader.position == reader.size == path.stat().st_size
        # An independent reader agrees that the file is a whole gzip stream.
        assert gzip.decompress(path.read_bytes()) == b"".join(encode_record(r) for b in batches for r in b)


def write_journal(path: Path, records: list[JournalRecord], sync_every: int = 1, close: bool = True) -> None:
    writer = JournalWriter(path)
    for i, record in enumerate(records, 1):
        writer.write(record)
        if i % sync_every == 0:
            writer.sync()
    if close:
        writer.close()


def sample(n: int) -> list[JournalRecord]:
    return [JournalRecord(f"event-{i}".encode() * (1 + i % 7), 1_700_000_000_000 + i, "192.0.2.1", i, "main")
            for i in range(n)]


def test_an_unclosed_journal_reads_up_to_its_last_sync(tmp_path):
    records = sample(50)
    path = tmp_path / "open.gz"
    writer = JournalWriter(path)
    for record in records[:30]:
        writer.write(record)
    writer.sync()
    for record in records[30:]:
        writer.write(record)  # compressed but never synced: as if the process died now
    reader = JournalReader(path)
    assert list(reader) == records[:30]
    assert reader.status == "truncated"
    assert "no end" in reader.problem


def test_every_truncation_point_gives_a_prefix_and_never_raises(tmp_path):
    records = sample(40)
    whole = tmp_path / "whole.gz"
    write_journal(whole, records, sync_every=3)
    data = whole.read_bytes()
    cut_path = tmp_path / "cut.gz"
    seen_counts = set()
    for cut in range(0, len(data), 7):
        cut_path.write_bytes(data[:cut])
        reader = JournalReader(cut_path, chunk_size=64)
        got = list(reader)
        assert got == records[: len(got)]
        assert reader.status == "truncated", (cut, reader.problem)
        seen_counts.add(len(got))
    assert len(seen_counts) > 10  # the cuts really land between many different records


def test_damaged_compressed_data_is_reported_as_corrupt_after_the_good_records(tmp_path):
    records = sample(200)
    path = tmp_path / "j.gz"
    writer = JournalWriter(path)
    for record in records[:100]:
        writer.write(record)
    writer.sync()
    good_size = path.stat().st_size
    for record in records[100:]:
        writer.write(record)
    writer.close()
    data = bytearray(path.read_bytes())
    for i in range(good_size + 5, min(len(data) - 10, good_size + 60)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    reader = JournalReader(path, chunk_size=good_size)
    got = list(reader)
    assert got == records[: len(got)] and len(got) >= 100
    assert reader.status == "corrupt"
    assert reader.problem


def test_a_file_that_is_not_gzip_is_corrupt(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("hello, not a journal\n" * 10)
    reader = JournalReader(path)
    assert list(reader) == []
    assert reader.status == "corrupt"


def test_concatenated_gzip_members_read_as_one_journal(tmp_path):
    records = sample(20)
    first, second = tmp_path / "a.gz", tmp_path / "b.gz"
    write_journal(first, records[:12])
    write_journal(second, records[12:])
    joined = tmp_path / "joined.gz"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    reader = JournalReader(joined, chunk_size=50)
    assert list(reader) == records
    assert reader.status == "complete"


def test_the_writer_never_appends_to_an_existing_journal(tmp_path):
    path = tmp_path / "j.gz"
    write_journal(path, sample(2))
    with pytest.raises(FileExistsError):
        JournalWriter(path)


def legacy_record(data: bytes, ms: int, ip: str, port: int) -> bytes:
    octets = bytes(reversed(ipaddress.IPv4Address(ip).packed))
    return struct.pack(">HQ4sHH4s", len(data), ms, octets, port, 1, bytes(4)) + data


def test_journals_of_the_reference_journallers_are_read_too(tmp_path):
    body = legacy_record(b"\x05Hello\x00\x00", 1_600_000_000_000, "10.20.30.40", 5555)
    body += legacy_record(b"\x03Bye\x00\x00", 1_600_000_000_500, "192.168.1.2", 6)
    parsed, end = parse_legacy_records(body + b"\x00")
    assert end == len(body)
    assert parsed[0] == JournalRecord(b"\x05Hello\x00\x00", 1_600_000_000_000, "10.20.30.40", 5555)
    path = tmp_path / "all_events.log.gz"
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    path.write_bytes(z.compress(body) + z.flush())
    reader = JournalReader(path)  # detected: no MJ magic
    got = list(reader)
    assert [r.sender_ip for r in got] == ["10.20.30.40", "192.168.1.2"]
    assert reader.status == "complete"


def test_an_event_over_64_kb_from_an_ipv6_sender_survives_a_file(tmp_path):
    big = JournalRecord(b"\x0fMonDemand::Big\x00\x00" + bytes(range(256)) * 1000, 1_700_000_000_000,
                        "2001:db8::1", 65_535, "ingest")
    path = tmp_path / "j.gz"
    write_journal(path, [big, *sample(3)])
    reader = JournalReader(path)
    got = list(reader)
    assert got[0] == big and len(got[0].data) > 0xFFFF
    assert got[1:] == sample(3)
    assert reader.status == "complete"
