"""The screening stage's rule files: their shapes, their checks, and which packaged file is which.

Three kinds of versioned TOML files, shipped in ``greenmon/rules/data/`` and overridable by the
user (`greenmon.rules.ruleset.load_rules` merges a user file over the packaged one):

- ``green-factory-criteria`` (`ScreeningCriteria`): the standard, the scoring curve and pass
  rule, how peers stand in for missing baselines, the groups and their weights, the
  indicators greenmon computes, per-industry baseline/leading values, and the basic
  requirements. Packaged: GB/T 36132-2025 structure (default) and 2018 (`--standard 2018`).
- ``efficiency-criteria`` (`EfficiencyCriteria`): the 亩均 evaluation — scope, benchmark rule,
  weighted indicators, class cut-offs. Packaged: Jiangsu city practice (Huai'an 2024, default)
  and the Zhejiang six-indicator variant (`--profile zhejiang`).
- ``plan-targets`` (`PlanTargets`): the Nantong plan's indicators 9 and 10 and safeguard 3.

Each value carries its status (`greenmon.rules.ruleset.Status`); checks that span keys (an
indicator's group must exist, a requirement's column must be a declared attribute the registry
validates, cut-offs must rise to 1) are `cross_check`s, so every problem names file, line, key.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from greenmon.registry import DECLARED_FLAGS
from greenmon.rules.errors import RuleFileError, RuleFileProblem
from greenmon.rules.ruleset import LoadedRules, RuleDocument, Status, load_rules
from greenmon.rules.tomlkeys import KeyPath

__all__ = [
    "EFFICIENCY_PROFILES",
    "MEASURES",
    "QUANTITIES",
    "STANDARDS",
    "EfficiencyCriteria",
    "PlanTargets",
    "ScreeningCriteria",
    "load_efficiency",
    "load_plan",
    "load_screening",
]

#: ``--standard`` -> packaged criteria file.
STANDARDS: Final = {"2025": "green_factory_2025.toml", "2018": "green_factory_2018.toml"}
#: ``--profile`` -> packaged efficiency file.
EFFICIENCY_PROFILES: Final = {
    "huaian-2024": "efficiency_huaian_2024.toml",
    "zhejiang": "efficiency_zhejiang.toml",
}
PLAN_FILE: Final = "plan_nantong_2025.toml"

#: unit_product_energy: kgce per product unit; unit_product_carbon: kgCO2 per product unit;
#: renewable_share: % of comprehensive consumption generated on site; intensity_vs_province:
#: intensity / the provincial reference (on the reference's denominator); energy_intensity and
#: double_control_intensity: tce per 10k yuan of output value; output_per_mu,
#: value_added_per_mu: 10k yuan per mu of land.
Measure = Literal[
    "unit_product_energy",
    "unit_product_carbon",
    "renewable_share",
    "intensity_vs_province",
    "energy_intensity",
    "double_control_intensity",
    "output_per_mu",
    "value_added_per_mu",
]
#: Quantities an efficiency indicator divides (sums over the year; employees: mean headcount).
Quantity = Literal[
    "tax_10k_yuan",
    "sales_10k_yuan",
    "output_value_10k_yuan",
    "value_added_10k_yuan",
    "rd_expense_10k_yuan",
    "employees",
    "land_area_mu",
    "energy_tce",
    "double_control_tce",
    "electricity_mwh",
    "co2_t",
]

#: What greenmon can compute for a screening indicator (see `greenmon.rules.screening.facts`).
MEASURES: Final = get_args(Measure)
QUANTITIES: Final = get_args(Quantity)

_ID = r"^[a-z][a-z0-9_]*$"


class _Table(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- green factory


class Standard(_Table):
    code: str = Field(min_length=1)
    title: str = Field(min_length=1)
    in_force: str = ""
    status: Status
    note: str = ""


class Scoring(_Table):
    score_at_baseline: float = Field(ge=0, le=100)
    score_at_leading: float = Field(ge=0, le=100)
    below_baseline: float = Field(default=0.0, ge=0, le=100)
    missing: Literal["exclude", "zero"] = "exclude"
    pass_score: float = Field(ge=0, le=100)
    min_coverage: float = Field(ge=0, le=1)
    status: Status
    note: str = ""


class Peers(_Table):
    baseline_percentile: float = Field(default=50.0, gt=0, lt=100)
    leading_share: float = Field(default=20.0, gt=0, lt=100)
    min_peers: int = Field(default=5, ge=2)
    prefix_lengths: tuple[int, ...] = Field(default=(5, 4, 3, 1), min_length=1)
    status: Status
    note: str = ""


class Group(_Table):
    name: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    weight: float = Field(ge=0, le=1)
    status: Status
    note: str = ""


class Indicator(_Table):
    id: str = Field(pattern=_ID)
    group: str
    measure: Measure
    name: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    unit: str = ""
    direction: Literal["lower", "higher"]
    weight: float = Field(gt=0)
    #: How a gap is said: "relative" (must fall 8.2%) or "absolute" (must rise 4.5 points).
    gap: Literal["relative", "absolute"] = "relative"
    #: Fixed baseline/leading values for every industry (else per-industry rows, else peers).
    baseline: float | None = None
    leading: float | None = None
    status: Status | None = None
    source: str = ""
    #: GB/T 4754 prefix lengths peers may share for this indicator (default: ``[peers]``'s).
    peer_levels: tuple[int, ...] | None = Field(default=None, min_length=1)


class Baseline(_Table):
    """A baseline and leading value for one indicator in one industry (GB/T 4754 prefix)."""

    indicator: str
    industry: str = Field(min_length=1)
    product_unit: str | None = None
    baseline: float
    leading: float
    year: int | None = None
    status: Status
    source: str = Field(min_length=1)


class Requirement(_Table):
    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    short: str = ""  # a label for tables (default: the id)
    check: Literal["declared", "online_monitoring"]
    column: str | None = None
    expect: bool = True
    min_completeness: float = Field(default=0.9, ge=0, le=1)
    status: Status
    source: str = ""


def _duplicates(items: Iterable[str], where: str) -> Iterable[tuple[KeyPath, str]]:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item in seen:
            yield (where, i, "id"), f"'{item}' is defined twice (first as {where}[{seen[item]}])"
        seen.setdefault(item, i)


def _ordered(direction: str, baseline: float, leading: float) -> bool:
    return leading < baseline if direction == "lower" else leading > baseline


class ScreeningCriteria(RuleDocument):
    """A ``green-factory-criteria`` file."""

    standard: Standard
    scoring: Scoring
    peers: Peers
    groups: dict[str, Group] = Field(min_length=1)
    indicators: tuple[Indicator, ...] = Field(min_length=1)
    requirements: tuple[Requirement, ...] = ()
    baselines: tuple[Baseline, ...] = ()

    def cross_check(self) -> Iterable[tuple[KeyPath, str]]:
        yield from _duplicates((i.id for i in self.indicators), "indicators")
        yield from _duplicates((r.id for r in self.requirements), "requirements")
        if self.scoring.score_at_leading < self.scoring.score_at_baseline:
            yield ("scoring", "score_at_leading"), "must be >= score_at_baseline"
        if abs(sum(g.weight for g in self.groups.values()) - 1.0) > 1e-6:
            total = sum(g.weight for g in self.groups.values())
            yield ("groups",), f"group weights must add up to 1, they add up to {total:g}"
        by_id = {i.id: i for i in self.indicators}
        for n, ind in enumerate(self.indicators):
            if ind.group not in self.groups:
                known = ", ".join(self.groups)
                yield ("indicators", n, "group"), f"unknown group '{ind.group}' (known: {known})"
            if (ind.baseline is None) != (ind.leading is None):
                yield ("indicators", n), "give both baseline and leading, or neither"
            elif ind.baseline is not None and ind.leading is not None:
                if not _ordered(ind.direction, ind.baseline, ind.leading):
                    better = "below" if ind.direction == "lower" else "above"
                    yield (
                        ("indicators", n, "leading"),
                        f"must be {better} the baseline ({ind.baseline:g}) for a "
                        f"'{ind.direction}' indicator",
                    )
                if ind.status is None:
                    yield ("indicators", n), "fixed baseline/leading values need a status"
        for n, row in enumerate(self.baselines):
            of = by_id.get(row.indicator)
            if of is None:
                yield ("baselines", n, "indicator"), f"unknown indicator '{row.indicator}'"
            elif not _ordered(of.direction, row.baseline, row.leading):
                better = "below" if of.direction == "lower" else "above"
                yield (
                    ("baselines", n, "leading"),
                    f"must be {better} the baseline ({row.baseline:g}): {of.direction} is "
                    f"better for '{of.id}'",
                )
        for n, req in enumerate(self.requirements):
            if req.check == "declared":
                if req.column is None:
                    yield ("requirements", n), "a 'declared' requirement needs a column"
                elif req.column not in DECLARED_FLAGS:
                    yield (
                        ("requirements", n, "column"),
                        f"'{req.column}' is not a declared attribute the registry validates "
                        f"(one of {', '.join(DECLARED_FLAGS)})",
                    )

    def assessed_groups(self) -> list[str]:
        """Groups with at least one indicator, in file order."""
        used = {i.group for i in self.indicators}
        return [g for g in self.groups if g in used]

    def effective_weight(self, indicator: Indicator) -> float:
        """The indicator's share of the whole standard: group weight x share in its group."""
        in_group = sum(i.weight for i in self.indicators if i.group == indicator.group)
        return self.groups[indicator.group].weight * indicator.weight / in_group


