"""The spool: FIFO order, bounds, durability across kill -9, recovery from damage, threads.

Most tests use ``compress=False`` so that record offsets in the segment files are easy to
compute (``HEADER_SIZE + len(payload)`` per record) and damage can be placed precisely.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from greenmon.errors import GreenmonError
from greenmon.ingest.errors import IngestError
from greenmon.ingest.spool import (
    HEADER_SIZE,
    MAGIC,
    Spool,
    SpoolCorruptError,
    SpoolError,
    SpoolFullError,
    SpoolRecord,
)

LOGGER = "greenmon.ingest.spool"


def payload(n: int, width: int = 20) -> bytes:
    return f"rec-{n:06d}".encode().ljust(width, b".")


def drain(spool: Spool, *, durable: bool = True) -> list[bytes]:
    out = []
    while (record := spool.peek()) is not None:
        out.append(record.payload)
        spool.commit(record, durable=durable)
    return out


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def offset_of(payloads: list[bytes], index: int) -> int:
    """Offset of record `index` in a segment holding `payloads` uncompressed."""
    return sum(HEADER_SIZE + len(p) for p in payloads[:index])


def flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_errors_hang_under_the_stage_root() -> None:
    assert issubclass(SpoolFullError, SpoolError)
    assert issubclass(SpoolCorruptError, SpoolError)
    assert issubclass(SpoolError, IngestError)
    assert issubclass(IngestError, GreenmonError)


# -- FIFO, depth, segments, position -----------------------------------------------------


def test_fifo_across_segments_with_depth_and_deletion(tmp_path: Path) -> None:
    items = [payload(i) for i in range(30)]  # 40 bytes on disk each: 3 per segment
    with Spool(tmp_path, segment_bytes=120, compress=False) as spool:
        for item in items:
            spool.append(item)
        assert spool.depth_records == 30
        assert spool.depth_bytes == 30 * (HEADER_SIZE + 20)
        assert len(segments(tmp_path)) == 10
        names = [p.name for p in segments(tmp_path)]
        assert names == sorted(names) and all(len(n) == len("0" * 20 + ".seg") for n in names)

        got = []
        for _ in range(10):
            record = spool.peek()
            assert record is not None
            got.append(record.payload)
            spool.commit(record)
        assert got == items[:10]
        assert spool.depth_records == 20
        assert spool.depth_bytes == 20 * (HEADER_SIZE + 20)
        # 3 full segments consumed and deleted; the 4th is partly consumed.
        assert len(segments(tmp_path)) == 7

        assert drain(spool) == items[10:]
        assert spool.depth_records == spool.depth_bytes == 0
        assert spool.peek() is None
        # Even the segment being appended to is retired once fully consumed.
        assert segments(tmp_path) == []
        spool.append(b"after")
        assert drain(spool) == [b"after"]


def test_reopen_resumes_at_the_committed_position(tmp_path: Path) -> None:
    items = [payload(i) for i in range(20)]
    with Spool(tmp_path, segment_bytes=120, compress=False) as spool:
        for item in items:
            spool.append(item)
        for _ in range(7):
            record = spool.peek()
            assert record is not None
            spool.commit(record)
    with Spool(tmp_path, segment_bytes=120, compress=False) as spool:
        assert spool.depth_records == 13
        assert spool.depth_bytes == 13 * (HEADER_SIZE + 20)
        assert len(segments(tmp_path)) == 5  # records 6..19; segment 3 is partly consumed
        spool.append(b"more")
        assert drain(spool) == [*items[7:], b"more"]


def test_non_durable_commits_are_persisted_by_sync_and_close(tmp_path: Path) -> None:
    with Spool(tmp_path, compress=False) as spool:
        for i in range(6):
            spool.append(payload(i))
        for _ in range(2):
            record = spool.peek()
            assert record is not None
            spool.commit(record, durable=False)
        spool.sync()
        record = spool.peek()
        assert record is not None
        spool.commit(record, durable=False)
    with Spool(tmp_path, compress=False) as spool:
        assert drain(spool) == [payload(i) for i in range(3, 6)]


def test_peek_is_stable_and_commit_is_fifo_only(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        for i in range(3):
            spool.append(payload(i))
        first = spool.peek()
        assert first is not None
        assert spool.peek() == first
        spool.commit(first)
        with pytest.raises(SpoolError, match="FIFO"):
            spool.commit(first)  # already consumed, not what peek returned
        second = spool.peek()
        assert second is not None and second.payload == payload(1)
        forged = SpoolRecord(b"x", first.position)
        with pytest.raises(SpoolError, match="FIFO"):
            spool.commit(forged)
        spool.commit(second)
    with pytest.raises(SpoolError, match="closed"):
        spool.append(b"late")


def test_compression_round_trips_and_saves_space(tmp_path: Path) -> None:
    text = b"meter_reading,meter=E0001-EL-MAIN value=12.5 1748736000000000000\n" * 200
    noise = os.urandom(500)
    with Spool(tmp_path, compress=True) as spool:
        spool.append(text)
        assert spool.depth_bytes < len(text) // 10
        spool.append(noise)  # incompressible: stored raw
        assert spool.depth_bytes < len(text) // 10 + HEADER_SIZE + len(noise) + 1
        spool.append(b"")
    with Spool(tmp_path) as spool:
        assert drain(spool) == [text, noise, b""]


def test_a_second_opener_is_refused(tmp_path: Path) -> None:
    with Spool(tmp_path), pytest.raises(SpoolError, match="already open"):
        Spool(tmp_path)
    Spool(tmp_path).close()  # released on close


# -- bound and warning -------------------------------------------------------------------


def test_full_spool_refuses_and_drops_nothing(tmp_path: Path) -> None:
    size = HEADER_SIZE + 20
    with Spool(tmp_path, max_bytes=10 * size, segment_bytes=3 * size, compress=False) as spool:
        for i in range(10):
            spool.append(payload(i))
        with pytest.raises(SpoolFullError) as caught:
            spool.append(payload(10))
        assert (caught.value.depth, caught.value.limit) == (10 * size, 10 * size)
        assert (caught.value.records, caught.value.needed) == (10, size)
        assert spool.depth_records == 10 and spool.depth_bytes == 10 * size
        with pytest.raises(SpoolFullError):
            spool.append(b"x" * 10 * size)  # bigger than the whole bound
        record = spool.peek()
        assert record is not None
        spool.commit(record)
        spool.append(payload(10))  # room again
    with Spool(tmp_path, max_bytes=10 * size, compress=False) as spool:
        assert drain(spool) == [payload(i) for i in range(1, 11)]


def test_warning_fires_once_per_crossing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    size = HEADER_SIZE + 20
    calls: list[str] = []
    spool = Spool(
        tmp_path, max_bytes=10 * size, warn_ratio=0.5, compress=False, on_warning=calls.append
    )
    with spool, caplog.at_level(logging.WARNING, logger=LOGGER):
        for i in range(4):
            spool.append(payload(i))
        assert calls == []
        spool.append(payload(4))  # 50 %
        assert len(calls) == 1
        assert str(5 * size) in calls[0] and str(10 * size) in calls[0]
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == calls
        for i in range(5, 9):
            spool.append(payload(i))
        assert len(calls) == 1  # still the same crossing
        for _ in range(6):  # down to 3 records: below again
            record = spool.peek()
            assert record is not None
            spool.commit(record)
        spool.append(payload(9))  # 4 records: 40 %
        assert len(calls) == 1
        spool.append(payload(10))  # 50 % again: a second crossing
        assert len(calls) == 2


def test_a_failing_warning_callback_does_not_fail_the_append(tmp_path: Path) -> None:
    def boom(message: str) -> None:
        raise RuntimeError(message)

    with Spool(tmp_path, max_bytes=1000, warn_ratio=0.01, on_warning=boom) as spool:
        spool.append(b"stored anyway")
        assert spool.depth_records == 1


def test_a_failed_fsync_stores_nothing_and_the_next_append_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    with Spool(tmp_path, compress=False) as spool:
        spool.append(payload(0))
        monkeypatch.setattr(os, "fsync", failing_fsync)
        with pytest.raises(SpoolError, match="could not append"):
            spool.append(payload(1))
        monkeypatch.setattr(os, "fsync", real_fsync)
        assert spool.depth_records == 1
        spool.append(payload(2))  # into a fresh segment
        assert len(segments(tmp_path)) == 2
    with Spool(tmp_path) as spool:
        assert spool.corrupt_records == 0
        assert drain(spool) == [payload(0), payload(2)]


# -- recovery ----------------------------------------------------------------------------


def _write(directory: Path, items: list[bytes], **kw: Any) -> None:
    with Spool(directory, compress=False, **kw) as spool:
        for item in items:
            spool.append(item)


@pytest.mark.parametrize(
    "damage",
    ["partial_header", "header_cut", "short_payload", "crc_mismatch_at_end", "long_garbage"],
)
def test_torn_tail_is_truncated_and_complete_records_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    items = [payload(i) for i in range(5)]
    _write(tmp_path, items)
    (segment,) = segments(tmp_path)
    end = segment.stat().st_size
    survivors = items[:4]
    if damage == "partial_header":  # the next append died after 7 header bytes
        with segment.open("ab") as f:
            f.write(MAGIC + b"\x01\x00\x00")
        survivors = items
    elif damage == "header_cut":
        os.truncate(segment, offset_of(items, 4) + 9)
    elif damage == "short_payload":
        os.truncate(segment, end - 5)
    elif damage == "crc_mismatch_at_end":  # full length on disk, last page never written
        flip(segment, end - 1)
    else:
        with segment.open("ab") as f:
            f.write(b"\x00" * 300)
        survivors = items
    with caplog.at_level(logging.WARNING, logger=LOGGER), Spool(tmp_path) as spool:
        assert spool.corrupt_records == 0
        assert spool.depth_records == len(survivors)
        assert any("tail" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
        assert segment.stat().st_size == offset_of(survivors, len(survivors))
        spool.append(b"after recovery")
    with Spool(tmp_path) as spool:
        assert drain(spool) == [*survivors, b"after recovery"]
        assert spool.corrupt_records == 0


@pytest.mark.parametrize("where", ["payload", "length_field", "magic"])
def test_corruption_in_the_middle_keeps_the_records_after_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    items = [payload(i) for i in range(10)]
    _write(tmp_path, items)
    (segment,) = segments(tmp_path)
    flip(
        segment,
        offset_of(items, 2) + {"payload": HEADER_SIZE + 3, "length_field": 8, "magic": 0}[where],
    )
    damaged = segment.read_bytes()
    with caplog.at_level(logging.ERROR, logger=LOGGER), Spool(tmp_path) as spool:
        assert spool.corrupt_records == 1
        assert spool.depth_records == 9
        assert any(r.levelname == "ERROR" for r in caplog.records)
        assert (tmp_path / (segment.name + ".corrupt")).exists()
        spool.append(b"after")
        assert drain(spool) == [*items[:2], *items[3:], b"after"]
    assert (tmp_path / (segment.name + ".corrupt")).read_bytes() == damaged


def test_damage_at_the_end_of_an_older_segment_is_rot_not_a_torn_tail(tmp_path: Path) -> None:
    items = [payload(i) for i in range(6)]
    _write(tmp_path, items, segment_bytes=120)  # 3 records per segment
    first, second = segments(tmp_path)
    flip(first, offset_of(items, 2) + HEADER_SIZE + 1)
    with Spool(tmp_path) as spool:
        assert spool.corrupt_records == 1
        assert first.stat().st_size == 3 * (HEADER_SIZE + 20)  # not truncated
        assert (tmp_path / (first.name + ".corrupt")).exists()
        assert drain(spool) == [*items[:2], *items[3:]]
        assert not first.exists() and not second.exists()


def test_damage_found_while_reading_is_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    items = [payload(i) for i in range(5)]
    with Spool(tmp_path, compress=False) as spool:
        for item in items:
            spool.append(item)
        (segment,) = segments(tmp_path)
        flip(segment, offset_of(items, 1) + HEADER_SIZE)  # bit rot after it was written
        record = spool.peek()
        assert record is not None and record.payload == items[0]
        spool.commit(record)
        with caplog.at_level(logging.ERROR, logger=LOGGER):
            record = spool.peek()
        assert record is not None and record.payload == items[2]
        assert spool.corrupt_records == 1 and spool.depth_records == 3
        assert "1 record(s) LOST" in caplog.text
        spool.commit(record)
        assert drain(spool) == items[3:]


def test_damaged_position_file_replays_from_the_oldest_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    items = [payload(i) for i in range(6)]
    _write(tmp_path, items)
    with Spool(tmp_path) as spool:
        for _ in range(3):
            record = spool.peek()
            assert record is not None
            spool.commit(record)
    (tmp_path / "position").write_bytes(b"garbage")
    with caplog.at_level(logging.ERROR, logger=LOGGER), Spool(tmp_path) as spool:
        assert "position file" in caplog.text
        assert drain(spool) == items  # duplicates, never losses


def test_unknown_format_version_is_refused_not_truncated(tmp_path: Path) -> None:
    head = struct.pack("<4sBBHII", MAGIC, 2, 0, 0, 3, zlib.crc32(b"new"))
    data = head + struct.pack("<I", zlib.crc32(head)) + b"new"
    (tmp_path / f"{1:020d}.seg").write_bytes(data)
    for _ in range(2):  # and the failed open released the directory lock
        with pytest.raises(SpoolCorruptError, match="version 2"):
            Spool(tmp_path)
    assert (tmp_path / f"{1:020d}.seg").read_bytes() == data


# -- real crashes ------------------------------------------------------------------------

APPENDER = r"""
import sys, time
from pathlib import Path
from greenmon.ingest.spool import Spool

