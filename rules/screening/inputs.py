"""What the screening reads from InfluxDB: the aggregator's outputs for a period, nothing raw.

- ``energy``, ``window=1d``, ``carrier=total``: per enterprise and local day, comprehensive
  ``kgce``, ``kgco2``, ``double_control_kgce`` and ``completeness`` — row by row, because
  completeness is judged per day and a year to date ends on any day;
- ``meter_energy``, ``window=1d``, ``role=generation``: on-site generation (the renewable
  share's numerator);
- ``energy``, ``carrier=electricity``: electricity in kWh, only when an efficiency indicator
  divides by it;
- the previous year from ``window=1mo`` rows (the 亩均 benchmark is the previous year's county
  average).

Rows are read, not summed by InfluxDB: on InfluxDB 1.x a ``sum() ... GROUP BY "enterprise"``
over a year of daily points took twice as long as reading the points, and selecting the
``enterprise`` tag as a column (no ``GROUP BY``) is the fastest form (measured with
``greenmon bench screen``). Queries go a month at a time, two at once. An empty answer is an
empty frame with the expected columns (a database the aggregator has not written yet judges as
"no data").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Final
from zoneinfo import ZoneInfo

import polars as pl

from greenmon.influx import InfluxClient
from greenmon.rules.screening.period import Period

__all__ = ["DAILY_SCHEMA", "Measured", "read_daily", "read_measured"]

_TIME: Final = pl.Datetime("ms", "UTC")
DAILY_SCHEMA: Final = pl.Schema(
    {
        "enterprise": pl.String(),
        "time": _TIME,
        "kgce": pl.Float64(),
        "kgco2": pl.Float64(),
        "completeness": pl.Float64(),
        "double_control_kgce": pl.Float64(),
    }
)
_DAILY_FIELDS: Final = ("kgce", "kgco2", "completeness", "double_control_kgce")
_PREVIOUS_FIELDS: Final = ("kgce", "kgco2", "double_control_kgce")
_PARALLEL: Final = 2  # queries at once

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Measured:
    """The aggregator's outputs for one period (and the year before it)."""

    daily: pl.DataFrame  # DAILY_SCHEMA, one row per enterprise and local day
    generation: pl.DataFrame  # enterprise, generation_kgce (the period)
    electricity: pl.DataFrame  # enterprise, electricity_kwh (the whole months of the period)
    previous: pl.DataFrame  # enterprise, kgce, kgco2, double_control_kgce, electricity_kwh
    rows: int  # points read
    seconds: float  # time spent reading


def _ms(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 1000)


def _month_starts_between(start: datetime, end: datetime, tz: str) -> list[datetime]:
    """`start`, then every local first of the month after it and before `end`."""
    zone = ZoneInfo(tz)
    out, moment = [start], start
    while True:
        local = moment.astimezone(zone)
        year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        moment = datetime(year, month, 1, tzinfo=zone).astimezone(UTC)
        if moment >= end:
            return out
        out.append(moment)


def _month_starts(period: Period) -> list[datetime]:
    return _month_starts_between(period.start, period.end, period.tz)


def _rows(
    client: InfluxClient,
    measurement: str,
    where: str,
    fields: dict[str, str],
    bounds: list[datetime],
    progress: Progress | None = None,
) -> pl.DataFrame:
    """``enterprise, time`` + one Float64 column per `fields` item (output name -> field), for
    every point of `measurement` matching `where` between successive `bounds`."""
    select = ", ".join(f'"{field}" AS "{name}"' for name, field in fields.items())
    schema = {"enterprise": pl.String(), "time": _TIME, **{n: pl.Float64() for n in fields}}

    def one(lo: datetime, hi: datetime) -> pl.DataFrame:
        df = client.query(
            f'SELECT {select}, "enterprise" FROM {client.source(measurement)} WHERE {where} '
            f"AND time >= {_ms(lo)}ms AND time < {_ms(hi)}ms",
            epoch="ms",
            schema_overrides={"enterprise": pl.String},
        )
        if not df.height or "enterprise" not in df.columns:
            return pl.DataFrame(schema=schema)
        return df.select(
            pl.col("enterprise").cast(pl.String),
            pl.col("time").cast(pl.Int64).cast(_TIME),
            *(
                (pl.col(n) if n in df.columns else pl.lit(None)).cast(pl.Float64).alias(n)
                for n in fields
            ),
        )

    spans = list(pairwise(bounds))
    frames: list[pl.DataFrame] = []
    with ThreadPoolExecutor(_PARALLEL) as pool:
        for i, frame in enumerate(pool.map(lambda span: one(*span), spans)):
            frames.append(frame)
            if progress is not None:
                progress(i + 1, len(spans))
    frames = [f for f in frames if f.height]
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)


