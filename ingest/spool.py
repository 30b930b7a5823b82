"""The ingestor's local spool: an on-disk, append-only, checksummed FIFO of byte records.

The ingestor may acknowledge an MQTT message only once its readings are durable. When
InfluxDB is unreachable, "durable" means "appended to this spool and fsynced"; a replay
thread later drains the spool into InfluxDB in order while new data keeps flowing. This
module owns that directory and nothing else: the segment files, the read position, the
recovery after a crash, and the accounting (depth, bound, damage counters). What a record
*contains* (line protocol, batching) is the caller's business.

Guarantees
----------
- When `Spool.append` returns, the record has been written and ``fsync``-ed (and, when it
  opened a new segment file, so has the directory), so it survives ``kill -9`` and power loss
  as far as ``fsync`` promises. When it raises, the record must be treated as NOT stored.
- Nothing is dropped silently: a full spool raises `SpoolFullError` instead of discarding,
  and every record lost to on-disk damage is logged at ERROR and counted in
  `Spool.corrupt_records`.
- Records come out in append order (FIFO). `Spool.peek` returns the oldest record not yet
  committed; `Spool.commit` consumes exactly that record. After a default (durable) commit
  returns, the record is never returned again, even after a crash. ``commit(record,
  durable=False)`` defers the position write to `Spool.sync` / `Spool.close`: a crash in
  between replays those records again (at-least-once; InfluxDB writes are idempotent).
- Thread-safe: one lock guards all state, so several threads may `append` while one replay
  thread calls `peek`/`commit`. One process at a time: the directory is locked with
  ``flock`` and a second opener gets `SpoolError`.
- The bound ``max_bytes`` applies to unconsumed bytes (`Spool.depth_bytes`, headers
  included). On disk there may additionally be the consumed front of the oldest segment
  (at most about ``segment_bytes``) until it is fully consumed and deleted.

On-disk format (all integers little-endian)
-------------------------------------------
``<directory>/`` holds:

- ``NNNNNNNNNNNNNNNNNNNN.seg`` — segment files, named by a 20-digit zero-padded sequence
  number that only ever increases, so lexical order is append order. Records are appended
  to the last segment; a new segment is started when the next record would take the current
  one past ``segment_bytes`` (a record larger than that gets a segment to itself). Each
  segment is a plain concatenation of records::

      offset size field
      0      4    magic            b"\\x89GSR"
      4      1    format version   1
      5      1    flags            bit 0: payload is zlib-compressed; other bits must be 0
      6      2    reserved         0
      8      4    stored length    bytes of payload that follow the header
      12     4    payload CRC32    zlib.crc32 of the stored (possibly compressed) payload
      16     4    header CRC32     zlib.crc32 of bytes 0..15
      20     n    stored payload

  The header has its own CRC so that a damaged length field is detected instead of
  trusted, and so that a damaged region can be skipped by scanning for the next position
  holding a magic, a valid header CRC and a valid payload CRC. With ``compress=True`` a
  payload is stored zlib-compressed when that makes it smaller, raw otherwise.

- ``position`` — the read position: magic ``b"\\x89GSP"``, version (1 byte), 3 zero bytes,
  segment number (u64), offset in that segment of the first unconsumed record (u64),
  CRC32 of the preceding 24 bytes. Written atomically (temp file, fsync, rename, fsync of
  the directory). Every segment numbered below the position's segment is consumed; when the
  position's own segment no longer exists, reading starts at offset 0 of the next one.
- ``<segment>.seg.corrupt`` — a forensic copy of a segment in which damage was found.
- ``lock`` — held with ``flock`` while a `Spool` has the directory open.

Fully consumed segments are deleted by `Spool.commit`; that includes the segment still
being appended to, which is then retired so that the next append starts a fresh one.

Crash recovery (on open)
------------------------
Every unconsumed record is validated (header CRC, length within the file, payload CRC):

- **Torn tail** — damage at the end of the LAST segment with no valid record after it (a
  partial header, a short payload, a CRC mismatch in the final record, trailing garbage).
  That is what an append interrupted by ``kill -9`` or a power cut leaves behind, and such
  an append never returned, so its message was never acknowledged. The tail is truncated
  away with a WARNING and the spool appends after the last valid record. When the tail does
  not look like one interrupted record (e.g. longer garbage), the segment is also copied to
  ``.corrupt`` first. Tail damage is not counted in `Spool.corrupt_records`.
- **Damage in the middle** (bit rot, or any damage in a segment that is not the last —
  those were complete and fsynced before the next segment was started): the records after
  it are NOT given up. When the damaged header is intact, its length is trusted and exactly
  that record is skipped; otherwise the spool resynchronises at the next offset holding a
  valid record (magic, header CRC and payload CRC). Each damaged region is logged at ERROR
  and counted as one record in `Spool.corrupt_records` (a region with a destroyed header
  may have held more than one; the count is a lower bound), and the segment is copied to
  ``<name>.corrupt`` for forensics. The segment itself is left as it is and the damaged
  bytes are skipped when reading, so reopening finds and reports the damage again until
  the segment has been consumed and deleted.
- Damage found later while reading (`Spool.peek`) is handled the same way, and there the
  number of lost records is known exactly.
- A damaged ``position`` file is logged at ERROR and reading restarts at the oldest
  segment: duplicates, never losses. A record or position file with an unknown format
  version raises `SpoolCorruptError`, since guessing could destroy a newer writer's data.

A payload that happens to contain a complete, valid spool record could in principle be
mistaken for one when resynchronising after a destroyed header; compressed payloads make
this practically impossible, and it cannot affect undamaged segments.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import re
import shutil
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, Self

from greenmon.ingest.errors import SpoolCorruptError, SpoolError, SpoolFullError

__all__ = [
    "FLAG_ZLIB",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "Spool",
    "SpoolCorruptError",
    "SpoolError",
    "SpoolFullError",
    "SpoolPosition",
    "SpoolRecord",
]

logger = logging.getLogger(__name__)

MAGIC: Final = b"\x89GSR"
FORMAT_VERSION: Final = 1
FLAG_ZLIB: Final = 0x01
_KNOWN_FLAGS: Final = FLAG_ZLIB
# magic, version, flags, reserved, stored length, payload CRC; then the header CRC.
_HEADER: Final = struct.Struct("<4sBBHII")
_CRC: Final = struct.Struct("<I")
HEADER_SIZE: Final = _HEADER.size + _CRC.size
_MAX_STORED: Final = 2**32 - 1

_POSITION_MAGIC: Final = b"\x89GSP"
_POSITION_VERSION: Final = 1
_POSITION: Final = struct.Struct("<4sBxxxQQ")
_POSITION_SIZE: Final = _POSITION.size + _CRC.size

_SEGMENT_RE: Final = re.compile(r"^(\d{20})\.seg$")
_POSITION_FILE: Final = "position"
_POSITION_TMP: Final = "position.tmp"
_LOCK_FILE: Final = "lock"

# Level 1: line protocol is so repetitive that the fast level already gets most of the
# gain, and compression runs on the ingest path exactly when InfluxDB is down.
_ZLIB_LEVEL: Final = 1


@dataclass(frozen=True, slots=True)
class SpoolPosition:
    """Where a record lives; opaque to callers, used by `Spool.commit` to check FIFO order."""

    segment: int
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One record returned by `Spool.peek`: the (decompressed) payload and its position."""

    payload: bytes = field(repr=False)
    position: SpoolPosition


