"""Resource-use efficiency classes (亩均论英雄): scope, benchmarks, scores, classes A-D and T.

`classify(current, previous, criteria, months)` is pure. `current` and `previous` are
`quantities` frames: per enterprise, the year's sums of the statistics and energy each
indicator divides (``tax_10k_yuan``, ``land_area_mu``, ``energy_tce``, ...); `months` is how
many months the current figures cover (flows over stocks — land, headcount — are annualised).

1. **Class T** (not evaluated), the first reason that applies: a declared exemption
   (``evaluation_exempt``); producing for fewer than ``scope.min_months`` months by the end of
   the period (the declared ``production_start``, else the first month with statistics); no
   land area, or less than ``scope.min_land_mu`` unless above scale (``above_scale``) and
   ``scope.above_scale_evaluated``; with ``scope.missing = "not_evaluated"``, any indicator
   that cannot be computed (the reason names it).
2. **Benchmark** per county and indicator: ``benchmark.factor`` x the county's previous-year
   average over its evaluated firms (``aggregate``: Σ numerator / Σ denominator; ``mean``: the
   mean of the firms' values); a county without previous-year figures uses the current year's
   (``fallback = "current_year"``, said in ``basis``) or leaves the indicator unscored.
3. **Score** = Σ min(value / benchmark, cap) x weight.
4. **Classes** by rank within the ranking group — the county, or the whole city when the county
   has fewer than ``classes.min_group`` evaluated firms (or ``rank_within = "city"``). Rank 1 is
   the highest score; **tied scores share the better rank** (1, 2, 2, 4), so tied firms always
   get the same class. A firm at rank r of n takes the first class whose ``upper`` >= r / n.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import polars as pl

from greenmon.registry import TRUE_VALUES
from greenmon.rules.screening.criteria import EfficiencyCriteria
from greenmon.rules.screening.facts import STAT_SUMS

__all__ = ["NOT_EVALUATED", "STOCKS", "ClassResult", "classify", "quantities"]

NOT_EVALUATED: Final = "T"
#: Denominators that are stocks, not flows: a flow over part of a year is annualised.
STOCKS: Final = ("land_area_mu", "employees")
#: Quantities taken from the monthly statistics (the rest: land, and energy from the data).
_FROM_STATS: Final = (*(c for c in STAT_SUMS if c != "product_output"), "employees")
_EPS: Final = 1e-9


@dataclass(frozen=True)
class ClassResult:
    """``enterprises``: one row per enterprise (class, score, rank, reason, values);
    ``indicators``: per enterprise and indicator (value, benchmark, ratio, points);
    ``benchmarks``: per county and indicator; ``counties``: class counts per county."""

    enterprises: pl.DataFrame
    indicators: pl.DataFrame
    benchmarks: pl.DataFrame
    counties: pl.DataFrame


def quantities(
    facts: pl.DataFrame, energy: pl.DataFrame | None = None, *, prefix: str = "ratio_"
) -> pl.DataFrame:
    """Per enterprise: every `QUANTITIES` column, from `facts` (`enterprise_facts`, or a frame
    of `statistics` plus ``land_area_mu``) and, for energy, `facts`' ``{prefix}kgce`` columns
    or an `energy` frame (``enterprise, kgce, kgco2, double_control_kgce, electricity_kwh``)."""
    src = facts
    if energy is not None:
        src = facts.join(
            energy.select(
                "enterprise",
                pl.col("kgce").alias(f"{prefix}kgce"),
                pl.col("kgco2").alias(f"{prefix}kgco2"),
                pl.col("double_control_kgce").alias(f"{prefix}double_control_kgce"),
                "electricity_kwh",
            ),
            on="enterprise",
            how="left",
        )

    def col(name: str) -> pl.Expr:
        return pl.col(name) if name in src.columns else pl.lit(None, dtype=pl.Float64)

    return src.select(
        "enterprise",
        *(col(c).cast(pl.Float64).alias(c) for c in _FROM_STATS),
        col("land_area_mu").cast(pl.Float64).alias("land_area_mu"),
        (col(f"{prefix}kgce") / 1000.0).alias("energy_tce"),
        (col(f"{prefix}double_control_kgce") / 1000.0).alias("double_control_tce"),
        (col("electricity_kwh") / 1000.0).alias("electricity_mwh"),
        (col(f"{prefix}kgco2") / 1000.0).alias("co2_t"),
    )


def _value(num: str, den: str, scale: float, annualise: float) -> pl.Expr:
    factor = scale * (annualise if den in STOCKS and num not in STOCKS else 1.0)
    return pl.when(pl.col(den) > 0).then(pl.col(num) * factor / pl.col(den))


def _why_missing(num: str, den: str) -> pl.Expr:
    def what(column: str) -> str:
        if column in ("energy_tce", "double_control_tce", "co2_t"):
            return "no energy data for every day of the months"
        if column == "electricity_mwh":
            return "no electricity data for the months"
        if column == "land_area_mu":
            return "no land area"
        return f"no {column} for every month"

    return (
        pl.when(pl.col(num).is_null())
        .then(pl.lit(what(num)))
        .when(pl.col(den).is_null())
        .then(pl.lit(what(den)))
        .when(pl.col(den) <= 0)
        .then(pl.lit(f"{den} is 0"))
    )


def _t_reason(
    facts: pl.DataFrame, criteria: EfficiencyCriteria, year: int, last_month: int
) -> pl.Expr:
    scope = criteria.scope
    exempt = pl.col("evaluation_exempt").str.to_lowercase().is_in(TRUE_VALUES).fill_null(False)
    above = pl.col("above_scale").str.to_lowercase().is_in(TRUE_VALUES).fill_null(False)
    declared = pl.col("production_start").str.to_date("%Y-%m", strict=False)
    start = pl.coalesce(declared, pl.col("first_stats_month"))
    months = (year - start.dt.year()) * 12 + (last_month - start.dt.month().cast(pl.Int32)) + 1
    how = (
        pl.when(declared.is_not_null())
        .then(pl.lit("declared production_start"))
        .otherwise(pl.lit("first month in monthly.csv"))
    )
    land = pl.col("land_area_mu")
    small = land < scope.min_land_mu
    if scope.above_scale_evaluated:
        small = small & ~above
    return (
        pl.when(exempt)
        .then(pl.lit("declared exemption (evaluation_exempt)"))
        .when(start.is_null())
        .then(pl.lit("no statistics in monthly.csv: production start unknown"))
        .when(months < scope.min_months)
        .then(
            pl.format(
                f"producing {{}} months by {year}-{last_month:02d} (< {scope.min_months}; {{}})",
                months,
                how,
            )
        )
        .when(land.is_null())
        .then(pl.lit("no land area in enterprises.csv"))
        .when(small)
        .then(
            pl.format(
                f"below the land threshold ({{}} mu < {scope.min_land_mu:g} mu"
                + (", not above scale)" if scope.above_scale_evaluated else ")"),
                land,
            )
        )
    )


def _county_average(
    values: pl.DataFrame, criteria: EfficiencyCriteria, annualise: float
) -> pl.DataFrame:
    """Per county and indicator: the average the benchmark multiplies."""
    frames = []
    for ind in criteria.indicators:
        num, den = ind.numerator, ind.denominator
        factor = ind.scale * (annualise if den in STOCKS and num not in STOCKS else 1.0)
        usable = values.filter(pl.col(num).is_not_null() & (pl.col(den) > 0))
        if criteria.benchmark.average == "aggregate":
            agg = pl.col(num).sum() * factor / pl.col(den).sum()
        else:
            agg = (pl.col(num) * factor / pl.col(den)).mean()
        frames.append(
            usable.group_by("county").agg(
                pl.lit(ind.id).alias("indicator"),
                agg.alias("average"),
                pl.len().cast(pl.UInt32).alias("firms"),
            )
        )
    return pl.concat(frames) if frames else pl.DataFrame()


def classify(
    facts: pl.DataFrame,
    current: pl.DataFrame,
    previous: pl.DataFrame,
    criteria: EfficiencyCriteria,
    *,
    year: int,
    months: int,
) -> ClassResult:
    """Classes for every enterprise of `facts` (see the module docstring). `current` and
    `previous` are `quantities` frames for the period's whole months and the year before."""
    if months <= 0:
        months = 0
    annualise = 12.0 / months if months else 0.0
    last_month = months or 12
    if months == 0:  # nothing to judge yet: every figure unknown
        current = current.select(
            "enterprise", *(pl.lit(None, dtype=pl.Float64).alias(c) for c in current.columns[1:])
        )
    info = facts.select(
        "enterprise",
        "name",
        "county",
        "industry",
        *(
            pl.col(c) if c in facts.columns else pl.lit(None, dtype=pl.String).alias(c)
            for c in ("evaluation_exempt", "above_scale", "production_start")
        ),
        pl.col("first_stats_month")
        if "first_stats_month" in facts.columns
        else pl.lit(None, dtype=pl.Date).alias("first_stats_month"),
    ).join(current, on="enterprise", how="left")
    scope_reason = _t_reason(info, criteria, year, last_month)
    info = info.with_columns(scope_reason.alias("t_reason"))

    # indicator values, and what is missing
    values = []
    for ind in criteria.indicators:
        value = _value(ind.numerator, ind.denominator, ind.scale, annualise)
        values.append(
            info.select(
                "enterprise",
                pl.lit(ind.id).alias("indicator"),
                value.alias("value"),
                pl.when(value.is_null())
                .then(_why_missing(ind.numerator, ind.denominator))
                .alias("missing"),
            )
        )
    long = pl.concat(values)
    missing = (
        long.filter(pl.col("missing").is_not_null())
        .group_by("enterprise")
        .agg(
            pl.format("{} ({})", pl.col("indicator"), pl.col("missing"))
            .str.join(", ")
            .alias("_miss")
        )
    )
    info = info.join(missing, on="enterprise", how="left")
    if criteria.scope.missing == "not_evaluated":
        info = info.with_columns(
            pl.coalesce(
                pl.col("t_reason"),
                pl.when(pl.col("_miss").is_not_null()).then(
                    pl.format("missing data: {}", pl.col("_miss"))
                ),
            ).alias("t_reason")
        )
    info = info.with_columns(pl.col("t_reason").is_null().alias("evaluated"))
    evaluated = info.filter(pl.col("evaluated"))

    # benchmarks: previous year, else (fallback) the current year
    prev = evaluated.select("enterprise", "county").join(previous, on="enterprise", how="inner")
    prev_avg = _county_average(prev, criteria, 1.0).rename(
        {"average": "prev_average", "firms": "prev_firms"}
    )
    cur_avg = _county_average(evaluated, criteria, annualise).rename(
        {"average": "cur_average", "firms": "cur_firms"}
    )
    counties = evaluated.select("county").unique()
    grid = counties.join(
        pl.DataFrame({"indicator": [i.id for i in criteria.indicators]}), how="cross"
    )
    bench = grid.join(prev_avg, on=["county", "indicator"], how="left").join(
        cur_avg, on=["county", "indicator"], how="left"
    )
    factor = criteria.benchmark.factor
    use_prev = pl.col("prev_average") > 0
    use_cur = (pl.col("cur_average") > 0) & (criteria.benchmark.fallback == "current_year")
    bench = bench.with_columns(
        pl.when(use_prev)
        .then(pl.col("prev_average") * factor)
        .when(use_cur)
        .then(pl.col("cur_average") * factor)
        .alias("benchmark"),
        pl.when(use_prev)
        .then(pl.lit(f"{year - 1} county average x {factor:g}"))
        .when(use_cur)
        .then(pl.lit(f"{year} county average x {factor:g} (no {year - 1} figures)"))
        .otherwise(pl.lit(f"no benchmark: no {year - 1} figures"))
        .alias("basis"),
        pl.when(use_prev)
        .then(pl.col("prev_firms"))
        .when(use_cur)
        .then(pl.col("cur_firms"))
        .alias("benchmark_firms"),
    ).sort("county", "indicator")

    weights = {i.id: i.weight for i in criteria.indicators}
    caps = {i.id: i.cap for i in criteria.indicators}
    ind_frame = (
        long.join(info.select("enterprise", "county", "evaluated"), on="enterprise")
        .join(
            bench.select("county", "indicator", "benchmark", "basis"),
            on=["county", "indicator"],
            how="left",
        )
        .with_columns(
            pl.col("indicator").replace_strict(weights, return_dtype=pl.Float64).alias("weight"),
            pl.col("indicator").replace_strict(caps, return_dtype=pl.Float64).alias("cap"),
        )
        .with_columns(
            pl.when(pl.col("evaluated") & (pl.col("benchmark") > 0))
            .then(pl.col("value").fill_null(0.0) / pl.col("benchmark"))
            .alias("ratio")
        )
        .with_columns(
            pl.when(pl.col("cap").is_not_null())
            .then(pl.min_horizontal("ratio", "cap"))
            .otherwise(pl.col("ratio"))
            .alias("ratio")
        )
        .with_columns((pl.col("ratio") * pl.col("weight")).alias("points"))
    )
    scores = ind_frame.group_by("enterprise").agg(
        pl.when(pl.col("evaluated").first()).then(pl.col("points").sum()).alias("score")
    )
    ent = info.join(scores, on="enterprise", how="left")
    ent = _assign_classes(ent, criteria)
    order = {i.id: n for n, i in enumerate(criteria.indicators)}
    indicators = ind_frame.with_columns(
        pl.col("indicator").replace_strict(order, return_dtype=pl.Int32).alias("order")
    ).sort("enterprise", "order")
    wide = indicators.pivot(on="indicator", index="enterprise", values="value")
    ent = ent.join(
        wide.rename({c: f"value_{c}" for c in wide.columns if c != "enterprise"}),
        on="enterprise",
        how="left",
    )
    return ClassResult(
        enterprises=ent,
        indicators=indicators,
        benchmarks=bench,
        counties=county_summary(ent, [c.class_ for c in criteria.classes.cuts]),
    )


