"""Load profiles: the deterministic shapes behind every simulated meter (no randomness here).

This module owns *when* factories use energy, as pure vectorised functions of time:

- the calendar (`Calendar`): weekdays, China's public holidays and make-up working days
  (调休) from ``data/holidays.csv``, and the distance to the Spring Festival holiday;
- per shift pattern (``one_shift``, ``two_shift``, ``three_shift``, ``continuous``; parameters
  in ``data/patterns.csv`` and ``data/hourly.csv``): the daily *activity* (1 on a working day,
  less on Saturdays, Sundays, holidays, and around the Spring Festival, when many plants stop
  for two weeks or more) and the working-day hourly shape; the load at a moment is
  ``base + (shape(hour) - base) * activity(day)``, so a continuous plant (base = shape = 1) is
  flat and a one-shift plant drops to its base load at night, on Sundays and holidays;
- the season: daily mean temperature from ``data/climate.csv`` turned into a cooling index
  (electricity for air conditioning) and a heating index (gas and steam);
- the sun: a clear-sky PV shape from the sun's elevation at Nantong's latitude.

Times are epoch milliseconds (UTC) in int64 arrays; local time is China Standard Time
(UTC+8, no daylight saving), which is how factories and the State Council count days.
Random variation (noise, weather, faults) is added by `greenmon.simulators.world`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import Final

import numpy as np
import polars as pl

from greenmon.simulators.params import PATTERNS, Params, load_params

__all__ = [
    "CST_OFFSET_MS",
    "MS_PER_DAY",
    "Calendar",
    "activity",
    "annual_norms",
    "calendar",
    "cooling_index",
    "day_number",
    "day_of",
    "heating_index",
    "load_shape",
    "local_hour",
    "solar_shape",
    "temperature",
    "working_shape",
]

MS_PER_DAY: Final = 86_400_000
CST_OFFSET_MS: Final = 8 * 3_600_000
_EPOCH_DAY: Final = date(1970, 1, 1).toordinal()
_FloatArray = np.ndarray


def day_of(ms: np.ndarray) -> np.ndarray:
    """Local (China) day number, days since 1970-01-01, of each epoch-ms instant."""
    return (np.asarray(ms, dtype=np.int64) + CST_OFFSET_MS) // MS_PER_DAY


def local_hour(ms: np.ndarray) -> np.ndarray:
    """Local (China) clock hour as a float in [0, 24)."""
    return ((np.asarray(ms, dtype=np.int64) + CST_OFFSET_MS) % MS_PER_DAY) / 3_600_000.0


def day_number(d: date) -> int:
    """Day number (days since 1970-01-01) of a calendar date."""
    return d.toordinal() - _EPOCH_DAY


@dataclass(frozen=True)
class Calendar:
    """Day types for consecutive local days ``first .. first + n - 1`` (day numbers)."""

    days: np.ndarray  # int64 day numbers
    weekday: np.ndarray  # 0 = Monday
    holiday: np.ndarray  # bool: an official holiday (放假) day
    makeup: np.ndarray  # bool: a weekend day that is a working day (调休上班)
    spring_festival: np.ndarray  # bool: an official Spring Festival holiday day
    sf_distance: np.ndarray  # int64: days before (<0) / after (>0) the nearest SF block, 0 inside
    covered: np.ndarray  # bool: the holiday table covers this day's year

    @property
    def uncovered_years(self) -> list[int]:
        years = {date.fromordinal(int(d) + _EPOCH_DAY).year for d in self.days[~self.covered]}
        return sorted(years)


def calendar(first_day: int, n_days: int, params: Params | None = None) -> Calendar:
    """The calendar of `n_days` local days from day number `first_day`."""
    p = params or load_params()
    days = np.arange(first_day, first_day + n_days, dtype=np.int64)
    hol = p.holidays.with_columns(
        (pl.col("date").cast(pl.Int64)).alias("day")  # Date -> days since epoch
    )
    holiday_days = hol.filter(pl.col("kind") == "holiday")["day"].to_numpy()
    makeup_days = hol.filter(pl.col("kind") == "workday")["day"].to_numpy()
    sf = hol.filter((pl.col("kind") == "holiday") & (pl.col("name") == "春节"))
    blocks = sf.group_by("year").agg(pl.col("day").min().alias("a"), pl.col("day").max().alias("b"))
    blocks = blocks.sort("year")
    years_covered = set(hol["year"].unique().to_list())
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
    sf_distance = np.full(n_days, 10_000, dtype=np.int64)
    for a, b in zip(blocks["a"].to_list(), blocks["b"].to_list(), strict=True):
        dist = np.where(days < a, days - a, np.where(days > b, days - b, 0))
        closer = np.abs(dist) < np.abs(sf_distance)
        sf_distance = np.where(closer, dist, sf_distance)
    year_of = np.array([date.fromordinal(int(d) + _EPOCH_DAY).year for d in (days[0], days[-1])])
    covered = np.zeros(n_days, dtype=bool)
    for y in range(int(year_of[0]), int(year_of[1]) + 1):
        if y in years_covered:
            lo, hi = day_number(date(y, 1, 1)), day_number(date(y + 1, 1, 1))
            covered |= (days >= lo) & (days < hi)
    return Calendar(
        days=days,
        weekday=weekday,
        holiday=np.isin(days, holiday_days),
        makeup=np.isin(days, makeup_days),
        spring_festival=sf_distance == 0,
        sf_distance=sf_distance,
        covered=covered,
    )


@cache
def _pattern_table() -> dict[str, dict[str, float]]:
    p = load_params()
    return {row["pattern"]: row for row in p.patterns.to_dicts()}


def activity(pattern: str, cal: Calendar) -> np.ndarray:
    """Daily activity (0..1) of a shift pattern: 1 on working days, the pattern's Saturday,
    Sunday or holiday factor otherwise, its Spring Festival factor during the official
    holiday, ramping back to normal over the lead/lag days around it."""
    row = _pattern_table()[pattern]
    sat, sun, hol, sf = (
        float(row["saturday"]),
        float(row["sunday"]),
        float(row["holiday"]),
        float(row["spring_festival"]),
    )
    lead, lag = int(row["sf_lead_days"]), int(row["sf_lag_days"])
    a = np.ones(cal.days.shape, dtype=np.float64)
    a = np.where(cal.weekday == 5, sat, a)
    a = np.where(cal.weekday == 6, sun, a)
    a = np.where(cal.makeup, 1.0, a)
    a = np.where(cal.holiday, hol, a)
    a = np.where(cal.spring_festival, np.minimum(sf, a), a)
    d = cal.sf_distance
    before = (d < 0) & (d >= -lead)
    after = (d > 0) & (d <= lag)
    ramp_before = sf + (1.0 - sf) * (-d) / (lead + 1)
    ramp_after = sf + (1.0 - sf) * d / (lag + 1)
    a = np.where(before, np.minimum(a, ramp_before), a)
    a = np.where(after, np.minimum(a, ramp_after), a)
    return a


def working_shape(pattern: str, hour: np.ndarray) -> np.ndarray:
    """The working-day load factor of a pattern at local clock hours (linear between hours)."""
    p = load_params()
    factors = p.hourly.filter(pl.col("pattern") == pattern).sort("hour")["factor"].to_numpy()
    xs = np.arange(25, dtype=np.float64)
    ys = np.append(factors, factors[0])
    return np.interp(np.asarray(hour, dtype=np.float64), xs, ys)


def load_shape(pattern: str, mid_ms: np.ndarray, cal: Calendar) -> np.ndarray:
    """Relative load of `pattern` at instants `mid_ms` (typically interval midpoints)."""
    row = _pattern_table()[pattern]
    base = float(row["base"])
    day_index = day_of(mid_ms) - cal.days[0]
    act = activity(pattern, cal)[day_index]
    return base + (working_shape(pattern, local_hour(mid_ms)) - base) * act


def temperature(days: np.ndarray) -> np.ndarray:
    """Daily mean temperature (°C) of local day numbers, interpolated between mid-months."""
    p = load_params()
    monthly = p.climate["mean_temp_c"].to_numpy().astype(np.float64)
    doy = np.array(
        [date.fromordinal(int(d) + _EPOCH_DAY).timetuple().tm_yday for d in np.unique(days)]
    )
    mids = 15.2 + 30.44 * np.arange(12)
    xs = np.concatenate([mids - 365.25, mids, mids + 365.25])
    ys = np.tile(monthly, 3)
    table = dict(zip(np.unique(days).tolist(), np.interp(doy, xs, ys).tolist(), strict=True))
    return np.array([table[int(d)] for d in days], dtype=np.float64)


def cooling_index(temp_c: np.ndarray) -> np.ndarray:
    p = load_params()
    return np.maximum(0.0, temp_c - p.const("cooling_base_c")) / p.const("cooling_span_c")


def heating_index(temp_c: np.ndarray) -> np.ndarray:
    p = load_params()
    return np.maximum(0.0, p.const("heating_base_c") - temp_c) / p.const("heating_span_c")


def solar_shape(mid_ms: np.ndarray) -> np.ndarray:
    """Clear-sky PV output shape (0..1) at instants `mid_ms`, from the sun's elevation."""
    p = load_params()
    ms = np.asarray(mid_ms, dtype=np.int64)
    days = day_of(ms)
    uniq, inverse = np.unique(days, return_inverse=True)
    doy_u = np.array([date.fromordinal(int(d) + _EPOCH_DAY).timetuple().tm_yday for d in uniq])
    doy = doy_u[inverse].astype(np.float64)
    lat = np.radians(p.const("latitude"))
    decl = np.radians(23.44) * np.sin(2 * np.pi * (284 + doy) / 365.0)
    solar_hour = local_hour(ms) + (p.const("longitude") - 120.0) / 15.0
    hour_angle = np.radians(15.0 * (solar_hour - 12.0))
    sin_el = np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(hour_angle)
    return np.power(np.maximum(0.0, sin_el), 1.15)


@cache
def annual_norms(year: int, step_s: int = 900) -> Mapping[str, tuple[float, float, float]]:
    """Per pattern, the year's means of shape, shape x cooling index and shape x heating index.

    A meter with seasonal sensitivities (cooling c, heating h) averages
    ``m0 + c * m1 + h * m2`` over the year; dividing by it makes a meter's designed annual
    quantity come out right. Also the key ``"solar"``: (mean clear-sky PV shape, 0, 0).
    """
    first = day_number(date(year, 1, 1))
    n_days = day_number(date(year + 1, 1, 1)) - first
    cal = calendar(first, n_days)
    start_ms = first * MS_PER_DAY - CST_OFFSET_MS
    mid = start_ms + (np.arange(n_days * 86_400 // step_s) * step_s + step_s // 2) * 1000
    temp = temperature(day_of(mid))
    ci, hi = cooling_index(temp), heating_index(temp)
    out: dict[str, tuple[float, float, float]] = {}
    for pattern in PATTERNS:
        shape = load_shape(pattern, mid, cal)
        out[pattern] = (float(shape.mean()), float((shape * ci).mean()), float((shape * hi).mean()))
    out["solar"] = (float(solar_shape(mid).mean()), 0.0, 0.0)
    return out
