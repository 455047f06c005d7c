"""The `journal` backend: real gzip journals in a temporary directory, rotated and recovered."""

from __future__ import annotations

import gzip
import re
import time

from mondemand.backends.journal import JournalBackend, rotated_name

from mondemand.envelope import RawEvent
from mondemand.journal import JournalReader, JournalRecord, JournalWriter
from mondemand.lwes import Event, LwesType, encode
from tests.backends.files.file_helpers import T0, make_backend

ROTATED = re.compile(r"all_events\.log\.(\d{14})\.(\d{13})\.(\d{13})(-\d+)?\.gz")


def raw(i: int, ip: str = "192.0.2.1", size: int = 0, listener: str = "main") -> RawEvent:
    event = Event("Test::Event").set("i", LwesType.INT32, i)
    if size:
        event.set("blob", LwesType.LONG_STRING, "x" * size)
    return RawEvent(encode(event, max_size=size + 1000), T0 + i, ip, 1000 + i, listener)


def read(path) -> tuple[list[JournalRecord], JournalReader]:
    reader = JournalReader(path)
    return list(reader), reader


def test_every_event_is_journalled_untouched_with_its_receipt_and_sender(tmp_path):
    backend = make_backend(JournalBackend, tmp_path)
    batch = [raw(0), raw(1, ip="2001:db8::5", size=100_000, listener="ingest"), raw(2)]
    backend.handle(batch)
    current = tmp_path / "all_events.log.gz"
    records, reader = read(current)  # readable while still open
    assert reader.status == "truncated"
    assert [(r.data, r.receipt_ms, r.sender_ip, r.sender_port, r.listener) for r in records] == [
        (b.data, b.receipt_ms, b.sender_ip, b.sender_port, b.listener) for b in batch]
    assert len(records[1].data) > 100_000
    backend.close()
    [closed] = tmp_path.iterdir()
    assert ROTATED.fullmatch(closed.name)
    records, reader = read(closed)
    assert len(records) == 3 and reader.status == "complete"
    assert gzip.decompress(closed.read_bytes())  # a whole gzip file for any other tool
    assert backend.counters()["records"] == 3


def test_rotation_after_interval_names_files_with_their_time_range(tmp_path):
    backend = make_backend(JournalBackend, tmp_path, interval="0.2s")
    before = int(time.time() * 1000)
    backend.handle([raw(0), raw(1)])
    time.sleep(0.25)
    backend.flush()  # rotation is due even without traffic
    assert not (tmp_path / "all_events.log.gz").exists()
    backend.handle([raw(2)])
    backend.close()
    after = int(time.time() * 1000)
    files = sorted(tmp_path.iterdir())
    assert len(files) == 2
    contents = []
    for path in files:
        m = ROTATED.fullmatch(path.name)
        assert m, path.name
        start, end = int(m.group(2)), int(m.group(3))
        assert before <= start <= end <= after
        assert m.group(1) == time.strftime("%Y%m%d%H%M%S", time.gmtime(end // 1000))
        records, reader = read(path)
        assert reader.status == "complete"
        contents.append([r.receipt_ms - T0 for r in records])
    assert contents == [[0, 1], [2]]  # names sort in time order
    assert backend.counters()["rotations"] == 2


def test_no_events_no_journal(tmp_path):
    backend = make_backend(JournalBackend, tmp_path, interval="0.1s")
    time.sleep(0.15)
    backend.flush()
    backend.reopen()
    backend.close()
    assert list(tmp_path.iterdir()) == []


def test_reopen_rotates_and_the_name_option_is_used(tmp_path):
    backend = make_backend(JournalBackend, tmp_path, name="colo1", level=1)
    backend.handle([raw(0)])
    first = backend.rotate()
    backend.handle([raw(1)])
    backend.reopen()
    backend.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and all(n.startswith("colo1.") for n in names)
    assert first is not None and first.name in names


def test_a_journal_left_open_by_a_killed_server_is_renamed_not_appended_to(tmp_path):
    leftover = tmp_path / "all_events.log.gz"
    writer = JournalWriter(leftover)
    writer.write(JournalRecord(b"\x01A\x00\x00", 1_600_000_000_000, "10.0.0.1", 1))
    writer.sync()  # never closed: no gzip trailer
    backend = make_backend(JournalBackend, tmp_path)
    [recovered] = tmp_path.iterdir()
    m = ROTATED.fullmatch(recovered.name)
    assert m and int(m.group(2)) == 1_600_000_000_000  # start: the first record's receipt time
    records, reader = read(recovered)
    assert len(records) == 1 and reader.status == "truncated"
    backend.handle([raw(0)])
    backend.close()
    assert len(list(tmp_path.iterdir())) == 2
    assert backend.counters()["recovered"] == 1


def test_an_empty_leftover_is_removed(tmp_path):
    (tmp_path / "all_events.log.gz").write_bytes(b"")
    make_backend(JournalBackend, tmp_path).close()
    assert list(tmp_path.iterdir()) == []


def test_rotated_names_never_overwrite_each_other(tmp_path):
    first = rotated_name("j", 1_700_000_000_000, 1_700_000_060_500, directory=tmp_path)
    (tmp_path / first).write_bytes(b"")
    second = rotated_name("j", 1_700_000_000_000, 1_700_000_060_500, directory=tmp_path)
    assert first == "j.20231114221420.1700000000000.1700000060500.gz"
    assert second == "j.20231114221420.1700000000000.1700000060500-1.gz"
