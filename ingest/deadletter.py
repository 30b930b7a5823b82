"""Dead letters: every rejected input, kept whole as JSON lines with its reasons, and counted.

Owns the file format (writing, rotating and reading it back); replaying and summarising them
is `greenmon.ingest.replay`'s job.

One line per rejected message (format 2)::

    {"v": 2, "id": "5f0c...", "time": 1764627000.12, "topic": "greenmon/v1/E0002/gw-02/readings",
     "payload": "<the whole payload, as text>",          # or "payload_b64" if not UTF-8
     "rejections": [{"reason": "unknown_meter", "detail": "...", "meter": "E0002-NG-NEW",
                     "index": 0}]}

`index` is the reading's position in the message's ``readings`` (absent: the whole message
was refused). The payload is kept whole (but for an oversized one: its first 200 bytes and
``"payload_truncated": true``), so a letter can be decoded again later against a
newer registry; `id` names the letter for good, whatever file it ends up in. Refusals after
decoding (InfluxDB refused a line for good) have ``"kind": "line"`` and the line as payload.
Files written before format 2 have one line per rejection with a 200-byte excerpt and no
``v``; `read_letters` still reads them.

Rejections are input errors, not ours: they never raise out of the loop. The file is flushed
and fsynced on every `flush()`, which the pipeline calls before it acknowledges the messages
concerned, so a dead letter is as durable as the data it came with. When the file has grown
past `max_bytes`, `flush` renames it to ``<stem>-<UTC time>.jsonl`` beside it and starts a new
one; rotated files are never rewritten or deleted by greenmon, and replay reads them all.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from greenmon.ingest.codec import Rejection, RejectReason, excerpt, parse_topic

FORMAT = 2
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def rotated_name(path: Path, now: float) -> Path:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return path.with_name(f"{path.stem}-{stamp}{path.suffix}")


def letter_files(path: Path) -> list[Path]:
    """The dead-letter file `path` and its rotated files, oldest first."""
    rotated = sorted(path.parent.glob(f"{path.stem}-*{path.suffix}"))
    return [*rotated, *([path] if path.exists() else [])]


def _payload_fields(payload: bytes, rejections: list[Rejection]) -> dict[str, Any]:
    if any(r.reason is RejectReason.PAYLOAD_TOO_LARGE for r in rejections):
        # Kept whole, an oversized message would fill the disk; it is not replayable anyway
        # (a replay applies the same size limit).
        return {"payload": excerpt(payload), "payload_truncated": True}
    try:
        return {"payload": payload.decode("utf-8")}
    except UnicodeDecodeError:
        return {"payload_b64": base64.b64encode(payload).decode("ascii")}


class DeadLetterSink:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._clock = clock  # when a letter was received (replay judges it as of then)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self._dirty = False
        self.counts: Counter[str] = Counter()
        self.rotations = 0

    def add(self, topic: str, payload: bytes, rejections: list[Rejection]) -> None:
        """One rejected message (all its rejections) as one line."""
        for r in rejections:
            self.counts[r.reason.value] += 1
        doc: dict[str, Any] = {
            "v": FORMAT,
            "id": secrets.token_hex(8),
            "time": self._clock(),
            "topic": topic,
            **_payload_fields(payload, rejections),
            "rejections": [
                {"reason": r.reason.value, "detail": r.detail, "meter": r.meter, "index": r.index}
                for r in rejections
            ],
        }
        self._write(json.dumps(doc, ensure_ascii=False) + "\n")

    def add_raw(self, reason: str, detail: str, topic: str, payload: str) -> None:
        """For refusals after decoding (e.g. InfluxDB refused a line): not replayable."""
        self.counts[reason] += 1
        doc = {
            "v": FORMAT,
            "id": secrets.token_hex(8),
            "time": self._clock(),
            "topic": topic,
            "kind": "line",
            "payload": payload,
            "rejections": [{"reason": reason, "detail": detail, "meter": None, "index": None}],
        }
        self._write(json.dumps(doc, ensure_ascii=False) + "\n")

    def _write(self, line: str) -> None:
        with self._lock:
            self._fh.write(line)
            self._dirty = True

    def flush(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._dirty = False
            if self._fh.tell() >= self.max_bytes:
                self._rotate()

    def _rotate(self) -> None:
        """Called with the lock held, the file flushed and fsynced."""
        self._fh.close()
        target = rotated_name(self.path, time.time())
        while target.exists():  # two rotations within a microsecond
            target = rotated_name(self.path, time.time() + 1e-6)
        os.replace(self.path, target)
        self._fh = self.path.open("a", encoding="utf-8")
        _fsync_dir(self.path.parent)
        self.rotations += 1

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._fh.close()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LetterRejection:
    reason: str
    detail: str
    meter: str | None
    index: int | None


@dataclass(frozen=True)
class Letter:
    """One dead letter as read back: a rejected message (or a refused line)."""

    id: str
    time: float
    topic: str
    payload: bytes | None  # None: only an excerpt was kept (format 1, long payload)
    rejections: tuple[LetterRejection, ...]
    file: Path
    kind: str = "message"

    @property
    def enterprise(self) -> str | None:
        parts = self.topic.split("/")
        return parts[-3] if len(parts) >= 3 and parts[-1] == "readings" else None

    @property
    def gateway(self) -> str | None:
        parts = self.topic.split("/")
        return parts[-2] if len(parts) >= 3 and parts[-1] == "readings" else None

    def where(self, prefix: str) -> tuple[str, str] | None:
        return parse_topic(self.topic, prefix)


def read_letters(paths: Iterable[Path]) -> Iterator[Letter]:
    """Every letter in `paths`, in file order. A line cut short (being written right now)
    or unreadable is skipped; format-1 lines (one per rejection) come as one letter each."""
    for path in paths:
        try:
            fh = path.open("rb")
        except FileNotFoundError:  # rotated away since it was listed
            continue
        with fh:
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # the ingestor is writing this line now
                letter = _parse(raw, path)
                if letter is not None:
                    yield letter


def _parse(raw: bytes, path: Path) -> Letter | None:
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    rej = [
        LetterRejection(
            str(r.get("reason")), str(r.get("detail") or ""), r.get("meter"), r.get("index")
        )
        for r in (doc.get("rejections") or [doc])
        if isinstance(r, dict)
    ]
    payload: bytes | None
    if doc.get("v") == FORMAT:
        if doc.get("payload_truncated"):
            payload = None
        elif "payload_b64" in doc:
            payload = base64.b64decode(doc["payload_b64"])
        else:
            payload = str(doc.get("payload", "")).encode("utf-8")
        letter_id = str(doc.get("id"))
    else:
        # Format 1: an excerpt of 200 bytes, "…" appended when the payload was longer.
        text = str(doc.get("payload", ""))
        payload = None if text.endswith("…") else text.encode("utf-8")
        letter_id = "v1-" + hashlib.sha256(raw).hexdigest()[:16]
    return Letter(
        id=letter_id,
        time=float(doc.get("time") or 0.0),
        topic=str(doc.get("topic") or ""),
        payload=payload,
        rejections=tuple(rej),
        file=path,
        kind=str(doc.get("kind") or "message"),
    )


__all__ = [
    "DEFAULT_MAX_BYTES",
    "DeadLetterSink",
    "Letter",
    "LetterRejection",
    "letter_files",
    "read_letters",
    "rotated_name",
]
