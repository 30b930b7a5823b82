"""Per-meter and per-enterprise energy: coefficients, carbon and the DESIGN.md §4 formulas,
checked against numbers worked out by hand from the reference files."""

from __future__ import annotations

from datetime import UTC, timedelta

import polars as pl
import pytest

from greenmon.aggregator.consumption import classify
from greenmon.aggregator.energy import (
    ENERGY_EXTRA,
    ENERGY_FIELDS,
    ENERGY_TAGS,
    METER_ENERGY_EXTRA,
    METER_ENERGY_FIELDS,
    METER_ENERGY_TAGS,
    TOTAL,
    enterprise_energy,
    meter_energy,
)
from greenmon.aggregator.intensity import intensity
from greenmon.aggregator.reference import load_references, meter_factors
from greenmon.aggregator.windows import attribute
from tests.aggregator.conftest import local, meter, readings, series

DAY = local(2025, 3, 10)
H = timedelta(hours=1)
MJ_PER_KGCE = 29.3076
# the reference rows these tests rely on (greenmon/data/energy_coefficients.csv and
# greenmon/aggregator/data/emission_factors.csv)
KGCE_KWH, KGCE_M3, KGCE_KG_STEAM = 0.1229, 1.2143, 0.1286
KGCO2_KWH_JIANGSU_2022 = 0.5978
KGCO2_PER_GJ_GAS, KGCO2_PER_GJ_HEAT = 56.1, 110.0


def _day(values_from: float, values_to: float) -> list[float]:
    """25 hourly register readings from local 00:00 to 24:00, evenly."""
    step = (values_to - values_from) / 24
    return [values_from + i * step for i in range(25)]


def _run(reg, rows, windows=("1d",)):
    refs = load_references()
    factors = meter_factors(reg.meters, refs, [2025])
    c = classify(readings(rows), reg.meters)
    w = attribute(c, reg.meters, windows)
    m = meter_energy(w, reg.meters, factors)
    e = enterprise_energy(m, reg.meters, reg.enterprises, factors)
    return m.collect(), e.collect(), refs


def _day_rows(frame: pl.DataFrame, **match: str) -> pl.DataFrame:
    out = frame.filter((pl.col("window") == "1d") & (pl.col("time") == DAY.astimezone(UTC)))
    for column, value in match.items():
        out = out.filter(pl.col(column) == value)
    return out


def test_electricity_gas_and_steam_by_hand(registry_factory) -> None:
    reg = registry_factory(
        [
            meter("EL", interval_s=3600),
            meter("NG", carrier="natural_gas", unit="m3", interval_s=3600),
            meter("ST", carrier="steam", unit="t", interval_s=3600, rollover=999_999.9),
        ],
        monthly=[
            {
                "enterprise_id": "E1",
                "month": "2025-03",
                "output_value_10k_yuan": 10,
                "value_added_10k_yuan": 2,
                "product_output": 50,
                "product_unit": "t",
            },
        ],
    )
    rows = (
        series("EL", DAY, _day(1_000, 3_000), H)  # 2,000 kWh
        + series("NG", DAY, _day(100, 600), H)  # 500 m3
        + series("ST", DAY, _day(10, 14), H)  # 4 t = 4,000 kg
    )
    meters, energy, refs = _run(reg, rows, ("1d", "1mo"))

    # kgce: 2000 x 0.1229 + 500 x 1.2143 + 4000 x 0.1286 = 245.8 + 607.15 + 514.4 = 1367.35
    by_meter = dict(_day_rows(meters).select("meter", "kgce").rows())
    assert by_meter == pytest.approx({"EL": 245.8, "NG": 607.15, "ST": 514.4}, rel=1e-12)
    total = _day_rows(energy, carrier=TOTAL).row(0, named=True)
    assert total["kgce"] == pytest.approx(1367.35, rel=1e-12)
    assert total["double_control_kgce"] == pytest.approx(1367.35, rel=1e-12)
    assert total["quantity"] is None

    # kgCO2: electricity 2000 x 0.5978 (Jiangsu 2022, the latest year up to 2025);
    # gas 500 m3 x 1.2143 kgce x 29.3076 MJ/kgce = 17,794.1 MJ = 17.79 GJ x 56.1;
    # steam 4000 kg x 0.1286 kgce x 29.3076 MJ/kgce = 15.08 GJ x 110
    el = 2000 * KGCO2_KWH_JIANGSU_2022
    gas = 500 * KGCE_M3 * MJ_PER_KGCE / 1000 * KGCO2_PER_GJ_GAS
    steam = 4000 * KGCE_KG_STEAM * MJ_PER_KGCE / 1000 * KGCO2_PER_GJ_HEAT
    co2 = dict(_day_rows(meters).select("meter", "kgco2").rows())
    assert co2 == pytest.approx({"EL": el, "NG": gas, "ST": steam}, rel=1e-12)
    assert total["kgco2"] == pytest.approx(el + gas + steam, rel=1e-12)

    # carrier rows in the carrier's reference unit: steam metered in t is reported in kg
    carriers = _day_rows(energy).filter(pl.col("carrier") != TOTAL)
    assert dict(carriers.select("carrier", "quantity").rows()) == pytest.approx(
        {"electricity": 2000, "natural_gas": 500, "steam": 4000}, rel=1e-12
    )
    assert dict(carriers.select("carrier", "unit").rows()) == {
        "electricity": "kWh",
        "natural_gas": "m3",
        "steam": "kg",
    }

    # intensity for March: 1.36735 tce / 10 (10k yuan) output value = 0.136735;
    # / 2 value added = 0.683675; against the placeholder Jiangsu 2024 GDP intensity 0.277
    month = intensity(energy.lazy(), reg.monthly, reg.enterprises, refs, periods=("month",))
    row = month.collect().row(0, named=True)
    assert row["tce"] == pytest.approx(1.36735, rel=1e-12)
    assert row["tce_per_10k_yuan"] == pytest.approx(0.136735, rel=1e-12)
    assert row["tce_per_10k_yuan_value_added"] == pytest.approx(0.683675, rel=1e-12)
    assert row["kgce_per_product_unit"] == pytest.approx(1367.35 / 50, rel=1e-12)
    assert row["reference_tce_per_10k_yuan"] == 0.277
    assert row["ratio_to_reference"] == pytest.approx(0.683675 / 0.277, rel=1e-12)
    assert "placeholder" in row["reference"] and "[for 2025]" in row["reference"]