# --------------------------------------------------------------------------- efficiency


class Profile(_Table):
    name: str = Field(min_length=1)
    name_zh: str = ""
    note: str = ""


class Scope(_Table):
    min_land_mu: float = Field(ge=0)
    above_scale_evaluated: bool = True
    min_months: int = Field(ge=0)
    missing: Literal["not_evaluated", "zero"] = "not_evaluated"
    status: Status
    note: str = ""


class Benchmark(_Table):
    factor: float = Field(gt=0)
    average: Literal["aggregate", "mean"] = "aggregate"
    fallback: Literal["current_year", "none"] = "current_year"
    status: Status
    note: str = ""


class EfficiencyIndicator(_Table):
    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    numerator: Quantity
    denominator: Quantity
    unit: str = ""
    scale: float = Field(default=1.0, gt=0)
    weight: float = Field(gt=0)
    #: Largest value / benchmark counted (None: no cap).
    cap: float | None = Field(default=None, gt=0)
    status: Status
    note: str = ""


class Cut(_Table):
    class_: str = Field(alias="class", min_length=1, max_length=3)
    name: str = ""
    name_en: str = ""
    upper: float = Field(gt=0, le=1)


class Classes(_Table):
    rank_within: Literal["county", "city"] = "county"
    min_group: int = Field(default=5, ge=1)
    status: Status
    note: str = ""
    cuts: tuple[Cut, ...] = Field(min_length=1)


