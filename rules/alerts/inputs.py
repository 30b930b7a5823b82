"""What the alerts read from InfluxDB, as Polars frames (InfluxQL, CSV answers).

- `read_months`: the aggregator's ``energy`` rows with ``window=1mo`` and ``carrier=total``
  (double-control kgce and completeness per enterprise and local month) of the complete months
  from 1 January of last year (the profile, the year-on-year intensity, the year to date): a
  month is the sum of its days, so this is the daily data summed by the aggregator, a
  thirtieth of the rows to read;
- `read_daily`: the ``window=1d`` rows of the recent days (the month so far, the sudden-change
  baseline); months without monthly rows at all (``aggregate --windows`` without ``1mo``)
  are read as days and summed here instead (`fill_months`);
- `read_meter_days`: ``meter_energy`` completeness of every meter on the judged day;
- `read_last_seen`: each meter's newest ``meter_reading`` at or before T within the look-back
  — the only read of raw readings, for the gateway-silence rule.

A database that does not exist yet reads as no rows.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import polars as pl

from greenmon.influx import InfluxClient, InfluxDatabaseNotFoundError, InfluxQueryError
from greenmon.rules.alerts.evaluate import (
    DAILY_SCHEMA,
    LAST_SEEN_SCHEMA,
    METER_DAY_SCHEMA,
    MONTH_SCHEMA,
    months_from_daily,
)

__all__ = [
    "fill_months",
    "local_midnight",
    "read_daily",
    "read_last_seen",
    "read_meter_days",
    "read_months",
]

_TIME: Final = pl.Datetime("ms", "UTC")


def _ms(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 1000)


def local_midnight(day: date, tz: str) -> datetime:
    """The instant a local `day` starts."""
    return datetime.combine(day, time(), tzinfo=ZoneInfo(tz))


def _query(client: InfluxClient, influxql: str) -> pl.DataFrame:
    try:
        return client.query(influxql, epoch="ms")
    except InfluxDatabaseNotFoundError:
        return pl.DataFrame()
    except InfluxQueryError as exc:
        if "retention policy not found" in str(exc):  # nothing was ever written there
            return pl.DataFrame()
        raise


def _month_start(day: date) -> date:
    return date(day.year, day.month, 1)


def _next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def read_months(client: InfluxClient, as_of: datetime, tz: str) -> pl.DataFrame:
    """`MONTH_SCHEMA` rows of the complete local months from 1 January of last year up to
    the month of `as_of`. ``days`` (days with data) is the month's length, except in an
    enterprise's first month with data after the first month read, where monitoring began:
    its completeness times its length."""
    today = as_of.astimezone(ZoneInfo(tz)).date()
    first = date(today.year - 1, 1, 1)
    months = _totals(client, "1mo", first, _month_start(today), tz, "month")
    if months is None:
        return pl.DataFrame(schema=MONTH_SCHEMA)
    dim = pl.col("month").dt.month_end().dt.day().cast(pl.Float64)
    started = (pl.col("month") > first) & (
        pl.col("month").shift(1).over("enterprise", order_by="month").is_null()
        | (pl.col("month").shift(1).over("enterprise", order_by="month").dt.offset_by("1mo")
           != pl.col("month"))
    )  # fmt: skip
    return months.with_columns(
        pl.when(started).then(pl.col("completeness").clip(0, 1) * dim).otherwise(dim).alias("days")
    ).select(MONTH_SCHEMA.names())


def fill_months(
    client: InfluxClient, months: pl.DataFrame, daily: pl.DataFrame, as_of: datetime, tz: str
) -> pl.DataFrame:
    """`months` plus, for every complete month from 1 January of last year that has no
    monthly row at all, its sum of daily rows (from `daily` where it covers them, else read:
    one query per run of such months)."""
    today = as_of.astimezone(ZoneInfo(tz)).date()
    present = set(months.get_column("month").to_list())
    wanted, m = [], date(today.year - 1, 1, 1)
    while m < _month_start(today):
        if m not in present:
            wanted.append(m)
        m = _next_month(m)
    if not wanted:
        return months
    covered_from = daily.get_column("day").min() if daily.height else None
    runs: list[tuple[date, date]] = []
    for m in wanted:
        end = _next_month(m)
        if isinstance(covered_from, date) and m >= covered_from:
            continue  # the recent days read already hold it
        if runs and runs[-1][1] == m:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((m, end))
    days = [daily] + [read_daily(client, lo, hi, tz) for lo, hi in runs]
    all_days = pl.concat(days).unique(["enterprise", "day"])
    extra = months_from_daily(all_days).filter(pl.col("month").is_in(wanted))
    return pl.concat([months, extra])


def read_daily(client: InfluxClient, since: date, until: date, tz: str) -> pl.DataFrame:
    """`DAILY_SCHEMA` rows of the local days in [since, until)."""
    days = _totals(client, "1d", since, until, tz, "day")
    return pl.DataFrame(schema=DAILY_SCHEMA) if days is None else days


def _totals(
    client: InfluxClient, window: str, since: date, until: date, tz: str, key: str
) -> pl.DataFrame | None:
    """``enterprise, {key}, dc_kgce, completeness`` of the ``energy`` total rows of `window`
    stamped in the local days [since, until); None when there are none."""
    lo, hi = local_midnight(since, tz), local_midnight(until, tz)
    if hi <= lo:
        return None
    df = _query(
        client,
        'SELECT "double_control_kgce", "completeness" FROM "energy" '
        f"WHERE \"carrier\" = 'total' AND \"window\" = '{window}' "
        f'AND time >= {_ms(lo)}ms AND time < {_ms(hi)}ms GROUP BY "enterprise"',
    )
    if df.is_empty() or "enterprise" not in df.columns:
        return None
    return df.select(
        pl.col("enterprise").cast(pl.String),
        pl.col("time").cast(pl.Int64).cast(_TIME).dt.convert_time_zone(tz).dt.date().alias(key),
        pl.col("double_control_kgce").cast(pl.Float64).alias("dc_kgce"),
        pl.col("completeness").cast(pl.Float64),
    ).filter(pl.col("dc_kgce").is_not_null())


def read_meter_days(client: InfluxClient, day: date, tz: str) -> pl.DataFrame:
    """`METER_DAY_SCHEMA`: each meter's completeness on local `day` (meters with a row)."""
    start = local_midnight(day, tz)
    df = _query(
        client,
        f'SELECT "completeness" FROM "meter_energy" WHERE "window" = \'1d\' '
        f'AND time = {_ms(start)}ms GROUP BY "meter"',
    )
    if df.is_empty() or "meter" not in df.columns:
        return pl.DataFrame(schema=METER_DAY_SCHEMA)
    return df.select(pl.col("meter").cast(pl.String), pl.col("completeness").cast(pl.Float64))


def read_last_seen(client: InfluxClient, as_of: datetime, lookback_s: float) -> pl.DataFrame:
    """`LAST_SEEN_SCHEMA`: each meter's newest reading in (as_of - lookback, as_of]."""
    lo = as_of - timedelta(seconds=lookback_s)
    df = _query(
        client,
        f'SELECT last("value") FROM {client.source("meter_reading")} WHERE time > {_ms(lo)}ms '
        f'AND time <= {_ms(as_of)}ms GROUP BY "meter"',
    )
    if df.is_empty() or "meter" not in df.columns:
        return pl.DataFrame(schema=LAST_SEEN_SCHEMA)
    return df.select(
        pl.col("meter").cast(pl.String), pl.col("time").cast(pl.Int64).cast(_TIME).alias("last")
    )
