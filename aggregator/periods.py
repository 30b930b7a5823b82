"""Meter periods: one meter id with several rows in meters.csv, each valid over its
[valid_from, valid_to) (`greenmon.registry`, optional columns).

A register replaced by another (or re-rated: a new CT ratio, a new rollover) is one metering
point: the gateway keeps sending the same meter id, the register restarts. Without periods the
drop is a ``reset`` (an anomaly; what the old register counted between its last reading and
the change is lost, and one multiplier applies to both registers). With periods, when the
registry has any (`Registry.has_periods`), batch runs (`greenmon.aggregator.pipeline.aggregate`)
and follow mode (`greenmon.aggregator.follow`) compute per period:

- every row of meters.csv becomes a *series* of its own (`series_table`), with its own
  multiplier, rollover and plausibility limit;
- `split` gives each reading to the series whose period holds its device time (readings
  outside every period of their meter are left out: a meter before commissioning or after
  removal), and adds the registry's readings at the edges: a row's ``final_reading`` at its
  ``valid_to`` (the old register's last value, 旧表止码) and ``initial_reading`` at its
  ``valid_from`` (the new register's first value, 新表起码). With both, the energy on either
  side of the change is exact; without them, the stretch between the old register's last
  reading and the new one's first is unknown and left out (its completeness shows it);
- classification and windows run on series exactly as on meters, so a replacement is never a
  reset, and `merge` adds a meter's series back together per window: quantities and readings
  summed (``readings`` includes the registry's edge readings), completeness = the time valid
  readings cover / the part of the window in which the meter was valid (`with_completeness`,
  also for the hours, days and months follow mode rolls up), so a meter commissioned at noon
  is complete for a day whose afternoon it fully covered.
"""

from __future__ import annotations

from typing import Final

import polars as pl

__all__ = [
    "merge",
    "meter_of",
    "series_meters",
    "series_rates",
    "series_table",
    "split",
    "to_meters",
    "with_completeness",
]

_SEP: Final = "#"  # series id = meter id + "#" + period number, when a meter has periods
_NEVER: Final = -(2**62)
_EVER: Final = 2**62


def series_table(periods: pl.DataFrame) -> pl.DataFrame:
    """`Registry.periods` with ``series`` (the id classification runs on), ``from_ms`` and
    ``to_ms`` (epoch ms; open ends as far past/future), in meter and period order."""
    frame = periods
    for column in ("valid_from", "valid_to"):
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.Datetime("ms", "UTC")).alias(column))
    for column in ("initial_reading", "final_reading"):
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.Float64).alias(column))
    frame = frame.with_columns(
        pl.col("valid_from").dt.epoch("ms").fill_null(_NEVER).alias("from_ms"),
        pl.col("valid_to").dt.epoch("ms").fill_null(_EVER).alias("to_ms"),
    ).sort("meter_id", "from_ms")
    many = pl.len().over("meter_id") > 1
    number = pl.int_range(pl.len()).over("meter_id").cast(pl.String)
    series = pl.when(many).then(pl.col("meter_id") + _SEP + number).otherwise(pl.col("meter_id"))
    return frame.with_columns(series.alias("series"))


def series_meters(table: pl.DataFrame) -> pl.DataFrame:
    """The meters frame the classification runs on: one row per series, named ``meter_id``."""
    return table.drop("meter_id").rename({"series": "meter_id"})


