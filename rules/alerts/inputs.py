"""What the alerts read from InfluxDB, as Polars frames (InfluxQL, CSV answers).

- `read_daily`: the aggregator's ``energy`` rows with ``window=1d`` and ``carrier=total``
  (double-control kgce and completeness per enterprise and local day) from 1 January of last
  year (for the profile and the year-on-year intensity) up to the evaluation's local day;
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

from greenmon.influx import InfluxClient, InfluxDatabaseNotFoundError
from greenmon.rules.alerts.evaluate import DAILY_SCHEMA, LAST_SEEN_SCHEMA, METER_DAY_SCHEMA

__all__ = ["local_midnight", "read_daily", "read_last_seen", "read_meter_days"]

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


def read_daily(client: InfluxClient, as_of: datetime, tz: str) -> pl.DataFrame:
    """`DAILY_SCHEMA` rows of every local day from 1 January of last year up to (not
    including) the local day of `as_of`."""
    today = as_of.astimezone(ZoneInfo(tz)).date()
    lo = local_midnight(date(today.year - 1, 1, 1), tz)
    hi = local_midnight(today, tz)
    df = _query(
        client,
        'SELECT "double_control_kgce", "completeness" FROM "energy" '
        f"WHERE \"carrier\" = 'total' AND \"window\" = '1d' "
        f'AND time >= {_ms(lo)}ms AND time < {_ms(hi)}ms GROUP BY "enterprise"',
    )
    if df.is_empty() or "enterprise" not in df.columns:
        return pl.DataFrame(schema=DAILY_SCHEMA)
    return df.select(
        pl.col("enterprise").cast(pl.String),
        pl.col("time").cast(pl.Int64).cast(_TIME).dt.convert_time_zone(tz).dt.date().alias("day"),
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
        f'SELECT last("value") FROM "meter_reading" WHERE time > {_ms(lo)}ms '
        f'AND time <= {_ms(as_of)}ms GROUP BY "meter"',
    )
    if df.is_empty() or "meter" not in df.columns:
        return pl.DataFrame(schema=LAST_SEEN_SCHEMA)
    return df.select(
        pl.col("meter").cast(pl.String), pl.col("time").cast(pl.Int64).cast(_TIME).alias("last")
    )
