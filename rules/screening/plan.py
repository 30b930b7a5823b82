"""The Nantong plan's energy indicators, computed from what screening and classification found.

- **Indicator 9** (energy per unit of GDP below the provincial average): the registered
  enterprises' comprehensive consumption over their value added, for the period's whole months,
  against the provincial reference the aggregator uses (the general row of the chosen region
  and metric, not an industry row). It covers only enterprises in the registry with both
  figures — a proxy for the city's unit-GDP energy, and said so.
- **Indicator 10 / task 26** (new provincial-or-higher green factories; cumulative): how many
  enterprises pass the screening, how many already declare a provincial or national green
  factory (``green_factory_level``), and how many pass without being recognised yet — beside
  the plan's targets (`PlanTargets`, a data file).
- **Safeguard 3** (yearly evaluation of resource-intensive use): class counts per county.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from greenmon.aggregator.reference import ReferenceChoice, References, intensity_references
from greenmon.rules.ruleset import LoadedRules
from greenmon.rules.screening.classify import ClassResult
from greenmon.rules.screening.criteria import PlanTargets
from greenmon.rules.screening.period import Period
from greenmon.rules.screening.screen import ScreeningResult

__all__ = ["plan_indicators"]

_RECOGNISED = ("provincial", "national")


def _city_reference(
    references: References, year: int, choice: ReferenceChoice | None
) -> dict[str, Any]:
    base = choice or ReferenceChoice()
    general = ReferenceChoice(
        electricity_basis=base.electricity_basis,
        emission_scopes=base.emission_scopes,
        intensity_region=base.intensity_region,
        intensity_metric=base.intensity_metric,
        industry_specific=False,
    )
    one = pl.DataFrame({"enterprise_id": ["city"], "industry": [""]})
    row = intensity_references(one, references, [year], general).row(0, named=True)
    return row


def plan_indicators(
    facts: pl.DataFrame,
    screening: ScreeningResult | None,
    classes: ClassResult | None,
    plan: LoadedRules[PlanTargets],
    references: References,
    period: Period,
    choice: ReferenceChoice | None = None,
) -> dict[str, Any]:
    """The ``plan`` object of `greenmon screen --json` (see the module docstring)."""
    p = plan.rules
    ref = _city_reference(references, period.year, choice)
    on_added = ref.get("denominator") == "value_added"
    denominator = "value_added_10k_yuan" if on_added else "output_value_10k_yuan"
    usable = facts.filter(pl.col("ratio_kgce").is_not_null() & pl.col(denominator).is_not_null())
    tce = float(usable.get_column("ratio_kgce").sum()) / 1000.0 if usable.height else 0.0
    money = float(usable.get_column(denominator).sum()) if usable.height else 0.0
    intensity = tce / money if money > 0 else None
    reference = ref.get("reference_tce_per_10k_yuan")
    ratio = intensity / reference if intensity is not None and reference else None
    verdict = (
        "unknown (no data or no reference)"
        if ratio is None
        else (
            "below the provincial reference" if ratio < 1 else "not below the provincial reference"
        )
    )
    out: dict[str, Any] = {
        "plan": p.plan.name,
        "plan_en": p.plan.name_en,
        "target_year": p.plan.target_year,
        "file": plan.info.label,
        "indicator_9": {
            "name": p.intensity.name,
            "name_en": p.intensity.name_en,
            "tce": round(tce, 3),
            "denominator": denominator,
            "denominator_10k_yuan": round(money, 1),
            "tce_per_10k_yuan": intensity,
            "reference_tce_per_10k_yuan": reference,
            "ratio_to_reference": ratio,
            "verdict": verdict,
            "reference": ref.get("reference"),
            "reference_status": ref.get("reference_status"),
            "enterprises": usable.height,
            "of_enterprises": facts.height,
            "months": period.months,
            "note": "registered enterprises only: a proxy for the city's energy per unit GDP",
            "status": p.intensity.status,
        },
    }
    level = (
        facts.get_column("green_factory_level").str.to_lowercase()
        if "green_factory_level" in facts.columns
        else pl.Series([None] * facts.height, dtype=pl.String)
    )
    recognised = set(facts.filter(level.is_in(_RECOGNISED)).get_column("enterprise").to_list())
    if screening is not None:
        passed = set(
            screening.candidates.filter(pl.col("passed")).get_column("enterprise").to_list()
        )
        g = p.green_factories
        out["indicator_10"] = {
            "name": g.name,
            "name_en": g.name_en,
            "passing_screening": len(passed),
            "passing_not_yet_recognised": len(passed - recognised),
            "recognised_declared": len(recognised),
            "new_target": g.new_target,
            "cumulative_task": g.cumulative_task,
            "cumulative_target": g.cumulative_target,
            "new_candidates_vs_target": f"{len(passed - recognised)} / {g.new_target}",
            "cumulative_vs_target": (
                f"{len(recognised)} recognised + {len(passed - recognised)} candidates / "
                f"{g.cumulative_target}"
                if g.cumulative_target is not None
                else None
            ),
            "status": g.status,
        }
    if classes is not None:
        counts = classes.counties.to_dicts()
        out["safeguard_3"] = {
            "name": p.classes.name,
            "name_en": p.classes.name_en,
            "class_counts_by_county": counts,
            "status": p.classes.status,
        }
    return out
