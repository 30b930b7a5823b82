"""Intensity per enterprise and period, against the provincial reference, with ranks."""

from __future__ import annotations

from datetime import UTC

import polars as pl
import pytest

from greenmon.aggregator.energy import TOTAL
from greenmon.aggregator.errors import AggregatorError
from greenmon.aggregator.intensity import (
    INTENSITY_EXTRA,
    INTENSITY_FIELDS,
    INTENSITY_TAGS,
    intensity,
)
from greenmon.aggregator.reference import ReferenceChoice, load_references
from tests.aggregator.conftest import local, meter

ENTERPRISES = [
    {"enterprise_id": "A", "name": "A", "county": "如东县", "industry": "C2614"},
    {"enterprise_id": "B", "name": "B", "county": "如东县", "industry": "C2614"},
    {"enterprise_id": "C", "name": "C", "county": "崇川区", "industry": "C2614"},
    {"enterprise_id": "D", "name": "D", "county": "崇川区", "industry": "C3731"},
]


def _stats(enterprise: str, month: str, output: float | str, added: float | str = "") -> dict:
    return {
        "enterprise_id": enterprise,
        "month": month,
        "output_value_10k_yuan": output,
        "value_added_10k_yuan": added,
        "product_output": "",
        "product_unit": "",
    }


def _energy(rows: list[tuple[str, int, float]]) -> pl.LazyFrame:
    """Monthly total rows: (enterprise, month of 2025, kgce)."""
    return pl.DataFrame(
        [
            (e, local(2025, m, 1).astimezone(UTC), TOTAL, "1mo", kgce, kgce * 0.9, 1.0)
            for e, m, kgce in rows
        ],
        schema={
            "enterprise": pl.String,
            "time": pl.Datetime("ms", "UTC"),
            "carrier": pl.String,
            "window": pl.String,
            "kgce": pl.Float64,
            "double_control_kgce": pl.Float64,
            "completeness": pl.Float64,
        },
        orient="row",
    ).lazy()


@pytest.fixture
def reg(registry_factory):
    monthly = [
        _stats("A", "2025-01", 100, 20),
        _stats("A", "2025-02", 100, 20),
        _stats("A", "2025-03", ""),  # March statistics not in yet
        _stats("B", "2025-01", 50, 10),
        _stats("C", "2025-01", 200, 50),
        _stats("D", "2025-01", 10, 5),
    ]
    meters = [meter(f"{e['enterprise_id']}-EL", enterprise=e["enterprise_id"]) for e in ENTERPRISES]
    return registry_factory(meters, enterprises=ENTERPRISES, monthly=monthly)


def test_periods_sum_months_and_missing_statistics_give_no_ratio(reg) -> None:
    energy = _energy([("A", 1, 1000.0), ("A", 2, 3000.0), ("A", 3, 2000.0)])
    out = intensity(energy, reg.monthly, reg.enterprises, load_references()).collect()
    a = out.filter(pl.col("enterprise") == "A").sort("period", "time")
    got = {
        (p, t.astimezone(UTC).isoformat()[:10], tce, ratio, months)
        for p, t, tce, ratio, months in a.select(
            "period", "time", "tce", "tce_per_10k_yuan", "months"
        ).rows()
    }
    jan, feb, mar = "2024-12-31", "2025-01-31", "2025-02-28"  # local month starts as UTC dates
    assert got == {
        ("month", jan, 1.0, 0.01, 1),
        ("month", feb, 3.0, 0.03, 1),
        ("month", mar, 2.0, None, 1),
        ("quarter", jan, 6.0, None, 3),
        ("year", jan, 6.0, None, 3),
        ("ytd", jan, 1.0, 0.01, 1),
        ("ytd", feb, 4.0, 0.02, 2),
        ("ytd", mar, 6.0, None, 3),
    }
    ytd_feb = a.filter((pl.col("period") == "ytd") & (pl.col("months") == 2)).row(0, named=True)
    assert ytd_feb["double_control_tce"] == pytest.approx(3.6)
    assert ytd_feb["tce_per_10k_yuan_value_added"] == pytest.approx(4.0 / 40)
    # ratio: energy per value added against the GDP-intensity reference (placeholder)
    assert ytd_feb["ratio_to_reference"] == pytest.approx(0.1 / 0.277)
    assert ytd_feb["reference_status"] == "placeholder"


def test_ranks_and_percentiles_within_industry_and_county(reg) -> None:
    energy = _energy([("A", 1, 1000.0), ("B", 1, 2000.0), ("C", 1, 1000.0), ("D", 1, 500.0)])
    out = intensity(energy, reg.monthly, reg.enterprises, load_references(), periods=["month"])
    rows = {r["enterprise"]: r for r in out.collect().iter_rows(named=True)}
    # tce per 10k yuan: A 0.01, B 0.04, C 0.005 (industry C2614), D 0.05 (alone in C3731)
    assert {e: rows[e]["rank_in_industry"] for e in "ABCD"} == {"A": 2, "B": 3, "C": 1, "D": 1}
    assert {e: rows[e]["peers_in_industry"] for e in "ABCD"} == {"A": 3, "B": 3, "C": 3, "D": 1}
    assert rows["A"]["percentile_in_industry"] == pytest.approx(200 / 3)
    assert rows["D"]["percentile_in_industry"] == 100.0
    # counties: 如东县 = A, B; 崇川区 = C, D
    assert {e: rows[e]["rank_in_county"] for e in "ABCD"} == {"A": 1, "B": 2, "C": 1, "D": 2}
    assert rows["B"]["percentile_in_county"] == 100.0


def test_an_industry_reference_and_the_output_value_metric(reg, tmp_path) -> None:
    override = tmp_path / "intensity_references.csv"
    override.write_text(
        "year,region,industry,metric,value,unit,price_base,status,source\n"
        "2025,Jiangsu,C26,output_value,0.02,tce/10k yuan,,measured,chemical industry survey\n",
        encoding="utf-8",
    )
    refs = load_references(intensity=override)
    energy = _energy([("A", 1, 1000.0), ("D", 1, 500.0)])
    out = intensity(energy, reg.monthly, reg.enterprises, refs, periods=["month"]).collect()
    a = out.filter(pl.col("enterprise") == "A").row(0, named=True)
    d = out.filter(pl.col("enterprise") == "D").row(0, named=True)
    assert a["reference_tce_per_10k_yuan"] == 0.02
    assert a["ratio_to_reference"] == pytest.approx(0.01 / 0.02)  # on output value
    assert "C26 output_value 2025" in a["reference"]
    assert d["reference_tce_per_10k_yuan"] == 0.277  # no industry row for C37: provincial
    generic = intensity(
        energy,
        reg.monthly,
        reg.enterprises,
        refs,
        periods=["month"],
        choice=ReferenceChoice(industry_specific=False),
    ).collect()
    assert set(generic.get_column("reference_tce_per_10k_yuan")) == {0.277}


def test_schema_and_errors(reg) -> None:
    energy = _energy([("A", 1, 1000.0)])
    out = intensity(energy, reg.monthly, reg.enterprises, load_references()).collect()
    assert out.columns == ["time", *INTENSITY_TAGS, *INTENSITY_FIELDS, *INTENSITY_EXTRA]
    assert out.schema["time"] == pl.Datetime("ms", "UTC")
    with pytest.raises(AggregatorError, match="unknown period"):
        intensity(energy, reg.monthly, reg.enterprises, load_references(), periods=["week"])