def split(readings: pl.LazyFrame, table: pl.DataFrame) -> pl.LazyFrame:
    """Readings (``meter, time, value``) relabelled to their series, plus the registry's edge
    readings (put first: a real reading at the same instant wins, as the later copy does)."""
    schema = readings.collect_schema()
    time_dtype = schema["time"]
    assert isinstance(time_dtype, pl.Datetime)
    spans = table.select(pl.col("meter_id").alias("__meter"), "series", "from_ms", "to_ms").lazy()
    time = pl.col("time")
    if time_dtype.time_zone is None:
        t_ms = time.dt.replace_time_zone("UTC").dt.epoch("ms")
    else:
        t_ms = time.dt.epoch("ms")
    relabelled = (
        readings.with_columns(pl.col("meter").cast(pl.String).alias("__meter"), t_ms.alias("__t"))
        .join(spans, on="__meter", how="inner")
        .filter((pl.col("__t") >= pl.col("from_ms")) & (pl.col("__t") < pl.col("to_ms")))
        .select(pl.col("series").alias("meter"), "time", pl.col("value").cast(pl.Float64))
    )
    edges = pl.concat(
        [
            table.filter(pl.col("initial_reading").is_not_null()).select(
                pl.col("series").alias("meter"),
                pl.col("from_ms").alias("__t"),
                pl.col("initial_reading").alias("value"),
            ),
            table.filter(pl.col("final_reading").is_not_null()).select(
                pl.col("series").alias("meter"),
                pl.col("to_ms").alias("__t"),
                pl.col("final_reading").alias("value"),
            ),
        ]
    )
    to_time = pl.col("__t").cast(pl.Datetime("ms", "UTC"))
    if time_dtype.time_zone is None:
        to_time = to_time.dt.replace_time_zone(None)
    edge_rows = edges.lazy().select("meter", to_time.cast(time_dtype).alias("time"), "value")
    return pl.concat([edge_rows, relabelled])


def merge(windows: pl.LazyFrame, table: pl.DataFrame) -> pl.LazyFrame:
    """Per-series window rows (`greenmon.aggregator.windows.attribute`) -> per-meter rows:
    quantity, readings and ``covered`` summed, ``completeness`` from `with_completeness`."""
    names = table.select(pl.col("series").alias("meter"), pl.col("meter_id").alias("__meter"))
    per_meter = (
        windows.join(names.lazy(), on="meter", how="inner")
        .with_columns(pl.col("__meter").alias("meter"))
        .group_by("meter", "window", "time", "end")
        .agg(
            pl.col("quantity").sum(),
            pl.col("readings").sum().cast(pl.UInt32),
            pl.col("covered").sum().cast(pl.Int64),
        )
    )
    return with_completeness(per_meter, table).sort("meter", "window", "time")


def with_completeness(rows: pl.LazyFrame, table: pl.DataFrame) -> pl.LazyFrame:
    """``completeness`` of per-meter window rows (``meter, time, end, covered``): the time
    valid readings cover over the part of the window in which the meter was valid (a meter
    neither commissioned nor removed in the window: its whole length)."""
    spans = table.select(pl.col("meter_id").alias("meter"), "from_ms", "to_ms").lazy()
    ws, we = pl.col("time").dt.epoch("ms"), pl.col("end").dt.epoch("ms")
    overlap = pl.max_horizontal(
        pl.min_horizontal(we, pl.col("to_ms")) - pl.max_horizontal(ws, pl.col("from_ms")),
        pl.lit(0),
    )
    keys = rows.select("meter", "time", "end").unique()
    valid = (
        keys.join(spans, on="meter", how="inner")
        .group_by("meter", "time", "end")
        .agg(overlap.sum().cast(pl.Float64).alias("__valid"))
    )
    covered = pl.col("covered").cast(pl.Float64)
    return (
        rows.drop("completeness", strict=False)
        .join(valid, on=["meter", "time", "end"], how="left")
        .with_columns(
            pl.when(pl.col("__valid") > 0)
            .then(pl.min_horizontal(covered / pl.col("__valid"), pl.lit(1.0)))
            .otherwise(0.0)
            .alias("completeness")
        )
        .drop("__valid")
    )


def series_rates(
    rates: pl.LazyFrame | pl.DataFrame | None, table: pl.DataFrame
) -> pl.LazyFrame | None:
    """Typical rates per meter (`consumption.typical_rates`) given to each of its series."""
    if rates is None:
        return None
    return (
        rates.lazy()
        .with_columns(pl.col("meter").cast(pl.String))
        .join(table.lazy().select("meter_id", "series"), left_on="meter", right_on="meter_id")
        .with_columns(pl.col("series").alias("meter"))
        .drop("series")
    )


def to_meters(classified: pl.LazyFrame, table: pl.DataFrame) -> pl.LazyFrame:
    """Classified readings with their meter ids instead of series ids (events, summaries)."""
    return classified.with_columns(pl.col("meter").cast(pl.String).replace_strict(meter_of(table)))


def meter_of(table: pl.DataFrame) -> dict[str, str]:
    """Series id -> meter id."""
    return dict(table.select("series", "meter_id").iter_rows())
