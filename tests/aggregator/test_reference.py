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
    label_rows,
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
    assert len(refs.files) == 6
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


# --------------------------------------------------------------------------- gas in Nm3

NM3_TO_M3 = 293.15 / 273.15  # 0 °C -> 20 °C at 101.325 kPa (ideal gas)


def test_gas_in_nm3_is_converted_at_the_coefficients_reference_conditions(
    registry_factory,
) -> None:
    reg = registry_factory(
        [
            meter("M3", carrier="natural_gas", unit="m3"),
            meter("NM3", carrier="natural_gas", unit="Nm3"),
        ]
    )
    refs = load_references()
    [volume] = refs.volume_conditions.to_dicts()
    assert (volume["from_unit"], volume["to_unit"]) == ("Nm3", "m3")
    assert volume["from_conditions"] == "0 °C, 101.325 kPa"
    assert volume["to_conditions"] == "20 °C, 101.325 kPa"
    assert volume["factor"] == pytest.approx(NM3_TO_M3, rel=1e-8)
    assert volume["status"] and volume["source"]
    gas = refs.coefficients.filter(pl.col("carrier") == "natural_gas").row(0, named=True)
    assert gas["conditions"] == "20 °C, 101.325 kPa"
    f = meter_factors(reg.meters, refs, [2025])
    factor = volume["factor"]
    assert _factor(f, "NM3", 2025, "kgce_per_unit") == pytest.approx(1.2143 * factor, rel=1e-12)
    assert _factor(f, "NM3", 2025, "to_carrier_unit") == pytest.approx(factor, rel=1e-12)
    assert _factor(f, "NM3", 2025, "kgco2_per_unit") == pytest.approx(
        _factor(f, "M3", 2025, "kgco2_per_unit") * factor, rel=1e-12
    )
    label = f.filter(pl.col("meter_id") == "NM3")["reference"].item()
    rows = label_rows(label)
    assert rows[0].startswith("greenmon/data/energy_coefficients.csv:") and "natural_gas" in rows[0]
    assert rows[1].startswith("greenmon/data/volume_conditions.csv:2 1 Nm3 (0 °C, 101.325 kPa)")
    assert "unverified" in rows[1]


def test_nm3_needs_stated_conditions_and_a_user_file_can_supply_them(
    registry_factory, tmp_path: Path
) -> None:
    reg = registry_factory([meter("COG", carrier="coke_oven_gas", unit="Nm3")])
    with pytest.raises(MissingReferenceError, match="states no reference `conditions`"):
        meter_factors(reg.meters, load_references(), [2025])
    # the user states the conditions of the coefficient and a conversion to them
    (tmp_path / "energy_coefficients.csv").write_text(
        COEF_HEADER.rstrip("\n") + ",conditions\n"
        'coke_oven_gas,m3,0.6,plant,measured,lab report,2025,,,"15 °C, 101.325 kPa"\n',
        encoding="utf-8",
    )
    with pytest.raises(MissingReferenceError, match=r"no volume_conditions\.csv row"):
        meter_factors(reg.meters, load_references(tmp_path), [2025])
    (tmp_path / "volume_conditions.csv").write_text(
        "from_unit,from_conditions,to_unit,to_conditions,factor,status,source\n"
        'Nm3,"0 °C, 101.325 kPa",m3,"15  °C, 101.325 kPa",1.0549,derived,288.15 / 273.15\n',
        encoding="utf-8",
    )
    f = meter_factors(reg.meters, load_references(tmp_path), [2025])
    assert _factor(f, "COG", 2025, "kgce_per_unit") == pytest.approx(0.6 * 1.0549, rel=1e-12)
    # a coefficient per Nm3 (a measured value) is used as it is; the quantity in the carrier's
    # m3 still takes the conditions of its m3 row
    (tmp_path / "energy_coefficients.csv").write_text(
        COEF_HEADER.rstrip("\n") + ",conditions\n"
        'coke_oven_gas,m3,0.6,plant,measured,lab report,2025,,,"15 °C, 101.325 kPa"\n'
        "coke_oven_gas,Nm3,0.64,plant,measured,lab report,2025,,,\n",
        encoding="utf-8",
    )
    f = meter_factors(reg.meters, load_references(tmp_path), [2025])
    assert _factor(f, "COG", 2025, "kgce_per_unit") == 0.64
    assert _factor(f, "COG", 2025, "to_carrier_unit") == pytest.approx(1.0549, rel=1e-12)


def test_a_bad_volume_file_names_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "volume_conditions.csv").write_text(
        "from_unit,from_conditions,to_unit,to_conditions,factor,status,source\n"
        "Nm3,0 C,m3,20 C,-1,derived,x\n"
        "Nm4,0 C,m3,20 C,1.07,guess,x\n",
        encoding="utf-8",
    )
    with pytest.raises(ReferenceDataError) as info:
        load_references(tmp_path)
    text = str(info.value)
    assert "volume_conditions.csv:2: factor: must be > 0" in text
    assert "volume_conditions.csv:3: status: must be one of" in text
    assert "volume_conditions.csv:3: from_unit: unknown unit 'Nm4'" in text
