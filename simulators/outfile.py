"""The out-file: a run's exact MQTT messages as JSON lines, for replay and benchmarks.

One JSON object per line, in publication order::

    {"seq":0,"at_ms":1748793601078,"client":"E0412-GW01","topic":"greenmon/v1/E0412/E0412-GW01/readings","payload":"{...}","reconnect":false,"kind":"live"}

``seq`` is the global publication order (the truth's ``seq``), ``at_ms`` the publication time in
simulated epoch ms, ``client`` the gateway (MQTT client id), ``payload`` the exact payload as
text (UTF-8), ``reconnect`` true when the gateway reconnects before this message, ``kind``
``live``, ``catchup``, ``duplicate`` or ``malformed``. `read_out_file` reads it back for
`greenmon simulate replay` and tests.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from greenmon.simulators.errors import SimulatorError
from greenmon.simulators.messages import MESSAGE_SCHEMA

__all__ = ["read_out_file", "write_out_file"]


def write_out_file(messages: pl.DataFrame, path: Path) -> int:
    """Write `messages` (MESSAGE_SCHEMA, publication order) as JSON lines; return the count."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        messages.select(list(MESSAGE_SCHEMA)).write_ndjson(path)
    except OSError as exc:
        raise SimulatorError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return messages.height


def read_out_file(path: Path) -> pl.DataFrame:
    """Read an out-file back (MESSAGE_SCHEMA), in its order."""
    path = Path(path)
    try:
        frame = pl.read_ndjson(path, schema=MESSAGE_SCHEMA)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise SimulatorError(f"cannot read out-file {path}: {exc}") from exc
    return frame
