"""Dead letters brought back: replayed against today's registry exactly once, and summarised.

A dead letter (`greenmon.ingest.deadletter`) is a whole rejected message with its reasons.
`judge` (pure) decodes it again with the codec, against the registry given and the limits of
the ingest settings, as of the moment it was received (so a reading from the future then is
still one now), and says, for each rejection of the letter, whether it now passes (with its
reading) or still fails (with its reason now). Only rejected readings are written again; the
others of the same message were stored when it arrived.

Replays are recorded in a ledger beside each dead-letter file (``<stem>.replayed.jsonl``, one
line per settled rejection: letter id, reading index, ``written`` or ``failed`` with the
reason), appended and fsynced only after InfluxDB accepted the readings. A rejection marked
``written`` is never written again, so running a replay twice writes nothing more; one that
still fails is tried again by the next replay, and the summary shows its new reason. A crash
between the write and the ledger line means the next replay writes the same points again,
which InfluxDB stores once (same series, same timestamp). The dead-letter files themselves are
never rewritten. One replay at a time per ledger (a file lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from greenmon.config import Settings
from greenmon.ingest.codec import (
    Decoded,
    DecodeLimits,
    Reading,
    Rejection,
    RejectReason,
    decode,
)
from greenmon.ingest.deadletter import Letter, letter_files, read_letters
from greenmon.ingest.fastpath import SeriesTable, format_lines
from greenmon.registry import Registry
from greenmon.retention import raw_max_age_s

WRITTEN = "written"
FAILED = "failed"
_REPLAYABLE = frozenset(r.value for r in RejectReason)
_BATCH_LINES = 5000

Key = tuple[str, int]  # (letter id, reading index; -1 = the whole message)


def key_of(letter: Letter, index: int | None) -> Key:
    return (letter.id, -1 if index is None else index)


def limits_of(settings: Settings) -> DecodeLimits:
    ing = settings.ingest
    return DecodeLimits(
        topic_prefix=settings.mqtt_topic_prefix,
        max_payload_bytes=ing.max_payload_bytes,
        max_readings=ing.max_readings_per_message,
        max_future_skew_s=ing.max_future_skew_s,
        max_age_s=raw_max_age_s(settings),
    )


# -- which letters, where ----------------------------------------------------------------


def dead_letter_paths(settings: Settings, client_id: str | None = None) -> list[Path]:
    """The live dead-letter file of each ingestor under the runtime directory (one per client
    id), or of `client_id` only, or the configured ``ingest.dead_letter_file``."""
    if settings.ingest.dead_letter_file is not None:
        return [settings.ingest.dead_letter_file]
    base = settings.runtime_dir / "ingest"
    if client_id is not None:
        return [base / client_id / "dead_letters.jsonl"]
    return sorted(p / "dead_letters.jsonl" for p in base.glob("*") if p.is_dir())


def ledger_path(dead_file: Path) -> Path:
    return dead_file.with_name(f"{dead_file.stem}.replayed{dead_file.suffix}")


@dataclass(frozen=True)
class Settled:
    outcome: str  # WRITTEN | FAILED
    reason: str
    detail: str
    at: float


def read_ledger(path: Path) -> dict[Key, Settled]:
    """The latest entry per rejection (a line cut short by a crash is skipped)."""
    out: dict[Key, Settled] = {}
    with contextlib.suppress(FileNotFoundError), path.open("rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break
            try:
                d = json.loads(raw)
                out[(str(d["id"]), int(d["index"]))] = Settled(
                    str(d["outcome"]), str(d.get("reason", "")), str(d.get("detail", "")),
                    float(d.get("at", 0.0)),
                )  # fmt: skip
            except (ValueError, KeyError, TypeError):
                continue
    return out


def current_reason(rejection_reason: str, settled: Settled | None) -> str:
    """What a rejection stands for now: its latest replay's reason, else the original."""
    if settled is None:
        return rejection_reason
    return "replayed" if settled.outcome == WRITTEN else settled.reason


# -- judging (pure) ------------------------------------------------------------------------


@dataclass
class Verdict:
    """For one letter: readings that now pass, rejections that still fail."""

    written: list[tuple[Key, Reading]] = field(default_factory=list)
    failed: list[tuple[Key, str, str]] = field(default_factory=list)  # key, reason, detail
    unreplayable: str | None = None  # why the letter cannot be decoded again


