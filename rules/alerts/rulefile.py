"""The shape of ``alerts.toml``: every threshold, tolerance and duration the alerts use.

`load_alert_rules` reads the packaged ``greenmon/rules/data/alerts.toml``, merges the user's
file over it (`greenmon.rules.ruleset.load_rules`) and validates the result once: a bad value
stops the command with ``file:line: key: reason`` (exit 2). Durations are TOML strings such as
``"90s"``, ``"15m"``, ``"1h"``, ``"2d"`` (or a number of seconds) and become seconds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from greenmon.rules.ruleset import LoadedRules, RuleDocument, load_rules

__all__ = [
    "ALERTS_FILE",
    "RULES",
    "AlertRules",
    "Duration",
    "load_alert_rules",
    "parse_duration",
]

ALERTS_FILE: Final = "alerts.toml"
#: The rule names, as they appear in the ``rule`` tag of the ``alert`` measurement.
RULES: Final = (
    "double_control_total",
    "double_control_intensity",
    "sudden_change",
    "data_completeness",
    "gateway_silent",
)
_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_duration(value: Any) -> float:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"2d"`` or a number of seconds -> seconds (>= 0)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 15m, 1h or 2d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"expected a duration such as 90s, 15m, 1h or 2d, got {value!r}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Table(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Timing(_Table):
    pending_for: Duration = 0.0
    keep_firing_for: Duration = 0.0


class Schedule(_Table):
    basis: Literal["auto", "days"] = "auto"
    profile_min_coverage: float = Field(default=0.8, gt=0, le=1)


class TotalRule(_Timing):
    yellow_above: float = Field(ge=0)
    red_above: float = Field(ge=0)
    clear_margin: float = Field(ge=0, lt=1)

    @field_validator("red_above")
    @classmethod
    def _red_beyond_yellow(cls, value: float, info: ValidationInfo) -> float:
        yellow = info.data.get("yellow_above")
        if yellow is not None and value < yellow:
            raise ValueError(f"must be >= yellow_above ({yellow})")
        return value


class IntensityRule(_Timing):
    denominator: Literal["output_value", "value_added"] = "output_value"
    rise_above: float = Field(ge=0)
    target_above: float = Field(ge=0)
    clear_margin: float = Field(ge=0, lt=1)


class _Optional(_Timing):
    enabled: bool = True
    level: Literal["red", "yellow"] = "yellow"


class SuddenChangeRule(_Optional):
    baseline_days: int = Field(ge=3, le=366)
    min_baseline_days: int = Field(ge=3)
    robust_z: float = Field(gt=0)
    min_rise: float = Field(ge=0)

    @field_validator("min_baseline_days")
    @classmethod
    def _within_baseline(cls, value: int, info: ValidationInfo) -> int:
        days = info.data.get("baseline_days")
        if days is not None and value > days:
            raise ValueError(f"must be <= baseline_days ({days})")
        return value


class CompletenessRule(_Optional):
    min_completeness: float = Field(gt=0, le=1)
    meters: Literal["all", "counted"] = "all"


class SilenceRule(_Optional):
    silent_after: Duration = Field(gt=0)
    lookback: Duration = Field(gt=0)

    @field_validator("lookback")
    @classmethod
    def _longer_than_silence(cls, value: float, info: ValidationInfo) -> float:
        silent = info.data.get("silent_after")
        if silent is not None and value <= silent:
            raise ValueError(f"must be longer than silent_after ({silent:g} s)")
        return value


class AlertRules(RuleDocument):
    """The whole ``alerts.toml``."""

    schedule: Schedule
    total: TotalRule
    intensity: IntensityRule
    sudden_change: SuddenChangeRule
    data_completeness: CompletenessRule
    gateway_silent: SilenceRule

    def timing(self, rule: str) -> _Timing:
        """The pending/keep-firing durations of `rule` (one of `RULES`)."""
        return {
            "double_control_total": self.total,
            "double_control_intensity": self.intensity,
            "sudden_change": self.sudden_change,
            "data_completeness": self.data_completeness,
            "gateway_silent": self.gateway_silent,
        }[rule]


def load_alert_rules(override: Path | None = None) -> LoadedRules[AlertRules]:
    """The packaged rules with the user's `override` merged over them, validated once
    (`greenmon.rules.errors.RuleFileError`, exit 2, naming file, line and key)."""
    return load_rules(AlertRules, ALERTS_FILE, override, kind="alerts")
