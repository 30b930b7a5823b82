"""The screening stage's rule files: the packaged ones load and say what they are; a user file
merges over them; every problem names file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from greenmon.errors import ConfigError
from greenmon.rules.errors import RuleFileError
from greenmon.rules.screening.criteria import (
    EFFICIENCY_PROFILES,
    load_efficiency,
    load_plan,
    load_screening,
)


def write(tmp_path: Path, text: str, name: str = "mine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_packaged_green_factory_criteria_say_what_they_are() -> None:
    new = load_screening("2025")
    assert new.info.files == ("greenmon/rules/data/green_factory_2025.toml",)
    assert new.info.statuses == ("placeholder",)
    c = new.rules
    assert c.standard.code == "GB/T 36132-2025"
    assert set(c.groups) == {
        "energy_low_carbon", "resource_efficiency", "clean_production", "green_products",
        "land_intensive",
    }  # fmt: skip
    # the groups greenmon cannot measure are listed but not assessed
    assert c.assessed_groups() == ["energy_low_carbon", "resource_efficiency", "land_intensive"]
    assert c.scoring.status == "placeholder"
    assert sum(c.effective_weight(i) for i in c.indicators) == pytest.approx(0.70)
    old = load_screening("2018").rules
    assert old.standard.code == "GB/T 36132-2018"
    assert old.groups["infrastructure"].weight == 0.20
    assert old.assessed_groups() == ["energy_resource_input", "performance"]
    assert {r.column for r in old.requirements if r.check == "declared"} == {
        "major_violation", "energy_management_certified",
    }  # fmt: skip


def test_packaged_efficiency_profiles_and_plan() -> None:
    huaian = load_efficiency("huaian-2024").rules
    assert huaian.profile.name == "Jiangsu city practice (Huai'an 2024)"
    assert [(i.id, i.weight) for i in huaian.indicators] == [
        ("tax_per_mu", 45.0), ("sales_per_mu", 35.0), ("tax_per_tce", 20.0),
    ]  # fmt: skip
    assert huaian.benchmark.factor == 2.0
    assert [(c.class_, c.upper) for c in huaian.classes.cuts] == [
        ("A", 0.2), ("B", 0.6), ("C", 0.95), ("D", 1.0),
    ]  # fmt: skip
    zhejiang = load_efficiency("zhejiang")
    assert zhejiang.info.statuses == ("placeholder",)
    assert len(zhejiang.rules.indicators) == 6
    assert set(EFFICIENCY_PROFILES) == {"huaian-2024", "zhejiang"}
    plan = load_plan().rules
    assert (plan.green_factories.new_target, plan.green_factories.cumulative_target) == (40, 100)
    assert plan.green_factories.status == "unverified"


def test_a_user_file_changes_only_what_it_names(tmp_path: Path) -> None:
    mine = write(
        tmp_path,
        '[meta]\nversion = "city-2026"\nstatus = "verified"\n\n'
        "[scoring]\npass_score = 75.0\n\n"
        "[[baselines]]\nindicator = 'energy_intensity'\nindustry = 'C17'\n"
        "baseline = 0.2\nleading = 0.1\nstatus = 'verified'\nsource = 'city notice 2026'\n",
    )
    loaded = load_screening("2025", mine)
    assert loaded.rules.scoring.pass_score == 75.0
    assert loaded.rules.scoring.min_coverage == 0.6  # kept from the packaged file
    assert loaded.rules.baselines[0].industry == "C17"
    assert loaded.info.versions == ("2026.1", "city-2026")
    assert str(mine) in loaded.info.label


def test_cross_key_problems_are_named_with_file_line_and_key(tmp_path: Path) -> None:
    mine = write(
        tmp_path,
        "[groups.land_intensive]\nweight = 0.5\n\n"  # weights no longer add up to 1
        "[[requirements]]\nid = 'x'\nname = 'x'\nname_en = 'x'\ncheck = 'declared'\n"
        "column = 'iso_14001'\nstatus = 'assumption'\n\n"
        "[[baselines]]\nindicator = 'output_per_mu'\nindustry = 'C'\nbaseline = 100.0\n"
        "leading = 50.0\nstatus = 'placeholder'\nsource = 's'\n",
    )
    with pytest.raises(RuleFileError) as info:
        load_screening("2025", mine)
    text = str(info.value)
    assert f"{mine}:1: groups: group weights must add up to 1, they add up to 1.35" in text
    assert f"{mine}:9: requirements.0.column: 'iso_14001' is not a declared attribute" in text
    assert (
        f"{mine}:16: baselines.0.leading: must be above the baseline (100): "
        "higher is better for 'output_per_mu'"
    ) in text
    assert isinstance(info.value, ConfigError)


def test_bad_values_and_unknown_keys(tmp_path: Path) -> None:
    mine = write(tmp_path, "[scoring]\npass_score = 120\nmissing = 'guess'\ncurve = 'cubic'\n")
    with pytest.raises(RuleFileError) as info:
        load_screening("2025", mine)
    assert sorted(str(info.value).splitlines()) == [
        f"{mine}:2: scoring.pass_score: Input should be less than or equal to 100",
        f"{mine}:3: scoring.missing: Input should be 'exclude' or 'zero'",
        f"{mine}:4: scoring.curve: unknown key",
    ]


def test_efficiency_cut_offs_must_rise_to_one(tmp_path: Path) -> None:
    mine = write(
        tmp_path,
        "[classes]\nrank_within = 'county'\nmin_group = 5\nstatus = 'assumption'\n\n"
        "[[classes.cuts]]\nclass = 'A'\nupper = 0.5\n\n"
        "[[classes.cuts]]\nclass = 'T'\nupper = 0.4\n",
    )
    with pytest.raises(RuleFileError) as info:
        load_efficiency("huaian-2024", mine)
    text = str(info.value)
    assert f"{mine}:11: classes.cuts.1.class: 'T' is reserved for 'not evaluated'" in text
    assert f"{mine}:12: classes.cuts.1.upper: upper bounds must rise from cut to cut" in text
    assert f"{mine}:12: classes.cuts.1.upper: the last cut must end at 1.0" in text


def test_a_criteria_file_is_not_taken_for_an_efficiency_file(tmp_path: Path) -> None:
    mine = write(tmp_path, '[meta]\nkind = "green-factory-criteria"\n')
    with pytest.raises(RuleFileError, match=r"mine\.toml:2: meta\.kind: this is a"):
        load_efficiency("huaian-2024", mine)


def test_unknown_standard_or_profile() -> None:
    with pytest.raises(RuleFileError, match=r"--standard: unknown '2030' \(known: 2025, 2018\)"):
        load_screening("2030")
    with pytest.raises(RuleFileError, match=r"--profile: unknown 'nantong'"):
        load_efficiency("nantong")