def judge(
    letter: Letter,
    pending: Iterable[int | None],
    registry: Registry,
    limits: DecodeLimits,
    now_ms: int | None = None,
) -> Verdict:
    """Decode `letter` again; settle its `pending` rejections (by reading index, None = the
    whole message). Pure. The letter is judged as of its arrival, but for its age: a reading
    must still be within `limits.max_age_s` at `now_ms` (InfluxDB would drop it)."""
    v = Verdict()
    if letter.kind != "message":
        v.unreplayable = "refused by InfluxDB after decoding"
        return v
    if letter.payload is None:
        v.unreplayable = "only an excerpt was kept (an oversized payload, or format 1)"
        return v
    arrival = replace(limits, max_age_s=None)
    out = decode(letter.topic, letter.payload, registry, int(letter.time * 1000), arrival)
    oldest = None if now_ms is None or limits.max_age_s is None else limits.min_ts_ms(now_ms)
    if oldest is not None:
        out = _too_old(out, oldest)
    whole = [r for r in out.rejections if r.index is None]
    by_index = {r.index: r for r in out.rejections if r.index is not None}
    # decode keeps the readings' order, so the accepted ones fill the indexes not rejected.
    accepted = iter(out.readings)
    outcome: dict[int, Any] = {}
    for i in range(len(out.readings) + len(by_index)):
        outcome[i] = by_index[i] if i in by_index else next(accepted)
    for index in pending:
        key = key_of(letter, index)
        if whole:
            v.failed.append((key, whole[0].reason.value, whole[0].detail))
        elif index is None:  # the whole message was refused: all of it passes now, or none
            if by_index:
                first = next(iter(by_index.values()))
                v.failed.append((key, first.reason.value, first.detail))
            else:
                v.written.extend((key, r) for r in out.readings)
        else:
            now = outcome.get(index)
            if isinstance(now, Reading):
                v.written.append((key, now))
            elif now is None:
                v.failed.append((key, "bad_shape", f"reading {index} is no longer in the payload"))
            else:
                v.failed.append((key, now.reason.value, now.detail))
    return v