class _Buffer(Protocol):
    """What the scanner needs from its input: `bytes` in tests, `mmap` for segment files."""

    def __getitem__(self, index: slice, /) -> bytes: ...

    def find(self, sub: bytes, start: int = ..., end: int = ..., /) -> int: ...


@dataclass(frozen=True, slots=True)
class _Header:
    flags: int
    length: int
    crc: int


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    size: int  # trusted length of the file: reads stop here, appends go here
    records: int  # valid records in it not yet consumed
    nbytes: int  # their on-disk bytes, headers included
    skips: dict[int, int]  # start of a damaged region -> offset where reading resumes


@dataclass(slots=True)
class _Scan:
    records: int = 0
    nbytes: int = 0
    skips: dict[int, int] = field(default_factory=dict)  # damaged regions in the middle
    tail: int | None = None  # start of damage running to the end of the scanned range


def _encode(payload: bytes, compress: bool) -> bytes:
    flags = 0
    stored = payload
    if compress:
        packed = zlib.compress(payload, _ZLIB_LEVEL)
        if len(packed) < len(payload):
            stored, flags = packed, FLAG_ZLIB
    if len(stored) > _MAX_STORED:
        raise SpoolError(f"record of {len(stored)} bytes is too large for the spool format")
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, flags, 0, len(stored), zlib.crc32(stored))
    return head + _CRC.pack(zlib.crc32(head)) + stored


