"""Judging, as of a moment T: double-control levels and every alert rule's condition (pure).

`evaluate` takes what `greenmon.rules.alerts.inputs` read (the daily ``energy`` totals, the
judged day's meter completeness, the newest reading per meter), the registry and the rules,
and returns a `Judgement`:

- ``subjects`` — one row per enterprise, county and the city: the year-to-date figures, the
  barometer level of each dimension and overall, why, and what it would take to be green;
- ``conditions`` — one row per subject and rule: the level, whether the rule's condition holds
  (``active``), whether it has cleared with hysteresis (``clear``), value, threshold, message.
  The lifecycle (`greenmon.rules.alerts.lifecycle`) turns conditions into alert states.

Year to date, in the configured local time zone: the year of T's local date; the days counted
are the complete local days from 1 January up to the *horizon* — T's local date, or the day
after the newest daily row anyone has when the aggregator is behind (so a day not yet
aggregated does not count as a day without consumption). The day rules judge the day before
the horizon.

**Total** (rule ``double_control_total``), per enterprise: C = year-to-date double-control
consumption (tce); s = the share of the year its days with data stand for — 1/365 a day, or,
with ``schedule.basis = "auto"`` and a full last year of data, its own monthly profile of last
year; projected year end P = C / s; pro-rata quota = quota x s; ratio = P / quota = C /
pro-rata quota. A county (or the city) adds its enterprises' C and P; its quota is its
``targets.csv`` row, or else the sum of its enterprises' quotas (then only enterprises with a
quota are counted, and the output says so). Barometer levels: red when ratio > 1 +
``total.red_above`` (projected beyond the quota), yellow when ratio > 1 + ``total.yellow_above``
(behind the pro-rata schedule), else green. To be green at year end: average at most
(quota x (1 + yellow_above) - C) / remaining days.

**Intensity** (rule ``double_control_intensity``): double-control tce per 10k yuan of output
value or value added (``intensity.denominator``) over the months of the year completed by the
horizon, from ``monthly.csv``; a month without its denominator (or without energy data for
``schedule.profile_min_coverage`` of its days) leaves the figure unknown, and the output says
which month. Red when it rose against the same months of last year beyond ``rise_above``;
yellow when above the target beyond ``target_above``. A county's or the city's target is its
``targets.csv`` row, or else the intensity its enterprises would reach together if each met its
own target (targets weighted by their denominators).

**Sudden change** (enterprises): the judged day's consumption against the median and MAD of
the ``baseline_days`` before it. **Data completeness**: the judged day's lowest meter
completeness (a registered meter without a row that day counts 0). **Gateway silent**: meters
whose newest reading is older than max(``silent_after``, twice their interval) at T.

Everything per enterprise is a Polars group-by over the daily rows; counties and the city
aggregate the enterprise figures. Only the human-readable reasons are rendered per row.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import polars as pl

from greenmon.registry import Registry
from greenmon.rules.alerts.rulefile import AlertRules

__all__ = [
    "CONDITION_SCHEMA",
    "DAILY_SCHEMA",
    "LAST_SEEN_SCHEMA",
    "LEVELS",
    "METER_DAY_SCHEMA",
    "MONTH_SCHEMA",
    "Judgement",
    "evaluate",
    "horizon_of",
    "months_from_daily",
    "worst",
]

LEVELS: Final = ("red", "yellow", "green")
#: ``energy`` rows with window=1d, carrier=total: what `evaluate` reads as ``daily``.
DAILY_SCHEMA: Final = pl.Schema(
    {
        "enterprise": pl.String(),
        "day": pl.Date(),
        "dc_kgce": pl.Float64(),
        "completeness": pl.Float64(),
    }
)
#: ``energy`` rows with window=1mo, carrier=total, of complete months (``month``: its first
#: day; ``days``: local days with data in it, may be fractional when estimated).
MONTH_SCHEMA: Final = pl.Schema(
    {"enterprise": pl.String(), "month": pl.Date(), "dc_kgce": pl.Float64(),
     "completeness": pl.Float64(), "days": pl.Float64()}
)  # fmt: skip
#: ``meter_energy`` rows with window=1d of the judged day.
METER_DAY_SCHEMA: Final = pl.Schema({"meter": pl.String(), "completeness": pl.Float64()})
#: The newest reading per meter at or before T (within the look-back).
LAST_SEEN_SCHEMA: Final = pl.Schema({"meter": pl.String(), "last": pl.Datetime("ms", "UTC")})
CONDITION_SCHEMA: Final = pl.Schema(
    {
        "scope": pl.String(),
        "subject": pl.String(),
        "rule": pl.String(),
        "level": pl.String(),
        "active": pl.Boolean(),
        "clear": pl.Boolean(),
        "value": pl.Float64(),
        "threshold": pl.Float64(),
        "message": pl.String(),
    }
)
#: Ratios are sums of floats: exactly on a line (on schedule) must not tip over it.
_EPS: Final = 1e-9
_MAD_SCALE: Final = 0.6745  # modified z-score = 0.6745 (x - median) / MAD
_COUNTED_ROLES: Final = ("boundary", "generation", "export")


def worst(levels: list[str | None]) -> str:
    """The most severe of `levels` (None = not assessed); green when none is given."""
    present = [lv for lv in levels if lv is not None]
    return min(present, key=LEVELS.index) if present else "green"


@dataclass(frozen=True)
class Judgement:
    """What `evaluate` decided as of `as_of`."""

    as_of: datetime
    year: int
    horizon: date  # first local day not counted (exclusive end of the year to date)
    judged_day: date | None  # the day the day rules judged (None: no data at all)
    days_elapsed: int
    days_in_year: int
    subjects: pl.DataFrame
    conditions: pl.DataFrame
    notes: tuple[str, ...] = ()


def months_from_daily(daily: pl.DataFrame) -> pl.DataFrame:
    """`MONTH_SCHEMA` rows summed from `DAILY_SCHEMA` rows (what the aggregator's monthly
    windows hold: a local month is the sum of its local days)."""
    month = pl.col("day").dt.month_start()
    dim = pl.col("month").dt.month_end().dt.day()
    return (
        daily.group_by("enterprise", month.alias("month"))
        .agg(
            pl.col("dc_kgce").sum(),
            pl.col("completeness").sum().alias("covered"),
            pl.len().cast(pl.Float64).alias("days"),
        )
        .select(
            "enterprise",
            "month",
            "dc_kgce",
            (pl.col("covered") / dim).alias("completeness"),
            "days",
        )
        .cast(dict(MONTH_SCHEMA))  # type: ignore[arg-type]
    )


def horizon_of(daily: pl.DataFrame, today: date) -> date:
    """The first local day not counted: `today`, or the day after the newest row if older."""
    if daily.is_empty():
        return today
    newest = daily.get_column("day").max()
    assert isinstance(newest, date)
    return min(today, newest + timedelta(days=1))


# --------------------------------------------------------------------------- helpers


def _month_days(year: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "month": list(range(1, 13)),
            "dim": [calendar.monthrange(year, m)[1] for m in range(1, 13)],
        },
        schema={"month": pl.Int8, "dim": pl.Int32},
    )


def _next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def _units(months: pl.DataFrame) -> pl.DataFrame:
    """Month rows keyed by month number (Int8), with the covered days."""
    return months.select(
        "enterprise",
        pl.col("month").dt.month().cast(pl.Int8).alias("month"),
        "dc_kgce",
        "days",
        (pl.col("completeness") * pl.col("month").dt.month_end().dt.day()).alias("covered"),
    )


def _profiles(last: pl.DataFrame, year: int, rules: AlertRules) -> pl.DataFrame:
    """Per enterprise with a usable last year (`_units` of its months): ``month``,
    ``weight`` (its share of the year)."""
    empty = pl.DataFrame(schema={"enterprise": pl.String, "month": pl.Int8, "weight": pl.Float64})
    if rules.schedule.basis == "days" or last.is_empty():
        return empty
    per_month = (
        last.select("enterprise", "month", pl.col("dc_kgce").alias("kgce"), "days")
        .join(_month_days(year - 1), on="month")
        .with_columns(
            (pl.col("days") / pl.col("dim")).alias("coverage"),
            # the month's total, its missing days filled at the month's own daily average
            (pl.col("kgce") / pl.col("days") * pl.col("dim")).clip(lower_bound=0).alias("est"),
        )
    )
    usable = per_month.group_by("enterprise").agg(
        ((pl.col("coverage") >= rules.schedule.profile_min_coverage).sum() == 12).alias("ok"),
        pl.col("est").sum().alias("year_est"),
    )
    return (
        per_month.join(usable, on="enterprise")
        .filter(pl.col("ok") & (pl.col("year_est") > 0))
        .select("enterprise", "month", (pl.col("est") / pl.col("year_est")).alias("weight"))
    )


def _months_figures(
    energy: pl.DataFrame,
    monthly: pl.DataFrame,
    year: int,
    months: int,
    denominator: str,
    min_coverage: float,
    prefix: str,
) -> pl.DataFrame:
    """Per enterprise: energy (tce) and denominator summed over months 1..`months` of `year`
    (`energy`: `_units` of that year), null when a month lacks its denominator or enough days
    of energy (``{prefix}missing`` names those months)."""
    schema: dict[str, pl.DataType] = {
        "enterprise": pl.String(),
        f"{prefix}tce": pl.Float64(),
        f"{prefix}den": pl.Float64(),
        f"{prefix}missing": pl.List(pl.String),
    }
    if months == 0:
        return pl.DataFrame(schema=schema)
    grid = pl.DataFrame({"month": list(range(1, months + 1))}, schema={"month": pl.Int8})
    dims = _month_days(year)
    got = energy.filter(pl.col("month") <= months).select(
        "enterprise", "month", (pl.col("dc_kgce") / 1000).alias("tce"), "days"
    )
    den = monthly.filter(pl.col("month_start").dt.year() == year).select(
        pl.col("enterprise_id").alias("enterprise"),
        pl.col("month_start").dt.month().cast(pl.Int8).alias("month"),
        pl.col(f"{denominator}_10k_yuan").alias("den"),
    )
    ids = pl.concat([got.select("enterprise"), den.select("enterprise")]).unique()
    cells = (
        ids.join(grid, how="cross")
        .join(got, on=["enterprise", "month"], how="left")
        .join(den, on=["enterprise", "month"], how="left")
        .join(dims, on="month")
        .with_columns(
            (
                pl.col("den").is_not_null()
                & (pl.col("days").fill_null(0) >= min_coverage * pl.col("dim"))
            ).alias("ok"),
            pl.format("{}-{}", pl.lit(year), pl.col("month").cast(pl.String).str.zfill(2)).alias(
                "label"
            ),
        )
    )
    return cells.group_by("enterprise").agg(
        pl.when(pl.col("ok").all()).then(pl.col("tce").sum()).alias(f"{prefix}tce"),
        pl.when(pl.col("ok").all()).then(pl.col("den").sum()).alias(f"{prefix}den"),
        pl.col("label").filter(~pl.col("ok")).alias(f"{prefix}missing"),
    )


def _levels_total(rules: AlertRules) -> pl.Expr:
    ratio = pl.col("ratio")
    return (
        pl.when(ratio.is_null())
        .then(pl.lit(None, pl.String))
        .when(ratio > 1 + rules.total.red_above + _EPS)
        .then(pl.lit("red"))
        .when(ratio > 1 + rules.total.yellow_above + _EPS)
        .then(pl.lit("yellow"))
        .otherwise(pl.lit("green"))
    )


def _levels_intensity(rules: AlertRules) -> pl.Expr:
    i, last, target = pl.col("intensity"), pl.col("intensity_last_year"), pl.col("intensity_target")
    rose = last.is_not_null() & (i > last * (1 + rules.intensity.rise_above + _EPS))
    behind = target.is_not_null() & (i > target * (1 + rules.intensity.target_above + _EPS))
    return (
        pl.when(i.is_null() | (last.is_null() & target.is_null()))
        .then(pl.lit(None, pl.String))
        .when(rose)
        .then(pl.lit("red"))
        .when(behind)
        .then(pl.lit("yellow"))
        .otherwise(pl.lit("green"))
    )


def _ratio_of(p: pl.Expr, q: pl.Expr) -> pl.Expr:
    """P / quota; a zero quota with any consumption is an infinite overrun (shown as such)."""
    return (
        pl.when(q.is_null() | p.is_null())
        .then(None)
        .when(q > 0)
        .then(p / q)
        .when(p > 0)
        .then(float("inf"))
        .otherwise(0.0)
    )


# --------------------------------------------------------------------------- the judgement


def evaluate(
    daily: pl.DataFrame,
    registry: Registry,
    rules: AlertRules,
    as_of: datetime,
    *,
    tz: str = "Asia/Shanghai",
    months: pl.DataFrame | None = None,
    meter_days: pl.DataFrame | None = None,
    last_seen: pl.DataFrame | None = None,
) -> Judgement:
    """Judge every enterprise, county and the city as of `as_of` (an aware datetime).

    `daily`: `DAILY_SCHEMA` rows — at least the month of the horizon so far and the
    ``baseline_days`` before the judged day (sudden change). `months`: `MONTH_SCHEMA` rows of
    complete months from 1 January of last year (the profile, the year-on-year intensity, the
    year to date); None: summed from `daily` (`months_from_daily`), which must then cover
    them. `meter_days`: `METER_DAY_SCHEMA` rows of the judged day (None: rule not judged);
    `last_seen`: `LAST_SEEN_SCHEMA` rows (None: rule not judged).
    """
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    zone = ZoneInfo(tz)
    today = as_of.astimezone(zone).date()
    year = today.year
    jan1, last_jan1 = date(year, 1, 1), date(year - 1, 1, 1)
    daily = daily.filter((pl.col("day") < today) & (pl.col("day") >= last_jan1))
    newest = horizon_of(daily, today)
    if daily.is_empty() and months is not None and months.height:
        newest_month = months.get_column("month").max()
        assert isinstance(newest_month, date)
        newest = min(today, _next_month(newest_month))
    horizon = max(newest, jan1)
    judged = newest - timedelta(days=1) if daily.height else None
    n = (horizon - jan1).days
    diy = 366 if calendar.isleap(year) else 365
    h_month = date(horizon.year, horizon.month, 1)  # the month the horizon falls in
    if months is None:
        months = months_from_daily(daily.filter(pl.col("day") < h_month))
    whole = months.filter((pl.col("month") >= last_jan1) & (pl.col("month") < h_month))
    last = _units(whole.filter(pl.col("month") < jan1))
    partial = months_from_daily(
        daily.filter((pl.col("day") >= h_month) & (pl.col("day") < horizon))
    )
    cur = _units(pl.concat([whole.filter(pl.col("month") >= jan1), partial]))
    months_done = horizon.month - 1  # months of `year` wholly before the horizon
    ent = _enterprises(cur, last, registry, rules, year, diy, n, months_done)
    subjects = pl.concat(
        [
            ent.select(_SUBJECT_COLUMNS),
            _aggregate(ent, registry, rules, year, "county").select(_SUBJECT_COLUMNS),
            _aggregate(ent, registry, rules, year, "city").select(_SUBJECT_COLUMNS),
        ],
        how="vertical_relaxed",
    )
    subjects = _explain(subjects, rules, n, diy, year, months_done)
    conditions = [_total_conditions(subjects, rules), _intensity_conditions(subjects, rules)]
    if judged is not None:
        ids = registry.enterprises.select(pl.col("enterprise_id").alias("enterprise"))
        if rules.sudden_change.enabled:
            conditions.append(_sudden_change(daily, ids, judged, rules))
        if rules.data_completeness.enabled and meter_days is not None:
            conditions.append(_completeness(meter_days, registry, judged, rules))
    if rules.gateway_silent.enabled and last_seen is not None:
        conditions.append(_silence(last_seen, registry, as_of, rules))
    return Judgement(
        as_of=as_of,
        year=year,
        horizon=horizon,
        judged_day=judged,
        days_elapsed=n,
        days_in_year=diy,
        subjects=subjects,
        conditions=pl.concat([c.select(CONDITION_SCHEMA.names()) for c in conditions]).cast(
            CONDITION_SCHEMA
        ),
    )


_SUBJECT_COLUMNS: Final = (
    "scope",
    "subject",
    "name",
    "county",
    "enterprises",
    "ytd_tce",
    "projected_tce",
    "quota_tce",
    "quota_source",
    "share",
    "ratio",
    "basis",
    "days_with_data",
    "completeness",
    "intensity",
    "intensity_last_year",
    "intensity_target",
    "target_source",
    "intensity_missing",
    "rest_den",
    "ytd_den",
)


def _enterprises(
    cur: pl.DataFrame,
    last: pl.DataFrame,
    registry: Registry,
    rules: AlertRules,
    year: int,
    diy: int,
    n: int,
    months_done: int,
) -> pl.DataFrame:
    profiles = _profiles(last, year, rules)
    dims = _month_days(year)
    weighted = (
        cur.join(dims, on="month")
        .join(profiles, on=["enterprise", "month"], how="left")
        .with_columns(
            # the share of the year the month's days with data stand for
            (
                pl.when(pl.col("weight").is_not_null())
                .then(pl.col("weight") / pl.col("dim"))
                .otherwise(1.0 / diy)
                * pl.col("days")
            ).alias("w"),
        )
    )
    ytd = weighted.group_by("enterprise").agg(
        (pl.col("dc_kgce").sum() / 1000).alias("ytd_tce"),
        pl.col("w").sum().alias("share"),
        pl.col("days").sum().round().cast(pl.Int32).alias("days_with_data"),
        pl.col("covered").sum().alias("completeness_sum"),
        pl.col("weight").is_not_null().any().alias("profiled"),
    )
    den = rules.intensity.denominator
    cover = rules.schedule.profile_min_coverage
    now = _months_figures(cur, registry.monthly, year, months_done, den, cover, "")
    before = _months_figures(last, registry.monthly, year - 1, months_done, den, cover, "ly_")
    rest = (
        registry.monthly.filter(
            (pl.col("month_start").dt.year() == year)
            & (pl.col("month_start").dt.month() > months_done)
        )
        .group_by(pl.col("enterprise_id").alias("enterprise"))
        .agg(
            pl.when(pl.col(f"{den}_10k_yuan").null_count() == 0)
            .then(pl.col(f"{den}_10k_yuan").sum())
            .alias("rest_den"),
            pl.len().alias("rest_months"),
        )
        .with_columns(pl.when(pl.col("rest_months") == 12 - months_done).then(pl.col("rest_den")))
    )
    base = registry.enterprises.select(
        pl.col("enterprise_id").alias("enterprise"),
        "name",
        "county",
        pl.col("annual_quota_tce").alias("quota_tce"),
        pl.col("intensity_target_tce_per_10k_yuan").alias("intensity_target"),
    )
    e = (
        base.join(ytd, on="enterprise", how="left")
        .join(now, on="enterprise", how="left")
        .join(before, on="enterprise", how="left")
        .join(rest.select("enterprise", "rest_den"), on="enterprise", how="left")
    )
    p = pl.when(pl.col("share") > 0).then(pl.col("ytd_tce") / pl.col("share"))
    intensity = pl.when(pl.col("den") > 0).then(pl.col("tce") / pl.col("den"))
    last_intensity = pl.when(pl.col("ly_den") > 0).then(pl.col("ly_tce") / pl.col("ly_den"))
    return e.with_columns(
        pl.lit("enterprise").alias("scope"),
        pl.col("enterprise").alias("subject"),
        pl.lit(1, dtype=pl.Int32).alias("enterprises"),
        pl.col("ytd_tce").fill_null(0.0),
        pl.col("share").fill_null(0.0),
        pl.col("days_with_data").fill_null(0),
        p.alias("projected_tce"),
        pl.when(pl.col("quota_tce").is_not_null())
        .then(pl.lit("enterprises.csv"))
        .alias("quota_source"),
        pl.when(pl.col("profiled").fill_null(False))
        .then(pl.lit(f"{year - 1} monthly profile"))
        .otherwise(pl.lit("days"))
        .alias("basis"),
        (pl.col("completeness_sum").fill_null(0.0) / n if n else pl.lit(None, pl.Float64)).alias(
            "completeness"
        ),
        intensity.alias("intensity"),
        last_intensity.alias("intensity_last_year"),
        pl.when(pl.col("intensity_target").is_not_null())
        .then(pl.lit("enterprises.csv"))
        .alias("target_source"),
        pl.col("missing").alias("intensity_missing"),
        pl.col("den").alias("ytd_den"),
    ).with_columns(_ratio_of(pl.col("projected_tce"), pl.col("quota_tce")).alias("ratio"))


def _aggregate(
    ent: pl.DataFrame, registry: Registry, rules: AlertRules, year: int, scope: str
) -> pl.DataFrame:
    """County or city rows from the enterprise rows (see the module docstring)."""
    key = pl.col("county") if scope == "county" else pl.lit("city")
    targets = registry.targets.filter((pl.col("scope") == scope) & (pl.col("year") == year))
    has_q = pl.col("quota_tce").is_not_null()
    has_i = pl.col("intensity").is_not_null()
    both = has_i & pl.col("intensity_last_year").is_not_null()
    has_t = has_i & pl.col("intensity_target").is_not_null()
    den, tce = pl.col("ytd_den"), pl.col("tce")
    grouped = ent.group_by(key.alias("subject")).agg(
        pl.len().cast(pl.Int32).alias("enterprises"),
        pl.col("ytd_tce").sum().alias("c_all"),
        pl.col("projected_tce").sum().alias("p_all"),
        pl.col("ytd_tce").filter(has_q).sum().alias("c_q"),
        pl.col("projected_tce").filter(has_q).sum().alias("p_q"),
        pl.col("quota_tce").filter(has_q).sum().alias("q_sum"),
        has_q.sum().alias("with_quota"),
        pl.col("days_with_data").max().alias("days_with_data"),
        pl.col("completeness").mean().alias("completeness"),
        tce.filter(has_i).sum().alias("i_tce"),
        den.filter(has_i).sum().alias("i_den"),
        has_i.sum().alias("with_intensity"),
        tce.filter(both).sum().alias("b_tce"),
        den.filter(both).sum().alias("b_den"),
        pl.col("ly_tce").filter(both).sum().alias("b_ly_tce"),
        pl.col("ly_den").filter(both).sum().alias("b_ly_den"),
        (pl.col("intensity_target") * den).filter(has_t).sum().alias("t_num"),
        den.filter(has_t).sum().alias("t_den"),
        pl.col("rest_den").sum().alias("rest_den"),
        pl.col("rest_den").is_null().any().alias("rest_unknown"),
        pl.col("intensity_missing").explode().drop_nulls().unique().sort().alias("i_missing"),
    )
    rows = grouped.join(
        targets.select(
            "subject",
            pl.col("energy_quota_tce").alias("t_quota"),
            pl.col("intensity_target_tce_per_10k_yuan").alias("t_target"),
        ),
        on="subject",
        how="left",
    )
    listed = pl.col("t_quota").is_not_null()
    quota = (
        pl.when(listed).then(pl.col("t_quota")).when(pl.col("with_quota") > 0).then(pl.col("q_sum"))
    )
    c = pl.when(listed).then(pl.col("c_all")).otherwise(pl.col("c_q"))
    p = pl.when(listed).then(pl.col("p_all")).otherwise(pl.col("p_q"))
    source = (
        pl.when(listed)
        .then(pl.lit("targets.csv"))
        .when(pl.col("with_quota") > 0)
        .then(
            pl.format(
                "sum of {} enterprises' quotas (no targets.csv row{})",
                pl.col("with_quota"),
                pl.when(pl.col("with_quota") < pl.col("enterprises"))
                .then(
                    pl.format(
                        "; {} without a quota left out",
                        pl.col("enterprises") - pl.col("with_quota"),
                    )
                )
                .otherwise(pl.lit("")),
            )
        )
    )
    target_listed = pl.col("t_target").is_not_null()
    derived = pl.when(pl.col("t_den") > 0).then(pl.col("t_num") / pl.col("t_den"))
    return rows.with_columns(
        pl.lit(scope).alias("scope"),
        pl.lit(None, pl.String).alias("name"),
        (pl.col("subject") if scope == "county" else pl.lit(None, pl.String)).alias("county"),
        quota.alias("quota_tce"),
        source.alias("quota_source"),
        c.alias("ytd_tce"),
        pl.when(p > 0).then(p).alias("projected_tce"),
        pl.when(p > 0).then(c / p).otherwise(0.0).alias("share"),
        pl.lit("sum of its enterprises' projections").alias("basis"),
        pl.when(pl.col("i_den") > 0).then(pl.col("i_tce") / pl.col("i_den")).alias("intensity"),
        # year on year over the enterprises with both years (the same firms in both)
        pl.when(pl.col("b_ly_den") > 0)
        .then(pl.col("b_ly_tce") / pl.col("b_ly_den"))
        .alias("intensity_last_year"),
        pl.when(pl.col("b_den") > 0).then(pl.col("b_tce") / pl.col("b_den")).alias("b_intensity"),
        pl.when(target_listed)
        .then(pl.col("t_target"))
        .otherwise(derived)
        .alias("intensity_target"),
        pl.when(target_listed)
        .then(pl.lit("targets.csv"))
        .when(derived.is_not_null())
        .then(pl.lit("its enterprises' targets, weighted (no targets.csv row)"))
        .alias("target_source"),
        pl.col("i_missing").alias("intensity_missing"),
        pl.when(~pl.col("rest_unknown")).then(pl.col("rest_den")).alias("rest_den"),
        pl.when(pl.col("i_den") > 0).then(pl.col("i_den")).alias("ytd_den"),
    ).with_columns(_ratio_of(pl.col("projected_tce"), pl.col("quota_tce")).alias("ratio"))


# --------------------------------------------------------------------------- explanations


def _fmt(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "-"
    if x == float("inf"):
        return "∞"
    return f"{x:,.{digits}f}"


def _explain(
    subjects: pl.DataFrame, rules: AlertRules, n: int, diy: int, year: int, months_done: int
) -> pl.DataFrame:
    """Levels (as expressions), then per row the reasons and what it takes to be green."""
    s = subjects.with_columns(
        _levels_total(rules).alias("total_level"), _levels_intensity(rules).alias("i_level")
    )
    remaining = diy - n
    yellow_line = 1 + rules.total.yellow_above
    reasons: list[list[str]] = []
    to_green: list[list[str]] = []
    levels: list[str] = []
    required: list[float | None] = []
    messages: list[tuple[str, str]] = []
    den_name = rules.intensity.denominator.replace("_", " ")
    for row in s.iter_rows(named=True):
        why: list[str] = []
        fix: list[str] = []
        q, c, p, ratio = row["quota_tce"], row["ytd_tce"], row["projected_tce"], row["ratio"]
        need: float | None = None
        if n == 0:
            why.append(f"total: not assessed (no complete day of {year} yet)")
        elif q is None:
            why.append("total: not assessed (no annual quota)")
        elif p is None:
            why.append(f"total: not assessed (no daily data in {year})")
        else:
            prorata = q * row["share"]
            why.append(
                f"total {row['total_level']}: {_fmt(c)} tce year to date vs {_fmt(prorata)} tce "
                f"pro-rata ({row['basis']}); projected year end {_fmt(p)} tce = {_pct(ratio)} "
                f"{_fmt(q)} tce (red above {1 + rules.total.red_above:.0%}, yellow above "
                f"{yellow_line:.0%}; quota: {row['quota_source']})"
            )
            done = row["completeness"]
            if done is not None and done < rules.data_completeness.min_completeness:
                why.append(
                    f"data: year-to-date completeness {done:.1%} ({row['days_with_data']} of "
                    f"{n} days with data): the projection rests on the days with data"
                )
            if remaining > 0:
                need = (q * yellow_line - c) / remaining
            if row["total_level"] != "green":
                if need is not None and need > 0:
                    fix.append(
                        f"must average <= {_fmt(need)} tce/day for the remaining "
                        f"{remaining} days of {year}"
                    )
                else:
                    fix.append(f"the quota is used up: it cannot return to green in {year}")
        il = row["i_level"]
        i, ly, target = row["intensity"], row["intensity_last_year"], row["intensity_target"]
        if months_done == 0:
            why.append(f"intensity: not assessed (no complete month of {year} yet)")
        elif i is None:
            missing = row["intensity_missing"] or []
            shown = ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else "")
            why.append(
                f"intensity: not assessed ({den_name} or energy data missing"
                + (f" for {shown})" if missing else ")")
            )
        elif il is None:
            why.append(f"intensity: {i:.4f} tce/10k yuan {den_name}; no target, no last year")
        else:
            parts = [f"intensity {il}: {i:.4f} tce/10k yuan {den_name} (months 1-{months_done})"]
            if target is not None:
                parts.append(f"target {target:.4f} ({row['target_source']})")
            if ly is not None:
                parts.append(f"same months of {year - 1}: {ly:.4f}")
            why.append("; ".join(parts))
            goal = min(x for x in (target, ly) if x is not None)
            rest = row["rest_den"]
            if il != "green":
                ytd_den = row["ytd_den"]
                if rest and ytd_den is not None and rest > 0:
                    allowed = (goal * (ytd_den + rest) - i * ytd_den) / rest
                    fix.append(
                        f"must run at <= {allowed:.4f} tce/10k yuan for the rest of {year}"
                        if allowed > 0
                        else f"intensity cannot return to {goal:.4f} in {year}"
                    )
                else:
                    fix.append(f"must bring year-to-date intensity to <= {goal:.4f}")
        level = worst([row["total_level"], il])
        levels.append(level)
        messages.append((why[0], why[-1]))  # the total's reason first, the intensity's last
        reasons.append(why)
        to_green.append(fix)
        required.append(need)
    return s.with_columns(
        pl.Series("level", levels, dtype=pl.String),
        pl.Series("reasons", reasons, dtype=pl.List(pl.String)),
        pl.Series("to_green", to_green, dtype=pl.List(pl.String)),
        pl.Series("required_tce_per_day", required, dtype=pl.Float64),
        pl.Series("total_message", [m[0] for m in messages], dtype=pl.String),
        pl.Series("intensity_message", [m[1] for m in messages], dtype=pl.String),
        (pl.col("quota_tce") * pl.col("share")).alias("prorata_tce"),
    ).rename({"i_level": "intensity_level"})


def _pct(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if ratio == float("inf"):
        return "∞ x the quota"
    return f"{ratio:.1%} of the quota"


# --------------------------------------------------------------------------- conditions


def _total_conditions(s: pl.DataFrame, rules: AlertRules) -> pl.DataFrame:
    ratio = pl.col("ratio")
    clear_line = 1 + rules.total.yellow_above - rules.total.clear_margin
    return s.select(
        "scope",
        "subject",
        pl.lit("double_control_total").alias("rule"),
        pl.col("total_level").alias("level"),
        pl.col("total_level").is_in(["red", "yellow"]).fill_null(False).alias("active"),
        (ratio <= clear_line).fill_null(False).alias("clear"),
        pl.col("projected_tce").alias("value"),
        pl.col("quota_tce").alias("threshold"),
        pl.col("total_message").alias("message"),
    )


def _intensity_conditions(s: pl.DataFrame, rules: AlertRules) -> pl.DataFrame:
    r = rules.intensity
    i, ly, t = pl.col("intensity"), pl.col("intensity_last_year"), pl.col("intensity_target")
    below_target = t.is_null() | (i <= t * (1 + r.target_above - r.clear_margin))
    below_last = ly.is_null() | (i <= ly * (1 + r.rise_above - r.clear_margin))
    level = pl.col("intensity_level")
    return s.select(
        "scope",
        "subject",
        pl.lit("double_control_intensity").alias("rule"),
        level.alias("level"),
        level.is_in(["red", "yellow"]).fill_null(False).alias("active"),
        (level.is_not_null() & below_target & below_last).fill_null(False).alias("clear"),
        i.alias("value"),
        pl.when(level == "red").then(ly).otherwise(t).alias("threshold"),
        pl.col("intensity_message").alias("message"),
    )


def _sudden_change(
    daily: pl.DataFrame, ids: pl.DataFrame, judged: date, rules: AlertRules
) -> pl.DataFrame:
    r = rules.sudden_change
    start = judged - timedelta(days=r.baseline_days)
    base = daily.filter((pl.col("day") >= start) & (pl.col("day") < judged))
    day = daily.filter(pl.col("day") == judged).select(
        "enterprise", (pl.col("dc_kgce") / 1000).alias("x")
    )
    median = base.group_by("enterprise").agg(
        (pl.col("dc_kgce") / 1000).median().alias("median"), pl.len().alias("days")
    )
    mad = (
        base.join(median, on="enterprise")
        .group_by("enterprise")
        .agg(((pl.col("dc_kgce") / 1000) - pl.col("median")).abs().median().alias("mad"))
    )
    rows = (
        ids.join(day, on="enterprise", how="left")
        .join(median, on="enterprise", how="left")
        .join(mad, on="enterprise", how="left")
        .with_columns(
            pl.max_horizontal(
                pl.col("median") + r.robust_z * pl.col("mad") / _MAD_SCALE,
                pl.col("median") * (1 + r.min_rise),
            ).alias("threshold"),
            ((pl.col("days") >= r.min_baseline_days) & pl.col("x").is_not_null()).alias("judged"),
        )
    )
    active = pl.col("judged") & (pl.col("x") > pl.col("threshold"))
    times = pl.when(pl.col("median") > 0).then(pl.col("x") / pl.col("median"))
    message = (
        pl.when(~pl.col("judged").fill_null(False))
        .then(
            pl.format(
                "{}: not judged (day or {} baseline days of data missing)",
                pl.lit(str(judged)),
                pl.lit(r.min_baseline_days),
            )
        )
        .otherwise(
            pl.format(
                "{}: {} tce, {}x the median of the {} days before ({} tce, MAD {} tce); "
                "sudden above {} tce",
                pl.lit(str(judged)),
                pl.col("x").round(2),
                times.round(2),
                pl.col("days"),
                pl.col("median").round(2),
                pl.col("mad").round(2),
                pl.col("threshold").round(2),
            )
        )
    )
    return _enterprise_conditions(
        rows,
        "sudden_change",
        r.level,
        active=active.fill_null(False),
        clear=(pl.col("judged") & ~active).fill_null(False),
        value=pl.col("x"),
        threshold=pl.col("threshold"),
        message=message,
    )


def _enterprise_conditions(
    frame: pl.DataFrame,
    rule: str,
    level: str,
    *,
    active: pl.Expr,
    clear: pl.Expr,
    value: pl.Expr,
    threshold: pl.Expr,
    message: pl.Expr,
) -> pl.DataFrame:
    """One condition row per enterprise of `frame` (column ``enterprise``) for `rule`, in the
    columns of `CONDITION_SCHEMA`; `level` only where `active`."""
    return frame.select(
        pl.lit("enterprise").alias("scope"),
        pl.col("enterprise").alias("subject"),
        pl.lit(rule).alias("rule"),
        pl.when(active).then(pl.lit(level)).alias("level"),
        active.alias("active"),
        clear.alias("clear"),
        value.alias("value"),
        threshold.alias("threshold"),
        message.alias("message"),
    )


def _completeness(
    meter_days: pl.DataFrame, registry: Registry, judged: date, rules: AlertRules
) -> pl.DataFrame:
    r = rules.data_completeness
    meters = registry.meters
    if r.meters == "counted":
        meters = meters.filter(pl.col("role").is_in(_COUNTED_ROLES))
    rows = (
        meters.select(
            pl.col("meter_id").alias("meter"), pl.col("enterprise_id").alias("enterprise")
        )
        .join(meter_days, on="meter", how="left")
        .with_columns(pl.col("completeness").fill_null(0.0))
        .sort("enterprise", "completeness", "meter")
    )
    low = pl.col("completeness") < r.min_completeness
    per = rows.group_by("enterprise", maintain_order=True).agg(
        pl.col("completeness").min().alias("value"),
        low.sum().alias("low"),
        pl.format("{} {}", pl.col("meter"), pl.col("completeness").round(3))
        .filter(low)
        .head(5)
        .str.join(", ")
        .alias("which"),
    )
    active = pl.col("low") > 0
    message = (
        pl.when(active)
        .then(
            pl.format(
                "{}: {} meter(s) below {} completeness: {}",
                pl.lit(str(judged)),
                pl.col("low"),
                pl.lit(f"{r.min_completeness:.0%}"),
                pl.col("which"),
            )
        )
        .otherwise(
            pl.format(
                "{}: every meter at or above {}",
                pl.lit(str(judged)),
                pl.lit(f"{r.min_completeness:.0%}"),
            )
        )
    )
    return _enterprise_conditions(
        per,
        "data_completeness",
        r.level,
        active=active,
        clear=~active,
        value=pl.col("value"),
        threshold=pl.lit(r.min_completeness),
        message=message,
    )


def _silence(
    last_seen: pl.DataFrame, registry: Registry, as_of: datetime, rules: AlertRules
) -> pl.DataFrame:
    r = rules.gateway_silent
    now = as_of.astimezone(UTC)
    gateway = next((c for c in ("gateway_id", "gateway") if c in registry.meters.columns), None)
    meters = registry.meters.select(
        pl.col("meter_id").alias("meter"),
        pl.col("enterprise_id").alias("enterprise"),
        pl.max_horizontal(pl.lit(r.silent_after), pl.col("interval_s") * 2.0).alias("allowed"),
        (pl.col(gateway) if gateway else pl.lit(None, pl.String)).alias("gateway"),
    )
    silence_s = (pl.lit(now) - pl.col("last")).dt.total_milliseconds() / 1000
    rows = meters.join(last_seen, on="meter", how="left").with_columns(
        # no reading within the look-back: silent for at least the look-back
        pl.when(pl.col("last").is_null()).then(r.lookback).otherwise(silence_s).alias("silence"),
        pl.col("last").is_null().alias("unseen"),
    )
    silent = pl.col("unseen") | (pl.col("silence") > pl.col("allowed"))
    label = pl.format(
        "{}{}",
        pl.col("meter"),
        pl.when(pl.col("gateway").is_not_null())
        .then(pl.format(" (gateway {})", pl.col("gateway")))
        .otherwise(pl.lit("")),
    )
    per = (
        rows.sort("enterprise", "silence", "meter", descending=[False, True, False])
        .group_by("enterprise", maintain_order=True)
        .agg(
            (pl.col("silence").filter(silent).max() / 3600).alias("value"),
            silent.sum().alias("silent"),
            pl.len().alias("meters"),
            (pl.col("unseen") & silent).any().alias("unseen"),
            pl.col("last").filter(silent).min().alias("oldest"),
            label.filter(silent).head(5).str.join(", ").alias("which"),
        )
    )
    active = pl.col("silent") > 0
    since = (
        pl.when(pl.col("unseen"))
        .then(pl.lit(f"nothing from some for more than {r.lookback / 3600:g} h"))
        .otherwise(
            pl.format(
                "up to {} h, since {} UTC",
                pl.col("value").round(1),
                pl.col("oldest").dt.strftime("%Y-%m-%d %H:%M"),
            )
        )
    )
    message = (
        pl.when(active)
        .then(
            pl.format(
                "{} of {} meter(s) silent ({}): {}{}",
                pl.col("silent"),
                pl.col("meters"),
                since,
                pl.col("which"),
                pl.when(pl.col("silent") > 5).then(pl.lit(", ...")).otherwise(pl.lit("")),
            )
        )
        .otherwise(pl.lit("every meter reported recently"))
    )
    return _enterprise_conditions(
        per,
        "gateway_silent",
        r.level,
        active=active,
        clear=~active,
        value=pl.col("value").fill_null(0.0),
        threshold=pl.lit(r.silent_after / 3600),
        message=message,
    )