def _too_old(out: Decoded, oldest_ms: int) -> Decoded:
    """`out` with the readings older than `oldest_ms` turned into rejections (at their
    index: the accepted readings fill the indexes not rejected, in order)."""
    if all(r.ts_ns // 1_000_000 >= oldest_ms for r in out.readings):
        return out
    taken = {r.index for r in out.rejections}
    readings: list[Reading] = []
    rejections = list(out.rejections)
    index = 0
    for r in out.readings:
        while index in taken:
            index += 1
        if r.ts_ns // 1_000_000 < oldest_ms:
            rejections.append(
                Rejection(
                    RejectReason.BEYOND_RETENTION,
                    f"ts {r.ts_ns // 1_000_000} ms is older than the raw readings are kept",
                    r.meter,
                    index,
                )
            )
        else:
            readings.append(r)
        index += 1
    return Decoded(readings, rejections)


# -- replay --------------------------------------------------------------------------------


@dataclass
class ReplayReport:
    letters: int = 0  # letters with a rejection this replay looked at
    written: int = 0  # readings written (or, dry run, that would be)
    still_failing: Counter[str] = field(default_factory=Counter)  # by reason now
    already_replayed: int = 0  # rejections a replay wrote before (left alone)
    unreplayable: Counter[str] = field(default_factory=Counter)
    by_meter: Counter[str] = field(default_factory=Counter)  # readings written per meter
    files: list[str] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "letters": self.letters,
            "written": self.written,
            "written_by_meter": dict(self.by_meter.most_common()),
            "still_failing": dict(self.still_failing.most_common()),
            "already_replayed": self.already_replayed,
            "unreplayable": dict(self.unreplayable),
            "files": self.files,
        }


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[IO[str]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield fh
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def replay(
    dead_files: Iterable[Path],
    registry: Registry,
    limits: DecodeLimits,
    write: Callable[[bytes, int], object] | None,
    *,
    reasons: frozenset[str] | None = None,
    since: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Replay the letters of each dead-letter file (and its rotated files) whose pending
    rejections match `reasons` (their reason now) and were received at or after `since`.
    `write(body, lines)` stores line protocol; None is a dry run (nothing written or marked)."""
    report = ReplayReport(dry_run=write is None)
    table = SeriesTable(registry.meter_infos())
    for dead in dead_files:
        ledger_file = ledger_path(dead)
        with _locked(ledger_file) as ledger_fh:
            settled = read_ledger(ledger_file)
            batch: list[Reading] = []
            entries: list[dict[str, Any]] = []

            def flush(batch: list[Reading] = batch, entries: list[dict[str, Any]] = entries,
                      ledger_fh: IO[str] = ledger_fh) -> None:  # fmt: skip
                if write is not None:
                    if batch:
                        write(format_lines(table.columns(batch)), len(batch))
                    if entries:  # only once the points are stored
                        ledger_fh.writelines(json.dumps(e) + "\n" for e in entries)
                        ledger_fh.flush()
                        os.fsync(ledger_fh.fileno())
                batch.clear()
                entries.clear()

            for f in letter_files(dead):
                report.files.append(str(f))
                for letter in read_letters([f]):
                    _replay_one(letter, settled, registry, limits, reasons, since, report,
                                batch, entries)  # fmt: skip
                    if len(batch) >= _BATCH_LINES:
                        flush()
                    if progress is not None:
                        progress(1)
            flush()
    return report


def _replay_one(
    letter: Letter,
    settled: dict[Key, Settled],
    registry: Registry,
    limits: DecodeLimits,
    reasons: frozenset[str] | None,
    since: float | None,
    report: ReplayReport,
    batch: list[Reading],
    entries: list[dict[str, Any]],
) -> None:
    if since is not None and letter.time < since:
        return
    pending: list[int | None] = []
    for rej in letter.rejections:
        prior = settled.get(key_of(letter, rej.index))
        if prior is not None and prior.outcome == WRITTEN:
            report.already_replayed += 1
            continue
        now = current_reason(rej.reason, prior)
        if reasons is not None and now not in reasons:
            continue
        if rej.reason not in _REPLAYABLE and letter.kind == "message":
            continue
        pending.append(rej.index)
    if not pending:
        return
    report.letters += 1
    v = judge(letter, pending, registry, limits, now_ms=int(time.time() * 1000))
    if v.unreplayable is not None:
        report.unreplayable[v.unreplayable] += len(pending)
        return
    at = time.time()
    done: set[Key] = set()
    for key, reading in v.written:
        batch.append(reading)
        report.written += 1
        report.by_meter[reading.meter] += 1
        if key not in done:
            done.add(key)
            entries.append({"id": key[0], "index": key[1], "outcome": WRITTEN,
                            "meter": reading.meter, "at": at})  # fmt: skip
    for key, reason, detail in v.failed:
        report.still_failing[reason] += 1
        entries.append({"id": key[0], "index": key[1], "outcome": FAILED, "reason": reason,
                        "detail": detail, "at": at})  # fmt: skip
    if report.dry_run:
        return
    for key, *_ in v.failed:
        settled[key] = Settled(FAILED, "", "", at)
    for key in done:
        settled[key] = Settled(WRITTEN, "", "", at)


# -- summary -------------------------------------------------------------------------------


def summarize(
    dead_files: Iterable[Path], *, since: float | None = None, reasons: frozenset[str] | None = None
) -> dict[str, Any]:
    """Dead letters by reason (as they stand now), gateway and meter, with their files."""
    import polars as pl

    rows: list[tuple[str, float, str, str, str, str, str]] = []
    files: list[dict[str, Any]] = []
    for dead in dead_files:
        settled = read_ledger(ledger_path(dead))
        for f in letter_files(dead):
            n = 0
            for letter in read_letters([f]):
                n += 1
                if since is not None and letter.time < since:
                    continue
                ent = letter.enterprise or "-"
                gw = letter.gateway or "-"
                for rej in letter.rejections:
                    now = current_reason(rej.reason, settled.get(key_of(letter, rej.index)))
                    if reasons is not None and now not in reasons:
                        continue
                    rows.append((letter.id, letter.time, ent, gw, rej.meter or "-", now,
                                 rej.reason))  # fmt: skip
            with contextlib.suppress(FileNotFoundError):
                files.append({"file": str(f), "bytes": f.stat().st_size, "letters": n})
    df = pl.DataFrame(
        rows,
        schema={"id": pl.String, "time": pl.Float64, "enterprise": pl.String,
                "gateway": pl.String, "meter": pl.String, "reason": pl.String,
                "first_reason": pl.String},
        orient="row",
    )  # fmt: skip

    def grouped(keys: list[str]) -> list[dict[str, Any]]:
        if df.is_empty():
            return []
        g = (
            df.group_by([*keys, "reason"])
            .agg(
                pl.len().alias("rejections"),
                pl.col("id").n_unique().alias("letters"),
                pl.col("time").min().alias("first"),
                pl.col("time").max().alias("last"),
            )
            .sort(["rejections", *keys, "reason"], descending=[True, *[False] * len(keys), False])
        )
        return [
            {**r, "first": _iso(r["first"]), "last": _iso(r["last"])}
            for r in g.iter_rows(named=True)
        ]

    by_reason = (
        df.group_by("reason").agg(pl.len().alias("rejections")).sort("rejections", descending=True)
        if not df.is_empty()
        else pl.DataFrame()
    )
    return {
        "rejections": df.height,
        "letters": df["id"].n_unique() if df.height else 0,
        "pending": int((df["reason"] != "replayed").sum()) if df.height else 0,
        "replayed": int((df["reason"] == "replayed").sum()) if df.height else 0,
        "by_reason": {r["reason"]: r["rejections"] for r in by_reason.iter_rows(named=True)},
        "by_gateway": grouped(["enterprise", "gateway"]),
        "by_meter": grouped(["enterprise", "meter"]),
        "files": files,
    }


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


__all__ = [
    "ReplayReport",
    "Verdict",
    "dead_letter_paths",
    "judge",
    "ledger_path",
    "limits_of",
    "read_ledger",
    "replay",
    "summarize",
]
