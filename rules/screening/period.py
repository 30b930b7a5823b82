"""The period a judgement covers: a calendar year, or the year to date as of a moment.

`Period.of(year, as_of, tz)`: from the local 1 January of `year` to the start of the local day
holding `as_of` (only whole days count: a daily window is either in or out), or to the next 1
January when `as_of` is absent or later. Ratios that divide by monthly statistics (intensity,
unit-product energy, tax per mu) use the *whole months* inside the period — statistics come per
month — and `ratio_end` is where they stop; everything else (totals, completeness, renewable
share) uses every day of the period. Both are stated in every output (`describe`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from greenmon.rules.errors import RulesError

__all__ = ["Period", "PeriodError"]


class PeriodError(RulesError):
    """The requested year or --as-of cannot be judged (e.g. --as-of before the year starts)."""


def _local(year: int, month: int, day: int, tz: str) -> datetime:
    return datetime(year, month, day, tzinfo=ZoneInfo(tz)).astimezone(UTC)


@dataclass(frozen=True)
class Period:
    """A judged period: UTC instants ``start`` (local 1 January) .. ``end`` (exclusive)."""

    year: int
    start: datetime
    end: datetime
    year_end: datetime
    tz: str
    as_of: datetime | None

    @classmethod
    def of(cls, year: int, as_of: datetime | None = None, tz: str = "Asia/Shanghai") -> Period:
        if not 2000 <= year <= 2100:
            raise PeriodError(f"--year must be between 2000 and 2100, got {year}")
        start, year_end = _local(year, 1, 1, tz), _local(year + 1, 1, 1, tz)
        end = year_end
        if as_of is not None:
            local = as_of.astimezone(ZoneInfo(tz))
            day = _local(local.year, local.month, local.day, tz)
            if day <= start:
                raise PeriodError(
                    f"--as-of {local:%Y-%m-%d %H:%M} is not after the start of {year}: "
                    "nothing of the year can be judged yet"
                )
            end = min(day, year_end)
        return cls(year=year, start=start, end=end, year_end=year_end, tz=tz, as_of=as_of)

    @property
    def whole_year(self) -> bool:
        return self.end == self.year_end

    @property
    def days(self) -> int:
        return round((self.end - self.start).total_seconds() / 86_400)

    @property
    def days_in_year(self) -> int:
        return round((self.year_end - self.start).total_seconds() / 86_400)

    @property
    def months(self) -> int:
        """Whole months inside the period (1 .. 12; 0 before the end of January)."""
        local = self.end.astimezone(ZoneInfo(self.tz))
        if self.whole_year:
            return 12
        return local.month - 1 if local.year == self.year else 12

    @property
    def ratio_end(self) -> datetime:
        """Where the whole months end (the local first of the month after the last one)."""
        if self.months == 12:
            return self.year_end
        return _local(self.year, self.months + 1, 1, self.tz)

    def month_labels(self) -> list[str]:
        return [f"{self.year}-{m:02d}" for m in range(1, self.months + 1)]

    def last_day(self) -> str:
        local = self.end.astimezone(ZoneInfo(self.tz))
        previous = datetime.fromordinal(local.date().toordinal() - 1)
        return previous.strftime("%Y-%m-%d")

    def describe(self) -> dict[str, object]:
        """What the outputs say about the coverage."""
        months = self.month_labels()
        return {
            "year": self.year,
            "from": f"{self.year}-01-01",
            "to": self.last_day(),
            "days": self.days,
            "days_in_year": self.days_in_year,
            "whole_year": self.whole_year,
            "as_of": self.as_of.astimezone(ZoneInfo(self.tz)).isoformat() if self.as_of else None,
            "ratio_months": f"{months[0]}..{months[-1]}" if months else None,
            "months": self.months,
            "timezone": self.tz,
        }

    def headline(self) -> str:
        """One line: 'year 2025 (365 of 365 days)' or the year to date with its months."""
        if self.whole_year:
            return f"year {self.year} (whole year, {self.days} days)"
        months = self.month_labels()
        ratios = (
            f"ratios over {months[0]}..{months[-1]}"
            if months
            else "no whole month yet: ratios not computed"
        )
        return (
            f"{self.year} to date: {self.year}-01-01..{self.last_day()} "
            f"({self.days} of {self.days_in_year} days; {ratios})"
        )
