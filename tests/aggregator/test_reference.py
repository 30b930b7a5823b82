"""Reference data: packaged defaults, user overrides, measured calorific values, 等价值, and
validation that names file, line and column."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from greenmon.aggregator.errors import MissingReferenceError, ReferenceDataError
from greenmon.aggregator.reference import (
    ReferenceChoice,
    intensity_references,
    load_references,
    meter_factors,
)
from tests.aggregator.conftest import meter

COEF_HEADER = "carrier,unit,kgce_per_unit,basis,status,source,year,enterprise_id,meter_id\n"


def _factor(frame: pl.DataFrame, meter_id: str, year: int, column: str) -> float:
    return frame.filter((pl.col("meter_id") == meter_id) & (pl.col("year") == year))[column].item()


def test_packaged_tables_carry_year_source_and_status() -> None:
    refs = load_references()
    for frame in (refs.coefficients, refs.emission_factors, refs.intensity):
        assert frame.height > 0
        assert frame.select(pl.col("status", "source", "label").null_count()).row(0) == (0, 0, 0)
    electricity = refs.coefficients.filter(pl.col("carrier") == "electricity").row(0, named=True)
    assert electricity["kgce_per_unit"] == 0.1229 and electricity["status"] == "verified"
    assert electricity["file"] == "greenmon/data/energy_coefficients.csv"  # the kernel's copy
    placeholders = refs.intensity.filter(pl.col("status") == "placeholder")
    assert placeholders.height >= 1
    assert placeholders.get_column("source").str.contains("PLACEHOLDER").all()


def test_meter_factors_convert_to_the_meters_unit(registry_factory) -> None:
    reg = registry_factory(
        [
            meter("MWH", unit="MWh"),
            meter("GJ", carrier="heat", unit="GJ"),
            meter("T", carrier="steam", unit="t"),
            meter("PV", kind="interval", role="generation"),
        ]
    )
    f = meter_factors(reg.meters, load_references(), [2021, 2025])
    assert _factor(f, "MWH", 2025, "kgce_per_unit") == pytest.approx(122.9)
    assert _factor(f, "MWH", 2021, "kgco2_per_unit") == pytest.approx(645.1)  # 2021 row
    assert _factor(f, "MWH", 2025, "kgco2_per_unit") == pytest.approx(597.8)  # 2022 row
    assert _factor(f, "GJ", 2025, "kgco2_per_unit") == 110.0
    assert _factor(f, "T", 2025, "kgce_per_unit") == pytest.approx(128.6)
    assert _factor(f, "PV", 2025, "kgco2_per_unit") == 0.0
    assert _factor(f, "MWH", 2025, "to_carrier_unit") == 1000.0
    label = f.filter((pl.col("meter_id") == "MWH") & (pl.col("year") == 2025))["reference"].item()
    assert "Jiangsu provincial 2022" in label and "[for 2025]" in label


def test_a_user_file_overrides_by_key_and_adds_measured_values(
    registry_factory, tmp_path: Path
) -> None:
    reg = registry_factory(
        [
            meter("NG1", carrier="natural_gas", unit="m3"),
            meter("NG2", carrier="natural_gas", unit="m3"),
            meter("NG3", carrier="natural_gas", unit="m3", enterprise="E2"),
            meter("EL"),
        ]
    )
    (tmp_path / "energy_coefficients.csv").write_text(
        COEF_HEADER
        + "natural_gas,m3,1.3000,lab,measured,lab report 2025-02,2025,,NG2\n"
        + "natural_gas,m3,1.2500,supplier,measured,supplier certificate,2025,E2,\n"
        + "electricity,kWh,0.1230,test,derived,override test,2025,,\n",
        encoding="utf-8",
    )
    (tmp_path / "emission_factors.csv").write_text(
        "carrier,scope,year,kgco2_per_unit,unit,status,source\n"
        "electricity,Nantong green contract,2025,0.1,kWh,measured,PPA certificate\n",
        encoding="utf-8",
    )
    refs = load_references(tmp_path)
    assert len(refs.files) == 5
    choice = ReferenceChoice(emission_scopes={"electricity": "Nantong green contract"})
    f = meter_factors(reg.meters, refs, [2025], choice)
    assert _factor(f, "NG1", 2025, "kgce_per_unit") == 1.2143  # packaged
    assert _factor(f, "NG2", 2025, "kgce_per_unit") == 1.3  # the meter's measured value
    assert _factor(f, "NG3", 2025, "kgce_per_unit") == 1.25  # the enterprise's
    assert _factor(f, "EL", 2025, "kgce_per_unit") == 0.123  # replaced by key
    assert _factor(f, "EL", 2025, "kgco2_per_unit") == 0.1
    # the measured calorific value flows into CO2 through the energy content
    assert _factor(f, "NG2", 2025, "kgco2_per_unit") == pytest.approx(1.3 * 29.3076 * 0.0561)


def test_equal_value_basis_needs_the_years_row(registry_factory, tmp_path: Path) -> None:
    reg = registry_factory([meter("EL")])
    refs = load_references()
    choice = ReferenceChoice(electricity_basis="equal_value")
    with pytest.raises(MissingReferenceError, match="year 2025"):
        meter_factors(reg.meters, refs, [2025], choice)
    user = tmp_path / "coef.csv"
    user.write_text(
        COEF_HEADER + "electricity_equal_value,kWh,0.3000,供电煤耗,derived,NBS 2025,2025,,\n",
        encoding="utf-8",
    )
    f = meter_factors(reg.meters, load_references(coefficients=user), [2025], choice)
    assert _factor(f, "EL", 2025, "kgce_per_unit") == 0.3


def test_every_problem_is_reported_with_file_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "coef.csv"
    bad.write_text(
        COEF_HEADER
        + "electricity,kWh,abc,x,verified,s,2025,,\n"  # line 2: not a number
        + "gass,m3,1.2,x,verified,s,2025,,\n"  # line 3: unknown carrier
        + "natural_gas,kWh,1.2,x,verified,s,2025,,\n"  # line 4: unit not convertible
        + "natural_gas,m3,1.2,x,sure,s,2025,,\n"  # line 5: unknown status
        + "natural_gas,m3,1.2,x,measured,s,2025,,\n"  # line 6: same key as line 5
        + "coke,kg,,x,measured,s,2025,,\n",  # line 7: empty value
        encoding="utf-8",
    )
    with pytest.raises(ReferenceDataError) as info:
        load_references(coefficients=bad)
    text = str(info.value)
    for expected in (
        f"{bad}:2: kgce_per_unit: not a number: 'abc'",
        f"{bad}:3: carrier: unknown carrier 'gass'",
        f"{bad}:4: unit: unit 'kWh' cannot be converted to m3",
        f"{bad}:5: status: must be one of",
        f"{bad}:6: duplicate key (natural_gas, m3, , , ) (first on line 5)",
        f"{bad}:7: kgce_per_unit: required value is empty",
    ):
        assert expected in text, text
    typo = tmp_path / "typo.csv"
    typo.write_text("carrier,unit,kgce_per_unit,status,source,meterid\n", encoding="utf-8")
    with pytest.raises(ReferenceDataError, match="meterid: unknown column"):
        load_references(coefficients=typo)
    with pytest.raises(ReferenceDataError, match="file not found"):
        load_references(intensity=tmp_path / "missing.csv")


def test_missing_emission_scope_is_named(registry_factory) -> None:
    reg = registry_factory([meter("EL")])
    with pytest.raises(MissingReferenceError, match="scope 'Mars grid'"):
        meter_factors(
            reg.meters,
            load_references(),
            [2025],
            ReferenceChoice(emission_scopes={"electricity": "Mars grid"}),
        )


def test_intensity_reference_year_selection(example_registry) -> None:
    refs = load_references()
    out = intensity_references(example_registry.enterprises, refs, [2008, 2015, 2022, 2030])
    e1 = out.filter(pl.col("enterprise_id") == "E0001").sort("year")
    assert e1.get_column("reference_tce_per_10k_yuan").to_list() == [0.803, 0.803, 0.318, 0.277]
    assert e1.get_column("reference_status").to_list() == [
        "verified",
        "verified",
        "placeholder",
        "placeholder",
    ]
    assert e1.get_column("denominator").unique().to_list() == ["value_added"]
