"""The rules stage's exception tree: `RulesError` and everything under it.

`RulesError` is the stage's root (under `greenmon.errors.GreenmonError`), so the command line
reports any rules failure as a readable message. A bad rule or criteria file is a
misconfiguration: `RuleFileError` is also a `ConfigError`, so the command exits with code 2
and names the file, the line and the key. Foreign exceptions (``OSError``,
``tomllib.TOMLDecodeError``, pydantic's ``ValidationError``) are wrapped at the boundary with
``raise ... from``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from greenmon.errors import ConfigError, GreenmonError

__all__ = ["RuleFileError", "RuleFileProblem", "RulesError"]


class RulesError(GreenmonError):
    """Root of every error the rules stage raises on purpose."""


@dataclass(frozen=True, slots=True)
class RuleFileProblem:
    """One thing wrong with a rule file: where (file, line, key) and why."""

    file: str
    line: int | None
    key: str | None
    reason: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key}: {self.reason}" if self.key else f"{where}: {self.reason}"


class RuleFileError(RulesError, ConfigError):
    """A rule, criteria or target file is invalid; `problems` lists every problem found,
    one per line in ``str()`` (``alerts.toml:12: sudden_change.mad_factor: must be > 0``)."""

    def __init__(self, problems: Iterable[RuleFileProblem]) -> None:
        self.problems: tuple[RuleFileProblem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
