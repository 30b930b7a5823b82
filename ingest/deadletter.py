"""Dead letters: every rejected input, kept as JSON lines with a reason, and counted.

Rejections are input errors, not ours: they never raise out of the loop. The file is flushed
on every `flush()` and fsynced there too, which the pipeline calls before it acknowledges the
messages concerned, so a dead letter is as durable as the data it came with.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO

from greenmon.ingest.codec import Rejection, excerpt


class DeadLetterSink:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self._dirty = False
        self.counts: Counter[str] = Counter()

    def add(self, topic: str, payload: bytes, rejections: list[Rejection]) -> None:
        now = time.time()
        text = excerpt(payload)
        lines = []
        for r in rejections:
            self.counts[r.reason.value] += 1
            lines.append(
                json.dumps(
                    {
                        "time": now,
                        "reason": r.reason.value,
                        "detail": r.detail,
                        "meter": r.meter,
                        "index": r.index,
                        "topic": topic,
                        "payload": text,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
        with self._lock:
            self._fh.writelines(lines)
            self._dirty = True

    def add_raw(self, reason: str, detail: str, topic: str, payload: str) -> None:
        """For refusals after decoding (e.g. InfluxDB rejected a line)."""
        self.counts[reason] += 1
        line = json.dumps(
            {
                "time": time.time(),
                "reason": reason,
                "detail": detail,
                "topic": topic,
                "payload": payload[:200],
            },
            ensure_ascii=False,
        )
        with self._lock:
            self._fh.write(line + "\n")
            self._dirty = True

    def flush(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._dirty = False

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._fh.close()
