"""The simulated world: what every meter truly consumes during a run, and its true readings.

This module owns the *true* quantities, before anything goes wrong on the way to the broker.
For a fleet and a run window it draws, vectorised over all meters and time steps:

- each boundary meter's consumption on a base grid: designed annual quantity x shift-pattern
  shape x season (cooling/heating index) x the enterprise's daily production level x
  multiplicative noise (log-normal, mean 1), normalised so a year adds up to the design;
- on-site PV from the sun's path x a city-wide daily clearness (the same weather for every
  factory on a date, drawn per date from the seed); with PV, the electricity boundary meter
  measures the import ``max(0, load - pv)`` and the export meter ``max(0, pv - load)``;
- register counting: display units are whole numbers; the register advances by
  ``floor(cumulative consumption / multiplier)``, so nothing is lost to rounding and a
  reading interval's true quantity is exactly ``display delta x multiplier``;
- sub-meters from their parent's *counted* quantity on every base step, times a weight and a
  factor in [0.9, 1.1], floored to whole display units: their sum never exceeds the parent;
- interval meters (PV, raw-material gas, diesel): the consumption of each of their own
  intervals, rounded to their decimals.

Reading times: register meters are read at ``start + k * step`` for ``k = 0 .. n`` (``k = 0`` is
the baseline reading at the start, covering ``[start - step, start)``); interval meters at
``start + k * interval_s`` for ``k = 1 ..`` (each covering the interval before it). Faults are
applied afterwards by `greenmon.simulators.faults`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from functools import reduce
from typing import Final

import numpy as np
import polars as pl

from greenmon.simulators.errors import SimulatorError
from greenmon.simulators.fleet import Fleet
from greenmon.simulators.params import PATTERNS, load_params
from greenmon.simulators.profiles import (
    annual_norms,
    calendar,
    cooling_index,
    day_of,
    heating_index,
    load_shape,
    solar_shape,
    temperature,
)

__all__ = ["MAX_READINGS", "Grid", "World", "make_grid", "simulate_world"]

# SeedSequence spawn keys (purpose, ...) of the run's random streams.
STREAM_NOISE: Final = 11
STREAM_DAY: Final = 12
STREAM_WEATHER: Final = 13
STREAM_SUB: Final = 14
STREAM_PV_SITE: Final = 15
MAX_READINGS: Final = 5_000_000  # meters x readings in one run: about 1.6 KB of memory each


@dataclass(frozen=True)
class Grid:
    """The run's time grid. ``n`` step intervals in the run; the base grid (``base_s``, the
    gcd of the step and every interval meter's interval) starts one step before ``start_ms``."""

    start_ms: int
    step_s: int
    n: int
    base_s: int

    @property
    def origin_ms(self) -> int:
        return self.start_ms - self.step_s * 1000

    @property
    def n_base(self) -> int:
        return (self.n + 1) * self.step_s // self.base_s

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.n * self.step_s * 1000

    def base_index(self, t_ms: np.ndarray | int) -> np.ndarray:
        """Base-grid index of (grid-aligned) instants."""
        return (np.asarray(t_ms, dtype=np.int64) - self.origin_ms) // (self.base_s * 1000)


def make_grid(fleet: Fleet, start_ms: int, days: float, step_s: int) -> Grid:
    """Check the run window against the fleet's interval meters and build its grid."""
    if step_s <= 0:
        raise SimulatorError(f"--interval must be a positive number of seconds, got {step_s}")
    total_s = days * 86_400
    if not days > 0:
        raise SimulatorError(f"--days must be > 0, got {days:g}")
    if not math.isclose(total_s, round(total_s)) or round(total_s) % step_s:
        raise SimulatorError(f"--days {days:g} is not a whole number of --interval {step_s}s steps")
    n = round(total_s) // step_s
    intervals = fleet.meters.filter(pl.col("kind") == "interval")["interval_s"].drop_nulls()
    base_s = reduce(math.gcd, [int(s) for s in intervals.unique().to_list()], step_s)
    grid = Grid(start_ms=start_ms, step_s=step_s, n=n, base_s=base_s)
    readings = fleet.meters.height * (n + 1)
    if readings > MAX_READINGS:
        raise SimulatorError(
            f"run too large: {fleet.meters.height} meters x {n + 1} readings = {readings:,} "
            f"meter readings (limit {MAX_READINGS:,}, about 1.6 KB of memory each); "
            "simulate fewer days or fewer enterprises per run"
        )
    return grid


