"""Green-factory screening: indicators, baselines, scores, basic requirements, pass, rank, gaps.

`screen(facts, criteria)` is pure (frames in, frames out). For every enterprise and indicator
of the criteria file:

1. **value** from the facts (`measure_values`), or null with the reason it is missing ("no
   product output in monthly.csv for 2025-03"): an unscored indicator is said, never guessed;
2. **baseline and leading value**, first found of: the indicator's fixed values in the
   criteria file; a ``[[baselines]]`` row for the enterprise's industry (longest GB/T 4754
   prefix, same product unit if the row names one); the enterprise's peers in this run
   (`Peers`: the finest code prefix with at least ``min_peers`` values — median as baseline,
   the value the best ``leading_share`` % reach as leading value). Each comes with its source
   and status;
3. **score**: at or better than the leading value ``score_at_leading``; worse than the baseline
   ``below_baseline``; in between linear from ``score_at_baseline`` to ``score_at_leading``;
4. **gap**: worse than the baseline, the change needed to reach it; between, to reach the
   leading value; in the indicator's terms (relative %, or absolute for shares).

The enterprise's **score** is the weighted mean of its indicator scores (weight = group weight x
the indicator's share of its group): over the scored indicators (``missing = "exclude"``) or
over all, unscored as 0 (``"zero"``); **coverage** = scored weight / assessed weight. **Basic
requirements** are pass/fail: a declared attribute must be declared with the expected value
(not declared is not met), online monitoring is judged from the mean daily completeness.
**Passed** = every requirement met, coverage >= ``min_coverage`` and score >= ``pass_score``.
**Rank**: passed first, then score (high first), coverage, enterprise id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import polars as pl

from greenmon.registry import FALSE_VALUES, TRUE_VALUES
from greenmon.rules.screening.criteria import Indicator, ScreeningCriteria

__all__ = ["ScreeningResult", "measure_values", "screen"]

#: Measures compared with peers of the same product unit (their values are per product unit).
_PER_PRODUCT: Final = ("unit_product_energy", "unit_product_carbon")


@dataclass(frozen=True)
class ScreeningResult:
    """``candidates``: one row per enterprise, ranked (`rank` 1 = best); ``indicators`` and
    ``requirements``: one row per enterprise and indicator / requirement."""

    candidates: pl.DataFrame
    indicators: pl.DataFrame
    requirements: pl.DataFrame


def _missing_stat(column: str, what: str) -> pl.Expr:
    return pl.format(f"no {what} in monthly.csv for {{}}", pl.col(f"missing_{column}"))


def _ratio_reason(numerator: str, column: str, what: str) -> pl.Expr:
    """Why ratio-month energy / a monthly statistic is missing (null when it is not)."""
    return (
        pl.when(pl.col("period_months") == 0)
        .then(pl.lit("no whole month in the period yet"))
        .when(pl.col(numerator).is_null())
        .then(pl.col("ratio_energy_note").fill_null("no energy data in the period's whole months"))
        .when(pl.col(f"missing_{column}").is_not_null())
        .then(_missing_stat(column, what))
        .when(pl.col(column) <= 0)
        .then(pl.lit(f"{what} is 0"))
    )


def _per_mu(column: str, what: str) -> tuple[pl.Expr, pl.Expr]:
    annual = pl.col(column) * 12.0 / pl.col("period_months")
    reason = (
        pl.when(pl.col("land_area_mu").is_null())
        .then(pl.lit("no land area in enterprises.csv"))
        .when(pl.col("land_area_mu") <= 0)
        .then(pl.lit("land area is 0"))
        .when(pl.col("period_months") == 0)
        .then(pl.lit("no whole month in the period yet"))
        .when(pl.col(f"missing_{column}").is_not_null())
        .then(_missing_stat(column, what))
    )
    return annual / pl.col("land_area_mu"), reason


def _measure(measure: str) -> tuple[pl.Expr, pl.Expr]:
    """(value, reason-when-missing) of one measure over the facts frame."""
    tce = pl.col("ratio_kgce") / 1000.0
    reason: pl.Expr
    if measure in _PER_PRODUCT:
        energy = "ratio_kgce" if measure == "unit_product_energy" else "ratio_kgco2"
        return (
            pl.col(energy) / pl.col("product_output"),
            _ratio_reason(energy, "product_output", "product output"),
        )
    if measure == "renewable_share":
        reason = (
            pl.when(pl.col("kgce").is_null())
            .then(pl.lit("no energy data in the period"))
            .when(pl.col("generation_kgce").is_null())
            .then(pl.lit("a generation meter is registered but has no data in the period"))
            .when(pl.col("kgce") <= 0)
            .then(pl.lit("comprehensive consumption is 0"))
        )
        return 100.0 * pl.col("generation_kgce") / pl.col("kgce"), reason
    if measure == "intensity_vs_province":
        on_added = pl.col("reference_denominator") == "value_added"
        denominator = (
            pl.when(on_added)
            .then(pl.col("value_added_10k_yuan"))
            .otherwise(pl.col("output_value_10k_yuan"))
        )
        reason = (
            pl.when(pl.col("reference_tce_per_10k_yuan").is_null())
            .then(pl.lit("no provincial intensity reference for the year"))
            .when(on_added)
            .then(_ratio_reason("ratio_kgce", "value_added_10k_yuan", "value added"))
            .otherwise(_ratio_reason("ratio_kgce", "output_value_10k_yuan", "output value"))
        )
        return tce / denominator / pl.col("reference_tce_per_10k_yuan"), reason
    if measure == "energy_intensity":
        return (
            tce / pl.col("output_value_10k_yuan"),
            _ratio_reason("ratio_kgce", "output_value_10k_yuan", "output value"),
        )
    if measure == "double_control_intensity":
        return (
            pl.col("ratio_double_control_kgce") / 1000.0 / pl.col("output_value_10k_yuan"),
            _ratio_reason("ratio_double_control_kgce", "output_value_10k_yuan", "output value"),
        )
    if measure == "output_per_mu":
        return _per_mu("output_value_10k_yuan", "output value")
    if measure == "value_added_per_mu":
        return _per_mu("value_added_10k_yuan", "value added")
    raise ValueError(f"unknown measure {measure!r}")  # the criteria model refuses it first


def measure_values(facts: pl.DataFrame, criteria: ScreeningCriteria) -> pl.DataFrame:
    """Long frame: ``enterprise, indicator, value, reason`` (reason when value is null),
    plus ``industry`` and ``peer_unit`` (the product unit for per-product measures)."""
    frames = []
    for ind in criteria.indicators:
        value, reason = _measure(ind.measure)
        per_product = ind.measure in _PER_PRODUCT
        frames.append(
            facts.select(
                "enterprise",
                pl.col("industry").fill_null(""),
                (pl.col("product_unit") if per_product else pl.lit(None, dtype=pl.String)).alias(
                    "peer_unit"
                ),
                pl.lit(ind.id).alias("indicator"),
                value.cast(pl.Float64).alias("value"),
                reason.alias("reason"),
            ).with_columns(
                pl.when(pl.col("value").is_finite()).then(pl.col("value")).alias("value"),
            )
        )
    long = pl.concat(frames)
    return long.with_columns(
        pl.when(pl.col("value").is_null())
        .then(pl.col("reason").fill_null("no value"))
        .alias("reason")
    )


def _peer_baselines(long: pl.DataFrame, criteria: ScreeningCriteria) -> pl.DataFrame:
    """``enterprise, indicator, peer_baseline, peer_leading, peer_source`` for every row
    whose indicator has no fixed values (null when too few peers)."""
    peers = criteria.peers
    directions = {i.id: i.direction for i in criteria.indicators}
    lower = pl.col("indicator").replace_strict(directions, return_dtype=pl.String) == "lower"
    q_base = peers.baseline_percentile / 100.0
    share = peers.leading_share / 100.0
    allowed = {i.id: i.peer_levels or peers.prefix_lengths for i in criteria.indicators}
    lengths = sorted({n for levels in allowed.values() for n in levels}, reverse=True)
    levels = []
    for length in lengths:
        key = pl.concat_str(
            pl.col("industry").str.slice(0, length),
            pl.when(pl.col("peer_unit").is_not_null())
            .then(pl.format(" [{}]", pl.col("peer_unit")))
            .otherwise(pl.lit("")),
        )
        here = [i for i, levels in allowed.items() if length in levels]
        keyed = long.filter(pl.col("indicator").is_in(here)).with_columns(key.alias("key"))
        stats = (
            keyed.filter(pl.col("value").is_not_null())
            .group_by("indicator", "key")
            .agg(
                pl.len().alias("n"),
                pl.col("value").quantile(q_base, interpolation="linear").alias("b"),
                pl.col("value").quantile(share, interpolation="linear").alias("lo"),
                pl.col("value").quantile(1.0 - share, interpolation="linear").alias("hi"),
            )
        )
        level = keyed.join(stats, on=["indicator", "key"], how="left").select(
            "enterprise",
            "indicator",
            pl.when(pl.col("n") >= peers.min_peers)
            .then(
                pl.struct(
                    pl.col("b").alias("baseline"),
                    pl.when(lower).then(pl.col("lo")).otherwise(pl.col("hi")).alias("leading"),
                    pl.format("peers {} ({} enterprises)", pl.col("key"), pl.col("n")).alias(
                        "source"
                    ),
                )
            )
            .alias(f"L{length}"),
        )
        levels.append(level)
    joined = long.select("enterprise", "indicator")
    for level in levels:
        joined = joined.join(level, on=["enterprise", "indicator"], how="left")
    chosen = pl.coalesce(*(pl.col(f"L{n}") for n in lengths))
    note = (
        f"median / value the best {peers.leading_share:g}% reach, {peers.status}"
        if peers.baseline_percentile == 50
        else f"percentile {peers.baseline_percentile:g} / best {peers.leading_share:g}%, "
        f"{peers.status}"
    )
    return joined.select(
        "enterprise",
        "indicator",
        chosen.struct.field("baseline").alias("peer_baseline"),
        chosen.struct.field("leading").alias("peer_leading"),
        pl.when(chosen.is_not_null())
        .then(pl.format("{}: {}", chosen.struct.field("source"), pl.lit(note)))
        .alias("peer_source"),
        pl.lit(peers.status).alias("peer_status"),
    )


def _row_baselines(long: pl.DataFrame, criteria: ScreeningCriteria) -> pl.DataFrame:
    """``[[baselines]]`` rows matched to each enterprise and indicator (longest prefix)."""
    schema = {
        "enterprise": pl.String,
        "indicator": pl.String,
        "row_baseline": pl.Float64,
        "row_leading": pl.Float64,
        "row_source": pl.String,
        "row_status": pl.String,
    }
    if not criteria.baselines:
        return pl.DataFrame(schema=schema)
    rows = pl.DataFrame(
        [
            {
                "indicator": b.indicator,
                "prefix": b.industry,
                "unit": b.product_unit,
                "row_baseline": b.baseline,
                "row_leading": b.leading,
                "row_source": f"baselines[{n}] {b.industry}"
                + (f" [{b.product_unit}]" if b.product_unit else "")
                + (f" {b.year}" if b.year else "")
                + f": {b.source} ({b.status})",
                "row_status": b.status,
            }
            for n, b in enumerate(criteria.baselines)
        ]
    )
    matched = (
        long.select("enterprise", "indicator", "industry", "peer_unit")
        .join(rows, on="indicator", how="inner")
        .filter(
            pl.col("industry").str.starts_with(pl.col("prefix"))
            & (pl.col("unit").is_null() | (pl.col("unit") == pl.col("peer_unit")))
        )
        .sort(pl.col("prefix").str.len_chars(), descending=True)
        .group_by("enterprise", "indicator", maintain_order=True)
        .first()
    )
    return matched.select(*schema)


def _fixed(criteria: ScreeningCriteria, info_label: str) -> pl.DataFrame:
    rows = [
        {
            "indicator": i.id,
            "fixed_baseline": i.baseline,
            "fixed_leading": i.leading,
            "fixed_source": f"{info_label}: indicators.{i.id}"
            + (f" — {i.source}" if i.source else ""),
            "fixed_status": i.status,
        }
        for i in criteria.indicators
        if i.baseline is not None
    ]
    schema = {
        "indicator": pl.String,
        "fixed_baseline": pl.Float64,
        "fixed_leading": pl.Float64,
        "fixed_source": pl.String,
        "fixed_status": pl.String,
    }
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def _indicator_table(criteria: ScreeningCriteria) -> pl.DataFrame:
    assessed = sum(criteria.effective_weight(i) for i in criteria.indicators)
    return pl.DataFrame(
        [
            {
                "indicator": i.id,
                "order": n,
                "group": i.group,
                "name": i.name,
                "name_en": i.name_en,
                "unit": i.unit,
                "direction": i.direction,
                "gap_kind": i.gap,
                "weight": criteria.effective_weight(i),
                "weight_share": criteria.effective_weight(i) / assessed,
            }
            for n, i in enumerate(criteria.indicators)
        ]
    )


def score_expr(s: ScreeningCriteria) -> pl.Expr:
    """Score of ``value`` between ``baseline`` and ``leading`` (see the module docstring)."""
    value, base, lead = pl.col("value"), pl.col("baseline"), pl.col("leading")
    lower = pl.col("direction") == "lower"
    at_least_leading = pl.when(lower).then(value <= lead).otherwise(value >= lead)
    worse = pl.when(lower).then(value > base).otherwise(value < base)
    frac = (value - base) / (lead - base)
    span = s.scoring.score_at_leading - s.scoring.score_at_baseline
    return (
        pl.when(value.is_null() | base.is_null() | lead.is_null())
        .then(None)
        .when(at_least_leading)
        .then(pl.lit(s.scoring.score_at_leading))
        .when(worse)
        .then(pl.lit(s.scoring.below_baseline))
        .otherwise(s.scoring.score_at_baseline + frac * span)
    )


def _requirements(facts: pl.DataFrame, criteria: ScreeningCriteria) -> pl.DataFrame:
    frames = []
    for n, req in enumerate(criteria.requirements):
        if req.check == "declared":
            column = str(req.column)
            raw = pl.col(column) if column in facts.columns else pl.lit(None, dtype=pl.String)
            text = raw.str.to_lowercase()
            declared = (
                pl.when(text.is_in(TRUE_VALUES))
                .then(True)
                .when(text.is_in(FALSE_VALUES))
                .then(False)
            )
            expected = "true" if req.expect else "false"
            met = (declared == req.expect).fill_null(False)
            detail = (
                pl.when(declared.is_null())
                .then(pl.lit(f"not declared ({column} empty; {expected} required)"))
                .when(met)
                .then(pl.lit(f"declared {column} = {expected}"))
                .otherwise(pl.format(f"declared {column} = {{}}; {expected} required", raw))
            )
        else:
            met = pl.col("completeness_mean") >= req.min_completeness
            detail = pl.format(
                f"mean daily completeness {{}} over {{}} days ({{}} with data); "
                f">= {req.min_completeness:g} required",
                pl.col("completeness_mean").round(3),
                pl.col("period_days"),
                pl.col("days_with_data"),
            )
        frames.append(
            facts.select(
                "enterprise",
                pl.lit(req.id).alias("requirement"),
                pl.lit(n).alias("order"),
                pl.lit(req.name).alias("name"),
                pl.lit(req.name_en).alias("name_en"),
                pl.lit(req.short or req.id).alias("short"),
                met.alias("met"),
                detail.alias("detail"),
            )
        )
    if not frames:
        return pl.DataFrame(
            schema={
                "enterprise": pl.String,
                "requirement": pl.String,
                "order": pl.Int32,
                "name": pl.String,
                "name_en": pl.String,
                "short": pl.String,
                "met": pl.Boolean,
                "detail": pl.String,
            }
        )
    return pl.concat(frames)


def screen(
    facts: pl.DataFrame, criteria: ScreeningCriteria, label: str = "criteria"
) -> ScreeningResult:
    """Judge every enterprise of `facts` (`enterprise_facts` output) with `criteria`;
    `label` names the criteria file in the baseline sources."""
    s = criteria.scoring
    long = measure_values(facts, criteria)
    table = _indicator_table(criteria)
    peers = _peer_baselines(long, criteria)
    rows = _row_baselines(long, criteria)
    fixed = _fixed(criteria, label)
    ind = (
        long.join(table, on="indicator", how="left")
        .join(fixed, on="indicator", how="left")
        .join(rows, on=["enterprise", "indicator"], how="left")
        .join(peers, on=["enterprise", "indicator"], how="left")
    )
    fixed_here = pl.col("fixed_baseline").is_not_null()
    row_here = pl.col("row_baseline").is_not_null()

    def pick(fixed: str, row: str, peer: str) -> pl.Expr:
        """The criteria file's value, else the industry row's, else the peers'."""
        return (
            pl.when(fixed_here)
            .then(pl.col(fixed))
            .when(row_here)
            .then(pl.col(row))
            .otherwise(pl.col(peer))
        )

    ind = ind.with_columns(
        pick("fixed_baseline", "row_baseline", "peer_baseline").alias("baseline"),
        pick("fixed_leading", "row_leading", "peer_leading").alias("leading"),
        pick("fixed_source", "row_source", "peer_source").alias("baseline_source"),
        pick("fixed_status", "row_status", "peer_status").alias("baseline_status"),
    )
    no_base = pl.col("value").is_not_null() & pl.col("baseline").is_null()
    ind = ind.with_columns(
        pl.when(no_base)
        .then(
            pl.format(
                f"no baseline: fewer than {criteria.peers.min_peers} peers with a value in {{}} "
                "(nor at a finer industry level), and none in the criteria file",
                pl.col("industry").str.slice(
                    0,
                    pl.col("indicator").replace_strict(
                        {
                            i.id: min(i.peer_levels or criteria.peers.prefix_lengths)
                            for i in criteria.indicators
                        },
                        return_dtype=pl.UInt32,
                    ),
                ),
            )
        )
        .otherwise(pl.col("reason"))
        .alias("reason"),
        pl.when(no_base).then(None).otherwise(pl.col("baseline_status")).alias("baseline_status"),
    ).with_columns(score_expr(criteria).alias("score"))
    ind = (
        ind.with_columns(
            pl.col("score").is_not_null().alias("scored"),
            _gap_target().alias("gap_target"),
        )
        .with_columns(
            pl.when(pl.col("gap_target") == "baseline")
            .then(pl.col("baseline"))
            .when(pl.col("gap_target") == "leading")
            .then(pl.col("leading"))
            .alias("gap_to"),
        )
        .with_columns(
            pl.when(pl.col("gap_kind") == "absolute")
            .then(pl.col("gap_to") - pl.col("value"))
            .otherwise(
                pl.when(pl.col("value") != 0).then(
                    100.0 * (pl.col("gap_to") - pl.col("value")) / pl.col("value").abs()
                )
            )
            .alias("gap_change"),
        )
    )
    indicators = ind.select(
        "enterprise",
        "indicator",
        "order",
        "group",
        "name",
        "name_en",
        "unit",
        "direction",
        "gap_kind",
        "weight",
        "value",
        "baseline",
        "leading",
        "baseline_source",
        "baseline_status",
        "score",
        "scored",
        "reason",
        "gap_target",
        "gap_to",
        "gap_change",
    ).sort("enterprise", "order")

    assessed = float(sum(criteria.effective_weight(i) for i in criteria.indicators))
    per = indicators.group_by("enterprise").agg(
        (pl.col("weight") * pl.col("score")).sum().alias("_ws"),
        pl.col("weight").filter(pl.col("scored")).sum().alias("_w"),
        pl.col("scored").sum().cast(pl.UInt32).alias("indicators_scored"),
    )
    denominator = pl.col("_w") if s.missing == "exclude" else pl.lit(assessed)
    requirements = _requirements(facts, criteria)
    req_summary = requirements.group_by("enterprise").agg(
        pl.col("met").all().alias("requirements_met"),
        pl.col("requirement").filter(~pl.col("met")).alias("requirements_failed"),
    )
    cand = (
        facts.select("enterprise", "name", "county", "industry")
        .join(per, on="enterprise", how="left")
        .join(req_summary, on="enterprise", how="left")
        .with_columns(
            pl.when(pl.col("_w") > 0).then(pl.col("_ws") / denominator).alias("score"),
            (pl.col("_w").fill_null(0.0) / assessed).alias("coverage"),
            pl.col("requirements_met").fill_null(True),
            pl.col("requirements_failed").fill_null([]),
        )
        .drop("_ws", "_w")
    )
    score_ok = pl.col("score").fill_null(-1.0) >= s.pass_score
    coverage_ok = pl.col("coverage") >= s.min_coverage - 1e-12
    reasons = pl.concat_list(
        pl.col("requirements_failed").list.eval(pl.format("requirement not met: {}", pl.element())),
        pl.when(~coverage_ok).then(
            pl.format(
                f"coverage {{}} < {s.min_coverage:g} (too few indicators scored)",
                pl.col("coverage").round(2),
            )
        ),
        pl.when(pl.col("score").is_null())
        .then(pl.lit("no indicator could be scored"))
        .when(~score_ok)
        .then(pl.format(f"score {{}} < {s.pass_score:g}", pl.col("score").round(1))),
    ).list.drop_nulls()
    cand = cand.with_columns(
        (pl.col("requirements_met") & score_ok & coverage_ok).alias("passed"),
        reasons.alias("fail_reasons"),
        (pl.lit(s.pass_score) - pl.col("score")).clip(lower_bound=0).alias("points_to_pass"),
    )
    cand = cand.sort(
        ["passed", "score", "coverage", "enterprise"],
        descending=[True, True, True, False],
        nulls_last=True,
    ).with_row_index("rank", offset=1)
    return ScreeningResult(candidates=cand, indicators=indicators, requirements=requirements)


