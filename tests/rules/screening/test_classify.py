"""Efficiency classes on hand-built registries: cut-offs, ties, scope (T), benchmarks, scores."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from greenmon.rules.screening.classify import ClassResult
from greenmon.rules.screening.service import Options, judge, load_all
from tests.rules.screening.support import Firm, case


def run(tmp_path: Path, firms: list[Firm], criteria_text: str | None = None) -> ClassResult:
    registry, measured, period = case(tmp_path / "reg", firms)
    override = None
    if criteria_text is not None:
        override = tmp_path / "efficiency.toml"
        override.write_text(criteria_text, encoding="utf-8")
    rules = load_all(Options(year=2025, efficiency=override))
    return judge(registry, measured, period, rules, screening=False).classes


def classes_by_tax(result: ClassResult) -> list[str]:
    """Classes in the order of the firms' ids (firm i has the i-th highest tax)."""
    ent = result.enterprises.sort("enterprise")
    return ent.get_column("class").to_list()


def ranked(n: int, county: str = "崇川区", prefix: str = "F") -> list[Firm]:
    """`n` firms, F00 with the highest tax, each next one lower: scores strictly decrease."""
    return [Firm(f"{prefix}{i:02d}", county=county, tax=100.0 - i) for i in range(n)]


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (5, "ABBCD"),  # 1/5 = 0.2 -> A; 3/5 = 0.6 -> B; 4/5 -> C; 5/5 = 1.0 > 0.95 -> D
        (7, "ABBBCCD"),
        (10, "AABBBBCCCD"),
        (20, "AAAABBBBBBBBCCCCCCCD"),
    ],
)
def test_classes_follow_the_cut_offs_exactly(tmp_path: Path, n: int, expected: str) -> None:
    result = run(tmp_path, ranked(n))
    assert "".join(classes_by_tax(result)) == expected
    ent = result.enterprises.sort("enterprise")
    assert ent.get_column("rank").to_list() == list(range(1, n + 1))
    assert set(ent.get_column("ranked_in").to_list()) == {"崇川区"}
    counts = result.counties.row(0, named=True)
    assert [counts[c] for c in "ABCDT"] == [expected.count(c) for c in "ABCD"] + [0]


def test_tied_scores_share_the_better_rank_and_class(tmp_path: Path) -> None:
    firms = ranked(10)
    firms[2].tax = firms[1].tax  # F01 and F02 tie for rank 2
    result = run(tmp_path, firms)
    ent = result.enterprises.sort("enterprise")
    assert ent.get_column("rank").to_list() == [1, 2, 2, 4, 5, 6, 7, 8, 9, 10]
    assert "".join(classes_by_tax(result)) == "AAABBBCCCD"  # 2/10 <= 0.2: both A


def test_a_small_county_is_ranked_with_the_city(tmp_path: Path) -> None:
    firms = ranked(10) + ranked(3, county="如东县", prefix="R")
    result = run(tmp_path, firms)
    small = result.enterprises.filter(pl.col("county") == "如东县").sort("enterprise")
    assert small.get_column("ranked_among").to_list() == [13, 13, 13]
    assert small.get_column("ranked_in").to_list() == ["city (如东县 has 3 < 5 evaluated)"] * 3
    big = result.enterprises.filter(pl.col("county") == "崇川区")
    assert set(big.get_column("ranked_among").to_list()) == {10}


def test_benchmark_is_twice_the_previous_year_county_average(tmp_path: Path) -> None:
    # both firms: 2024 tax 30 a month on 100 mu (3.6/mu a year), sales 1,000 a month (120/mu),
    # 365 tce; in 2025 firm A pays twice the tax.
    a = Firm("A", months={f"2025-{m:02d}": {"tax_10k_yuan": 60.0} for m in range(1, 13)})
    b = Firm("B")
    result = run(tmp_path, [a, b])
    bench = {r["indicator"]: r for r in result.benchmarks.iter_rows(named=True)}
    assert bench["tax_per_mu"]["benchmark"] == pytest.approx(2 * 3.6)
    assert bench["sales_per_mu"]["benchmark"] == pytest.approx(2 * 120.0)
    assert bench["tax_per_tce"]["benchmark"] == pytest.approx(2 * 360 / 365)
    assert bench["tax_per_mu"]["basis"] == "2024 county average x 2"
    scores = dict(result.enterprises.select("enterprise", "score").iter_rows())
    # B: half of every benchmark -> 0.5 x (45 + 35 + 20); A: tax twice -> 1.0 x 45 + 0.5 x 35
    # + 1.0 x 20
    assert scores["B"] == pytest.approx(50.0)
    assert scores["A"] == pytest.approx(45 + 17.5 + 20)
    points = result.indicators.filter(pl.col("enterprise") == "A").sort("order")
    assert points.get_column("points").to_list() == pytest.approx([45.0, 17.5, 20.0])


def test_without_previous_year_figures_the_current_year_is_the_basis(tmp_path: Path) -> None:
    firms = [Firm(f"F{i}", previous=False, start="2010-05", tax=30.0 + i) for i in range(3)]
    result = run(tmp_path, firms)
    assert set(result.benchmarks.get_column("basis").to_list()) == {
        "2025 county average x 2 (no 2024 figures)"
    }
    assert result.enterprises.get_column("evaluated").all()
    none = run(tmp_path / "none", firms, "[benchmark]\nfallback = 'none'\n")
    assert set(none.benchmarks.get_column("basis").to_list()) == {"no benchmark: no 2024 figures"}


def test_not_evaluated_reasons(tmp_path: Path) -> None:
    firms = [
        *ranked(5),
        Firm("T1", exempt="true"),
        Firm("T2", start="2024-03"),
        Firm("T3", previous=False),  # statistics only since 2025-01, no declared start
        Firm("T4", land=2.5),
        Firm("T5", land=2.5, above_scale="true"),  # above scale: evaluated whatever its land
        Firm("T6", land=None),
        Firm("T7", months={"2025-04": {"tax_10k_yuan": None}}),
        Firm("T8", kgce_day=None),
    ]
    result = run(tmp_path, firms)
    reasons = dict(result.enterprises.select("enterprise", "t_reason").iter_rows())
    classes = dict(result.enterprises.select("enterprise", "class").iter_rows())
    assert reasons["T1"] == "declared exemption (evaluation_exempt)"
    assert reasons["T2"] == "producing 22 months by 2025-12 (< 24; declared production_start)"
    assert reasons["T3"] == "producing 12 months by 2025-12 (< 24; first month in monthly.csv)"
    assert reasons["T4"] == "below the land threshold (2.5 mu < 3 mu, not above scale)"
    assert reasons["T5"] is None and classes["T5"] != "T"
    assert reasons["T6"] == "no land area in enterprises.csv"
    assert reasons["T7"] == (
        "missing data: tax_per_mu (no tax_10k_yuan for every month), "
        "tax_per_tce (no tax_10k_yuan for every month)"
    )
    assert reasons["T8"] == "missing data: tax_per_tce (no energy data for every day of the months)"
    assert all(classes[f"T{i}"] == "T" for i in (1, 2, 3, 4, 6, 7, 8))
    assert result.counties.row(0, named=True)["T"] == 7
    # missing data scored as 0 instead, when the file says so
    zero = run(tmp_path / "zero", firms, "[scope]\nmissing = 'zero'\n")
    t8 = zero.enterprises.filter(pl.col("enterprise") == "T8").row(0, named=True)
    assert t8["evaluated"] and t8["class"] != "T"