def test_boundary_generation_export_sub_and_raw_material(registry_factory) -> None:
    reg = registry_factory(
        [
            meter("IN", interval_s=3600),
            meter("SUB", role="sub", interval_s=3600),
            meter("EXP", role="export", interval_s=3600),
            meter("PV", kind="interval", role="generation", interval_s=3600),
            meter("NG", carrier="natural_gas", unit="m3", interval_s=3600),
            meter(
                "FEED",
                carrier="natural_gas",
                unit="m3",
                role="sub",
                raw_material=True,
                interval_s=3600,
            ),
        ]
    )
    rows = (
        series("IN", DAY, _day(0, 100), H)
        + series("SUB", DAY, _day(0, 30), H)
        + series("EXP", DAY, _day(0, 20), H)
        + series("PV", DAY + H, [50 / 24] * 24, H)
        + series("NG", DAY, _day(0, 40), H)
        + series("FEED", DAY, _day(0, 10), H)
    )
    _, energy, _ = _run(reg, rows)
    el = _day_rows(energy, carrier="electricity").row(0, named=True)
    gas = _day_rows(energy, carrier="natural_gas").row(0, named=True)
    total = _day_rows(energy, carrier=TOTAL).row(0, named=True)
    # comprehensive electricity = 100 + 50 - 20 (the sub-meter's 30 is never added)
    assert el["quantity"] == pytest.approx(130, rel=1e-12)
    assert el["kgce"] == pytest.approx(130 * KGCE_KWH, rel=1e-12)
    # net purchased electricity 100 - 20 at the grid factor; PV is zero-carbon
    assert el["kgco2"] == pytest.approx(80 * KGCO2_KWH_JIANGSU_2022, rel=1e-12)
    assert gas["quantity"] == pytest.approx(40, rel=1e-12)
    # renewable consumed on site = max(0, 50 - 20) kWh; raw material = the 10 m3 feedstock
    renewable = 30 * KGCE_KWH
    raw = 10 * KGCE_M3
    assert total["kgce"] == pytest.approx(130 * KGCE_KWH + 40 * KGCE_M3, rel=1e-12)
    assert total["renewable_kgce"] == pytest.approx(renewable, rel=1e-12)
    assert total["raw_material_kgce"] == pytest.approx(raw, rel=1e-12)
    assert total["double_control_kgce"] == pytest.approx(
        130 * KGCE_KWH + 40 * KGCE_M3 - renewable - raw, rel=1e-12
    )


