"""``alerts.toml``: the packaged file is valid and commented; overrides merge; a bad file is
named by file, line and key."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from greenmon.errors import ConfigError
from greenmon.rules.alerts.rulefile import RULES, load_alert_rules, parse_duration
from greenmon.rules.errors import RuleFileError


def test_the_packaged_rules_load_and_every_key_says_where_it_comes_from() -> None:
    loaded = load_alert_rules()
    r = loaded.rules
    assert r.meta.kind == "alerts"
    assert r.data_completeness.min_completeness == 0.9
    assert r.total.pending_for == 3600 and r.total.keep_firing_for == 86_400
    assert r.gateway_silent.silent_after == 3600
    assert loaded.info.label.startswith("greenmon/rules/data/alerts.toml v")
    assert {r.timing(rule).__class__.__name__ for rule in RULES}  # every rule has its timing
    text = resources.files("greenmon.rules").joinpath("data", "alerts.toml").read_text("utf-8")
    lines = text.splitlines()
    in_meta = False
    for i, line in enumerate(lines):
        if line.startswith("["):
            in_meta = line.strip() == "[meta]"
            continue
        if in_meta or not line or line.startswith(("#", " ")) or "=" not in line:
            continue
        assert lines[i - 1].startswith("#"), (
            f"alerts.toml:{i + 1}: {line!r} has no comment saying where it comes from"
        )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172_800), ("1.5h", 5400), (30, 30)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["1w", "h", "-1h", "", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_an_override_holds_only_what_it_changes(tmp_path: Path) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text(
        '[meta]\nversion = "nantong-2026"\nstatus = "verified"\n'
        '[total]\nred_above = 0.1\npending_for = "0s"\n',
        encoding="utf-8",
    )
    loaded = load_alert_rules(mine)
    assert loaded.rules.total.red_above == 0.1
    assert loaded.rules.total.pending_for == 0
    assert loaded.rules.total.yellow_above == 0.0  # kept from the packaged file
    assert loaded.info.files == ("greenmon/rules/data/alerts.toml", str(mine))
    assert "nantong-2026" in loaded.info.label


def test_a_bad_rules_file_names_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        "[total]\nyellow_above = 0.1\nred_above = 0.05\n\n"
        "[sudden_change]\nrobust_z = -1\nwindow = 3\n\n[gateway_silent]\nsilent_after = '1w'\n",
        encoding="utf-8",
    )
    with pytest.raises(RuleFileError) as info:
        load_alert_rules(bad)
    text = str(info.value)
    assert f"{bad}:3: total.red_above: must be >= yellow_above (0.1)" in text
    assert f"{bad}:6: sudden_change.robust_z: Input should be greater than 0" in text
    assert f"{bad}:7: sudden_change.window: unknown key" in text
    assert f"{bad}:10: gateway_silent.silent_after: expected a duration" in text
    assert isinstance(info.value, ConfigError)
