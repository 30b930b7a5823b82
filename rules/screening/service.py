"""One judgement, end to end: rule files and registry in, measured data read, decisions out.

`judge` is the computation (rule files already loaded, data already read): facts, screening,
classes and the plan's indicators, with a timing per step — what ``greenmon bench screen``
measures. `run` is what the commands call: load the registry, the rule files and the reference
tables (all validated before InfluxDB is contacted), read the aggregator's outputs, `judge`,
and write the ``screening``/``efficiency_class`` measurements.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from greenmon.aggregator.reference import ReferenceChoice, References, load_references
from greenmon.config import Settings
from greenmon.influx import InfluxClient
from greenmon.registry import Registry, load_registry
from greenmon.rules.ruleset import LoadedRules
from greenmon.rules.screening.classify import ClassResult, classify, quantities
from greenmon.rules.screening.criteria import (
    EfficiencyCriteria,
    PlanTargets,
    ScreeningCriteria,
    load_efficiency,
    load_plan,
    load_screening,
)
from greenmon.rules.screening.facts import enterprise_facts, statistics
from greenmon.rules.screening.inputs import Measured, read_measured
from greenmon.rules.screening.period import Period
from greenmon.rules.screening.plan import plan_indicators
from greenmon.rules.screening.screen import ScreeningResult, screen
from greenmon.rules.screening.store import write_classes, write_screening

__all__ = ["Judgement", "Options", "Rules", "judge", "load_all", "run"]

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Options:
    """What a `greenmon screen` / `greenmon classify` run judges, and with which files."""

    year: int
    as_of: datetime | None = None
    standard: str = "2025"
    criteria: Path | None = None
    profile: str = "huaian-2024"
    efficiency: Path | None = None
    plan: Path | None = None
    references: Path | None = None
    screening: bool = True  # False: classify only
    write: bool = True


@dataclass(frozen=True)
class Rules:
    """The loaded rule files and reference tables."""

    screening: LoadedRules[ScreeningCriteria]
    efficiency: LoadedRules[EfficiencyCriteria]
    plan: LoadedRules[PlanTargets]
    references: References
    choice: ReferenceChoice = field(default_factory=ReferenceChoice)

    def needs_electricity(self) -> bool:
        return any(
            "electricity_mwh" in (i.numerator, i.denominator)
            for i in self.efficiency.rules.indicators
        )


@dataclass
class Judgement:
    """Everything a run decided, and what it used."""

    period: Period
    rules: Rules
    facts: pl.DataFrame
    screening: ScreeningResult | None
    classes: ClassResult
    plan: dict[str, Any]
    seconds: dict[str, float]
    rows_read: int = 0
    written: dict[str, int] = field(default_factory=dict)
    registry_root: str = ""

    def files(self) -> list[dict[str, Any]]:
        """Every rule and reference file used, for the outputs' footers."""
        out = []
        if self.screening is not None:
            out.append(self.rules.screening.info.as_dict())
        out.append(self.rules.efficiency.info.as_dict())
        out.append(self.rules.plan.info.as_dict())
        out.append({"kind": "references", "files": list(self.rules.references.files)})
        return out


def load_all(opts: Options) -> Rules:
    """Every rule file and reference table, validated (raises naming file, line and key)."""
    return Rules(
        screening=load_screening(opts.standard, opts.criteria),
        efficiency=load_efficiency(opts.profile, opts.efficiency),
        plan=load_plan(opts.plan),
        references=load_references(opts.references),
    )


def judge(
    registry: Registry, measured: Measured, period: Period, rules: Rules, *, screening: bool = True
) -> Judgement:
    """Facts -> screening (unless `screening` is False) -> classes -> plan indicators."""
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    facts = enterprise_facts(registry, measured, period, rules.references, rules.choice)
    seconds["facts"] = time.perf_counter() - t

    result: ScreeningResult | None = None
    if screening:
        t = time.perf_counter()
        result = screen(facts, rules.screening.rules, rules.screening.info.files[-1])
        seconds["screen"] = time.perf_counter() - t

    t = time.perf_counter()
    ids = registry.enterprises.get_column("enterprise_id").to_list()
    previous_months = [f"{period.year - 1}-{m:02d}" for m in range(1, 13)]
    prev_stats = statistics(registry.monthly, ids, previous_months).join(
        facts.select("enterprise", "land_area_mu"), on="enterprise", how="left"
    )
    previous = quantities(prev_stats, measured.previous, prefix="prev_")
    classes = classify(
        facts,
        quantities(facts),
        previous,
        rules.efficiency.rules,
        year=period.year,
        months=period.months,
    )
    seconds["classify"] = time.perf_counter() - t

    t = time.perf_counter()
    plan = plan_indicators(
        facts, result, classes, rules.plan, rules.references, period, rules.choice
    )
    seconds["plan"] = time.perf_counter() - t
    return Judgement(
        period=period,
        rules=rules,
        facts=facts,
        screening=result,
        classes=classes,
        plan=plan,
        seconds=seconds,
        registry_root=str(registry.root),
    )


def run(settings: Settings, opts: Options, progress: Progress | None = None) -> Judgement:
    """Load, read, judge and (unless ``opts.write`` is False) write; see the module docstring."""
    from greenmon.errors import ConfigError

    if settings.registry is None:
        raise ConfigError("registry: no registry directory given (--registry DIR)")
    period = Period.of(opts.year, opts.as_of, settings.timezone)
    rules = load_all(opts)
    registry = load_registry(settings.registry)
    with InfluxClient.from_settings(settings) as client:
        measured = read_measured(
            client,
            period,
            electricity=rules.needs_electricity(),
            previous=True,
            progress=(lambda done, total: progress("reading energy", done, total))
            if progress
            else None,
        )
        verdict = judge(registry, measured, period, rules, screening=opts.screening)
        verdict.seconds["read"] = measured.seconds
        verdict.rows_read = measured.rows
        if opts.write:
            t = time.perf_counter()
            if verdict.screening is not None:
                verdict.written["screening"] = write_screening(
                    client, verdict.screening, period, rules.screening.info.label
                )
            cuts = [c.class_ for c in rules.efficiency.rules.classes.cuts]
            verdict.written["efficiency_class"] = write_classes(
                client, verdict.classes, period, rules.efficiency.info.label, cuts
            )
            verdict.seconds["write"] = time.perf_counter() - t
    return verdict
