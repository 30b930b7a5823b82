"""The aggregator stage's exception tree: `AggregatorError` and everything under it.

`AggregatorError` is the stage's root (itself under `greenmon.errors.GreenmonError`), so the
command line can report any aggregator failure as a readable message. Foreign exceptions
(``OSError``, Polars errors) are wrapped at the boundary with ``raise ... from``.
"""

from __future__ import annotations

from collections.abc import Iterable

from greenmon.errors import GreenmonError
from greenmon.registry import RegistryProblem

__all__ = [
    "AggregatorError",
    "InputFrameError",
    "MissingReferenceError",
    "ReferenceDataError",
    "ReferenceProblem",
]


class AggregatorError(GreenmonError):
    """Root of every error the aggregator stage raises on purpose."""


class ReferenceProblem(RegistryProblem):
    """One thing wrong with a reference-data file: where (file, line, key/column) and why,
    reported exactly like a registry problem (``file:line: column: reason``)."""

    __slots__ = ()


class ReferenceDataError(AggregatorError):
    """A reference-data file (packaged or the user's override) is invalid.

    `problems` lists every problem found, one per line in ``str()``, each naming the file, the
    physical line (header = 1) and the column or key.
    """

    def __init__(self, problems: Iterable[ReferenceProblem]) -> None:
        self.problems: tuple[ReferenceProblem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class MissingReferenceError(AggregatorError):
    """No reference value exists for something the computation needs (a carrier's coefficient,
    an emission factor for a scope, a selected 等价值 year); the message says what to supply."""


class InputFrameError(AggregatorError):
    """An input frame lacks a required column or has a column of the wrong type."""
