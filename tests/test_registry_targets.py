"""The optional targets.csv: county and city quotas per year, validated like the other
registry files (every problem at once, as file:line: column: reason)."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from greenmon.registry import RegistryError, load_registry

EXAMPLE = Path(__file__).parent / "data" / "registry"
HEADER = "scope,subject,year,energy_quota_tce,intensity_target_tce_per_10k_yuan\n"


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    shutil.copytree(EXAMPLE, root)
    return root


def test_without_targets_csv_the_frame_is_empty(registry_dir: Path) -> None:
    reg = load_registry(registry_dir)
    assert reg.targets.is_empty()
    assert reg.targets.schema["year"] == pl.Int32


def test_a_good_targets_csv(registry_dir: Path) -> None:
    county = load_registry(registry_dir).enterprises.get_column("county")[0]
    (registry_dir / "targets.csv").write_text(
        HEADER + f"County,{county},2025,150000,0.3\ncity,city,2025,2600000,\n", encoding="utf-8"
    )
    t = load_registry(registry_dir).targets
    assert t.rows() == [
        ("county", county, 2025, 150000.0, 0.3),
        ("city", "city", 2025, 2600000.0, None),
    ]


def test_every_problem_is_reported_with_file_line_and_column(registry_dir: Path) -> None:
    county = load_registry(registry_dir).enterprises.get_column("county")[0]
    (registry_dir / "targets.csv").write_text(
        HEADER
        + f"county,{county},2025,150000,0.3\n"
        + "province,江苏省,2025,1,\n"  # line 3
        + "city,南通市,2025,1,\n"  # line 4
        + "county,不存在区,2025,1,\n"  # line 5
        + f"county,{county},25,1,\n"  # line 6
        + f"county,{county},2025,-5,abc\n"  # line 7
        + ",,2025,1,\n",  # line 8
        encoding="utf-8",
    )
    with pytest.raises(RegistryError) as info:
        load_registry(registry_dir)
    text = str(info.value)
    assert "targets.csv:3: scope: must be county or city, got 'province'" in text
    assert "targets.csv:4: subject: a city row's subject is the word 'city', got '南通市'" in text
    assert (
        "targets.csv:5: subject: unknown county '不存在区' (no enterprise in enterprises.csv)"
        in text
    )
    assert "targets.csv:6: year: must be a year such as 2025, got '25'" in text
    assert "targets.csv:7: energy_quota_tce: must be >= 0, got -5" in text
    assert "targets.csv:7: intensity_target_tce_per_10k_yuan: not a number: 'abc'" in text
    assert (
        f"targets.csv:7: year: duplicate row for county '{county}' in 2025 (first on line 2)"
        in text
    )
    assert "targets.csv:8: scope: required value is empty" in text
    assert "targets.csv:8: subject: required value is empty" in text


def test_a_missing_column_and_problems_in_other_files_come_together(registry_dir: Path) -> None:
    (registry_dir / "targets.csv").write_text("scope,subject,year\ncity,city,2025\n")
    meters = registry_dir / "meters.csv"
    meters.write_text(meters.read_text().replace("electricity", "gass", 1))
    with pytest.raises(RegistryError) as info:
        load_registry(registry_dir)
    text = str(info.value)
    assert "meters.csv:" in text and "unknown carrier 'gass'" in text
    assert "targets.csv:1: energy_quota_tce: missing required column" in text
    assert text.index("meters.csv") < text.index("targets.csv")
