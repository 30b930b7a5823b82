"""Chunks: which enterprises one pass of a range computation holds in memory at a time.

`run_range` (`greenmon.aggregator.service`) does not hold a range's readings at once: it
processes whole enterprises in groups, each group over the whole range. Everything the
aggregator computes per meter (classification, spike limits learnt from the meter's own data,
windows) and per enterprise (comprehensive and double-control sums) depends only on the
enterprise's own meters, so a group's results are exactly those of the unchunked computation;
only the intensity ranks compare enterprises, and they are computed once from every group's
monthly totals at the end.

This module owns choosing the groups. `ChunkPlanner` packs enterprises, in id order, into
groups whose expected readings stay within a budget. The expectation starts from the registry
(each meter reads every ``interval_s`` seconds, 900 unless said otherwise) and learns from what
the groups already read really held (`observe`): a fleet reading every minute gets smaller
groups after the first, a fleet that is half silent bigger ones. The first group is an eighth
of the budget, so a wrong guess costs little memory. A single enterprise larger than the budget
is a group on its own (its range is then held at once: memory grows with such an enterprise's
range, not with the fleet).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

import polars as pl

__all__ = ["DEFAULT_CHUNK_READINGS", "ChunkPlanner", "expected_readings"]

#: Readings per group by default: the computation's working memory is about 800 bytes per
#: reading (about 120 MB here), and while one group is computed the next one is read.
DEFAULT_CHUNK_READINGS: Final = 150_000
_FIRST_SHARE: Final = 8  # the first group gets budget / 8
_MIN_DENSITY: Final = 0.25  # never plan on fewer than a quarter of the expected readings


def expected_readings(meters: pl.DataFrame, hours: float) -> pl.DataFrame:
    """Per enterprise (id order): ``enterprise_id``, ``expected`` readings over `hours`, one
    reading per meter every ``interval_s`` seconds."""
    return (
        meters.group_by("enterprise_id")
        .agg((3600.0 / pl.col("interval_s").cast(pl.Float64)).sum().alias("per_h"))
        .select("enterprise_id", (pl.col("per_h") * max(hours, 0.0)).alias("expected"))
        .sort("enterprise_id")
    )


@dataclass
class ChunkPlanner:
    """Groups of enterprise ids, each expected to hold at most `budget` readings.

    Iterate to get the groups; call `observe` after reading each one so that the next is sized
    by the density seen so far. `budget` None: one group of every enterprise (unchunked).
    """

    enterprises: Sequence[str]
    expected: Sequence[float]
    budget: int | None = DEFAULT_CHUNK_READINGS
    observed: int = 0
    planned: float = 0.0
    groups: int = field(default=0, init=False)
    _next: int = field(default=0, init=False)

    @classmethod
    def for_range(
        cls, meters: pl.DataFrame, hours: float, budget: int | None = DEFAULT_CHUNK_READINGS
    ) -> ChunkPlanner:
        table = expected_readings(meters, hours)
        return cls(
            table.get_column("enterprise_id").to_list(),
            table.get_column("expected").to_list(),
            budget,
        )

    @property
    def density(self) -> float:
        """Readings seen per reading expected so far (1 before anything was seen)."""
        if self.planned <= 0:
            return 1.0
        return max(_MIN_DENSITY, self.observed / self.planned)

    def observe(self, group: Sequence[str], readings: int) -> None:
        """Record that `group` held `readings` readings."""
        index = {e: i for i, e in enumerate(self.enterprises)}
        self.planned += sum(self.expected[index[e]] for e in group)
        self.observed += readings

    def remaining(self) -> int:
        return len(self.enterprises) - self._next

    def __iter__(self) -> Iterator[list[str]]:
        return self

    def __next__(self) -> list[str]:
        start = self._next
        if start >= len(self.enterprises):
            raise StopIteration
        if self.budget is None:
            end = len(self.enterprises)
        else:
            limit = self.budget / self.density
            if self.groups == 0:
                limit /= _FIRST_SHARE
            end, total = start + 1, self.expected[start]  # at least one enterprise
            while end < len(self.enterprises) and total + self.expected[end] <= limit:
                total += self.expected[end]
                end += 1
        self._next = end
        self.groups += 1
        return list(self.enterprises[start:end])
