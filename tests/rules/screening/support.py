"""Small registries and measured frames built by hand, so that every expected figure is known.

`Firm` describes one enterprise: registry attributes, monthly statistics (per month, for the
judged year and optionally the year before) and what the aggregator measured per day. `case`
writes the registry to a directory, loads it with the real loader, and returns it with the
`Measured` frames `greenmon.rules.screening.inputs.read_measured` would have returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl

from greenmon.registry import (
    ENTERPRISE_COLUMNS,
    METER_COLUMNS,
    MONTHLY_COLUMNS,
    Registry,
    load_registry,
)
from greenmon.rules.screening.inputs import DAILY_SCHEMA, Measured
from greenmon.rules.screening.period import Period
from tests.support import write_csv

TZ = ZoneInfo("Asia/Shanghai")
DECLARED = (
    "energy_management_certified",
    "major_violation",
    "green_factory_level",
    "above_scale",
    "evaluation_exempt",
    "production_start",
)


@dataclass
class Firm:
    """One enterprise. Monthly figures are per month (the same every month unless `months`
    overrides one); daily figures per day of the judged period."""

    id: str
    industry: str = "C1712"
    county: str = "崇川区"
    land: float | None = 100.0
    certified: str = "true"
    violation: str = "false"
    level: str = ""
    above_scale: str = ""
    exempt: str = ""
    start: str = ""
    output: float | None = 1000.0
    value_added: float | None = 250.0
    sales: float | None = 1000.0
    tax: float | None = 30.0
    product: float | None = 100.0
    unit: str = "万米"
    months: dict[str, dict[str, float | None]] = field(default_factory=dict)
    previous: bool = True  # statistics for the year before, too (the same figures)
    kgce_day: float | None = 1000.0
    kgco2_day: float = 2500.0
    completeness: float = 1.0
    generation_kgce: float | None = None  # a generation meter with this much over the period
    days_missing: int = 0  # the period's last days without a row


def _stats(firm: Firm, month: str) -> dict[str, object]:
    row: dict[str, object] = {
        "enterprise_id": firm.id,
        "month": month,
        "output_value_10k_yuan": firm.output,
        "value_added_10k_yuan": firm.value_added,
        "sales_10k_yuan": firm.sales,
        "tax_10k_yuan": firm.tax,
        "product_output": firm.product,
        "product_unit": firm.unit,
    }
    row.update(firm.months.get(month, {}))
    return row


def case(
    root: Path, firms: Sequence[Firm], year: int = 2025, as_of: datetime | None = None
) -> tuple[Registry, Measured, Period]:
    root.mkdir(parents=True, exist_ok=True)
    write_csv(
        root / "enterprises.csv",
        (*ENTERPRISE_COLUMNS, *DECLARED),
        [
            {
                "enterprise_id": f.id,
                "name": f"{f.id} 示例",
                "county": f.county,
                "industry": f.industry,
                "land_area_mu": f.land,
                "energy_management_certified": f.certified,
                "major_violation": f.violation,
                "green_factory_level": f.level,
                "above_scale": f.above_scale,
                "evaluation_exempt": f.exempt,
                "production_start": f.start,
            }
            for f in firms
        ],
    )
    meters: list[dict[str, object]] = []
    for f in firms:
        meters.append({"meter_id": f"{f.id}-EL", "enterprise_id": f.id, "carrier": "electricity",
                       "unit": "kWh", "kind": "register", "role": "boundary",
                       "raw_material": "false"})  # fmt: skip
        if f.generation_kgce is not None:
            meters.append({"meter_id": f"{f.id}-PV", "enterprise_id": f.id,
                           "carrier": "electricity", "unit": "kWh", "kind": "interval",
                           "role": "generation", "raw_material": "false"})  # fmt: skip
    write_csv(root / "meters.csv", METER_COLUMNS, meters)
    monthly = []
    for f in firms:
        years = [year - 1, year] if f.previous else [year]
        for y in years:
            for m in range(1, 13):
                row = _stats(f, f"{y}-{m:02d}")
                if row.get("skip"):
                    continue
                monthly.append(row)
    write_csv(root / "monthly.csv", MONTHLY_COLUMNS, monthly)
    registry = load_registry(root)
    period = Period.of(year, as_of)
    days = [period.start + timedelta(days=d) for d in range(period.days)]
    daily = []
    for f in firms:
        if f.kgce_day is None:
            continue
        for day in days[: len(days) - f.days_missing]:
            daily.append((f.id, day, f.kgce_day, f.kgco2_day, f.completeness, f.kgce_day))
    generation = [(f.id, f.generation_kgce) for f in firms if f.generation_kgce is not None]
    measured = Measured(
        daily=pl.DataFrame(daily, schema=DAILY_SCHEMA, orient="row"),
        generation=pl.DataFrame(
            generation,
            schema={"enterprise": pl.String, "generation_kgce": pl.Float64},
            orient="row",
        ),
        electricity=pl.DataFrame(schema={"enterprise": pl.String, "electricity_kwh": pl.Float64}),
        previous=pl.DataFrame(
            [
                (f.id, f.kgce_day * 365, f.kgco2_day * 365, f.kgce_day * 365, None)
                for f in firms
                if f.kgce_day is not None and f.previous
            ],
            schema={
                "enterprise": pl.String,
                "kgce": pl.Float64,
                "kgco2": pl.Float64,
                "double_control_kgce": pl.Float64,
                "electricity_kwh": pl.Float64,
            },
            orient="row",
        ),
        rows=len(daily),
        seconds=0.0,
    )
    return registry, measured, period


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=TZ).astimezone(UTC)  # type: ignore[misc]
