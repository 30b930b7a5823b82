"""meters.csv rows with valid_from / valid_to: several rows per meter id, checked in full."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from greenmon.registry import RegistryError, load_registry

REGISTRY = Path(__file__).parent / "data" / "registry"
HEADER = "valid_from,valid_to,initial_reading,final_reading"
# the columns up to interval_s of an E0001 electricity register
EL = "E0001,electricity,kWh,register,{m},99999999,boundary,false,"


def _registry(tmp_path: Path, *rows: str) -> Path:
    root = tmp_path / "registry"
    shutil.copytree(REGISTRY, root)
    lines = (root / "meters.csv").read_text().splitlines()
    body = [lines[0] + "," + HEADER, *(line + ",,,," for line in lines[1:]), *rows]
    (root / "meters.csv").write_text("\n".join(body) + "\n")
    return root


def test_a_replaced_meter_has_two_rows_and_meters_holds_the_current_one(tmp_path: Path) -> None:
    root = _registry(
        tmp_path,
        "E0001-NEW," + EL.format(m=1) + ",,2025-06-02T12:00,,5480",
        "E0001-NEW," + EL.format(m=2) + ",2025-06-02T12:00:00+08:00,,0,",
        "E0001-LATER," + EL.format(m=1) + ",2025-07-01,,,",
    )
    reg = load_registry(root)
    assert reg.has_periods
    rows = reg.periods.filter(reg.periods["meter_id"] == "E0001-NEW")
    noon = datetime(2025, 6, 2, 4, tzinfo=UTC)
    assert rows["valid_to"].to_list() == [noon, None]
    assert rows["valid_from"].to_list() == [None, noon]
    assert rows["final_reading"].to_list() == [5480.0, None]
    assert reg.meter("E0001-NEW") is not None and reg.meter("E0001-NEW").multiplier == 2.0  # type: ignore[union-attr]
    assert reg.meters.get_column("meter_id").is_unique().all()
    later = reg.periods.filter(reg.periods["meter_id"] == "E0001-LATER")
    assert later["valid_from"].to_list() == [datetime(2025, 6, 30, 16, tzinfo=UTC)]  # local day


def test_without_validity_columns_nothing_changes() -> None:
    reg = load_registry(REGISTRY)
    assert not reg.has_periods and reg.periods.equals(reg.meters)


@pytest.mark.parametrize(
    ("rows", "problems"),
    [
        (
            ["E0001-EL-MAIN," + EL.format(m=1) + ",2025-06-02,,,"],
            ["meters.csv:13: meter_id: duplicate meter_id 'E0001-EL-MAIN' (line 2)"],
        ),
        (
            ["X1," + EL.format(m=1) + ",,2025-06-02T12:00,,",
             "X1," + EL.format(m=1) + ",2025-06-02T11:00,,,"],
            ["meters.csv:14: meter_id: duplicate meter_id 'X1' (line 13)"],
        ),
        (
            ["X1," + EL.format(m=1) + ",,2025-06-02T12:00,,",
             "X1,E0001,electricity,kWh,register,1,99999999,sub,false,,2025-06-02T12:00,,,"],
            ["meters.csv:14: role: meter 'X1' has role 'sub' here but not on line 13"],
        ),
        (
            ["X1," + EL.format(m=1) + ",noon,2025-06-02T12:00+08:00x,,"],
            ["meters.csv:13: valid_from: bad time 'noon'",
             "meters.csv:13: valid_to: bad time '2025-06-02T12:00+08:00x'"],
        ),
        (
            ["X1," + EL.format(m=1) + ",2025-06-03,2025-06-02,,"],
            ["meters.csv:13: valid_to: must be after valid_from"],
        ),
        (
            ["X1," + EL.format(m=1) + ",,,-5,7"],
            ["meters.csv:13: initial_reading: must be >= 0, got -5",
             "meters.csv:13: initial_reading: needs valid_from",
             "meters.csv:13: final_reading: needs valid_to"],
        ),
        (
            ["X1,E0001,electricity,kWh,interval,,,boundary,false,900,2025-06-02,,3,"],
            ["meters.csv:13: initial_reading: only a register meter"],
        ),
    ],
    ids=["overlap with an open row", "overlapping rows", "rows disagree", "bad times",
         "empty period", "edge readings", "interval meter"],
)  # fmt: skip
def test_bad_periods_are_refused_with_every_problem(
    tmp_path: Path, rows: list[str], problems: list[str]
) -> None:
    with pytest.raises(RegistryError) as info:
        load_registry(_registry(tmp_path, *rows))
    text = str(info.value)
    for problem in problems:
        assert problem in text, text
