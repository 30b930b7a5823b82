"""The ``screening`` and ``efficiency_class`` measurements (DESIGN.md §3), for the dashboards.

One point per enterprise and year, stamped with the local 1 January of the year, tags
``enterprise, county, industry, year`` (fixed per measurement, as InfluxDB 3 wants):

- ``screening``: ``score``, ``passed`` (1/0), ``rank``, ``coverage``, ``requirements_met``
  (1/0), ``indicators_scored``, ``value_<indicator>`` and ``score_<indicator>``; strings
  ``criteria`` (the files' label), ``period`` (what the figures cover) and ``gaps`` (each
  indicator short of its leading value, by its name, heaviest first:
  ``单位产品综合能耗: +8.2% -> baseline; ...``; absent when there is none), which the
  dashboards' candidates table shows;
- ``efficiency_class``: ``score``, ``class`` (``A`` .. ``D``, ``T``), ``class_code`` (1 for the
  first class, 2, ...; 0 for T, for dashboards that need a number), ``rank``,
  ``ranked_among``, ``evaluated`` (1/0), ``ratio_<indicator>``, ``value_<indicator>``; strings
  ``ranked_in``, ``reason`` (why T), ``criteria``, ``period``.

Re-running overwrites: the year's points of the measurement are deleted first (``DELETE ...
WHERE year = 'Y'``, InfluxDB 1.x; servers without InfluxQL DELETE keep stale fields that a
re-run does not write again, e.g. an indicator that became unscored), then written anew with
the aggregator's vectorised line-protocol writer.
"""

from __future__ import annotations

import logging
from typing import Final

import polars as pl

from greenmon.aggregator.store import to_lines
from greenmon.influx import InfluxClient, InfluxError
from greenmon.rules.screening.classify import ClassResult
from greenmon.rules.screening.period import Period
from greenmon.rules.screening.screen import ScreeningResult, gap_short

__all__ = [
    "CLASS_MEASUREMENT",
    "SCREENING_MEASUREMENT",
    "TAGS",
    "gaps",
    "write_classes",
    "write_screening",
]

log = logging.getLogger("greenmon.rules.screening")

SCREENING_MEASUREMENT: Final = "screening"
CLASS_MEASUREMENT: Final = "efficiency_class"
TAGS: Final = ("enterprise", "county", "industry", "year")
_TIME: Final = pl.Datetime("ms", "UTC")


def _replace(
    client: InfluxClient,
    measurement: str,
    period: Period,
    frame: pl.DataFrame,
    fields: list[str],
    strings: tuple[str, ...],
) -> int:
    """Delete the year's points of `measurement`, write `frame`'s; the points written."""
    try:
        client.query_json(f'DELETE FROM "{measurement}" WHERE "year" = \'{period.year}\'')
    except InfluxError as exc:  # 2.x/3.x v1 APIs: no InfluxQL DELETE; points are overwritten
        log.info("could not delete earlier %s points for %s (%s)", measurement, period.year, exc)
    lines = to_lines(frame, measurement, TAGS, fields, strings)
    return client.write(lines.to_list(), precision="ms") if lines.len() else 0


def _wide(long: pl.DataFrame, prefix: str, value: str) -> pl.DataFrame:
    if long.is_empty():
        return pl.DataFrame(schema={"enterprise": pl.String})
    wide = long.pivot(on="indicator", index="enterprise", values=value)
    return wide.rename({c: f"{prefix}{c}" for c in wide.columns if c != "enterprise"})


def _stamp(period: Period, label: str) -> list[pl.Expr]:
    return [
        pl.lit(period.start).cast(_TIME).alias("time"),
        pl.lit(str(period.year)).alias("year"),
        pl.lit(label).alias("criteria"),
        pl.lit(period.headline()).alias("period"),
    ]


def gaps(indicators: pl.DataFrame) -> pl.DataFrame:
    """``enterprise, gaps``: one line per enterprise naming each indicator's gap (`gap_short`),
    the heaviest indicators first; enterprises without a gap have no row."""
    rows = indicators.filter(pl.col("gap_target").is_not_null()).sort(
        ["enterprise", "weight", "indicator"], descending=[False, True, False]
    )
    # a few thousand rows a year, formatted once per run: gap_short is the one formatter
    # the JSON output and the report use too
    short = [gap_short(r) for r in rows.iter_rows(named=True)]
    return (
        rows.select("enterprise", "name")
        .with_columns(pl.Series("short", short, dtype=pl.String))
        .filter(pl.col("short").is_not_null())
        .group_by("enterprise", maintain_order=True)
        .agg(pl.format("{}: {}", "name", "short").str.join("; ").alias("gaps"))
    )


def write_screening(
    client: InfluxClient, result: ScreeningResult, period: Period, label: str
) -> int:
    """Write one ``screening`` point per enterprise; returns the points written."""
    frame = (
        result.candidates.with_columns(
            *_stamp(period, label),
            pl.col("passed").cast(pl.Float64),
            pl.col("requirements_met").cast(pl.Float64),
            pl.col("rank").cast(pl.Float64),
            pl.col("indicators_scored").cast(pl.Float64),
        )
        .join(_wide(result.indicators, "value_", "value"), on="enterprise", how="left")
        .join(_wide(result.indicators, "score_", "score"), on="enterprise", how="left")
        .join(gaps(result.indicators), on="enterprise", how="left")
    )
    fields = [
        "score",
        "passed",
        "rank",
        "coverage",
        "requirements_met",
        "indicators_scored",
        *(c for c in frame.columns if c.startswith(("value_", "score_"))),
    ]
    strings = ("criteria", "period", "gaps")
    return _replace(client, SCREENING_MEASUREMENT, period, frame, fields, strings)


def write_classes(
    client: InfluxClient, result: ClassResult, period: Period, label: str, classes: list[str]
) -> int:
    """Write one ``efficiency_class`` point per enterprise; returns the points written."""
    codes = {c: n for n, c in enumerate(classes, start=1)}
    frame = (
        result.enterprises.with_columns(
            *_stamp(period, label),
            pl.col("class")
            .replace_strict(codes, default=0, return_dtype=pl.Float64)
            .alias("class_code"),
            pl.col("rank").cast(pl.Float64),
            pl.col("ranked_among").cast(pl.Float64),
            pl.col("evaluated").cast(pl.Float64),
            pl.col("t_reason").alias("reason"),
        )
        .drop([c for c in result.enterprises.columns if c.startswith("value_")])
        .join(_wide(result.indicators, "value_", "value"), on="enterprise", how="left")
        .join(_wide(result.indicators, "ratio_", "ratio"), on="enterprise", how="left")
    )
    fields = [
        "score",
        "class_code",
        "rank",
        "ranked_among",
        "evaluated",
        *(c for c in frame.columns if c.startswith(("value_", "ratio_"))),
    ]
    strings = ("class", "ranked_in", "reason", "criteria", "period")
    return _replace(client, CLASS_MEASUREMENT, period, frame, fields, strings)
