"""greenmon.registry: the example registry loads typed; every bad row is reported at once."""

from __future__ import annotations

import csv
import dataclasses
import io
import shutil
import time
from collections.abc import Callable
from datetime import date
from importlib import resources
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenmon.errors import GreenmonError
from greenmon.registry import (
    MeterInfo,
    Registry,
    RegistryError,
    RegistryProblem,
    carrier_units,
    load_registry,
    rollover_modulus,
    volume_conversions,
)
from greenmon.units import KNOWN_UNITS, is_convertible

GOOD = Path(__file__).parent / "data" / "registry"


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    """A fresh copy of the good example registry, to be altered by a test."""
    root = tmp_path / "registry"
    shutil.copytree(GOOD, root)
    return root


def _rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def _write(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


# --------------------------------------------------------------------------- the good registry


def test_good_registry_types() -> None:
    reg = load_registry(GOOD)
    assert reg.root == GOOD
    assert reg.enterprises.schema == pl.Schema(
        {
            "enterprise_id": pl.String,
            "name": pl.String,
            "county": pl.String,
            "industry": pl.String,
            "land_area_mu": pl.Float64,
            "annual_quota_tce": pl.Float64,
            "intensity_target_tce_per_10k_yuan": pl.Float64,
            "green_attributes": pl.String,  # extra columns are kept, as text
            "key_energy_user": pl.String,
        }
    )
    assert reg.meters.schema == pl.Schema(
        {
            "meter_id": pl.String,
            "enterprise_id": pl.String,
            "carrier": pl.String,
            "unit": pl.String,
            "kind": pl.String,
            "multiplier": pl.Float64,
            "rollover": pl.Float64,
            "rollover_modulus": pl.Float64,
            "role": pl.String,
            "raw_material": pl.Boolean,
            "interval_s": pl.Int64,
        }
    )
    assert reg.monthly.schema == pl.Schema(
        {
            "enterprise_id": pl.String,
            "month": pl.String,
            "month_start": pl.Date,
            "output_value_10k_yuan": pl.Float64,
            "value_added_10k_yuan": pl.Float64,
            "sales_10k_yuan": pl.Float64,
            "tax_10k_yuan": pl.Float64,
            "product_output": pl.Float64,
            "product_unit": pl.String,
        }
    )
    assert (reg.enterprises.height, reg.meters.height, reg.monthly.height) == (3, 11, 9)


def test_good_registry_values() -> None:
    reg = load_registry(GOOD)
    assert reg.enterprise_ids == frozenset({"E0001", "E0002", "E0003"})
    first = reg.enterprises.row(0, named=True)
    assert first["name"] == "南通中远海运船务"
    assert first["county"] == "崇川区"
    assert first["industry"] == "C3731"
    assert first["annual_quota_tce"] == 52000.0
    assert_frame_equal(
        reg.monthly.filter(pl.col("enterprise_id") == "E0003").select(
            "month", "month_start", "output_value_10k_yuan", "product_output", "product_unit"
        ),
        pl.DataFrame(
            {
                "month": ["2025-01", "2025-02", "2025-03"],
                "month_start": [date(2025, 1, 1), date(2025, 2, 1), date(2025, 3, 1)],
                "output_value_10k_yuan": [14800.0, 13900.0, 15600.0],
                "product_output": [21000.0, 19700.0, None],  # empty -> null
                "product_unit": ["t", "t", "t"],
            }
        ),
    )
    assert_frame_equal(
        reg.meters.select("meter_id", "raw_material").filter(pl.col("raw_material")),
        pl.DataFrame({"meter_id": ["E0003-NG-FEED"], "raw_material": [True]}),
    )


def test_meter_lookup() -> None:
    reg = load_registry(GOOD)
    assert reg.meter("E0003-NG-FEED") == MeterInfo(
        meter_id="E0003-NG-FEED",
        enterprise_id="E0003",
        carrier="natural_gas",
        unit="m3",
        kind="interval",
        multiplier=1.0,
        rollover=None,
        role="boundary",
        raw_material=True,  # written "True"
        interval_s=3600,
    )
    pv = reg.meter("E0001-PV-01")
    assert pv is not None
    assert (pv.multiplier, pv.rollover, pv.role) == (1.0, None, "generation")  # empty -> 1
    main = reg.meter("E0001-EL-MAIN")
    assert main is not None
    assert (main.rollover, main.interval_s, main.raw_material) == (99999999.0, 900, False)
    weld = reg.meter("E0001-EL-WELD")
    assert weld is not None and (weld.multiplier, weld.role) == (80.0, "sub")
    steam = reg.meter("E0002-ST-01")
    assert steam is not None and steam.raw_material is False  # written "FALSE"
    assert reg.meter("E9999-XX") is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        main.multiplier = 2.0  # type: ignore[misc]


def test_registry_is_frozen() -> None:
    reg = load_registry(GOOD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        reg.meters = pl.DataFrame()  # type: ignore[misc]
    assert "meters=11" in repr(reg)


def test_every_meter_matches_its_row() -> None:
    reg = load_registry(GOOD)
    names = [f.name for f in dataclasses.fields(MeterInfo)]
    for row in reg.meters.iter_rows(named=True):
        assert reg.meter(row["meter_id"]) == MeterInfo(**{k: row[k] for k in names})
    # derived, in the frame only
    assert set(reg.meters.columns) - set(names) == {"rollover_modulus"}


def test_carriers_come_from_the_coefficients_file() -> None:
    units = carrier_units()
    assert units["heat"] == ("MJ", "GJ")
    assert units["electricity"] == ("kWh",)
    assert units["natural_gas"] == ("m3",)
    assert "electricity_equal_value" not in units
    assert all(u in KNOWN_UNITS for refs in units.values() for u in refs)

    data = resources.files("greenmon").joinpath("data", "energy_coefficients.csv").read_bytes()
    table = pl.read_csv(data, infer_schema=False)
    assert table.columns == [
        "carrier",
        "unit",
        "kgce_per_unit",
        "basis",
        "status",
        "source",
        "year",
        "conditions",
    ]
    electricity = table.filter(pl.col("carrier") == "electricity").row(0, named=True)
    assert (electricity["kgce_per_unit"], electricity["status"], electricity["year"]) == (
        "0.1229",
        "verified",
        "2020",
    )


def test_tolerant_input(registry_dir: Path) -> None:
    """UTF-8 BOM, CRLF, spaces around values, blank lines and a quoted two-line name load;
    line numbers stay physical."""
    path = registry_dir / "enterprises.csv"
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    lines[1] = lines[1].replace("南通中远海运船务", '"南通中远海运船务\n(崇川基地)"')
    lines[2] = " " + lines[2].replace(",", " , ")
    text = "\ufeff" + "\r\n".join([*lines[:3], "", *lines[3:], "", ""])
    path.write_bytes(text.encode("utf-8"))
    reg = load_registry(registry_dir)
    assert reg.enterprises.get_column("name").to_list()[:2] == [
        "南通中远海运船务\n(崇川基地)",
        "南通示例纺织有限公司",
    ]
    assert reg.enterprises.get_column("enterprise_id").to_list() == ["E0001", "E0002", "E0003"]
    assert reg.enterprises.get_column("land_area_mu").to_list() == [1200.0, 86.5, 240.0]

    # the enterprise on the 4th record sits on physical line 6 (2-line name, blank line)
    path.write_bytes(text.replace(",240,", ",-240,").encode("utf-8"))
    with pytest.raises(RegistryError) as caught:
        load_registry(registry_dir)
    assert caught.value.problems == (
        RegistryProblem("enterprises.csv", 6, "land_area_mu", "must be >= 0, got -240"),
    )


def test_header_only_monthly_is_valid(registry_dir: Path) -> None:
    path = registry_dir / "monthly.csv"
    path.write_text(path.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    reg = load_registry(registry_dir)
    assert reg.monthly.height == 0
    assert reg.monthly.schema["month_start"] == pl.Date


def test_interval_s_column_is_optional(registry_dir: Path) -> None:
    path = registry_dir / "meters.csv"
    _write(path, [row[:-1] for row in _rows(path)])
    reg = load_registry(registry_dir)
    assert reg.meters.get_column("interval_s").to_list() == [900] * 11
    assert reg.meters.schema["interval_s"] == pl.Int64


def test_max_rate_column_is_optional_and_checked(registry_dir: Path) -> None:
    path = registry_dir / "meters.csv"
    rows = _rows(path)
    _write(path, [[*rows[0], "max_rate_per_h"], *([*r, "5000"] for r in rows[1:])])
    reg = load_registry(registry_dir)
    assert reg.meters.schema["max_rate_per_h"] == pl.Float64
    assert reg.meters.get_column("max_rate_per_h").to_list() == [5000.0] * 11
    rows = _rows(path)
    rows[3][-1] = "-1"
    rows[4][-1] = "lots"
    _write(path, rows)
    with pytest.raises(RegistryError) as err:
        load_registry(registry_dir)
    assert [str(p) for p in err.value.problems] == [
        "meters.csv:4: max_rate_per_h: must be > 0, got -1",
        "meters.csv:5: max_rate_per_h: not a number: 'lots'",
    ]


def test_coordinates_and_capacity_are_optional_numbers(registry_dir: Path) -> None:
    path = registry_dir / "enterprises.csv"
    rows = _rows(path)
    extra = ["latitude", "longitude", "contracted_capacity_kw"]
    values = [["32.01", "120.86", "12000"], ["", "", ""], ["31.8", "121.66", ""]]
    _write(path, [[*rows[0], *extra], *([*r, *v] for r, v in zip(rows[1:], values, strict=True))])
    reg = load_registry(registry_dir)
    for column in extra:
        assert reg.enterprises.schema[column] == pl.Float64
    assert reg.enterprises.get_column("latitude").to_list() == [32.01, None, 31.8]
    assert reg.enterprises.get_column("contracted_capacity_kw").to_list() == [12000.0, None, None]
    rows = _rows(path)
    rows[1][-3:] = ["91", "east", "0"]
    rows[2][-3:] = ["-32", "-181", "-5"]
    _write(path, rows)
    with pytest.raises(RegistryError) as err:
        load_registry(registry_dir)
    assert sorted(str(p) for p in err.value.problems) == [
        "enterprises.csv:2: contracted_capacity_kw: must be > 0, got 0",
        "enterprises.csv:2: latitude: must be between -90 and 90, got 91",
        "enterprises.csv:2: longitude: not a number: 'east'",
        "enterprises.csv:3: contracted_capacity_kw: must be > 0, got -5",
        "enterprises.csv:3: longitude: must be between -180 and 180, got -181",
    ]


def test_declared_attributes_are_optional_and_checked(registry_dir: Path) -> None:
    """The columns screening and classification read (DECLARED_FLAGS, green_factory_level,
    production_start) are validated when present and kept as text."""
    path = registry_dir / "enterprises.csv"
    rows = _rows(path)
    extra = ["energy_management_certified", "major_violation", "above_scale",
             "evaluation_exempt", "green_factory_level", "production_start"]  # fmt: skip
    values = [["TRUE", "0", "", "false", "Provincial", "2012-04"],
              ["", "", "1", "", "", ""],
              ["false", "false", "true", "no", "none", "2024"]]  # fmt: skip
    _write(path, [[*rows[0], *extra], *([*r, *v] for r, v in zip(rows[1:], values, strict=True))])
    with pytest.raises(RegistryError) as err:
        load_registry(registry_dir)
    assert [str(p) for p in err.value.problems] == [
        "enterprises.csv:4: evaluation_exempt: must be true or false (or 1/0), or empty, got 'no'",
        "enterprises.csv:4: production_start: bad month '2024' (expected YYYY-MM, e.g. 2019-04)",
    ]
    rows = _rows(path)
    rows[3][-3:] = ["", "national", "2024-11"]
    rows[2][-2] = "county"
    _write(path, rows)
    with pytest.raises(RegistryError) as err:
        load_registry(registry_dir)
    assert [str(p) for p in err.value.problems] == [
        "enterprises.csv:3: green_factory_level: must be national, provincial, city or none, "
        "got 'county'"
    ]
    rows[2][-2] = ""
    _write(path, rows)
    reg = load_registry(registry_dir)
    certified = reg.enterprises.get_column("energy_management_certified").to_list()
    assert certified == ["TRUE", None, "false"]


def test_optional_monthly_numbers_are_typed(registry_dir: Path) -> None:
    path = registry_dir / "monthly.csv"
    rows = _rows(path)
    _write(path, [[*rows[0], "employees"], *([*r, "120"] for r in rows[1:])])
    assert load_registry(registry_dir).monthly.schema["employees"] == pl.Float64
    rows = _rows(path)
    rows[2][-1] = "many"
    _write(path, rows)
    with pytest.raises(RegistryError, match=r"monthly\.csv:3: employees: not a number: 'many'"):
        load_registry(registry_dir)


# --------------------------------------------------------------------------- one bad row each

Mutation = Callable[[Path], None]


def set_value(file: str, line: int, column: str, value: str) -> Mutation:
    def mutate(root: Path) -> None:
        rows = _rows(root / file)
        rows[line - 1][rows[0].index(column)] = value
        _write(root / file, rows)

    return mutate


def append_copy(file: str, of_line: int, **changes: str) -> Mutation:
    def mutate(root: Path) -> None:
        rows = _rows(root / file)
        row = list(rows[of_line - 1])
        for column, value in changes.items():
            row[rows[0].index(column)] = value
        _write(root / file, [*rows, row])

    return mutate


def drop_column(file: str, column: str) -> Mutation:
    def mutate(root: Path) -> None:
        rows = _rows(root / file)
        i = rows[0].index(column)
        _write(root / file, [[v for j, v in enumerate(r) if j != i] for r in rows])

    return mutate


def rename_column(file: str, column: str, new: str) -> Mutation:
    def mutate(root: Path) -> None:
        rows = _rows(root / file)
        rows[0][rows[0].index(column)] = new
        _write(root / file, rows)

    return mutate


def delete_file(file: str) -> Mutation:
    def mutate(root: Path) -> None:
        (root / file).unlink()

    return mutate


def replace_text(file: str, text: str, encoding: str = "utf-8") -> Mutation:
    def mutate(root: Path) -> None:
        (root / file).write_bytes(text.encode(encoding))

    return mutate


def extra_field(file: str, line: int) -> Mutation:
    def mutate(root: Path) -> None:
        lines = (root / file).read_text(encoding="utf-8").splitlines()
        lines[line - 1] += ",surplus"
        (root / file).write_text("\n".join(lines) + "\n", encoding="utf-8")

    return mutate


E, M, MO = "enterprises.csv", "meters.csv", "monthly.csv"
GBK_ENTERPRISES = (GOOD / E).read_text(encoding="utf-8")

BAD_ROWS: list[tuple[str, Mutation, RegistryProblem]] = [
    # files and headers
    ("missing file", delete_file(M), RegistryProblem(M, None, None, "file not found")),
    ("empty file", replace_text(MO, ""), RegistryProblem(MO, None, None, "file is empty")),
    (
        "not utf-8",
        replace_text(E, GBK_ENTERPRISES, "gbk"),
        RegistryProblem(E, 2, None, "not valid UTF-8"),
    ),
    (
        "missing column",
        drop_column(E, "county"),
        RegistryProblem(E, 1, "county", "missing required column"),
    ),
    (
        "missing column (monthly)",
        drop_column(MO, "tax_10k_yuan"),
        RegistryProblem(MO, 1, "tax_10k_yuan", "missing required column"),
    ),
    (
        "duplicate column",
        rename_column(M, "interval_s", "unit"),
        RegistryProblem(M, 1, "unit", "duplicate column"),
    ),
    (
        "too many fields",
        extra_field(M, 4),
        RegistryProblem(M, 4, None, "more fields than columns in the header"),
    ),
    # ids
    (
        "empty enterprise_id",
        append_copy(E, 2, enterprise_id=""),
        RegistryProblem(E, 5, "enterprise_id", "required value is empty"),
    ),
    (
        "empty name",
        set_value(E, 3, "name", " "),
        RegistryProblem(E, 3, "name", "required value is empty"),
    ),
    (
        "empty meter_id",
        set_value(M, 3, "meter_id", ""),
        RegistryProblem(M, 3, "meter_id", "required value is empty"),
    ),
    (
        "duplicate enterprise",
        append_copy(E, 3),
        RegistryProblem(E, 5, "enterprise_id", "duplicate enterprise_id 'E0002' (first on line 3)"),
    ),
    (
        "duplicate meter",
        set_value(M, 5, "meter_id", "E0001-EL-MAIN"),
        RegistryProblem(M, 5, "meter_id", "duplicate meter_id 'E0001-EL-MAIN' (first on line 2)"),
    ),
    (
        "unknown enterprise (meters)",
        set_value(M, 6, "enterprise_id", "E0404"),
        RegistryProblem(M, 6, "enterprise_id", "unknown enterprise 'E0404'"),
    ),
    (
        "unknown enterprise (monthly)",
        set_value(MO, 7, "enterprise_id", "E0404"),
        RegistryProblem(MO, 7, "enterprise_id", "unknown enterprise 'E0404'"),
    ),
    # carrier and unit
    (
        "unknown carrier",
        set_value(M, 7, "carrier", "gass"),
        RegistryProblem(M, 7, "carrier", "unknown carrier 'gass'"),
    ),
    (
        "carrier case matters",
        set_value(M, 7, "carrier", "Electricity"),
        RegistryProblem(M, 7, "carrier", "unknown carrier 'Electricity'"),
    ),
    (
        "equal-value is not a meter carrier",
        set_value(M, 2, "carrier", "electricity_equal_value"),
        RegistryProblem(M, 2, "carrier", "not a meter carrier (use 'electricity')"),
    ),
    (
        "empty carrier",
        set_value(M, 2, "carrier", ""),
        RegistryProblem(M, 2, "carrier", "required value is empty"),
    ),
    (
        "unknown unit",
        set_value(M, 3, "unit", "kwh"),
        RegistryProblem(M, 3, "unit", "unknown unit 'kwh'"),
    ),
    (
        "Nm3 is a gas volume, not electricity",
        set_value(M, 2, "unit", "Nm3"),
        RegistryProblem(M, 2, "unit", "unit 'Nm3' cannot be converted to kWh"),
    ),
    (
        "electricity in GJ",
        set_value(M, 2, "unit", "GJ"),
        RegistryProblem(M, 2, "unit", "unit 'GJ' cannot be converted to kWh"),
    ),
    (
        "heat in kWh",
        set_value(M, 11, "unit", "kWh"),
        RegistryProblem(M, 11, "unit", "cannot be converted to MJ or GJ"),
    ),
    # kind, role, raw_material
    (
        "bad kind",
        set_value(M, 2, "kind", "counter"),
        RegistryProblem(M, 2, "kind", "must be register or interval, got 'counter'"),
    ),
    (
        "bad role",
        set_value(M, 3, "role", "main"),
        RegistryProblem(M, 3, "role", "must be boundary, sub, export or generation, got 'main'"),
    ),
    (
        "bad raw_material",
        set_value(M, 4, "raw_material", "yes"),
        RegistryProblem(M, 4, "raw_material", "must be true or false (or 1/0), got 'yes'"),
    ),
    (
        "empty raw_material",
        set_value(M, 4, "raw_material", ""),
        RegistryProblem(M, 4, "raw_material", "required value is empty"),
    ),
    # numbers
    (
        "multiplier not a number",
        set_value(M, 3, "multiplier", "80x"),
        RegistryProblem(M, 3, "multiplier", "not a number: '80x'"),
    ),
    (
        "multiplier zero",
        set_value(M, 3, "multiplier", "0"),
        RegistryProblem(M, 3, "multiplier", "must be > 0, got 0"),
    ),
    (
        "multiplier negative",
        set_value(M, 3, "multiplier", "-80"),
        RegistryProblem(M, 3, "multiplier", "must be > 0, got -80"),
    ),
    (
        "rollover zero",
        set_value(M, 2, "rollover", "0"),
        RegistryProblem(M, 2, "rollover", "must be > 0, got 0"),
    ),
    (
        "rollover infinite",
        set_value(M, 2, "rollover", "inf"),
        RegistryProblem(M, 2, "rollover", "not a number: 'inf'"),
    ),
    (
        "interval_s fractional",
        set_value(M, 4, "interval_s", "900.5"),
        RegistryProblem(M, 4, "interval_s", "must be a whole number of seconds > 0, got '900.5'"),
    ),
    (
        "interval_s zero",
        set_value(M, 4, "interval_s", "0"),
        RegistryProblem(M, 4, "interval_s", "must be a whole number of seconds > 0, got '0'"),
    ),
    (
        "negative land area",
        set_value(E, 4, "land_area_mu", "-240"),
        RegistryProblem(E, 4, "land_area_mu", "must be >= 0, got -240"),
    ),
    (
        "negative quota",
        set_value(E, 2, "annual_quota_tce", "-1"),
        RegistryProblem(E, 2, "annual_quota_tce", "must be >= 0, got -1"),
    ),
    (
        "target not a number",
        set_value(E, 3, "intensity_target_tce_per_10k_yuan", "n/a"),
        RegistryProblem(E, 3, "intensity_target_tce_per_10k_yuan", "not a number: 'n/a'"),
    ),
    (
        "negative money",
        set_value(MO, 4, "sales_10k_yuan", "-5"),
        RegistryProblem(MO, 4, "sales_10k_yuan", "must be >= 0, got -5"),
    ),
    (
        "thousands separator",
        set_value(MO, 2, "output_value_10k_yuan", "98,000"),
        RegistryProblem(MO, 2, "output_value_10k_yuan", "not a number: '98,000'"),
    ),
    (
        "NaN output",
        set_value(MO, 8, "product_output", "NaN"),
        RegistryProblem(MO, 8, "product_output", "not a number: 'NaN'"),
    ),
    # months
    (
        "month 13",
        set_value(MO, 3, "month", "2025-13"),
        RegistryProblem(MO, 3, "month", "bad month '2025-13' (expected YYYY-MM"),
    ),
    (
        "month without zero",
        set_value(MO, 3, "month", "2025-2"),
        RegistryProblem(MO, 3, "month", "bad month '2025-2'"),
    ),
    (
        "month as a date",
        set_value(MO, 3, "month", "2025/02/01"),
        RegistryProblem(MO, 3, "month", "bad month '2025/02/01'"),
    ),
    (
        "empty month",
        set_value(MO, 3, "month", ""),
        RegistryProblem(MO, 3, "month", "required value is empty"),
    ),
    (
        "duplicate enterprise-month",
        set_value(MO, 4, "month", "2025-01"),
        RegistryProblem(
            MO, 4, "month", "duplicate month '2025-01' for enterprise 'E0001' (first on line 2)"
        ),
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [case[1:] for case in BAD_ROWS], ids=[case[0] for case in BAD_ROWS]
)
def test_bad_row_is_reported(
    registry_dir: Path, mutate: Mutation, expected: RegistryProblem
) -> None:
    mutate(registry_dir)
    with pytest.raises(RegistryError) as caught:
        load_registry(registry_dir)
    problems = caught.value.problems
    assert len(problems) == 1, str(caught.value)
    (problem,) = problems
    assert (problem.file, problem.line, problem.column) == (
        expected.file,
        expected.line,
        expected.column,
    )
    assert expected.reason in problem.reason
    assert str(caught.value) == str(problem)


def test_good_example_is_good(registry_dir: Path) -> None:
    """The mutations above start from a registry that loads (so each case fails on its own)."""
    assert isinstance(load_registry(registry_dir), Registry)


# --------------------------------------------------------------------------- many at once


def test_all_problems_in_all_files_are_reported_at_once(registry_dir: Path) -> None:
    for mutate in (
        set_value(E, 4, "land_area_mu", "-1"),
        set_value(E, 4, "annual_quota_tce", "lots"),
        set_value(M, 7, "carrier", "gass"),
        set_value(M, 3, "kind", "counter"),
        set_value(M, 10, "meter_id", "E0001-EL-MAIN"),
        set_value(M, 12, "enterprise_id", "E0404"),
        set_value(MO, 10, "month", "2025-00"),
        set_value(MO, 5, "tax_10k_yuan", "-3"),
    ):
        mutate(registry_dir)
    with pytest.raises(RegistryError) as caught:
        load_registry(registry_dir)
    assert isinstance(caught.value, GreenmonError)
    assert str(caught.value).splitlines() == [
        "enterprises.csv:4: land_area_mu: must be >= 0, got -1",
        "enterprises.csv:4: annual_quota_tce: not a number: 'lots'",
        "meters.csv:3: kind: must be register or interval, got 'counter'",
        "meters.csv:7: carrier: unknown carrier 'gass'",
        "meters.csv:10: meter_id: duplicate meter_id 'E0001-EL-MAIN' (first on line 2)",
        "meters.csv:12: enterprise_id: unknown enterprise 'E0404' (not in enterprises.csv)",
        "monthly.csv:5: tax_10k_yuan: must be >= 0, got -3",
        "monthly.csv:10: month: bad month '2025-00' (expected YYYY-MM, e.g. 2025-06)",
    ]
    assert [p.line for p in caught.value.problems] == [4, 4, 3, 7, 10, 12, 5, 10]


def test_every_bad_row_of_a_column_is_reported(registry_dir: Path) -> None:
    rows = _rows(registry_dir / M)
    unit = rows[0].index("unit")
    for row in rows[1:]:
        row[unit] = "kwh"
    _write(registry_dir / M, rows)
    with pytest.raises(RegistryError) as caught:
        load_registry(registry_dir)
    assert [(p.line, p.column) for p in caught.value.problems] == [
        (line, "unit") for line in range(2, 13)
    ]


def test_missing_directory_reports_each_file(tmp_path: Path) -> None:
    with pytest.raises(RegistryError) as caught:
        load_registry(tmp_path / "nowhere")
    assert [(p.file, p.line, p.column) for p in caught.value.problems] == [
        ("enterprises.csv", None, None),
        ("meters.csv", None, None),
        ("monthly.csv", None, None),
    ]
    assert str(caught.value).splitlines()[0].startswith("enterprises.csv: file not found in ")


def test_unknown_enterprise_not_reported_when_enterprises_unreadable(registry_dir: Path) -> None:
    """A broken enterprises.csv is reported once, not again for every meter that uses it."""
    drop_column(E, "enterprise_id")(registry_dir)
    with pytest.raises(RegistryError) as caught:
        load_registry(registry_dir)
    assert [str(p) for p in caught.value.problems] == [
        "enterprises.csv:1: enterprise_id: missing required column"
    ]


# --------------------------------------------------------------------------- size


def test_ten_thousand_meters_load_fast(registry_dir: Path) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_rows(registry_dir / M)[0])
    for i in range(10_000):
        writer.writerow(
            [f"E0002-EL-{i:05d}", "E0002", "electricity", "kWh", "register", "1", "999999",
             "sub", "false", ""]
        )  # fmt: skip
    (registry_dir / M).write_text(out.getvalue(), encoding="utf-8")
    load_registry(registry_dir)  # warm-up: imports, the carrier table
    started = time.perf_counter()
    reg = load_registry(registry_dir)
    elapsed = time.perf_counter() - started
    assert reg.meter("E0002-EL-09999") is not None
    assert reg.meters.height == 10_000
    assert elapsed < 1.0, f"10,000 meters took {elapsed:.2f} s"


def test_reference_units_are_convertible_to_themselves() -> None:
    for carrier, refs in carrier_units().items():
        for ref in refs:
            assert is_convertible(ref, ref), carrier


def test_kind_and_role_are_case_insensitive(registry_dir: Path) -> None:
    set_value(M, 2, "kind", "Register")(registry_dir)
    set_value(M, 2, "role", "BOUNDARY")(registry_dir)
    reg = load_registry(registry_dir)
    main = reg.meter("E0001-EL-MAIN")
    assert main is not None and (main.kind, main.role) == ("register", "boundary")


@pytest.mark.parametrize(
    ("text", "modulus"),
    [
        ("99999999", 100_000_000.0),
        ("99999.99", 100_000.0),  # shows hundredths: 99999.99 + 0.01
        ("999999.999", 1_000_000.0),
        ("99999999.0", 100_000_000.0),  # trailing zeros say nothing: whole units
        ("9999.90", 10_000.0),
        ("65535", 65_536.0),  # a binary counter
        ("1e8", 100_000_001.0),  # whole units
        (" 12.5 ", 12.6),
        ("", None),
        (None, None),
        ("lots", None),
    ],
)
def test_the_rollover_modulus_is_the_next_value_shown(text: str | None, modulus: float) -> None:
    assert rollover_modulus(text) == modulus


def test_registers_with_decimals_and_gas_in_nm3(registry_dir: Path) -> None:
    path = registry_dir / "meters.csv"
    rows = list(csv.reader(path.open(encoding="utf-8")))
    header = rows[0]
    unit = header.index("unit")
    gas = next(i for i, row in enumerate(rows) if row[0] == "E0001-NG-MAIN")
    rows[gas][unit] = "Nm3"
    _write(path, rows)
    reg = load_registry(registry_dir)
    info = reg.meter("E0001-NG-MAIN")
    assert info is not None and info.unit == "Nm3"
    moduli = dict(reg.meters.select("meter_id", "rollover_modulus").iter_rows())
    assert moduli["E0001-EL-MAIN"] == 100_000_000.0
    assert moduli["E0002-EL-MAIN"] == 1_000_000.0  # 999999.999 MWh
    assert moduli["E0002-ST-01"] == 1_000_000.0  # 999999.9 t
    assert moduli["E0001-PV-01"] is None
    assert volume_conversions() == frozenset({("Nm3", "m3")})