directory, first = Path(sys.argv[1]), int(sys.argv[2])
deadline = time.monotonic() + 30
with Spool(directory, segment_bytes=8192) as spool:
    for n in range(first, first + 20_000):
        if time.monotonic() > deadline:
            break
        spool.append(b"%08d:" % n + bytes(range(256))[: n % 251])
        sys.stdout.write(f"{n}\n")
        sys.stdout.flush()
"""


def _expected(n: int) -> bytes:
    return b"%08d:" % n + bytes(range(256))[: n % 251]


def _read_numbers(directory: Path) -> list[int]:
    with Spool(directory) as spool:
        assert spool.corrupt_records == 0
        numbers = []
        for data in drain(spool):
            n = int(data[:8])
            assert data == _expected(n)
            numbers.append(n)
        return numbers


def test_every_acknowledged_record_survives_kill_9(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    acked: list[int] = []  # over all rounds
    first = 0
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(directory), str(first)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        this_round: list[int] = []
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            this_round.append(int(line))
            if len(this_round) >= 250 + 100 * round_ or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        this_round += [int(n) for n in rest.split()]  # printed before death: acknowledged
        assert len(this_round) >= 50
        acked += this_round

        # Check a copy, so that the next round appends onto the recovered original.
        snapshot = tmp_path / f"check{round_}"
        shutil.copytree(directory, snapshot)
        numbers = _read_numbers(snapshot)
        assert numbers == sorted(set(numbers)), "out of order or duplicated"
        assert set(acked) <= set(numbers), "an acknowledged record was lost"
        # At most one record per round was stored but not yet acknowledged when killed.
        assert len(set(numbers) - set(acked)) <= round_ + 1
        first = numbers[-1] + 1
    assert set(_read_numbers(directory)) >= set(acked)


COMMITTER = r"""
import os, sys
from pathlib import Path
from greenmon.ingest.spool import Spool