def _parse_header(raw: bytes) -> _Header | None:
    """The header in `raw`, or None when it is not one (short, wrong magic, bad header CRC)."""
    if len(raw) < HEADER_SIZE:
        return None
    magic, version, flags, reserved, length, crc = _HEADER.unpack_from(raw)
    if magic != MAGIC or zlib.crc32(raw[: _HEADER.size]) != _CRC.unpack_from(raw, _HEADER.size)[0]:
        return None
    if version != FORMAT_VERSION or flags & ~_KNOWN_FLAGS or reserved:
        # The header CRC matched, so these bytes were written as a header on purpose: by a
        # newer greenmon. Skipping or truncating them could destroy its data.
        raise SpoolCorruptError(
            f"spool record with unknown format (version {version}, flags {flags:#x}, "
            f"reserved {reserved:#x}); this greenmon reads version {FORMAT_VERSION} only"
        )
    return _Header(flags, length, crc)


def _record_size_at(buf: _Buffer, pos: int, end: int) -> int:
    """On-disk size of the valid record at `pos` (ending by `end`), or 0 if there is none."""
    header = _parse_header(buf[pos : pos + HEADER_SIZE])
    if header is None:
        return 0
    stop = pos + HEADER_SIZE + header.length
    if stop > end or zlib.crc32(buf[pos + HEADER_SIZE : stop]) != header.crc:
        return 0
    return stop - pos


def _resync(buf: _Buffer, pos: int, end: int) -> int | None:
    """Offset of the next valid record after the damaged one at `pos`, or None."""
    search = pos + 1
    header = _parse_header(buf[pos : pos + HEADER_SIZE])
    if header is not None and pos + HEADER_SIZE + header.length <= end:
        # The header CRC holds, so the length is trustworthy and only the payload is bad:
        # skip exactly this record rather than risk "finding" a record inside its payload.
        search = pos + HEADER_SIZE + header.length
    while (candidate := buf.find(MAGIC, search, end)) >= 0:
        if _record_size_at(buf, candidate, end):
            return candidate
        search = candidate + 1
    return None


def _scan(buf: _Buffer, start: int, end: int, known: dict[int, int] | None = None) -> _Scan:
    """Validate the records in ``buf[start:end]``; `known` damaged regions are jumped over."""
    result = _Scan()
    pos = start
    while pos < end:
        if known and pos in known:
            pos = known[pos]
            continue
        size = _record_size_at(buf, pos, end)
        if size:
            result.records += 1
            result.nbytes += size
            pos += size
            continue
        resume = _resync(buf, pos, end)
        if resume is None:
            result.tail = pos
            break
        result.skips[pos] = resume
        pos = resume
    return result


def _looks_torn(buf: _Buffer, pos: int, end: int) -> bool:
    """Whether ``buf[pos:end]`` looks like the remains of ONE interrupted append."""
    if end - pos < HEADER_SIZE:
        return True  # partial header
    try:
        header = _parse_header(buf[pos : pos + HEADER_SIZE])
    except SpoolCorruptError:
        return False
    # Short payload, or a full-length final record whose payload did not reach the disk.
    return header is not None and pos + HEADER_SIZE + header.length >= end


