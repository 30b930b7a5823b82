"""Screening on hand-built registries: every figure below is computed by hand from the inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from greenmon.aggregator.reference import load_references
from greenmon.rules.screening.criteria import load_screening
from greenmon.rules.screening.facts import enterprise_facts
from greenmon.rules.screening.screen import ScreeningResult, gap_text, score_expr, screen
from tests.rules.screening.support import Firm, case, local

CRITERIA = load_screening("2025").rules


def run(
    tmp_path: Path, firms: list[Firm], criteria_text: str | None = None, **kw: object
) -> ScreeningResult:
    registry, measured, period = case(tmp_path / "reg", firms, **kw)  # type: ignore[arg-type]
    override = None
    if criteria_text is not None:
        override = tmp_path / "criteria.toml"
        override.write_text(criteria_text, encoding="utf-8")
    loaded = load_screening("2025", override)
    facts = enterprise_facts(registry, measured, period, load_references())
    return screen(facts, loaded.rules, loaded.info.files[-1])


def indicator(result: ScreeningResult, enterprise: str, ind: str) -> dict[str, object]:
    rows = result.indicators.filter(
        (pl.col("enterprise") == enterprise) & (pl.col("indicator") == ind)
    )
    assert rows.height == 1
    return rows.row(0, named=True)


def candidate(result: ScreeningResult, enterprise: str) -> dict[str, object]:
    return result.candidates.filter(pl.col("enterprise") == enterprise).row(0, named=True)


@pytest.mark.parametrize(
    ("direction", "value", "baseline", "leading", "score"),
    [
        ("lower", 1.0, 1.0, 0.5, 60.0),  # at the baseline
        ("lower", 0.5, 1.0, 0.5, 100.0),  # at the leading value
        ("lower", 0.2, 1.0, 0.5, 100.0),  # better than leading: capped
        ("lower", 0.75, 1.0, 0.5, 80.0),  # half way
        ("lower", 1.01, 1.0, 0.5, 0.0),  # worse than the baseline
        ("higher", 5.0, 5.0, 30.0, 60.0),
        ("higher", 17.5, 5.0, 30.0, 80.0),
        ("higher", 4.9, 5.0, 30.0, 0.0),
        ("higher", 31.0, 5.0, 30.0, 100.0),
        ("lower", 2.0, 2.0, 2.0, 100.0),  # baseline = leading: reaching it is leading
        ("lower", None, 1.0, 0.5, None),  # no value: not scored
        ("lower", 1.0, None, None, None),  # no baseline: not scored
    ],
)
def test_score_curve(
    direction: str, value: float | None, baseline: float | None, leading: float | None,
    score: float | None,
) -> None:  # fmt: skip
    frame = pl.DataFrame(
        {"direction": [direction], "value": [value], "baseline": [baseline], "leading": [leading]},
        schema={"direction": pl.String, "value": pl.Float64, "baseline": pl.Float64,
                "leading": pl.Float64},
    )  # fmt: skip
    got = frame.select(score_expr(CRITERIA).alias("s")).item()
    assert got == (None if score is None else pytest.approx(score))


def _peers(n: int, industry: str, start: float = 0.10, step: float = 0.01) -> list[Firm]:
    """`n` firms whose energy intensity is start, start + step, ... tce per 10k yuan."""
    firms = []
    for i in range(n):
        intensity = start + i * step
        # 12 months x 1,000 (10k yuan) output; kgce per day so that tce / output = intensity
        firms.append(
            Firm(f"{industry}-{i}", industry=industry, kgce_day=intensity * 12_000 * 1000 / 365)
        )
    return firms


def test_peers_are_the_finest_industry_level_with_enough_values(tmp_path: Path) -> None:
    # six in C1712 (enough at class level), three in C1713 + three in C1719 (only at C171)
    firms = (
        _peers(6, "C1712")
        + _peers(3, "C1713", start=0.2, step=0.02)
        + _peers(3, "C1719", start=0.3, step=0.02)
    )
    result = run(tmp_path, firms)
    row = indicator(result, "C1712-0", "energy_intensity")
    own = [0.10 + i * 0.01 for i in range(6)]
    assert row["value"] == pytest.approx(0.10)
    assert row["baseline"] == pytest.approx(np.quantile(own, 0.5))
    assert row["leading"] == pytest.approx(np.quantile(own, 0.2))
    assert row["baseline_source"].startswith("peers C1712 (6 enterprises)")
    assert "assumption" in row["baseline_source"]
    assert row["score"] == 100.0
    group = [0.10 + i * 0.01 for i in range(6)] + [0.2, 0.22, 0.24, 0.3, 0.32, 0.34]
    row = indicator(result, "C1713-1", "energy_intensity")
    assert row["baseline_source"].startswith("peers C171 (12 enterprises)")
    assert row["baseline"] == pytest.approx(np.quantile(group, 0.5))
    assert row["value"] == pytest.approx(0.22)
    assert row["score"] == 0.0  # worse than the group's median
    assert row["gap_target"] == "baseline"
    assert row["gap_change"] == pytest.approx(100 * (np.quantile(group, 0.5) - 0.22) / 0.22)


def test_a_criteria_row_for_the_industry_wins_over_peers(tmp_path: Path) -> None:
    rows = (
        "[[baselines]]\nindicator = 'energy_intensity'\nindustry = 'C17'\nbaseline = 0.2\n"
        "leading = 0.1\nyear = 2024\nstatus = 'verified'\nsource = 'city notice'\n"
    )
    result = run(tmp_path, _peers(6, "C1712", start=0.15), rows)
    row = indicator(result, "C1712-0", "energy_intensity")
    assert (row["baseline"], row["leading"]) == (0.2, 0.1)
    assert row["baseline_status"] == "verified"
    assert row["baseline_source"].startswith("baselines[0] C17 2024: city notice")
    assert row["score"] == pytest.approx(80.0)  # 0.15: half way from 0.2 to 0.1
    # the renewable share's fixed values come from the criteria file itself
    share = indicator(result, "C1712-0", "renewable_share")
    fixed = (share["baseline"], share["leading"], share["baseline_status"])
    assert fixed == (5.0, 30.0, "placeholder")
    assert share["value"] == 0.0  # no generation meter: nothing generated on site
    assert share["score"] == 0.0


def test_too_few_peers_is_said_not_guessed(tmp_path: Path) -> None:
    result = run(tmp_path, _peers(3, "C3731"))
    row = indicator(result, "C3731-0", "energy_intensity")
    assert row["value"] == pytest.approx(0.10)
    assert row["score"] is None and not row["scored"]
    assert row["reason"].startswith("no baseline: fewer than 5 peers")


def test_a_missing_basic_requirement_fails_whatever_the_score(tmp_path: Path) -> None:
    firms = _peers(8, "C1712")
    firms[0].violation = "true"  # the best of all, but declares a major violation
    firms[1].certified = ""  # the second best did not declare its energy management system
    result = run(tmp_path, firms)
    best, second, third = (candidate(result, f"C1712-{i}") for i in range(3))
    assert best["score"] >= third["score"] >= 60  # the best scores, yet fails
    assert not best["passed"] and not second["passed"] and third["passed"]
    assert best["fail_reasons"] == ["requirement not met: legal_compliance"]
    assert second["fail_reasons"] == ["requirement not met: energy_management_system"]
    reqs = result.requirements.filter(pl.col("enterprise").is_in(["C1712-0", "C1712-1"]))
    details = dict(zip(reqs["requirement"] + reqs["enterprise"], reqs["detail"], strict=True))
    assert details["legal_complianceC1712-0"] == "declared major_violation = true; false required"
    assert details["energy_management_systemC1712-1"] == (
        "not declared (energy_management_certified empty; true required)"
    )
    # failing a requirement changes nothing else: the score is the twin's
    twin = run(tmp_path / "twin", _peers(8, "C1712"))
    assert candidate(twin, "C1712-0")["score"] == pytest.approx(best["score"])
    assert candidate(twin, "C1712-0")["passed"]
    # passed ones rank first
    assert result.candidates.filter(pl.col("passed"))["rank"].max() < best["rank"]


def test_online_monitoring_is_judged_from_completeness(tmp_path: Path) -> None:
    firms = _peers(6, "C1712")
    firms[0].completeness = 0.95
    firms[1].completeness = 0.85
    firms[2].days_missing = 40  # 325 of 365 days with a row: 0.89
    result = run(tmp_path, firms)
    met = dict(
        result.requirements.filter(pl.col("requirement") == "online_monitoring")
        .select("enterprise", "met")
        .iter_rows()
    )
    assert (met["C1712-0"], met["C1712-1"], met["C1712-2"], met["C1712-3"]) == (
        True, False, False, True,
    )  # fmt: skip
    detail = result.requirements.filter(
        (pl.col("requirement") == "online_monitoring") & (pl.col("enterprise") == "C1712-2")
    )["detail"].item()
    assert detail == ("mean daily completeness 0.89 over 365 days (325 with data); >= 0.9 required")
    # days without a row also keep the energy ratios from being computed
    row = indicator(result, "C1712-2", "energy_intensity")
    assert row["value"] is None
    assert row["reason"] == "energy data on only 325 of 365 days of 2025-01..2025-12"


def test_without_product_output_the_unit_product_indicators_are_unscored(tmp_path: Path) -> None:
    firms = _peers(6, "C1712")
    firms[0].months = {"2025-03": {"product_output": None}, "2025-07": {"product_output": None}}
    result = run(tmp_path, firms)
    for ind in ("unit_product_energy", "unit_product_carbon"):
        row = indicator(result, "C1712-0", ind)
        assert row["value"] is None and not row["scored"]
        assert row["reason"] == "no product output in monthly.csv for 2025-03, 2025-07"
        assert indicator(result, "C1712-1", ind)["scored"]
    c = candidate(result, "C1712-0")
    weights = {i.id: CRITERIA.effective_weight(i) for i in CRITERIA.indicators}
    unscored = weights["unit_product_energy"] + weights["unit_product_carbon"]
    assert c["coverage"] == pytest.approx((0.70 - unscored) / 0.70)
    # the score is the weighted mean of what was scored ("exclude")
    scored = result.indicators.filter((pl.col("enterprise") == "C1712-0") & pl.col("scored"))
    expected = (scored["score"] * scored["weight"]).sum() / scored["weight"].sum()
    assert c["score"] == pytest.approx(expected)
    assert c["indicators_scored"] == 4


def test_missing_zero_counts_unscored_indicators_as_nothing(tmp_path: Path) -> None:
    firms = _peers(6, "C1712")
    firms[0].months = {"2025-03": {"product_output": None}}
    result = run(tmp_path, firms, "[scoring]\nmissing = 'zero'\n")
    c = candidate(result, "C1712-0")
    scored = result.indicators.filter((pl.col("enterprise") == "C1712-0") & pl.col("scored"))
    assert c["score"] == pytest.approx((scored["score"] * scored["weight"]).sum() / 0.70)


def test_no_land_no_output_per_mu_and_coverage_can_fail(tmp_path: Path) -> None:
    firms = _peers(6, "C1712")
    firms[0].land = None
    for month in range(1, 13):
        firms[0].months[f"2025-{month:02d}"] = {"product_output": None}
    result = run(tmp_path, firms, "[scoring]\nmin_coverage = 0.9\n")
    row = indicator(result, "C1712-0", "output_per_mu")
    assert row["reason"] == "no land area in enterprises.csv"
    c = candidate(result, "C1712-0")
    assert not c["passed"]
    assert any(r.startswith("coverage 0.53 < 0.9") for r in c["fail_reasons"])


def test_gap_texts() -> None:
    base = {"unit": "tce/10k yuan", "direction": "lower", "gap_kind": "relative"}
    row = {**base, "gap_target": "baseline", "gap_to": 0.1, "value": 0.1083,
           "gap_change": 100 * (0.1 - 0.1083) / 0.1083}  # fmt: skip
    assert gap_text(row) == "must fall 7.7% to reach the baseline value (0.1 tce/10k yuan)"
    share = {"unit": "%", "direction": "higher", "gap_kind": "absolute", "gap_target": "leading",
             "gap_to": 30.0, "value": 12.5, "gap_change": 17.5}  # fmt: skip
    assert gap_text(share) == "must rise 17.5 percentage points to reach the leading value (30%)"
    done = {**row, "gap_target": None}
    assert gap_text(done) is None


def test_year_to_date_uses_whole_months_for_ratios(tmp_path: Path) -> None:
    firms = _peers(6, "C1712")
    result = run(tmp_path, firms, as_of=local(2025, 6, 15))
    row = indicator(result, "C1712-0", "energy_intensity")
    # kgce per day x the 151 days of January..May over 5 months of 1,000 output
    kgce_day = 0.10 * 12_000 * 1000 / 365
    assert row["value"] == pytest.approx(kgce_day * 151 / 1000 / 5000)
    per_mu = indicator(result, "C1712-0", "output_per_mu")
    assert per_mu["value"] == pytest.approx(5 * 1000 * 12 / 5 / 100)  # annualised