def read_daily(
    client: InfluxClient, period: Period, progress: Progress | None = None
) -> pl.DataFrame:
    """The daily ``carrier=total`` rows of the period (`DAILY_SCHEMA`)."""
    df = _rows(
        client,
        "energy",
        "\"window\" = '1d' AND \"carrier\" = 'total'",
        {f: f for f in _DAILY_FIELDS},
        [*_month_starts(period), period.end],
        progress,
    )
    return df.select(DAILY_SCHEMA.names())


def _sums(
    client: InfluxClient,
    measurement: str,
    where: str,
    fields: dict[str, str],
    start: datetime,
    end: datetime,
    tz: str,
    counted: list[int],
) -> pl.DataFrame:
    """``enterprise`` + one summed column per `fields` item (output name -> field); the rows
    read are appended to `counted`."""
    rows = _rows(client, measurement, where, fields, [*_month_starts_between(start, end, tz), end])
    counted.append(rows.height)
    return rows.group_by("enterprise").agg(pl.col(name).sum() for name in fields)


def read_measured(
    client: InfluxClient,
    period: Period,
    *,
    electricity: bool = False,
    previous: bool = False,
    progress: Progress | None = None,
) -> Measured:
    """Everything the judgement of `period` reads (see the module docstring)."""
    started = time.perf_counter()
    counted: list[int] = []
    daily = read_daily(client, period, progress)
    generation = _sums(
        client,
        "meter_energy",
        "\"window\" = '1d' AND \"role\" = 'generation'",
        {"generation_kgce": "kgce"},
        period.start,
        period.end,
        period.tz,
        counted,
    )
    power = pl.DataFrame(schema={"enterprise": pl.String, "electricity_kwh": pl.Float64})
    if electricity and period.months:
        power = _sums(
            client,
            "energy",
            "\"window\" = '1d' AND \"carrier\" = 'electricity'",
            {"electricity_kwh": "quantity"},
            period.start,
            period.ratio_end,
            period.tz,
            counted,
        )
    before = pl.DataFrame(
        schema={
            "enterprise": pl.String,
            **{f: pl.Float64 for f in _PREVIOUS_FIELDS},
            "electricity_kwh": pl.Float64,
        }
    )
    if previous:
        last = Period.of(period.year - 1, None, period.tz)
        before = _sums(
            client,
            "energy",
            "\"window\" = '1mo' AND \"carrier\" = 'total'",
            {f: f for f in _PREVIOUS_FIELDS},
            last.start,
            last.end,
            period.tz,
            counted,
        )
        if electricity:
            kwh = _sums(
                client,
                "energy",
                "\"window\" = '1mo' AND \"carrier\" = 'electricity'",
                {"electricity_kwh": "quantity"},
                last.start,
                last.end,
                period.tz,
                counted,
            )
            before = before.join(kwh, on="enterprise", how="full", coalesce=True)
        else:
            before = before.with_columns(pl.lit(None, dtype=pl.Float64).alias("electricity_kwh"))
    rows = daily.height + sum(counted)
    return Measured(
        daily=daily,
        generation=generation,
        electricity=power,
        previous=before,
        rows=rows,
        seconds=time.perf_counter() - started,
    )
