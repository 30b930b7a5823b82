"""Small helpers shared by several test packages (fixtures for the real services are in
`tests/conftest.py`)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Mapping[str, object]]) -> None:
    """A registry-style CSV: `header`, then one line per row (a missing key or None is an
    empty cell; keys outside `header` are left out)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(header))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in header})
