"""Faults on demand: what goes wrong between a meter and the broker, placed exactly.

This module owns the fault vocabulary, the ``--faults`` specification, and the placement of
faults that change *readings* (the message-level ones are placed by
`greenmon.simulators.messages`). Every fault is placed an exact number of times,
``round(rate x opportunities)``, at positions drawn from the seed, so tests can check counts
exactly. Opportunities:

============== ======================================================= =======================
fault          what happens                                            rate counted per
============== ======================================================= =======================
rollover       a register starts close below its rollover and wraps    register meter
               once (after ``rollover`` comes 0: the wrap adds
               ``rollover + 1``)
reset          meter replaced inside an interval; the new register     register meter (each
               starts at 0..5 display units                            replaced at most once)
spike          one reading sent as true register + 60..200 x a         register reading with a
               typical interval's consumption; the next is true again  next reading
gap_catchup    gateway offline for 1..16 intervals, then sends the     gateway-interval (each
               missed readings late (one catch-up message with         interval in a gap counts)
               per-reading ``ts``)
gap_lost       gateway offline for 1..16 intervals; the missed         gateway-interval
               readings are never sent
clock_skew     a gateway's device clock is off by ±1..180 s            gateway
duplicate      a message published twice                               live message
out_of_order   a message held back until 1..4 later reading times of   live message
               its gateway have been sent
disconnect     the gateway disconnects and reconnects before a         live message
               message (QoS 1: nothing lost)
malformed      extra messages (never instead of a valid reading):      live message (``malformed``
               bad_json, unknown_meter, wrong_enterprise, nan,         is shared out over the
               wrong_unit                                              five kinds in turn)
============== ======================================================= =======================

Faults never overlap in ways that would make the truth ambiguous: resets and spikes keep two
intervals away from each other, from gaps and from rollover meters; gaps on a gateway are
separated by at least one sent interval and end before the last reading.

Specification: ``name=rate`` items separated by commas (``spike=0.001,gap_lost=0.01``), ``all=R``
(every kind at R), or the presets ``none`` and ``demo``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import numpy as np
import polars as pl

from greenmon.simulators.errors import FaultSpecError
from greenmon.simulators.fleet import Fleet
from greenmon.simulators.world import World

__all__ = [
    "BIT",
    "DEMO_RATES",
    "FAULT_KINDS",
    "MALFORMED_KINDS",
    "MAX_GAP_INTERVALS",
    "FaultSpec",
    "Faulted",
    "apply_world_faults",
    "parse_faults",
]

FAULT_KINDS: Final = (
    "rollover",
    "reset",
    "spike",
    "gap_catchup",
    "gap_lost",
    "duplicate",
    "out_of_order",
    "clock_skew",
    "disconnect",
)
MALFORMED_KINDS: Final = ("bad_json", "unknown_meter", "wrong_enterprise", "nan", "wrong_unit")
BIT: Final = MappingProxyType({name: 1 << i for i, name in enumerate(FAULT_KINDS)})
MAX_GAP_INTERVALS: Final = 16
SPIKE_FACTOR: Final = (60.0, 200.0)
RESET_START_MAX: Final = 5
SKEW_MS: Final = (1_000, 180_000)
DEMO_RATES: Final = MappingProxyType(
    {
        "rollover": 0.02,
        "reset": 0.01,
        "spike": 0.0005,
        "gap_catchup": 0.01,
        "gap_lost": 0.005,
        "duplicate": 0.005,
        "out_of_order": 0.005,
        "clock_skew": 0.05,
        "disconnect": 0.002,
        "malformed": 0.005,
    }
)
_ALL_NAMES: Final = (*FAULT_KINDS, "malformed", *MALFORMED_KINDS)
STREAM_FAULTS: Final = 21


@dataclass(frozen=True)
class FaultSpec:
    """Rates per fault kind (``malformed`` = shared out over the five malformed kinds)."""

    rates: Mapping[str, float] = field(default_factory=dict)

    def rate(self, kind: str) -> float:
        return float(self.rates.get(kind, 0.0))

    def malformed_counts(self, opportunities: int) -> dict[str, int]:
        """Extra messages per malformed kind for `opportunities` live messages."""
        counts = {k: round(self.rate(k) * opportunities) for k in MALFORMED_KINDS}
        shared = round(self.rate("malformed") * opportunities)
        for i in range(shared):
            counts[MALFORMED_KINDS[i % len(MALFORMED_KINDS)]] += 1
        return counts

    def __str__(self) -> str:
        items = [f"{k}={self.rates[k]:g}" for k in _ALL_NAMES if self.rates.get(k)]
        return ",".join(items) or "none"


def parse_faults(text: str | None) -> FaultSpec:
    """Parse ``name=rate[,name=rate...]``, ``all=rate``, ``none`` or ``demo``."""
    rates: dict[str, float] = {}
    for raw in (text or "").split(","):
        item = raw.strip()
        if not item or item == "none":
            continue
        if item == "demo":
            rates.update(DEMO_RATES)
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise FaultSpecError(
                f"fault {item!r}: expected name=rate (e.g. spike=0.001), 'demo' or 'none'"
            )
        try:
            rate = float(value)
        except ValueError:
            raise FaultSpecError(
                f"fault {name!r}: rate {value.strip()!r} is not a number"
            ) from None
        if not 0.0 <= rate <= 1.0:
            raise FaultSpecError(f"fault {name!r}: rate must be between 0 and 1, got {rate:g}")
        if name == "all":
            rates.update({k: rate for k in (*FAULT_KINDS, "malformed")})
        elif name in _ALL_NAMES:
            rates[name] = rate
        else:
            raise FaultSpecError(f"unknown fault {name!r} (known: {', '.join(_ALL_NAMES)}, all)")
    return FaultSpec(MappingProxyType({k: v for k, v in rates.items() if v > 0}))


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


@dataclass(frozen=True)
class Faulted:
    """Readings after the reading-level faults, one row per meter and nominal reading.

    ``readings`` columns: ``row`` (fleet meter index), ``k``, ``gateway`` (gateway index),
    ``start_ms``, ``end_ms`` (true time), ``quantity`` (true, meter unit after multiplier),
    ``register`` (true display units, null for interval meters), ``units`` (what is sent, in
    10**-``decimals`` display units: register or interval value, spike included),
    ``decimals``, ``status`` (``live``, ``catchup`` or ``lost``), ``flags`` (fault bits).
    ``gaps``: ``gateway, a, b, kind`` (step indices, inclusive). ``skew_ms``: per gateway.
    """

    readings: pl.DataFrame
    gaps: pl.DataFrame
    skew_ms: np.ndarray
    counts: dict[str, int]


def _place(
    rng: np.random.Generator,
    free: np.ndarray,
    count: int,
    radius: int,
    *,
    one_per_row: bool,
    what: str,
) -> list[tuple[int, int]]:
    """Choose `count` cells of the boolean matrix `free`, none within `radius` columns of
    another on the same row (or one per row); mark their neighbourhoods as taken."""
    chosen: list[tuple[int, int]] = []
    cols = free.shape[1]
    while len(chosen) < count:
        candidates = np.flatnonzero(free)
        if candidates.size == 0:
            break
        take = rng.choice(candidates, size=min(candidates.size, count - len(chosen)), replace=False)
        for flat in take.tolist():
            r, c = divmod(int(flat), cols)
            if not free[r, c]:
                continue
            chosen.append((r, c))
            free[r, max(0, c - radius) : c + radius + 1] = False
            if one_per_row:
                free[r, :] = False
    if len(chosen) < count:
        raise FaultSpecError(
            f"cannot place {count} {what} faults in this run (only {len(chosen)} fit): "
            "lower the rate or simulate more meters or days"
        )
    return chosen


def _place_gaps(
    rng: np.random.Generator, occupied: np.ndarray, total: int, n: int, kind: str
) -> list[tuple[int, int, int, str]]:
    """Gaps covering `total` gateway-intervals in steps 1 .. n-1, one free step between gaps."""
    gaps: list[tuple[int, int, int, str]] = []
    remaining = total
    n_gw = occupied.shape[0]
    longest = min(MAX_GAP_INTERVALS, n - 1)
    if remaining and longest < 1:
        raise FaultSpecError(f"{kind}: the run is too short for gaps (needs 3 intervals or more)")
    while remaining > 0:
        length = min(int(rng.integers(1, longest + 1)), remaining)
        placed = False
        for _attempt in range(64):
            g = int(rng.integers(n_gw))
            a = int(rng.integers(1, n - length + 1))
            b = a + length - 1
            if not occupied[g, a - 1 : b + 2].any():
                placed = True
                break
        if not placed:  # dense: scan every free start for this length
            window = np.lib.stride_tricks.sliding_window_view(occupied, length + 2, axis=1)
            ok = np.array(~window.any(axis=2))  # ok[g, s]: steps s .. s+length+1 free -> a = s + 1
            ok[:, n - length :] = False
            cells = np.flatnonzero(ok)
            if cells.size == 0:
                raise FaultSpecError(
                    f"cannot place {total} {kind} intervals in this run: lower the rate"
                )
            g, s = divmod(int(rng.choice(cells)), ok.shape[1])
            a, b = s + 1, s + length
        occupied[g, a : b + 1] = True
        gaps.append((g, a, b, kind))
        remaining -= length
    return gaps


def apply_world_faults(fleet: Fleet, world: World, spec: FaultSpec, seed: int) -> Faulted:
    """Place rollovers, resets, spikes, gaps and clock skew; return the faulted readings."""
    grid = world.grid
    n = grid.n
    step_ms = grid.step_s * 1000
    meters, sim = fleet.meters, fleet.sim_meters
    gw_ids = fleet.gateways["gateway_id"].to_list()
    gw_index = {g: i for i, g in enumerate(gw_ids)}
    meter_gw = np.array([gw_index[g] for g in sim["gateway_id"].to_list()], dtype=np.int64)
    n_gw = len(gw_ids)
    counts: dict[str, int] = {}

    # -- gateways: gaps and clock skew ---------------------------------------------------
    occupied = np.zeros((n_gw, n + 2), dtype=bool)
    occupied[:, 0] = True
    occupied[:, n:] = True
    gaps: list[tuple[int, int, int, str]] = []
    for i, kind in enumerate(("gap_lost", "gap_catchup")):
        total = round(spec.rate(kind) * n_gw * n)
        gaps += _place_gaps(_rng(seed, STREAM_FAULTS, 1, i), occupied, total, n, kind)
        counts[kind] = total
    gap_code = np.zeros((n_gw, n + 1), dtype=np.int8)  # 0 none, 1 lost, 2 catch-up
    for g, a, b, kind in gaps:
        gap_code[g, a : b + 1] = 1 if kind == "gap_lost" else 2
    skew = np.zeros(n_gw, dtype=np.int64)
    n_skew = round(spec.rate("clock_skew") * n_gw)
    rng = _rng(seed, STREAM_FAULTS, 2)
    skewed = rng.choice(n_gw, size=n_skew, replace=False) if n_skew else np.array([], np.int64)
    magnitude = rng.integers(SKEW_MS[0], SKEW_MS[1] + 1, size=n_skew)
    sign = np.where(rng.random(n_skew) < 0.5, -1, 1)
    skew[skewed] = magnitude * sign
    counts["clock_skew"] = n_skew

    # -- registers: rollover, reset, spike -------------------------------------------------
    reg = world.reg_meter
    c = world.counts
    n_reg = reg.size
    mult = meters["multiplier"].fill_null(1).cast(pl.Float64).to_numpy()[reg]
    rollover = meters["rollover"].to_numpy()[reg]
    modulus = np.where(np.isnan(rollover.astype(np.float64)), 0, rollover + 1).astype(np.int64)
    start = sim["register_start"].fill_null(0).to_numpy()[reg].astype(np.int64)
    cum = np.cumsum(c, axis=1) - c[:, :1]  # cum[:, k] = sum of c[:, 1..k]; reading 0 = start
    reg_gw = meter_gw[reg]
    in_gap = gap_code[reg_gw] > 0  # (n_reg, n+1)
    near_gap = in_gap.copy()
    for shift in (1, 2):
        near_gap[:, shift:] |= in_gap[:, :-shift]
        near_gap[:, :-shift] |= in_gap[:, shift:]
    free = ~near_gap
    free[:, 0] = False

    flags = np.zeros((n_reg, n + 1), dtype=np.int64)
    rng = _rng(seed, STREAM_FAULTS, 3)
    eligible = np.flatnonzero((modulus > 0) & (c[:, 1:].sum(axis=1) > 0))
    n_roll = round(spec.rate("rollover") * n_reg)
    if n_roll > eligible.size:
        raise FaultSpecError(f"cannot place {n_roll} rollover faults: {eligible.size} meters fit")
    rolled = np.sort(rng.choice(eligible, size=n_roll, replace=False)) if n_roll else eligible[:0]
    for i in rolled.tolist():
        ks = np.flatnonzero((c[i, 1:] > 0) & free[i, 1:]) + 1
        if ks.size == 0:
            ks = np.flatnonzero(c[i, 1:] > 0) + 1
        kw = int(rng.choice(ks))
        j = int(rng.integers(1, c[i, kw] + 1))
        start[i] = modulus[i] - cum[i, kw - 1] - j
    free[rolled, :] = False
    counts["rollover"] = n_roll

    pre = start[:, None] + cum  # register before wrapping
    wraps = np.zeros_like(flags, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        laps = np.where(modulus[:, None] > 0, pre // np.maximum(modulus, 1)[:, None], 0)
    wraps[:, 1:] = np.diff(laps, axis=1) > 0
    flags |= np.where(wraps, BIT["rollover"], 0)
    display = np.where(modulus[:, None] > 0, pre % np.maximum(modulus, 1)[:, None], pre)

    n_reset = round(spec.rate("reset") * n_reg)
    resets = _place(_rng(seed, STREAM_FAULTS, 4), free, n_reset, 2, one_per_row=True, what="reset")
    rng = _rng(seed, STREAM_FAULTS, 5)
    for i, kr in resets:
        s0 = int(rng.integers(0, RESET_START_MAX + 1))
        old_part = int(np.floor(c[i, kr] * rng.uniform(0.2, 0.8)))
        new_part = int(c[i, kr]) - old_part
        display[i, kr:] = s0 + new_part + (cum[i, kr:] - cum[i, kr])
        flags[i, kr] |= BIT["reset"]
    counts["reset"] = n_reset
    # after a reset the register is small: keep spikes away from that meter
    for i, _kr in resets:
        free[i, :] = False

    free[:, n] = False  # a spike needs a next reading
    n_spike = round(spec.rate("spike") * n_reg * max(n - 1, 0))
    spikes = _place(_rng(seed, STREAM_FAULTS, 6), free, n_spike, 2, one_per_row=False, what="spike")
    sent_units = display.copy()
    rng = _rng(seed, STREAM_FAULTS, 7)
    typical = np.maximum(c[:, 1:].mean(axis=1) if n else np.zeros(n_reg), 20.0)
    for i, kspike in spikes:
        jump = int(np.ceil(rng.uniform(*SPIKE_FACTOR) * typical[i]))
        sent_units[i, kspike] = display[i, kspike] + jump
        flags[i, kspike] |= BIT["spike"]
    counts["spike"] = n_spike

    # -- assemble the long readings table ------------------------------------------------------
    ks = np.arange(n + 1, dtype=np.int64)
    reg_end = grid.start_ms + ks * step_ms
    code = gap_code[reg_gw]
    reg_frame = pl.DataFrame(
        {
            "row": np.repeat(reg, n + 1),
            "k": np.tile(ks, n_reg),
            "gateway": np.repeat(reg_gw, n + 1),
            "start_ms": np.tile(reg_end - step_ms, n_reg),
            "end_ms": np.tile(reg_end, n_reg),
            "quantity": (c * mult[:, None]).ravel(),
            "register": display.ravel(),
            "units": sent_units.ravel(),
            "decimals": np.zeros(n_reg * (n + 1), dtype=np.int64),
            "code": code.ravel(),
            "flags": flags.ravel(),
        }
    )
    parts = [reg_frame]
    for idx, row in enumerate(world.iv_meter.tolist()):
        units = world.iv_units[idx]
        period_ms = int(world.iv_period_s[idx]) * 1000
        kk = np.arange(1, units.size + 1, dtype=np.int64)
        end = grid.start_ms + kk * period_ms
        step_k = -((grid.start_ms - end) // step_ms)  # ceil: the step interval holding `end`
        g = int(meter_gw[row])
        dec = int(world.iv_decimals[idx])
        parts.append(
            pl.DataFrame(
                {
                    "row": np.full(units.size, row),
                    "k": kk,
                    "gateway": np.full(units.size, g),
                    "start_ms": end - period_ms,
                    "end_ms": end,
                    "quantity": units / 10.0**dec,
                    "register": np.full(units.size, None),
                    "units": units,
                    "decimals": np.full(units.size, dec),
                    "code": gap_code[g, np.minimum(step_k, n)],
                    "flags": np.zeros(units.size, dtype=np.int64),
                },
                schema_overrides={"register": pl.Int64},
            )
        )
    readings = (
        pl.concat(
            [
                p.with_columns(
                    pl.col("row", "k", "gateway").cast(pl.Int32),
                    pl.col("start_ms", "end_ms", "units", "flags").cast(pl.Int64),
                    pl.col("register").cast(pl.Int64),
                    pl.col("quantity").cast(pl.Float64),
                    pl.col("decimals").cast(pl.Int8),
                    pl.col("code").cast(pl.Int8),
                )
                for p in parts
            ]
        )
        .sort("row", "k")
        .with_columns(
            pl.when(pl.col("code") == 1)
            .then(pl.lit("lost"))
            .when(pl.col("code") == 2)
            .then(pl.lit("catchup"))
            .otherwise(pl.lit("live"))
            .alias("status"),
            (
                pl.col("flags")
                | pl.when(pl.col("code") == 1).then(BIT["gap_lost"]).otherwise(0)
                | pl.when(pl.col("code") == 2).then(BIT["gap_catchup"]).otherwise(0)
                | pl.when(pl.col("gateway").is_in(skewed.tolist()))
                .then(BIT["clock_skew"])
                .otherwise(0)
            ).alias("flags"),
        )
        .drop("code")
    )
    gap_frame = pl.DataFrame(
        gaps or None,
        schema={"gateway": pl.Int32, "a": pl.Int32, "b": pl.Int32, "kind": pl.String},
        orient="row",
    ).sort("gateway", "a")
    return Faulted(readings=readings, gaps=gap_frame, skew_ms=skew, counts=counts)