def _gap_target() -> pl.Expr:
    value, base, lead = pl.col("value"), pl.col("baseline"), pl.col("leading")
    lower = pl.col("direction") == "lower"
    worse = pl.when(lower).then(value > base).otherwise(value < base)
    at_least_leading = pl.when(lower).then(value <= lead).otherwise(value >= lead)
    return (
        pl.when(pl.col("score").is_null() | at_least_leading)
        .then(None)
        .when(worse)
        .then(pl.lit("baseline"))
        .otherwise(pl.lit("leading"))
    )


def gap_text(row: dict[str, object]) -> str | None:
    """``must fall 8.2% to reach the baseline (0.0123 tce/10k yuan)`` for one indicator row."""
    target, to, change, value = row["gap_target"], row["gap_to"], row["gap_change"], row["value"]
    if target is None or to is None or value is None:
        return None
    assert isinstance(to, float) and isinstance(value, float)
    unit = str(row["unit"] or "")
    verb = "fall" if row["direction"] == "lower" else "rise"
    shown = f"{_num(to)}%" if unit == "%" else f"{_num(to)} {unit}".strip()
    goal = f"to reach the {target} value ({shown})"
    if row["gap_kind"] == "absolute":
        points = "percentage points" if unit == "%" else unit
        diff = abs(to - value)
        amount = f"{diff:.1f}" if diff >= 0.05 else f"{diff:.2g}"
        return f"must {verb} {amount} {points} {goal}".replace("  ", " ")
    if change is None:
        return f"must {verb} from {_num(value)} {goal}"
    assert isinstance(change, float)
    return f"must {verb} {abs(change):.1f}% {goal}"


def gap_short(row: dict[str, object]) -> str | None:
    """``+95.2% -> baseline`` (or ``+4.5 pp -> leading``) for tables."""
    target, to, change, value = row["gap_target"], row["gap_to"], row["gap_change"], row["value"]
    if target is None or not isinstance(to, float) or not isinstance(value, float):
        return None
    if row["gap_kind"] == "absolute":
        unit = "pp" if row["unit"] == "%" else str(row["unit"] or "")
        diff = to - value
        shown = f"{diff:+.1f}" if abs(diff) >= 0.05 else f"{diff:+.2g}"
        return f"{shown} {unit} -> {target}".replace("  ", " ")
    if not isinstance(change, float):
        return f"{_num(value)} -> {_num(to)} ({target})"
    return f"{change:+.1f}% -> {target}"


def _num(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) < 1 else f"{x:.4g}"


def indicator_by_id(criteria: ScreeningCriteria) -> dict[str, Indicator]:
    return {i.id: i for i in criteria.indicators}