def _assign_classes(ent: pl.DataFrame, criteria: EfficiencyCriteria) -> pl.DataFrame:
    cls = criteria.classes
    ev = pl.col("evaluated")
    score = pl.when(ev).then(pl.col("score"))
    city_rank = score.rank(method="min", descending=True).cast(pl.UInt32)
    city_n = ev.sum().cast(pl.UInt32)
    county_rank = score.rank(method="min", descending=True).over("county").cast(pl.UInt32)
    county_n = ev.sum().over("county").cast(pl.UInt32)
    by_county = cls.rank_within == "county"
    in_county = (county_n >= cls.min_group) if by_county else pl.lit(False)
    ent = ent.with_columns(
        pl.when(ev).then(pl.when(in_county).then(county_rank).otherwise(city_rank)).alias("rank"),
        pl.when(ev).then(pl.when(in_county).then(county_n).otherwise(city_n)).alias("ranked_among"),
        pl.when(ev)
        .then(
            pl.when(in_county)
            .then(pl.col("county"))
            .otherwise(
                pl.lit("city")
                if not by_county
                else pl.format(
                    f"city ({{}} has {{}} < {cls.min_group} evaluated)", pl.col("county"), county_n
                )
            )
        )
        .alias("ranked_in"),
    )
    share = pl.col("rank").cast(pl.Float64) / pl.col("ranked_among").cast(pl.Float64)
    chain: pl.Expr = pl.lit(cls.cuts[-1].class_)
    for cut in reversed(cls.cuts[:-1]):  # built from the last cut up: the first match wins
        chain = pl.when(share <= cut.upper + _EPS).then(pl.lit(cut.class_)).otherwise(chain)
    return ent.with_columns(pl.when(ev).then(chain).otherwise(pl.lit(NOT_EVALUATED)).alias("class"))


def county_summary(ent: pl.DataFrame, classes: Sequence[str]) -> pl.DataFrame:
    """Per county: enterprises, evaluated, one column per class (and T), mean score."""
    names = [*classes, NOT_EVALUATED]
    return (
        ent.group_by("county")
        .agg(
            pl.len().cast(pl.UInt32).alias("enterprises"),
            pl.col("evaluated").sum().cast(pl.UInt32).alias("evaluated"),
            *((pl.col("class") == c).sum().cast(pl.UInt32).alias(c) for c in names),
            pl.col("score").filter(pl.col("evaluated")).mean().alias("mean_score"),
        )
        .sort("county")
    )
