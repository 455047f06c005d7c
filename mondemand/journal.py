"""The journal file format: every raw event with when and from where it arrived, gzip-compressed.

A journal is one gzip stream of records. Each record is a 36-byte header, the
listener name and the untouched event bytes (docs/journal.md has the byte
table). Unlike the 22-byte header of the C and Erlang journallers, it holds
events of any size up to 4 GiB and IPv6 senders, and it keeps the receipt time
rather than the write time.

`JournalWriter` compresses records into one stream and flushes it with
`Z_SYNC_FLUSH` at every `sync()`, so a writer killed at any moment leaves a
file whose records up to the last sync are readable. `JournalReader` reads
such a file and stops cleanly at a missing gzip trailer, a cut deflate block
or a truncated final record, and says which (`status`, `problem`). It also
reads journals of the reference journallers (`fmt="lwes"`, or detected).
"""

from __future__ import annotations

import ipaddress
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "HEADER",
    "LEGACY_HEADER",
    "MAGIC",
    "VERSION",
    "JournalFormatError",
    "JournalReader",
    "JournalRecord",
    "JournalWriter",
    "encode_record",
    "parse_legacy_records",
    "parse_records",
]

MAGIC = b"MJ"
VERSION = 1
#: magic, version, address family, event size, receipt ms, address, port, listener name length, reserved.
HEADER = struct.Struct(">2sBBIq16sHBB")
#: The reference journallers' record header: size, time ms, reversed IPv4, port, site id, padding.
LEGACY_HEADER = struct.Struct(">HQ4sHH4s")
MAX_EVENT_SIZE = 0xFFFFFFFF
MAX_LISTENER_BYTES = 0xFF

_FAMILY_NONE, _FAMILY_V4, _FAMILY_V6 = 0, 4, 6
_GZIP_WBITS = 31  # zlib: gzip wrapper, 32 KiB window

Format = Literal["auto", "mondemand", "lwes"]
Parser = Callable[[bytearray], tuple[list["JournalRecord"], int]]


