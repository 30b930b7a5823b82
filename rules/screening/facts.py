"""Per-enterprise facts for a period: what was measured, declared and reported, in one row.

`enterprise_facts` joins, for every enterprise of the registry:

- energy over the period from the daily ``energy`` rows: comprehensive ``kgce``, ``kgco2``,
  ``double_control_kgce``; the days with data and the mean daily completeness (a day without a
  row counts as 0: a silent gateway is not "complete");
- the same sums over the period's whole months (``ratio_*``), which the ratios to monthly
  statistics use — null unless every day of those months has a row (a day without a row had
  no reading at all: its energy is unknown, and a ratio over it would pass for a small one;
  ``ratio_energy_note`` says how many days are missing) — and electricity in kWh over those
  months when it was read;
- on-site generation (kgce) over the period: 0 for an enterprise without a ``generation``
  meter in the registry, null for one that has such a meter but no data;
- `statistics` of monthly.csv over the whole months: strict sums (null when any month lacks
  the value — statistics usually arrive after the energy data, and a missing month must not
  pass for a small one) with the months that lack each value, mean headcount, product unit;
  and the first month with statistics (for "producing for two years");
- the land area and the declared attributes from enterprises.csv (text, as validated by the
  registry), and the provincial intensity reference the aggregator would use for the year
  (`greenmon.aggregator.reference.intensity_references`, same files, same choice).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import polars as pl

from greenmon.aggregator.reference import ReferenceChoice, References, intensity_references
from greenmon.registry import (
    DECLARED_FLAGS,
    GREEN_FACTORY_COLUMN,
    PRODUCTION_START_COLUMN,
    Registry,
)
from greenmon.rules.screening.inputs import Measured
from greenmon.rules.screening.period import Period

__all__ = ["DECLARED_COLUMNS", "STAT_SUMS", "enterprise_facts", "statistics"]

#: Monthly columns summed over a period (strictly: null when a month lacks the value).
STAT_SUMS: Final = (
    "output_value_10k_yuan",
    "value_added_10k_yuan",
    "sales_10k_yuan",
    "tax_10k_yuan",
    "product_output",
    "rd_expense_10k_yuan",
)
#: enterprises.csv columns carried along as text (null when absent or empty).
DECLARED_COLUMNS: Final = (*DECLARED_FLAGS, GREEN_FACTORY_COLUMN, PRODUCTION_START_COLUMN)


def _col(df: pl.DataFrame, name: str, dtype: pl.DataType) -> pl.Expr:
    return pl.col(name).cast(dtype) if name in df.columns else pl.lit(None, dtype=dtype).alias(name)


def statistics(
    monthly: pl.DataFrame, enterprises: Sequence[str], months: Sequence[str]
) -> pl.DataFrame:
    """Per enterprise over `months` (``YYYY-MM``): strict sums of `STAT_SUMS`, mean
    ``employees`` (strict too), the ``product_unit``, and ``missing_<column>``: the months
    lacking that value, comma-separated (null when none)."""
    ids = pl.DataFrame({"enterprise": list(enterprises)}, schema={"enterprise": pl.String})
    grid = ids.join(pl.DataFrame({"month": list(months)}, schema={"month": pl.String}), how="cross")
    stats = monthly.select(
        pl.col("enterprise_id").alias("enterprise"),
        "month",
        *(_col(monthly, c, pl.Float64()) for c in (*STAT_SUMS, "employees")),
        _col(monthly, "product_unit", pl.String()),
    )
    joined = grid.join(stats, on=["enterprise", "month"], how="left")
    strict = [
        pl.when(pl.col(c).null_count() == 0).then(pl.col(c).sum()).alias(c) for c in STAT_SUMS
    ]
    missing = [
        pl.col("month").filter(pl.col(c).is_null()).str.join(", ").alias(f"missing_{c}")
        for c in (*STAT_SUMS, "employees")
    ]
    out = joined.group_by("enterprise").agg(
        *strict,
        pl.when(pl.col("employees").null_count() == 0)
        .then(pl.col("employees").mean())
        .alias("employees"),
        pl.col("product_unit").drop_nulls().first(),
        *missing,
    )
    out = ids.join(out, on="enterprise", how="left")
    if not months:  # nothing to sum yet: every value unknown
        out = out.with_columns(
            *(pl.lit(None, dtype=pl.Float64).alias(c) for c in (*STAT_SUMS, "employees")),
            *(
                pl.lit("no whole month yet").alias(f"missing_{c}")
                for c in (*STAT_SUMS, "employees")
            ),
        )
    return out.with_columns(
        pl.when(pl.col(f"missing_{c}") != "").then(pl.col(f"missing_{c}")).alias(f"missing_{c}")
        for c in (*STAT_SUMS, "employees")
    )


def _first_month(monthly: pl.DataFrame) -> pl.DataFrame:
    producing = (pl.col("output_value_10k_yuan").fill_null(0) > 0) | (
        pl.col("sales_10k_yuan").fill_null(0) > 0
    )
    return (
        monthly.filter(producing)
        .group_by(pl.col("enterprise_id").alias("enterprise"))
        .agg(pl.col("month_start").min().alias("first_stats_month"))
    )


def enterprise_facts(
    registry: Registry,
    measured: Measured,
    period: Period,
    references: References,
    choice: ReferenceChoice | None = None,
) -> pl.DataFrame:
    """One row per registry enterprise (see the module docstring for the columns)."""
    ent = registry.enterprises
    base = ent.select(
        pl.col("enterprise_id").alias("enterprise"),
        "name",
        "county",
        "industry",
        "land_area_mu",
        *(_col(ent, c, pl.String()) for c in DECLARED_COLUMNS),
    )
    ratio = pl.col("time") < period.ratio_end
    daily = (
        measured.daily.filter((pl.col("time") >= period.start) & (pl.col("time") < period.end))
        .group_by("enterprise")
        .agg(
            pl.len().cast(pl.UInt32).alias("days_with_data"),
            (pl.col("completeness").fill_null(0).sum() / period.days).alias("completeness_mean"),
            pl.col("kgce").sum(),
            pl.col("kgco2").sum(),
            pl.col("double_control_kgce").sum(),
            ratio.sum().cast(pl.UInt32).alias("ratio_days"),
            pl.col("kgce").filter(ratio).sum().alias("ratio_kgce"),
            pl.col("kgco2").filter(ratio).sum().alias("ratio_kgco2"),
            pl.col("double_control_kgce").filter(ratio).sum().alias("ratio_double_control_kgce"),
        )
    )
    generators = (
        registry.meters.filter(pl.col("role") == "generation")
        .get_column("enterprise_id")
        .unique()
        .implode()
    )
    ids = ent.get_column("enterprise_id").to_list()
    stats = statistics(registry.monthly, ids, period.month_labels())
    refs = intensity_references(ent, references, [period.year], choice).select(
        pl.col("enterprise_id").alias("enterprise"),
        "reference_tce_per_10k_yuan",
        pl.col("denominator").alias("reference_denominator"),
        pl.col("reference_status"),
        pl.col("reference").alias("reference_label"),
    )
    facts = (
        base.join(daily, on="enterprise", how="left")
        .join(measured.generation, on="enterprise", how="left")
        .join(measured.electricity, on="enterprise", how="left")
        .join(stats, on="enterprise", how="left")
        .join(_first_month(registry.monthly), on="enterprise", how="left")
        .join(refs, on="enterprise", how="left")
        .with_columns(
            pl.col("days_with_data").fill_null(0),
            pl.col("ratio_days").fill_null(0),
            pl.col("completeness_mean").fill_null(0.0),
            pl.col("enterprise").is_in(generators).alias("has_generation"),
        )
    )
    expected = round((period.ratio_end - period.start).total_seconds() / 86_400)
    no_days = pl.col("days_with_data") == 0
    no_ratio_days = pl.lit(expected == 0) | (pl.col("ratio_days") < expected)
    months = period.month_labels()
    span = (f"{months[0]}..{months[-1]}" if len(months) > 1 else months[0]) if months else ""
    return facts.with_columns(
        *(
            pl.when(no_days).then(None).otherwise(pl.col(c)).alias(c)
            for c in ("kgce", "kgco2", "double_control_kgce")
        ),
        *(
            pl.when(no_ratio_days).then(None).otherwise(pl.col(c)).alias(c)
            for c in ("ratio_kgce", "ratio_kgco2", "ratio_double_control_kgce")
        ),
        pl.when(pl.col("has_generation"))
        .then(pl.col("generation_kgce"))
        .otherwise(0.0)
        .alias("generation_kgce"),
        pl.when(pl.col("ratio_days") == 0)
        .then(pl.lit(f"no energy data in {span}" if months else "no whole month yet"))
        .when(no_ratio_days)
        .then(
            pl.format(
                f"energy data on only {{}} of {expected} days of {span}", pl.col("ratio_days")
            )
        )
        .alias("ratio_energy_note"),
        pl.lit(period.days, dtype=pl.UInt32).alias("period_days"),
        pl.lit(period.months, dtype=pl.UInt32).alias("period_months"),
    )