class EfficiencyCriteria(RuleDocument):
    """An ``efficiency-criteria`` file."""

    profile: Profile
    scope: Scope
    benchmark: Benchmark
    indicators: tuple[EfficiencyIndicator, ...] = Field(min_length=1)
    classes: Classes

    def cross_check(self) -> Iterable[tuple[KeyPath, str]]:
        yield from _duplicates((i.id for i in self.indicators), "indicators")
        cuts = self.classes.cuts
        names = [c.class_ for c in cuts]
        for n, cut in enumerate(cuts):
            if names.count(cut.class_) > 1:
                yield ("classes", "cuts", n, "class"), f"class '{cut.class_}' is listed twice"
            if cut.class_ == "T":
                yield ("classes", "cuts", n, "class"), "'T' is reserved for 'not evaluated'"
            if n and cut.upper <= cuts[n - 1].upper:
                yield ("classes", "cuts", n, "upper"), "upper bounds must rise from cut to cut"
        if cuts[-1].upper != 1.0:
            yield ("classes", "cuts", len(cuts) - 1, "upper"), "the last cut must end at 1.0"
        for n, ind in enumerate(self.indicators):
            if ind.numerator == ind.denominator:
                yield ("indicators", n, "denominator"), "numerator and denominator are the same"


# --------------------------------------------------------------------------- plan


class PlanInfo(_Table):
    name: str
    name_en: str
    issued: str
    target_year: int


class IntensityTarget(_Table):
    indicator: str
    name: str
    name_en: str
    status: Status


class GreenFactoryTarget(_Table):
    indicator: str
    name: str
    name_en: str
    new_target: int = Field(ge=0)
    cumulative_task: str = ""
    cumulative_target: int | None = Field(default=None, ge=0)
    status: Status


class ClassesSafeguard(_Table):
    safeguard: str
    name: str
    name_en: str
    status: Status


class PlanTargets(RuleDocument):
    """A ``plan-targets`` file."""

    plan: PlanInfo
    intensity: IntensityTarget
    green_factories: GreenFactoryTarget
    classes: ClassesSafeguard


# --------------------------------------------------------------------------- loading


def _choose(choices: dict[str, str], key: str, what: str) -> str:
    try:
        return choices[key]
    except KeyError:
        raise RuleFileError(
            [RuleFileProblem(what, None, None, f"unknown '{key}' (known: {', '.join(choices)})")]
        ) from None


def load_screening(
    standard: str = "2025", override: Path | None = None
) -> LoadedRules[ScreeningCriteria]:
    """The packaged criteria of `standard` ("2025" or "2018"), with the user's file over it."""
    return load_rules(ScreeningCriteria, _choose(STANDARDS, standard, "--standard"), override)


def load_efficiency(
    profile: str = "huaian-2024", override: Path | None = None
) -> LoadedRules[EfficiencyCriteria]:
    """The packaged efficiency profile, with the user's file over it."""
    return load_rules(
        EfficiencyCriteria, _choose(EFFICIENCY_PROFILES, profile, "--profile"), override
    )


def load_plan(override: Path | None = None) -> LoadedRules[PlanTargets]:
    """The packaged plan targets, with the user's file over it."""
    return load_rules(PlanTargets, PLAN_FILE, override)
