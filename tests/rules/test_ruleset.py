"""`load_rules`: packaged file + user override, validated once, problems named by file:line:key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from greenmon.errors import ConfigError
from greenmon.rules.errors import RuleFileError
from greenmon.rules.ruleset import RuleDocument, load_rules


class Level(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    tolerance: float = Field(ge=0, le=1)
    days: int = Field(ge=1)


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    weight: float = Field(gt=0)


class Doc(RuleDocument):
    total: Level
    rules: list[Rule]


BASE = """\
[meta]
kind = "test"
version = "2026.1"
status = "assumption"
source = "the test"

[total]
tolerance = 0.05
days = 3

[[rules]]
name = "a"
weight = 1.0

[[rules]]
name = "b"
weight = 2.0
"""


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "base.toml"
    path.write_text(BASE, encoding="utf-8")
    return path


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_base_alone(base: Path) -> None:
    loaded = load_rules(Doc, base)
    assert loaded.rules.total.tolerance == 0.05
    assert [r.name for r in loaded.rules.rules] == ["a", "b"]
    assert loaded.info.files == (str(base),)
    assert loaded.info.label.startswith(f"{base} v2026.1 (assumption) [sha256 ")


def test_override_merges_tables_and_replaces_arrays(base: Path, tmp_path: Path) -> None:
    user = write(
        tmp_path,
        "user.toml",
        '[meta]\nversion = "city-2026"\nstatus = "verified"\n'
        '[total]\ntolerance = 0.1\n[[rules]]\nname = "c"\nweight = 5\n',
    )
    loaded = load_rules(Doc, base, user)
    assert loaded.rules.total.tolerance == 0.1
    assert loaded.rules.total.days == 3  # kept from the packaged table
    assert [r.name for r in loaded.rules.rules] == ["c"]  # arrays replace
    assert loaded.rules.meta.version == "city-2026"
    assert loaded.info.versions == ("2026.1", "city-2026")
    assert loaded.info.statuses == ("assumption", "verified")
    assert str(user) in loaded.info.label


def test_every_problem_named_with_file_line_and_key(base: Path, tmp_path: Path) -> None:
    user = write(
        tmp_path,
        "user.toml",
        "[total]\ntolerance = 2\n\n[[rules]]\nname = 'x'\nweight = 0\ncolour = 'red'\n",
    )
    with pytest.raises(RuleFileError) as info:
        load_rules(Doc, base, user)
    text = str(info.value)
    assert f"{user}:2: total.tolerance: Input should be less than or equal to 1" in text
    assert f"{user}:6: rules.0.weight: Input should be greater than 0" in text
    assert f"{user}:7: rules.0.colour: unknown key" in text
    assert len(info.value.problems) == 3
    assert isinstance(info.value, ConfigError)  # exit code 2 from the CLI


def test_problem_in_packaged_part_names_the_packaged_file(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.toml", BASE.replace("days = 3", "days = 0"))
    user = write(tmp_path, "user.toml", "[total]\ntolerance = 0.2\n")
    with pytest.raises(RuleFileError) as info:
        load_rules(Doc, bad, user)
    assert str(info.value) == f"{bad}:9: total.days: Input should be greater than or equal to 1"


def test_missing_key_points_at_its_table(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.toml", BASE.replace("days = 3\n", ""))
    with pytest.raises(RuleFileError, match=r"bad\.toml:7: total\.days: required key missing"):
        load_rules(Doc, bad)


def test_bad_toml_is_named(base: Path, tmp_path: Path) -> None:
    user = write(tmp_path, "user.toml", "[total]\ntolerance = = 1\n")
    with pytest.raises(RuleFileError, match=r"user\.toml: not valid TOML: .*line 2"):
        load_rules(Doc, base, user)


def test_missing_and_non_utf8_files(base: Path, tmp_path: Path) -> None:
    with pytest.raises(RuleFileError, match=r"nope\.toml: file not found"):
        load_rules(Doc, base, tmp_path / "nope.toml")
    gbk = tmp_path / "gbk.toml"
    gbk.write_bytes("[total]\n# 阈值\n".encode("gbk"))
    with pytest.raises(RuleFileError, match=r"gbk\.toml:2: not UTF-8"):
        load_rules(Doc, base, gbk)


def test_a_file_of_another_kind_is_refused(base: Path, tmp_path: Path) -> None:
    user = write(tmp_path, "user.toml", '\n[meta]\nkind = "criteria"\n')
    with pytest.raises(RuleFileError, match=r"user\.toml:3: meta\.kind: this is a 'criteria'"):
        load_rules(Doc, base, user)


def test_digest_changes_with_content(base: Path, tmp_path: Path) -> None:
    one = load_rules(Doc, base).info.digest
    user = write(tmp_path, "user.toml", "[total]\ndays = 4\n")
    assert load_rules(Doc, base, user).info.digest != one


class Checked(Doc):
    def cross_check(self):  # type: ignore[no-untyped-def]
        names = [r.name for r in self.rules]
        for i, rule in enumerate(self.rules):
            if names.count(rule.name) > 1:
                yield ("rules", i, "name"), f"rule '{rule.name}' is defined twice"


def test_cross_checks_are_named_with_file_line_and_key(base: Path, tmp_path: Path) -> None:
    assert load_rules(Checked, base).rules.rules[1].name == "b"
    user = write(tmp_path, "user.toml", '[[rules]]\nname = "a"\nweight = 1\n\n'
                 '[[rules]]\nname = "a"\nweight = 2\n')  # fmt: skip
    with pytest.raises(RuleFileError) as info:
        load_rules(Checked, base, user)
    assert str(info.value).splitlines() == [
        f"{user}:2: rules.0.name: rule 'a' is defined twice",
        f"{user}:6: rules.1.name: rule 'a' is defined twice",
    ]