spool = Spool(Path(sys.argv[1]))
for n in range(6):
    spool.append(b"%d" % n)
for durable in (True, True, False, False):
    spool.commit(spool.peek(), durable=durable)
os._exit(0)  # dies without close(): the last two commits never reached the disk
"""


def test_durable_commits_survive_a_crash_and_deferred_ones_replay(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", COMMITTER, str(tmp_path)], check=True, timeout=60)
    with Spool(tmp_path) as spool:
        assert drain(spool) == [b"2", b"3", b"4", b"5"]


# -- threads -----------------------------------------------------------------------------


def test_concurrent_writers_and_one_reader_see_every_record_once(tmp_path: Path) -> None:
    writers, per_writer = 4, 150
    total = writers * per_writer
    seen: list[bytes] = []
    errors: list[BaseException] = []
    spool = Spool(tmp_path, segment_bytes=2048)

    def write(w: int) -> None:
        try:
            for i in range(per_writer):
                spool.append(b"w%d-%05d" % (w, i))
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        deadline = time.monotonic() + 120
        try:
            while len(seen) < total and time.monotonic() < deadline:
                record = spool.peek()
                if record is None:
                    time.sleep(0.001)
                    continue
                seen.append(record.payload)
                spool.commit(record, durable=len(seen) % 10 == 0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    threads.append(threading.Thread(target=read))
    with spool:
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert errors == []
        assert len(seen) == total and len(set(seen)) == total
        for w in range(writers):  # each writer's records in its own order
            mine = [s for s in seen if s.startswith(b"w%d-" % w)]
            assert mine == [b"w%d-%05d" % (w, i) for i in range(per_writer)]
        assert spool.depth_records == 0 and spool.peek() is None
    assert segments(tmp_path) == []


# -- model-based -------------------------------------------------------------------------

MAX_BYTES = 1500


class SpoolModel(RuleBasedStateMachine):
    """Random append/peek/commit/reopen sequences agree with a deque."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.directory = Path(self.tmp.name) / "spool"
        self.spool = self._open()
        self.model: deque[bytes] = deque()
        self.peeked: SpoolRecord | None = None

    def _open(self) -> Spool:
        return Spool(self.directory, max_bytes=MAX_BYTES, segment_bytes=200, warn_ratio=0.7)

    @rule(data=st.binary(max_size=150) | st.sampled_from([b"", b"a" * 400, b"value=1 " * 40]))
    def append(self, data: bytes) -> None:
        before = self.spool.depth_bytes
        try:
            self.spool.append(data)
        except SpoolFullError as exc:
            assert exc.depth == before and before + exc.needed > MAX_BYTES
            assert self.spool.depth_bytes == before
            return
        self.model.append(data)

    @rule()
    def peek(self) -> None:
        record = self.spool.peek()
        if self.model:
            assert record is not None and record.payload == self.model[0]
        else:
            assert record is None
        self.peeked = record

    @precondition(lambda self: self.peeked is not None)
    @rule(durable=st.booleans())
    def commit(self, durable: bool) -> None:
        assert self.peeked is not None
        self.spool.commit(self.peeked, durable=durable)
        self.model.popleft()
        self.peeked = None

    @rule()
    def reopen(self) -> None:
        self.spool.close()
        self.spool = self._open()
        self.peeked = None

    @rule(garbage=st.binary(min_size=1, max_size=60))
    def reopen_after_torn_append(self, garbage: bytes) -> None:
        self.spool.close()
        if files := segments(self.directory):
            with files[-1].open("ab") as f:
                f.write(garbage)
        self.spool = self._open()
        self.peeked = None

    @invariant()
    def depth_agrees(self) -> None:
        assert self.spool.depth_records == len(self.model)
        assert self.spool.corrupt_records == 0
        assert self.spool.depth_bytes <= MAX_BYTES

    def teardown(self) -> None:
        self.spool.close()
        self.tmp.cleanup()


TestSpoolModel = SpoolModel.TestCase
TestSpoolModel.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
