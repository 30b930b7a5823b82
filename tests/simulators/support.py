"""Test helpers: decode a run's messages with the real ingest codec."""

from __future__ import annotations

import polars as pl

from greenmon.ingest.codec import decode
from greenmon.registry import Registry

FAR_FUTURE_MS = 4_102_444_800_000  # 2100-01-01: no reading is "in the future"


def decode_messages(messages: pl.DataFrame, registry: Registry) -> tuple[pl.DataFrame, list[str]]:
    """Decode every message as the ingestor would: accepted readings (meter, ts_ms, value in
    the registered unit, seq) and the reject reasons."""
    rows: list[tuple[str, int, float, int]] = []
    reasons: list[str] = []
    for seq, topic, payload in messages.select("seq", "topic", "payload").iter_rows():
        out = decode(topic, payload.encode("utf-8"), registry, FAR_FUTURE_MS)
        rows.extend((r.meter, r.ts_ns // 1_000_000, r.value, seq) for r in out.readings)
        reasons.extend(j.reason.value for j in out.rejections)
    frame = pl.DataFrame(
        rows,
        schema={"meter_id": pl.String, "ts_ms": pl.Int64, "value": pl.Float64, "seq": pl.Int64},
        orient="row",
    )
    return frame, reasons