@dataclass(frozen=True)
class World:
    """True readings of every meter (fleet order). ``reg_*``: register meters,
    ``counts[i, k]`` the display units counted in reading interval k (k = 0 .. n), before any
    register start offset; ``iv_*``: interval meters, ``iv_units[i]`` the values (in
    10**-decimals units) of readings k = 1 .. len."""

    grid: Grid
    reg_meter: np.ndarray  # fleet row index of each register meter
    counts: np.ndarray  # int64 (n_reg, n + 1)
    iv_meter: np.ndarray  # fleet row index of each interval meter
    iv_period_s: np.ndarray  # int64
    iv_decimals: np.ndarray  # int64
    iv_units: list[np.ndarray]  # int64 per interval meter
    weather: np.ndarray  # daily clearness of each local day of the run (for reports)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _year_seconds(year: int) -> int:
    return (date(year + 1, 1, 1) - date(year, 1, 1)).days * 86_400


def simulate_world(fleet: Fleet, grid: Grid, seed: int) -> World:
    """Draw the true consumption and readings of every meter of `fleet` over `grid`."""
    p = load_params()
    sim = fleet.sim_meters
    meters = fleet.meters
    n_m = meters.height
    nb = grid.n_base
    base_ms = grid.base_s * 1000
    mid = grid.origin_ms + np.arange(nb, dtype=np.int64) * base_ms + base_ms // 2
    first_day = int(day_of(np.array([grid.origin_ms]))[0])
    last_day = int(day_of(np.array([grid.origin_ms + nb * base_ms - 1]))[0])
    n_days = last_day - first_day + 1
    cal = calendar(first_day, n_days)
    day_idx = day_of(mid) - first_day
    temp = temperature(cal.days)[day_idx]
    ci, hi = cooling_index(temp), heating_index(temp)
    year = int(fleet.meta["year"])
    norms = annual_norms(year)
    frac = grid.base_s / _year_seconds(year)  # share of a year in one base step

    source = sim["source"].to_numpy()
    pattern_idx = (
        sim["pattern"]
        .replace_strict({name: i for i, name in enumerate(PATTERNS)}, return_dtype=pl.Int64)
        .to_numpy()
    )
    ent_ids = meters["enterprise_id"].to_numpy()
    ent_codes, ent_index = np.unique(ent_ids, return_inverse=True)
    annual = sim["annual_quantity"].to_numpy()
    noise_sigma = sim["noise_sigma"].to_numpy()
    cool = sim["cooling"].to_numpy()
    heat = sim["heating"].to_numpy()

    q = np.zeros((n_m, nb), dtype=np.float64)  # true quantity per base step (meter unit)
    is_load = np.isin(source, ["load", "import"])
    load_rows = np.flatnonzero(is_load)
    if load_rows.size:
        shapes = np.stack([load_shape(pt, mid, cal) for pt in PATTERNS])  # (4, nb)
        m0 = np.array([norms[pt][0] for pt in PATTERNS])[pattern_idx[load_rows]]
        m1 = np.array([norms[pt][1] for pt in PATTERNS])[pattern_idx[load_rows]]
        m2 = np.array([norms[pt][2] for pt in PATTERNS])[pattern_idx[load_rows]]
        norm = m0 + cool[load_rows] * m1 + heat[load_rows] * m2
        season = 1.0 + cool[load_rows, None] * ci[None, :] + heat[load_rows, None] * hi[None, :]
        sigma = noise_sigma[load_rows, None]
        z = _rng(seed, STREAM_NOISE).standard_normal((load_rows.size, nb))
        noise = np.exp(sigma * z - 0.5 * sigma * sigma)
        day_sigma = p.const("day_sigma")
        day_level = _rng(seed, STREAM_DAY).lognormal(
            -0.5 * day_sigma**2, day_sigma, (ent_codes.size, n_days)
        )
        level = day_level[ent_index[load_rows]][:, day_idx]
        q[load_rows] = (
            (annual[load_rows] * frac / norm)[:, None]
            * shapes[pattern_idx[load_rows]]
            * season
            * noise
            * level
        )

    # PV: the same weather for the whole city on a date (drawn per date, not per run).
    alpha, beta = p.const("clear_alpha"), p.const("clear_beta")
    weather = np.array(
        [_rng(seed, STREAM_WEATHER, int(d)).beta(alpha, beta) for d in cal.days],
        dtype=np.float64,
    )
    pv_rows = np.flatnonzero(source == "pv")
    if pv_rows.size:
        kwp = sim["pv_kwp"].to_numpy()[pv_rows]
        solar_mean = norms["solar"][0]
        clear_mean = alpha / (alpha + beta)
        site = _rng(seed, STREAM_PV_SITE).lognormal(-0.5 * 0.05**2, 0.05, (pv_rows.size, n_days))
        yield_per_step = p.const("pv_yield_kwh_per_kwp") * frac
        shape = solar_shape(mid) / solar_mean * (weather[day_idx] / clear_mean)
        q[pv_rows] = (kwp * yield_per_step)[:, None] * shape[None, :] * site[:, day_idx]

    # Electricity import/export where there is PV: the boundary meter sees the net flow.
    meter_row = {mid_: i for i, mid_ in enumerate(meters["meter_id"].to_list())}
    pv_by_ent = {ent_ids[i]: i for i in pv_rows}
    exports: list[tuple[int, int]] = []  # (export row, import row)
    for row in np.flatnonzero(source == "import"):
        pv = pv_by_ent.get(ent_ids[row])
        if pv is None:
            continue
        load = q[row].copy()
        q[row] = np.maximum(0.0, load - q[pv])
        exp_rows = np.flatnonzero((source == "export") & (ent_ids == ent_ids[row]))
        for e in exp_rows:
            q[e] = np.maximum(0.0, q[pv] - load)
            exports.append((int(e), int(row)))

    # Registers: whole display units from the cumulative quantity (nothing lost to rounding).
    kind = meters["kind"].to_numpy()
    mult = meters["multiplier"].fill_null(1).cast(pl.Float64).to_numpy()
    reg_rows = np.flatnonzero(kind == "register")
    step_per_base = grid.step_s // grid.base_s
    read_at = (np.arange(grid.n + 1) + 1) * step_per_base  # base index just after each reading
    base_counts = np.zeros((n_m, nb), dtype=np.int64)
    direct = reg_rows[source[reg_rows] != "sub"]
    if direct.size:
        cum = np.floor(np.cumsum(q[direct] / mult[direct, None], axis=1))
        cum = np.concatenate([np.zeros((direct.size, 1)), cum], axis=1).astype(np.int64)
        base_counts[direct] = np.diff(cum, axis=1)
    sub_rows = reg_rows[source[reg_rows] == "sub"]
    if sub_rows.size:
        parents = np.array(
            [meter_row[pid] for pid in sim["parent_meter_id"].to_numpy()[sub_rows]], dtype=np.int64
        )
        weight = sim["sub_weight"].to_numpy()[sub_rows]
        u = _rng(seed, STREAM_SUB).uniform(0.9, 1.1, (sub_rows.size, nb))
        parent_q = base_counts[parents] * mult[parents, None]  # counted, not true, quantity
        base_counts[sub_rows] = np.floor(
            parent_q * weight[:, None] * u / mult[sub_rows, None]
        ).astype(np.int64)
        q[sub_rows] = base_counts[sub_rows] * mult[sub_rows, None]
    cum_all = np.concatenate(
        [np.zeros((reg_rows.size, 1), dtype=np.int64), np.cumsum(base_counts[reg_rows], axis=1)],
        axis=1,
    )
    at_reads = cum_all[:, read_at]
    counts = np.diff(np.concatenate([np.zeros((reg_rows.size, 1), dtype=np.int64), at_reads], 1))

    # Interval meters: each reading is the consumption of its own interval, rounded.
    iv_rows = np.flatnonzero(kind == "interval")
    period = meters["interval_s"].fill_null(900).to_numpy()
    decimals = sim["decimals"].fill_null(0).to_numpy()
    iv_units: list[np.ndarray] = []
    run_start_base = step_per_base
    cum_q = np.concatenate([np.zeros((n_m, 1)), np.cumsum(q, axis=1)], axis=1)
    for row in iv_rows:
        per_base = int(period[row]) // grid.base_s
        n_read = (grid.n * grid.step_s) // int(period[row])
        edges = run_start_base + np.arange(n_read + 1) * per_base
        sums = np.diff(cum_q[row, edges])
        iv_units.append(np.round(np.maximum(sums, 0.0) * 10.0 ** decimals[row]).astype(np.int64))
    return World(
        grid=grid,
        reg_meter=reg_rows.astype(np.int64),
        counts=counts,
        iv_meter=iv_rows.astype(np.int64),
        iv_period_s=period[iv_rows].astype(np.int64),
        iv_decimals=decimals[iv_rows].astype(np.int64),
        iv_units=iv_units,
        weather=weather,
    )