def test_export_beyond_generation_is_no_renewable_consumption(registry_factory) -> None:
    reg = registry_factory(
        [
            meter("IN", interval_s=3600),
            meter("EXP", role="export", interval_s=3600),
            meter("PV", kind="interval", role="generation", interval_s=3600),
        ]
    )
    rows = (
        series("IN", DAY, _day(0, 100), H)
        + series("EXP", DAY, _day(0, 80), H)
        + series("PV", DAY + H, [50 / 24] * 24, H)
    )
    _, energy, _ = _run(reg, rows)
    total = _day_rows(energy, carrier=TOTAL).row(0, named=True)
    assert total["renewable_kgce"] == 0.0
    assert total["kgce"] == pytest.approx(70 * KGCE_KWH, rel=1e-12)
    assert total["double_control_kgce"] == pytest.approx(70 * KGCE_KWH, rel=1e-12)
    # a net exporter of grid electricity has negative purchased-electricity emissions
    assert total["kgco2"] == pytest.approx(20 * KGCO2_KWH_JIANGSU_2022, rel=1e-12)


def test_completeness_of_an_enterprise_is_its_weakest_meter(registry_factory) -> None:
    reg = registry_factory(
        [
            meter("A", interval_s=3600),
            meter("B", interval_s=3600),
            meter("S", role="sub", interval_s=3600),  # a breakdown meter does not count
            meter("G", carrier="natural_gas", unit="m3", interval_s=3600),
        ]
    )
    half = _day(0, 24)
    rows = series("A", DAY, half, H) + series("B", DAY, half[:13], H) + series("S", DAY, [0, 1], H)
    _, energy, _ = _run(reg, rows)
    el = _day_rows(energy, carrier="electricity").row(0, named=True)
    # B's 13 readings, 00:00 .. 12:00, cover 12 of the day's 24 hours
    assert el["completeness"] == pytest.approx(12 / 24)
    # natural gas is registered but sent nothing: the total cannot be complete
    assert _day_rows(energy, carrier="natural_gas").is_empty()
    assert _day_rows(energy, carrier=TOTAL).row(0, named=True)["completeness"] == 0.0


def test_meter_and_enterprise_frames_map_onto_the_influxdb_schema(example_registry) -> None:
    reg = example_registry
    rows = []
    for meter_id, kind in reg.meters.select("meter_id", "kind").iter_rows():
        if kind == "register":
            rows += series(meter_id, DAY, [float(i) for i in range(10)])
    meters, energy, _ = _run(reg, rows, ("15m", "1d"))
    assert meters.columns == ["time", *METER_ENERGY_TAGS, *METER_ENERGY_FIELDS, *METER_ENERGY_EXTRA]
    assert energy.columns == ["time", *ENERGY_TAGS, *ENERGY_FIELDS, *ENERGY_EXTRA]
    for frame, tags in ((meters, METER_ENERGY_TAGS), (energy, ENERGY_TAGS)):
        assert frame.select(pl.col(t).null_count() for t in tags).row(0) == (0,) * len(tags)
    assert set(meters.get_column("window")) == {"15m", "1d"}
    assert set(energy.get_column("county")) == {"崇川区", "通州区", "如东县"}
    # every row names the reference it used
    assert meters.get_column("reference").null_count() == 0
    assert energy.get_column("reference").null_count() == 0
    label = energy.filter(pl.col("carrier") == "electricity").get_column("reference")[0]
    assert "energy_coefficients.csv:2" in label and "Jiangsu provincial 2022" in label
    # sub-meters appear per meter, never in the enterprise sums
    assert "sub" in set(meters.get_column("role"))


def test_gas_metered_in_nm3_is_reported_in_the_carriers_m3(registry_factory) -> None:
    reg = registry_factory(
        [
            meter("NG", carrier="natural_gas", unit="m3", interval_s=3600),
            meter("NGN", carrier="natural_gas", unit="Nm3", interval_s=3600),
        ]
    )
    rows = series("NG", DAY, _day(0, 100), H) + series("NGN", DAY, _day(0, 100), H)
    meters, energy, refs = _run(reg, rows)
    factor = refs.volume_conditions.row(0, named=True)["factor"]  # Nm3 -> m3 at 20 °C
    per_meter = dict(_day_rows(meters).select("meter", "kgce").rows())
    assert per_meter["NG"] == pytest.approx(100 * KGCE_M3, rel=1e-12)
    assert per_meter["NGN"] == pytest.approx(100 * factor * KGCE_M3, rel=1e-12)
    gas = _day_rows(energy, carrier="natural_gas").row(0, named=True)
    assert gas["unit"] == "m3"
    assert gas["quantity"] == pytest.approx(100 + 100 * factor, rel=1e-12)
    assert gas["kgce"] == pytest.approx((100 + 100 * factor) * KGCE_M3, rel=1e-12)
    assert "volume_conditions.csv" in gas["reference"]