def _scan_file(path: Path, start: int, end: int, known: dict[int, int] | None = None) -> _Scan:
    if end <= start:
        return _Scan()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        # A file shorter than we believe (truncated behind our back) is damage at its end.
        return _scan(buf, start, min(end, len(buf)), known)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _keep_forensic_copy(path: Path) -> Path | None:
    """Copy a damaged segment to ``<name>.corrupt``; the live file keeps being read."""
    target = path.with_name(path.name + ".corrupt")
    try:
        shutil.copyfile(path, target)
    except OSError as exc:
        logger.error("could not keep a forensic copy of %s at %s: %s", path, target, exc)
        return None
    return target


class Spool:
    """An on-disk FIFO of byte records; see the module docstring for the guarantees."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 64 << 20,
        warn_ratio: float = 0.8,
        compress: bool = True,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if segment_bytes <= HEADER_SIZE:
            raise ValueError(f"segment_bytes must exceed {HEADER_SIZE}, got {segment_bytes}")
        if not 0.0 < warn_ratio <= 1.0:
            raise ValueError(f"warn_ratio must be in (0, 1], got {warn_ratio}")
        self._dir = Path(directory)
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._warn_ratio = warn_ratio
        self._warn_bytes = warn_ratio * max_bytes
        self._compress = compress
        self._on_warning = on_warning

        self._lock = threading.Lock()
        self._closed = False
        self._segments: list[_Segment] = []  # oldest first; the last one is appended to
        self._active_fd: int | None = None  # write fd of the last segment; None: start anew
        self._reader: tuple[int, int] | None = None  # (segment seq, read fd)
        self._next_seq = 1
        # The read cursor. While segments exist, `_cur_seq` is the first one's number; once
        # all are consumed and deleted it keeps the last consumed position, which is what
        # the position file must then say.
        self._cur_seq = 0
        self._read_off = 0
        self._position_dirty = False
        self._peeked: SpoolRecord | None = None
        self._depth_records = 0
        self._depth_bytes = 0
        self._corrupt_records = 0
        self._warned = False

        self._lock_fd = self._lock_directory()
        try:
            self._recover()
        except BaseException:
            self._release_files()
            raise
        message = self._check_warning_locked()
        if message is not None:
            self._emit_warning(message)

    # -- public API -------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def depth_records(self) -> int:
        """Records appended and not yet committed."""
        with self._lock:
            return self._depth_records

    @property
    def depth_bytes(self) -> int:
        """On-disk bytes (headers included) of the records not yet committed."""
        with self._lock:
            return self._depth_bytes

    @property
    def corrupt_records(self) -> int:
        """Records lost to on-disk damage since this spool was opened (see module docs)."""
        with self._lock:
            return self._corrupt_records

    def append(self, payload: bytes) -> None:
        """Store one record durably (written and fsynced) before returning.

        Raises `SpoolFullError` when the record would take the unconsumed bytes past
        ``max_bytes``, and `SpoolError` when the disk refuses; in both cases the record is
        not stored and its message must not be acknowledged.
        """
        record = _encode(bytes(payload), self._compress)  # CPU work, outside the lock
        size = len(record)
        with self._lock:
            self._check_open()
            if self._depth_bytes + size > self._max_bytes:
                raise SpoolFullError(
                    f"spool {self._dir} is full: {self._depth_bytes} of {self._max_bytes} bytes "
                    f"({self._depth_records} records) unconsumed, a record of {size} bytes "
                    "does not fit; it was NOT stored",
                    depth=self._depth_bytes,
                    limit=self._max_bytes,
                    records=self._depth_records,
                    needed=size,
                )
            segment, fd, new_file = self._writable_segment_locked(size)
            try:
                _pwrite_all(fd, record, segment.size)
                os.fsync(fd)
                if new_file:
                    # The file's name must be as durable as its contents.
                    _fsync_dir(self._dir)
            except OSError as exc:
                self._abandon_active_locked(segment)
                raise SpoolError(f"could not append to {segment.path}: {exc}") from exc
            segment.size += size
            segment.records += 1
            segment.nbytes += size
            self._depth_records += 1
            self._depth_bytes += size
            message = self._check_warning_locked()
        if message is not None:
            self._emit_warning(message)

    def peek(self) -> SpoolRecord | None:
        """The oldest record not yet committed, or None when the spool is empty.

        Repeated calls return the same record until it is committed.
        """
        with self._lock:
            self._check_open()
            if self._peeked is not None:
                return self._peeked
            while (found := self._locate_locked()) is not None:
                record = self._read_locked(*found)
                if record is not None:
                    self._peeked = record
                    return record
            return None

    def commit(self, record: SpoolRecord, *, durable: bool = True) -> None:
        """Consume `record`, which must be the one `peek` returned.

        With ``durable=True`` (the default) the new read position is on disk when this
        returns. With ``durable=False`` it is written by the next `sync`, durable commit or
        `close`; a crash before that replays the record (at least once, never lost).
        """
        with self._lock:
            self._check_open()
            peeked = self._peeked
            if peeked is None or record.position != peeked.position:
                raise SpoolError(
                    "commit() accepts only the record the latest peek() returned (FIFO order)"
                )
            position = peeked.position
            # Segments before the record's own were exhausted (empty or only damaged bytes).
            while self._segments and self._segments[0].seq != position.segment:
                self._delete_head_locked()
            if not self._segments:
                raise SpoolError(f"segment {position.segment} of {self._dir} is gone")
            head = self._segments[0]
            self._cur_seq = head.seq
            self._read_off = position.offset + position.size
            head.records -= 1
            head.nbytes -= position.size
            self._depth_records -= 1
            self._depth_bytes -= position.size
            self._peeked = None
            self._position_dirty = True
            self._drop_consumed_locked()
            if self._warned and self._depth_bytes < self._warn_bytes:
                self._warned = False
                logger.info(
                    "spool %s back below %.0f%% of its limit: %d of %d bytes",
                    self._dir,
                    self._warn_ratio * 100,
                    self._depth_bytes,
                    self._max_bytes,
                )
            if durable:
                self._persist_position_locked()

    def sync(self) -> None:
        """Make every commit so far durable (write the read position if it changed)."""
        with self._lock:
            self._check_open()
            if self._position_dirty:
                self._persist_position_locked()

    def close(self) -> None:
        """Persist the read position and release the directory. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._position_dirty:
                    self._persist_position_locked()
            finally:
                self._release_files()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Spool({str(self._dir)!r}, depth_records={self._depth_records}, "
            f"depth_bytes={self._depth_bytes}, max_bytes={self._max_bytes})"
        )

    # -- opening and recovery -----------------------------------------------------------

    def _lock_directory(self) -> int:
        try:
            if not self._dir.is_dir():
                self._dir.mkdir(parents=True, exist_ok=True)
                # The directory's own entry must survive a power cut, or so would nothing
                # appended into it.
                _fsync_dir(self._dir.parent)
            fd = os.open(self._dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SpoolError(f"cannot open spool directory {self._dir}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise SpoolError(f"spool {self._dir} is already open (by another process?)") from exc
        return fd

    def _recover(self) -> None:
        pos_seq, pos_off = self._load_position()
        try:
            (self._dir / _POSITION_TMP).unlink(missing_ok=True)  # a crash mid-write left it
            on_disk = sorted(
                int(m.group(1)) for p in self._dir.iterdir() if (m := _SEGMENT_RE.match(p.name))
            )
        except OSError as exc:
            raise SpoolError(f"cannot list spool directory {self._dir}: {exc}") from exc
        self._next_seq = max([pos_seq, *on_disk]) + 1
        live = []
        for seq in on_disk:
            if seq < pos_seq:
                # Consumed; the position was written but the deletion had not happened (or
                # not reached the disk) before the process stopped.
                self._segment_path(seq).unlink(missing_ok=True)
            else:
                live.append(seq)
        self._cur_seq, self._read_off = pos_seq, pos_off
        if live and live[0] != pos_seq:
            self._cur_seq, self._read_off = live[0], 0
        for index, seq in enumerate(live):
            start = self._read_off if index == 0 else 0
            segment = self._recover_segment(seq, start, last=index == len(live) - 1)
            self._segments.append(segment)
            self._depth_records += segment.records
            self._depth_bytes += segment.nbytes
        if self._segments:
            # Clamp a position beyond the (recovered) end of its segment.
            self._read_off = min(self._read_off, self._segments[0].size)
        self._drop_consumed_locked()
        if self._segments:
            last = self._segments[-1]
            try:
                self._active_fd = os.open(last.path, os.O_WRONLY)
            except OSError as exc:
                raise SpoolError(f"cannot open {last.path} for appending: {exc}") from exc
        if self._depth_records:
            logger.info(
                "spool %s opened with %d records (%d bytes) to replay",
                self._dir,
                self._depth_records,
                self._depth_bytes,
            )

    def _recover_segment(self, seq: int, start: int, *, last: bool) -> _Segment:
        path = self._segment_path(seq)
        try:
            size = path.stat().st_size
            if start > size:
                logger.error(
                    "spool position %d is beyond the end of %s (%d bytes); "
                    "treating the segment as consumed",
                    start,
                    path,
                    size,
                )
                start = size
            scan = _scan_file(path, start, size)
        except OSError as exc:
            raise SpoolError(f"cannot read spool segment {path}: {exc}") from exc
        segment = _Segment(seq, path, size, scan.records, scan.nbytes, dict(scan.skips))
        copied = False
        if scan.skips:
            self._corrupt_records += len(scan.skips)
            copy = _keep_forensic_copy(path)
            copied = True
            for begin, resume in scan.skips.items():
                logger.error(
                    "spool segment %s: damaged bytes %d..%d, at least one record LOST; "
                    "the records after it are kept (forensic copy: %s)",
                    path,
                    begin,
                    resume,
                    copy,
                )
        if scan.tail is None:
            return segment
        if not last:
            # Segments are complete and fsynced before the next one is started, so damage
            # at the end of an older segment is rot, not an interrupted append.
            self._corrupt_records += 1
            copy = (
                _keep_forensic_copy(path) if not copied else path.with_name(path.name + ".corrupt")
            )
            logger.error(
                "spool segment %s: damaged bytes %d..%d at its end, at least one record LOST "
                "(forensic copy: %s)",
                path,
                scan.tail,
                size,
                copy,
            )
            segment.skips[scan.tail] = size
            return segment
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            torn = _looks_torn(buf, scan.tail, size)
        note = ""
        if not torn and not copied:
            note = f" (not one interrupted record; forensic copy: {_keep_forensic_copy(path)})"
        logger.warning(
            "spool segment %s: discarding %d bytes of incomplete or damaged tail at offset %d "
            "(an append interrupted by a crash, never acknowledged)%s",
            path,
            size - scan.tail,
            scan.tail,
            note,
        )
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, scan.tail)
                os.fsync(fd)  # new appends must never follow resurrected garbage
            finally:
                os.close(fd)
        except OSError as exc:
            raise SpoolError(f"cannot truncate the torn tail of {path}: {exc}") from exc
        segment.size = scan.tail
        return segment

    def _load_position(self) -> tuple[int, int]:
        path = self._dir / _POSITION_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return 0, 0
        except OSError as exc:
            raise SpoolError(f"cannot read spool position {path}: {exc}") from exc
        if len(data) == _POSITION_SIZE:
            magic, version, seq, offset = _POSITION.unpack_from(data)
            crc_ok = zlib.crc32(data[: _POSITION.size]) == _CRC.unpack_from(data, _POSITION.size)[0]
            if magic == _POSITION_MAGIC and crc_ok:
                if version != _POSITION_VERSION:
                    raise SpoolCorruptError(
                        f"spool position {path} has unknown format version {version}"
                    )
                return seq, offset
        logger.error(
            "spool position file %s is damaged; replaying from the oldest segment "
            "(records may be delivered twice, none are lost)",
            path,
        )
        return 0, 0

    # -- appending ------------------------------------------------------------------------

    def _writable_segment_locked(self, size: int) -> tuple[_Segment, int, bool]:
        """The segment to append `size` bytes to, its write fd, and whether it is new."""
        if self._segments and self._active_fd is not None:
            last = self._segments[-1]
            if last.size == 0 or last.size + size <= self._segment_bytes:
                return last, self._active_fd, False
            # Seal it: every record in it was already fsynced, so there is nothing to flush.
            self._close_active_locked()
        seq = self._next_seq
        path = self._segment_path(seq)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise SpoolError(f"cannot create spool segment {path}: {exc}") from exc
        self._next_seq += 1
        segment = _Segment(seq, path, 0, 0, 0, {})
        if not self._segments:
            self._cur_seq, self._read_off = seq, 0
        self._segments.append(segment)
        self._active_fd = fd
        return segment, fd, True

    def _abandon_active_locked(self, segment: _Segment) -> None:
        """After a failed append: cut the partial record off and never write here again.

        After a failed fsync the kernel's view of the file is unknowable, so the next
        append starts a fresh segment. If even the truncation fails, the bytes beyond
        `segment.size` are ignored now and reported as damage on the next open.
        """
        fd = self._active_fd
        self._active_fd = None
        if fd is None:
            return
        try:
            os.ftruncate(fd, segment.size)
            os.fsync(fd)
        except OSError as exc:
            logger.error("could not cut a failed append off %s: %s", segment.path, exc)
        finally:
            os.close(fd)

    # -- reading --------------------------------------------------------------------------

    def _locate_locked(self) -> tuple[_Segment, int] | None:
        """The segment and offset of the next record to read, skipping damaged regions."""
        for index, segment in enumerate(self._segments):
            offset = self._read_off if index == 0 else 0
            while offset in segment.skips:
                offset = segment.skips[offset]
            if offset < segment.size:
                return segment, offset
        return None

    def _read_locked(self, segment: _Segment, offset: int) -> SpoolRecord | None:
        """The record at `offset`, or None after recording damage found there."""
        try:
            fd = self._reader_fd_locked(segment)
        except FileNotFoundError:
            self._segment_vanished_locked(segment, offset)
            return None
        try:
            raw = os.pread(fd, HEADER_SIZE, offset)
            header = _parse_header(raw)
            if header is not None and offset + HEADER_SIZE + header.length <= segment.size:
                stored = os.pread(fd, header.length, offset + HEADER_SIZE)
                if len(stored) == header.length and zlib.crc32(stored) == header.crc:
                    size = HEADER_SIZE + header.length
                    payload = stored
                    if header.flags & FLAG_ZLIB:
                        try:
                            payload = zlib.decompress(stored)
                        except zlib.error as exc:
                            self._undecodable_locked(segment, offset, size, exc)
                            return None
                    return SpoolRecord(payload, SpoolPosition(segment.seq, offset, size))
        except OSError as exc:
            raise SpoolError(f"cannot read spool segment {segment.path}: {exc}") from exc
        self._damaged_locked(segment, offset)
        return None

    def _reader_fd_locked(self, segment: _Segment) -> int:
        if self._reader is not None:
            if self._reader[0] == segment.seq:
                return self._reader[1]
            self._close_reader_locked()
        fd = os.open(segment.path, os.O_RDONLY)
        self._reader = (segment.seq, fd)
        return fd

    def _damaged_locked(self, segment: _Segment, offset: int) -> None:
        """A record that validated earlier does not now: rescan the rest of its segment."""
        try:
            scan = _scan_file(segment.path, offset, segment.size, segment.skips)
        except FileNotFoundError:
            self._segment_vanished_locked(segment, offset)
            return
        except OSError as exc:
            raise SpoolError(f"cannot read spool segment {segment.path}: {exc}") from exc
        if offset not in scan.skips and scan.tail != offset:
            raise SpoolError(
                f"spool segment {segment.path}: record at {offset} read back damaged "
                "but validates on a rescan; refusing to guess"
            )
        segment.skips.update(scan.skips)
        if scan.tail is not None:
            segment.skips[scan.tail] = segment.size
        # Here the loss is exact: everything left in the segment had validated before.
        lost = segment.records - scan.records
        self._forget_locked(segment, lost, segment.nbytes - scan.nbytes)
        copy = _keep_forensic_copy(segment.path)
        logger.error(
            "spool segment %s: damage found while reading at offset %d, %d record(s) LOST "
            "(forensic copy: %s)",
            segment.path,
            offset,
            lost,
            copy,
        )

    def _undecodable_locked(
        self, segment: _Segment, offset: int, size: int, exc: zlib.error
    ) -> None:
        segment.skips[offset] = offset + size
        self._forget_locked(segment, 1, size)
        copy = _keep_forensic_copy(segment.path)
        logger.error(
            "spool segment %s: record at offset %d passes its CRC but does not decompress "
            "(%s); 1 record LOST (forensic copy: %s)",
            segment.path,
            offset,
            exc,
            copy,
        )

    def _segment_vanished_locked(self, segment: _Segment, offset: int) -> None:
        # Someone deleted it behind our back; waiting would not bring it back.
        segment.skips[offset] = segment.size
        lost = segment.records
        self._forget_locked(segment, lost, segment.nbytes)
        logger.error("spool segment %s vanished: %d record(s) LOST", segment.path, lost)

    def _forget_locked(self, segment: _Segment, records: int, nbytes: int) -> None:
        segment.records -= records
        segment.nbytes -= nbytes
        self._depth_records -= records
        self._depth_bytes -= nbytes
        self._corrupt_records += max(records, 1)

    # -- consuming ------------------------------------------------------------------------

    def _drop_consumed_locked(self) -> None:
        """Delete fully consumed segments from the front, the one appended to included."""
        while self._segments:
            head = self._segments[0]
            offset = self._read_off
            while offset in head.skips:
                offset = head.skips[offset]
            if offset < head.size:
                return
            self._delete_head_locked()

    def _delete_head_locked(self) -> None:
        head = self._segments.pop(0)
        if not self._segments:
            # Retiring the segment being appended to: the next append starts a new one. The
            # cursor keeps pointing at the end of the deleted segment, which is correct.
            self._close_active_locked()
        else:
            self._cur_seq, self._read_off = self._segments[0].seq, 0
        if self._reader is not None and self._reader[0] == head.seq:
            self._close_reader_locked()
        # No directory fsync: if the deletion is lost in a crash, the position file (or the
        # next segments' numbers) still marks this segment consumed and reopening deletes it.
        try:
            head.path.unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("could not delete consumed spool segment %s: %s", head.path, exc)

    def _persist_position_locked(self) -> None:
        body = _POSITION.pack(_POSITION_MAGIC, _POSITION_VERSION, self._cur_seq, self._read_off)
        data = body + _CRC.pack(zlib.crc32(body))
        tmp = self._dir / _POSITION_TMP
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _pwrite_all(fd, data, 0)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._dir / _POSITION_FILE)
            _fsync_dir(self._dir)
        except OSError as exc:
            # The commit stands in memory; after a crash the record would be replayed.
            raise SpoolError(f"cannot persist the spool position in {self._dir}: {exc}") from exc
        self._position_dirty = False

    # -- small helpers --------------------------------------------------------------------

    def _segment_path(self, seq: int) -> Path:
        return self._dir / f"{seq:020d}.seg"

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError(f"spool {self._dir} is closed")

    def _check_warning_locked(self) -> str | None:
        if self._warned or self._depth_bytes < self._warn_bytes:
            return None
        self._warned = True
        return (
            f"spool {self._dir} is {self._depth_bytes / self._max_bytes:.0%} full: "
            f"{self._depth_bytes} of {self._max_bytes} bytes ({self._depth_records} records) "
            "waiting for InfluxDB; appends will be refused at the limit"
        )

    def _emit_warning(self, message: str) -> None:
        # Outside the lock: the callback may well look at the spool's depth.
        logger.warning("%s", message)
        if self._on_warning is not None:
            try:
                self._on_warning(message)
            except Exception:
                # The record is already durable; a failing alert hook must not make the
                # caller believe otherwise.
                logger.exception("spool on_warning callback failed")

    def _close_active_locked(self) -> None:
        if self._active_fd is not None:
            fd, self._active_fd = self._active_fd, None
            os.close(fd)

    def _close_reader_locked(self) -> None:
        if self._reader is not None:
            fd = self._reader[1]
            self._reader = None
            os.close(fd)

    def _release_files(self) -> None:
        self._close_active_locked()
        self._close_reader_locked()
        if self._lock_fd >= 0:
            fd, self._lock_fd = self._lock_fd, -1
            os.close(fd)  # releases the flock
