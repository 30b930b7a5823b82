"""Helpers for the aggregator tests: tiny registries written to a temp dir, readings frames."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from greenmon.ingest.codec import decode
from greenmon.lineprotocol import format_line
from greenmon.registry import (
    ENTERPRISE_COLUMNS,
    METER_COLUMNS,
    MONTHLY_COLUMNS,
    Registry,
    load_registry,
)
from tests.support import write_csv

SHANGHAI = ZoneInfo("Asia/Shanghai")
UTC = ZoneInfo("UTC")
TIME = pl.Datetime("ms", "UTC")

ENTERPRISE_HEADER = ENTERPRISE_COLUMNS
METER_HEADER = (*METER_COLUMNS, "interval_s")
MONTHLY_HEADER = MONTHLY_COLUMNS


def local(*args: int) -> datetime:
    """A wall-clock time in Asia/Shanghai."""
    return datetime(*args, tzinfo=SHANGHAI)  # type: ignore[misc]


def meter(
    meter_id: str,
    *,
    enterprise: str = "E1",
    carrier: str = "electricity",
    unit: str = "kWh",
    kind: str = "register",
    multiplier: float | str = "",
    rollover: float | str = "",
    role: str = "boundary",
    raw_material: bool = False,
    interval_s: int | str = "",
    **extra: object,
) -> dict[str, object]:
    row: dict[str, object] = {
        "meter_id": meter_id,
        "enterprise_id": enterprise,
        "carrier": carrier,
        "unit": unit,
        "kind": kind,
        "multiplier": multiplier,
        "rollover": rollover,
        "role": role,
        "raw_material": "true" if raw_material else "false",
        "interval_s": interval_s,
    }
    row.update(extra)
    return row


def write_registry(
    root: Path,
    meters: Sequence[dict[str, object]],
    *,
    enterprises: Sequence[dict[str, object]] | None = None,
    monthly: Sequence[dict[str, object]] = (),
) -> Registry:
    root.mkdir(parents=True, exist_ok=True)
    if enterprises is None:
        ids = sorted({str(m["enterprise_id"]) for m in meters})
        enterprises = [
            {"enterprise_id": e, "name": e, "county": "崇川区", "industry": "C3731"} for e in ids
        ]
    write_csv(root / "enterprises.csv", ENTERPRISE_HEADER, enterprises)
    extra = [k for m in meters for k in m if k not in METER_HEADER]
    write_csv(root / "meters.csv", (*METER_HEADER, *dict.fromkeys(extra)), meters)
    write_csv(root / "monthly.csv", MONTHLY_HEADER, monthly)
    return load_registry(root)


def ingested_lines(
    registry: Registry, messages: pl.DataFrame, now_ms: int = 1_900_000_000_000
) -> list[tuple[int, str]]:
    """(device ts ms, line) for every valid reading of simulated `messages`, decoded by the
    ingestor's codec and formatted as the ingestor writes ``meter_reading``."""
    out = []
    for topic, payload in messages.select("topic", "payload").iter_rows():
        for r in decode(topic, payload.encode(), registry, now_ms).readings:
            tags = {"carrier": r.carrier, "enterprise": r.enterprise, "meter": r.meter}
            line = format_line("meter_reading", tags, {"value": r.value}, r.ts_ns)
            out.append((r.ts_ns // 1_000_000, line))
    return out


def readings(rows: Iterable[tuple[str, datetime, float]]) -> pl.LazyFrame:
    """A ``meter_reading`` frame as the InfluxDB reader delivers it."""
    data = [(m, t.astimezone(UTC), float(v)) for m, t, v in rows]
    return pl.DataFrame(
        data, schema={"meter": pl.String, "time": TIME, "value": pl.Float64}, orient="row"
    ).lazy()


def series(
    meter_id: str, start: datetime, values: Sequence[float], step: timedelta = timedelta(minutes=15)
) -> list[tuple[str, datetime, float]]:
    """Readings every `step` from `start`."""
    return [(meter_id, start + i * step, v) for i, v in enumerate(values)]


@pytest.fixture
def registry_factory(tmp_path: Path) -> Callable[..., Registry]:
    counter = iter(range(1_000_000))

    def make(meters: Sequence[dict[str, object]], **kwargs: object) -> Registry:
        return write_registry(tmp_path / f"reg{next(counter)}", meters, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def example_registry() -> Registry:
    return load_registry(Path(__file__).resolve().parents[1] / "data" / "registry")