class JournalFormatError(ValueError):
    """Bytes that are not a journal record where one should start, or a record that cannot be written."""


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One journalled event: the datagram as received and what the listener saw.

    `sender_ip` is "" when the sender had no IP address the header can hold.
    """

    data: bytes
    receipt_ms: int
    sender_ip: str
    sender_port: int
    listener: str = ""


def _pack_address(ip: str) -> tuple[int, bytes]:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return _FAMILY_NONE, bytes(16)
    if address.version == 4:
        return _FAMILY_V4, address.packed + bytes(12)
    return _FAMILY_V6, address.packed


def _unpack_address(family: int, packed: bytes) -> str:
    if family == _FAMILY_V4:
        return str(ipaddress.IPv4Address(packed[:4]))
    if family == _FAMILY_V6:
        return str(ipaddress.IPv6Address(packed))
    return ""


def encode_record(record: JournalRecord) -> bytes:
    """The header, listener name and event bytes of `record`; JournalFormatError when it cannot be held."""
    size = len(record.data)
    if size > MAX_EVENT_SIZE:
        raise JournalFormatError(f"an event of {size} bytes is over the journal's limit of {MAX_EVENT_SIZE}")
    if not 0 <= record.sender_port <= 0xFFFF:
        raise JournalFormatError(f"sender port {record.sender_port} is not 0..65535")
    if not -(1 << 63) <= record.receipt_ms < 1 << 63:
        raise JournalFormatError(f"receipt time {record.receipt_ms} does not fit in an int64")
    listener = record.listener.encode("utf-8", "replace")
    if len(listener) > MAX_LISTENER_BYTES:
        listener = listener[:MAX_LISTENER_BYTES].decode("utf-8", "ignore").encode("utf-8")
    family, address = _pack_address(record.sender_ip)
    header = HEADER.pack(MAGIC, VERSION, family, size, record.receipt_ms, address, record.sender_port,
                         len(listener), 0)
    return b"".join((header, listener, record.data))


def parse_records(buf: bytes | bytearray | memoryview, start: int = 0) -> tuple[list[JournalRecord], int]:
    """The complete records in `buf` from `start`, and the offset after the last one.

    Bytes after that offset are the beginning of a record not complete yet.
    Raises JournalFormatError where a record should start but the header is wrong.
    """
    records: list[JournalRecord] = []
    pos = start
    size_of = HEADER.size
    with memoryview(buf) as view:  # released on return, so that a bytearray `buf` can be resized
        end = len(view)
        while end - pos >= size_of:
            magic, version, family, size, receipt_ms, address, port, name_len, _ = HEADER.unpack_from(view, pos)
            if magic != MAGIC:
                raise JournalFormatError(f"no record magic at offset {pos} (found {bytes(magic)!r})")
            if version != VERSION:
                raise JournalFormatError(f"record at offset {pos} has version {version}; this reader knows {VERSION}")
            if family not in (_FAMILY_NONE, _FAMILY_V4, _FAMILY_V6):
                raise JournalFormatError(f"record at offset {pos} has address family {family}")
            body = pos + size_of + name_len
            if body + size > end:
                break
            listener = bytes(view[pos + size_of : body]).decode("utf-8", "replace")
            records.append(JournalRecord(bytes(view[body : body + size]), receipt_ms,
                                         _unpack_address(family, address), port, listener))
            pos = body + size
    return records, pos


def parse_legacy_records(buf: bytes | bytearray | memoryview, start: int = 0) -> tuple[list[JournalRecord], int]:
    """Like `parse_records`, for the 22-byte header of the C and Erlang journallers (IPv4 stored reversed)."""
    records: list[JournalRecord] = []
    pos = start
    size_of = LEGACY_HEADER.size
    with memoryview(buf) as view:
        end = len(view)
        while end - pos >= size_of:
            size, ms, ip, port, _site, _pad = LEGACY_HEADER.unpack_from(view, pos)
            body = pos + size_of
            if body + size > end:
                break
            records.append(JournalRecord(bytes(view[body : body + size]), ms, f"{ip[3]}.{ip[2]}.{ip[1]}.{ip[0]}",
                                         port))
            pos = body + size
    return records, pos


class JournalWriter:
    """Write records into a new gzip journal at `path` (created exclusively: never appended to).

    `write` compresses into memory; `sync` flushes the compressor with
    Z_SYNC_FLUSH and hands everything to the OS in one write, so the file is
    readable up to the last sync even if the process dies. `close` ends the
    gzip stream (trailer and CRC), fsyncs and closes.
    """

    #: `os.write`; tests replace it to make the real descriptor fail (a full disk)
    write_fn: Callable[[int, memoryview], int] = staticmethod(os.write)

    def __init__(self, path: str | os.PathLike[str], level: int = 6) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        self._z = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
        self._pending: list[bytes] = []
        self.records = 0
        self.raw_bytes = 0
        self.written = 0
        self.first_ms: int | None = None
        self.last_ms: int | None = None

    @property
    def closed(self) -> bool:
        """True after `close`."""
        return self._fd < 0

    def write(self, record: JournalRecord) -> None:
        """Add one record (not on disk until `sync`)."""
        data = encode_record(record)
        out = self._z.compress(data)
        if out:
            self._pending.append(out)
        self.records += 1
        self.raw_bytes += len(data)
        if self.first_ms is None:
            self.first_ms = record.receipt_ms
        self.last_ms = record.receipt_ms

    def sync(self) -> int:
        """Flush the compressor and write everything pending; returns the compressed bytes written."""
        if self._fd < 0:
            raise ValueError(f"journal {self.path} is closed")
        self._pending.append(self._z.flush(zlib.Z_SYNC_FLUSH))
        return self._write_pending()

    def close(self) -> None:
        """End the gzip stream, write, fsync and close; closing twice is harmless.

        When that fails (a full disk), the file is cut back to its last sync and closed: readable up to there.
        """
        if self._fd < 0:
            return
        try:
            self._pending.append(self._z.flush(zlib.Z_FINISH))
            self._write_pending()
            os.fsync(self._fd)
        except OSError:
            self.abandon()
            raise
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def abandon(self) -> None:
        """Give up the file after a failed write: truncate it to its last complete sync and close it.

        The file then reads (`JournalReader`) up to the last record `sync` wrote, without a trailer, like the
        journal of a killed server; records written since are not in it (the caller still has them).
        """
        if self._fd < 0:
            return
        self._pending.clear()
        try:
            os.ftruncate(self._fd, self.written)
        finally:
            os.close(self._fd)
            self._fd = -1

    def _write_pending(self) -> int:
        data = memoryview(b"".join(self._pending))
        self._pending.clear()
        total = len(data)
        write = self.write_fn
        while data:
            n = write(self._fd, data)
            data = data[n:]
        self.written += total
        return total


class JournalReader:
    """Iterate over the records of one journal file, stopping cleanly at damage.

    After iterating, `status` is "complete" (the gzip stream ended properly and
    no bytes were left over), "truncated" (the stream or the last record was
    cut short, as a killed writer leaves it; every complete record before was
    returned) or "corrupt" (undecodable data; the records before it were
    returned). `problem` describes anything but "complete". `position` is the
    number of compressed bytes consumed so far (for progress) and `size` the
    file's size. Several gzip members one after another are read as one stream.
    """

    def __init__(self, path: str | os.PathLike[str], fmt: Format = "auto", chunk_size: int = 1 << 20) -> None:
        self.path = Path(path)
        self.fmt: Format = fmt
        self.chunk_size = chunk_size
        self.size = self.path.stat().st_size
        self.position = 0
        self.records = 0
        self.status = "complete"
        self.problem: str | None = None

    def __iter__(self) -> Iterator[JournalRecord]:
        buf = bytearray()
        parse: Parser | None = None
        z = zlib.decompressobj(_GZIP_WBITS)
        stream_ended = False
        with self.path.open("rb") as fh:
            while True:
                chunk = fh.read(self.chunk_size)
                if not chunk:
                    break
                self.position += len(chunk)
                try:
                    out, stream_ended, z = _decompress(z, chunk)
                except zlib.error as exc:
                    self._set("corrupt", f"compressed data is damaged near byte {self.position}: {exc}")
                    out = b""
                buf += out
                if parse is None and len(buf) >= 3:
                    parse = self._parser(buf)
                if parse is not None:
                    try:
                        records, used = parse(buf)
                    except JournalFormatError as exc:
                        self._set("corrupt", str(exc))
                        return
                    del buf[:used]
                    self.records += len(records)
                    yield from records
                if self.status == "corrupt":
                    return
        if parse is None and buf:
            parse = self._parser(buf)
        if parse is not None and buf:
            try:
                records, used = parse(buf)
            except JournalFormatError as exc:
                self._set("corrupt", str(exc))
                return
            del buf[:used]
            self.records += len(records)
            yield from records
        if not stream_ended:
            self._set("truncated", "the gzip stream has no end (the writer did not close it); "
                      f"read up to the last complete record ({self.records} records)")
        if buf:
            self._set("truncated", f"the last record is incomplete ({len(buf)} bytes dropped)")

    def _parser(self, head: bytes | bytearray) -> Parser:
        fmt = self.fmt
        if fmt == "auto":
            fmt = "mondemand" if bytes(head[:3]) == MAGIC + bytes((VERSION,)) else "lwes"
        return parse_records if fmt == "mondemand" else parse_legacy_records

    def _set(self, status: str, problem: str) -> None:
        if status == "corrupt" or self.status == "complete":
            self.status = status
        self.problem = problem if self.problem is None else f"{self.problem}; {problem}"


def _decompress(z: Any, chunk: bytes) -> tuple[bytes, bool, Any]:
    """Decompress `chunk`, starting a new decompressor at each further gzip member.

    Returns (output, whether the data ends exactly at the end of a member, the decompressor to use next).
    """
    parts = [z.decompress(chunk)]
    while z.eof:
        rest = z.unused_data
        z = zlib.decompressobj(_GZIP_WBITS)
        if not rest:
            return b"".join(parts), True, z
        parts.append(z.decompress(rest))
    return b"".join(parts), False, z
