"""Ingest fixtures: `start_ingest` runs `greenmon ingest` processes and reaps them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ingest.support import IngestProc, ingest_args


@pytest.fixture
def start_ingest(tmp_path: Path) -> Iterator[object]:
    procs: list[IngestProc] = []

    def start(mqtt_url: str, influx_url: str, database: str, *extra: str,
              runtime: Path | None = None) -> IngestProc:  # fmt: skip
        rt = runtime or tmp_path / "rt"
        p = IngestProc(ingest_args(mqtt_url, influx_url, database, rt, *extra), rt).start()
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.proc is not None and p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)
