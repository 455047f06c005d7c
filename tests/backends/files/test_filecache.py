"""`FileCache`: real descriptors on real files."""

from __future__ import annotations

import time

from mondemand.backends.files.filecache import FileCache


def test_appends_create_directories_and_keep_the_descriptor(tmp_path):
    cache = FileCache()
    path = tmp_path / "a" / "b" / "c.txt"
    cache.append(path, b"one\n")
    cache.append(path, b"two\n")
    assert path.read_bytes() == b"one\ntwo\n"  # in the file at once: no user-space buffer
    assert cache.opens == 1 and len(cache) == 1 and path in cache
    cache.close()
    assert len(cache) == 0


def test_at_most_max_open_descriptors_least_recently_written_closed_first(tmp_path):
    cache = FileCache(max_open=2)
    a, b, c = (tmp_path / n for n in "abc")
    cache.append(a, b"1")
    cache.append(b, b"1")
    cache.append(a, b"2")
    cache.append(c, b"1")  # b is the least recently written
    assert a in cache and c in cache and b not in cache
    cache.append(b, b"2")
    assert b.read_bytes() == b"12" and cache.opens == 4
    cache.close()


def test_idle_descriptors_are_closed(tmp_path):
    cache = FileCache(idle_timeout=30)
    cache.append(tmp_path / "x", b"1")
    assert cache.close_idle() == 0
    assert cache.close_idle(now=time.monotonic() + 31) == 1
    assert len(cache) == 0 and cache.closes == 1


def test_reopen_follows_a_moved_file(tmp_path):
    cache = FileCache()
    path = tmp_path / "log"
    cache.append(path, b"before\n")
    path.rename(tmp_path / "log.1")
    cache.append(path, b"still old\n")
    cache.reopen()
    cache.append(path, b"after\n")
    assert (tmp_path / "log.1").read_bytes() == b"before\nstill old\n"
    assert path.read_bytes() == b"after\n"
