"""The demo's history: the months before the live weeks, as hourly readings of the counted meters.

This module owns making a year to date (and the year before it) exist without streaming it:
the same simulator (`greenmon.simulators.world.simulate_world`, month-sized chunks at an
hourly step) draws what every counted meter (boundary, generation, export; sub-meters are
breakdown only and stream in the live weeks) truly consumed, and `history_readings` turns it
into ``meter_reading`` rows with their ground truth. Register values run *backwards* from
each meter's first live reading (`anchors`), so that the history ends exactly where the live
stream begins: the aggregator sees one continuous register (a wrap on the way is a real
wrap, adding ``rollover + 1``). Interval meters report their hour's consumption (the sum of
their 15-minute values): a reading covers the time since the previous one, as for any
interval meter (DESIGN.md §4).

`history_lines` encodes the rows exactly as the ingestor does (`greenmon.ingest.fastpath`'s
series prefix and timestamp suffix), for `InfluxClient.write_body` into the raw retention
policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
import polars as pl

from greenmon.demo.fleet import COUNTED_ROLES
from greenmon.simulators.fleet import Fleet
from greenmon.simulators.world import make_grid, simulate_world

__all__ = ["HOUR_S", "History", "history_lines", "history_readings"]

HOUR_S: Final = 3600
_CHUNK_DAYS: Final = 30
_DAY_MS: Final = 86_400_000


@dataclass(frozen=True)
class History:
    """``readings``: meter_id, enterprise_id, carrier, ts_ms (Int64), value (Float64), in the
    registered unit as a gateway would send it. ``truth``: meter_id, enterprise_id, role,
    start_ms, end_ms, quantity (what the meter truly measured over [start, end), after its
    multiplier)."""

    readings: pl.DataFrame
    truth: pl.DataFrame


def _chunks(start_ms: int, end_ms: int) -> Iterator[tuple[int, float]]:
    """[start, end) in chunks of whole hours, at most `_CHUNK_DAYS` long."""
    t = start_ms
    while t < end_ms:
        span = min(end_ms - t, _CHUNK_DAYS * _DAY_MS)
        yield t, span / _DAY_MS
        t += span


def history_readings(
    fleet: Fleet,
    start_ms: int,
    end_ms: int,
    seed: int,
    anchors: dict[str, int],
    progress: Callable[[int, int], None] | None = None,
) -> History:
    """Hourly readings of the counted meters over [start_ms, end_ms] (both whole hours).

    `anchors`: each register meter's displayed value at `end_ms` (its first live reading);
    a register meter without one ends at its fleet's ``register_start``.
    """
    if (end_ms - start_ms) % (HOUR_S * 1000) or end_ms <= start_ms:
        raise ValueError("the history must span a positive whole number of hours")
    keep = fleet.meters.with_row_index("row").filter(pl.col("role").is_in(COUNTED_ROLES))
    rows = keep["row"].to_list()
    sub = Fleet(
        enterprises=fleet.enterprises,
        meters=fleet.meters[rows],
        monthly=fleet.monthly,
        gateways=fleet.gateways,
        sim_meters=fleet.sim_meters[rows],
        sim_enterprises=fleet.sim_enterprises,
        meta=fleet.meta,
    )
    meters = sub.meters
    kind = meters["kind"].to_numpy()
    reg = np.flatnonzero(kind == "register")
    ivl = np.flatnonzero(kind == "interval")
    reg_counts: list[np.ndarray] = []
    iv_values: list[list[np.ndarray]] = [[] for _ in ivl]
    chunks = list(_chunks(start_ms, end_ms))
    for i, (t0, days) in enumerate(chunks):
        grid = make_grid(sub, t0, days, HOUR_S)
        # A stream of its own per chunk; the weather is drawn per date whatever the seed.
        world = simulate_world(sub, grid, seed * 7919 + 101 + i)
        reg_counts.append(world.counts[:, 1:])  # counts[:, 0] is the step before t0
        for j, units in enumerate(world.iv_units):
            period = int(world.iv_period_s[j])
            if HOUR_S % period:
                raise ValueError(f"interval meters of {period} s cannot report hourly")
            per_hour = HOUR_S // period
            hourly = units.reshape(-1, per_hour).sum(axis=1)
            iv_values[j].append(hourly / 10.0 ** int(world.iv_decimals[j]))
        if progress:
            progress(i + 1, len(chunks))
    n_hours = (end_ms - start_ms) // (HOUR_S * 1000)
    ends = start_ms + np.arange(1, n_hours + 1, dtype=np.int64) * HOUR_S * 1000

    ids = meters["meter_id"].to_numpy()
    ents = meters["enterprise_id"].to_numpy()
    carriers = meters["carrier"].to_numpy()
    roles = meters["role"].to_numpy()
    mult = meters["multiplier"].fill_null(1).cast(pl.Float64).to_numpy()
    rollover = meters["rollover"].fill_null(0).to_numpy()
    register_start = sub.sim_meters["register_start"].fill_null(0).to_numpy()
    parts: list[pl.DataFrame] = []
    truth: list[pl.DataFrame] = []
    counts = np.concatenate(reg_counts, axis=1) if reg_counts else np.zeros((0, n_hours))
    for r, row in enumerate(reg.tolist()):
        c = counts[r].astype(np.int64)
        anchor = int(anchors.get(str(ids[row]), register_start[row]))
        # value at reading k (k = 0 .. n) = anchor - (counts after k), on the register's dial
        after = np.concatenate([np.cumsum(c[::-1])[::-1], [0]])
        modulus = int(rollover[row]) + 1 if rollover[row] else 0
        values = anchor - after
        if modulus:
            values = np.mod(values, modulus)
        stamps = np.concatenate([[start_ms], ends])
        parts.append(_frame(ids[row], ents[row], carriers[row], stamps, values.astype(np.float64)))
        truth.append(_truth(ids[row], ents[row], roles[row], ends, c * mult[row]))
    for j, row in enumerate(ivl.tolist()):
        v = np.concatenate(iv_values[j])
        parts.append(_frame(ids[row], ents[row], carriers[row], ends, v))
        truth.append(_truth(ids[row], ents[row], roles[row], ends, v))
    return History(
        readings=pl.concat(parts).sort("ts_ms", "meter_id"),
        truth=pl.concat(truth),
    )


def _frame(meter: str, ent: str, carrier: str, ts: np.ndarray, value: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "meter_id": pl.Series([meter] * ts.size, dtype=pl.String),
            "enterprise_id": pl.Series([ent] * ts.size, dtype=pl.String),
            "carrier": pl.Series([carrier] * ts.size, dtype=pl.String),
            "ts_ms": pl.Series(ts, dtype=pl.Int64),
            "value": pl.Series(value, dtype=pl.Float64),
        }
    )


def _truth(meter: str, ent: str, role: str, ends: np.ndarray, q: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "meter_id": pl.Series([meter] * ends.size, dtype=pl.String),
            "enterprise_id": pl.Series([ent] * ends.size, dtype=pl.String),
            "role": pl.Series([role] * ends.size, dtype=pl.String),
            "start_ms": pl.Series(ends - HOUR_S * 1000, dtype=pl.Int64),
            "end_ms": pl.Series(ends, dtype=pl.Int64),
            "quantity": pl.Series(q, dtype=pl.Float64),
        }
    )


def history_lines(readings: pl.DataFrame, batch: int = 20_000) -> Iterator[tuple[bytes, int]]:
    """``meter_reading`` line protocol of `readings`, in bodies of `batch` lines (the
    ingestor's own series prefix and nanosecond timestamps)."""
    from greenmon.ingest.fastpath import series_prefix

    prefixes = readings.select("enterprise_id", "meter_id", "carrier").unique()
    table = prefixes.with_columns(
        pl.Series(
            "prefix",
            [series_prefix(e, m, c).decode() for e, m, c in prefixes.iter_rows()],
            dtype=pl.String,
        )
    )
    lines = readings.join(table, on=["enterprise_id", "meter_id", "carrier"], how="left").select(
        pl.concat_str(
            "prefix",
            pl.col("value").round(6).cast(pl.String),
            pl.lit(" "),
            (pl.col("ts_ms") * 1_000_000).cast(pl.String),
        ).alias("line")
    )["line"]
    for offset in range(0, lines.len(), batch):
        part = lines.slice(offset, batch)
        yield ("\n".join(part.to_list()) + "\n").encode(), part.len()
