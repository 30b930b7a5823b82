"""``greenmon bench aggregate``: the aggregation at scale, three independent implementations.

A synthetic fleet (default 1,000 meters x 365 days x 15-minute readings, about 35 million rows)
with every fault the aggregator handles — duplicates, out-of-order chunks, gaps, spikes, dips,
rollovers, meter replacements (resets), interval-meter spikes — goes through the whole
computation to daily per-enterprise kgce (comprehensive and double-control) and monthly
intensity (tce, tce per 10k yuan of output value, ratio to the provincial reference):

- **polars**: the production code, `greenmon.aggregator.pipeline.aggregate` (`classify` ->
  `attribute`, in parts of whole meters side by side, -> `meter_energy` -> `enterprise_energy`
  -> `intensity`);
- **duckdb**: the same rules written independently as one SQL query over the Arrow input;
- **pandas**: the same rules written independently with pandas/NumPy.

All three results are compared (relative tolerance 1e-9), timed in the same run, and each
path's peak memory is measured as the peak resident set size of the process while it runs
(sampled every 2 ms from /proc/self/statm) minus the resident size just before it, reported
against the size of the input frame (Polars' estimated size). The reference numbers (kgce per
unit, intensity reference) are resolved once by `greenmon.aggregator.reference` and handed to
all three paths: they are inputs, not part of what is measured.

The fault generator produces duplicate copies with identical values (which copy is kept only
matters for conflicting copies; the unit tests cover that rule), so the three engines need no
shared notion of input order.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

import numpy as np
import polars as pl
import typer

from greenmon.aggregator.consumption import ConsumptionRules
from greenmon.aggregator.energy import TOTAL
from greenmon.aggregator.pipeline import aggregate
from greenmon.aggregator.reference import (
    References,
    intensity_references,
    load_references,
    meter_factors,
)
from greenmon.registry import Registry, load_registry, rollover_modulus

__all__ = ["BenchData", "BenchResult", "generate", "register_bench", "run_bench"]

TZ: Final = "Asia/Shanghai"
_OFFSET_MS: Final = 8 * 3_600_000  # Asia/Shanghai, constant since 1991
_DAY_MS: Final = 86_400_000
_STEP_MS: Final = 900_000
_START: Final = datetime(2024, 12, 31, 16, 0, tzinfo=UTC)  # 2025-01-01 00:00 local
_RTOL: Final = 1e-9
_ATOL: Final = 1e-6

# Ten meter slots per enterprise: (suffix, carrier, unit, kind, role, raw_material, rollover)
_SLOTS: Final = (
    ("EL-MAIN", "electricity", "kWh", "register", "boundary", False, 99_999_999.0),
    ("EL-MV", "electricity", "MWh", "register", "boundary", False, 999_999.999),
    ("EL-SUB1", "electricity", "kWh", "register", "sub", False, 9_999_999.0),
    ("EL-SUB2", "electricity", "kWh", "register", "sub", False, 9_999_999.0),
    ("EL-EXP", "electricity", "kWh", "register", "export", False, 99_999_999.0),
    ("PV", "electricity", "kWh", "interval", "generation", False, None),
    ("NG-MAIN", "natural_gas", "m3", "register", "boundary", False, 9_999_999.0),
    ("NG-FEED", "natural_gas", "m3", "register", "sub", True, 9_999_999.0),
    ("ST", "steam", "t", "register", "boundary", False, 999_999.9),
    ("HT", "heat", "GJ", "register", "boundary", False, 999_999.0),
)
#: Slots whose registers start close below their rollover and wrap (heat; MWh with decimals).
_WRAPPING: Final = (1, 9)
# mean consumption per 15 minutes in the native unit, per slot
_MEAN: Final = (120.0, 0.05, 30.0, 20.0, 8.0, 15.0, 40.0, 10.0, 0.6, 1.5)
_COUNTIES: Final = ("崇川区", "通州区", "海门区", "如皋市", "海安市", "如东县", "启东市")
_INDUSTRIES: Final = ("C3731", "C1712", "C2614", "C3989", "C3360")


# --------------------------------------------------------------------------- data


@dataclass
class BenchData:
    """A synthetic fleet: readings with faults, its registry and the references."""

    readings: pl.DataFrame
    registry: Registry
    references: References
    factors: pl.DataFrame  # per meter: kgce_per_unit (the single year 2025)
    reference_value: pl.DataFrame  # per enterprise: reference_tce_per_10k_yuan
    faults: dict[str, int]
    directory: Path
    #: per meter, the quantity an exact aggregation counts (native unit): None when loaded
    truth: pl.DataFrame | None = None


def generate(
    meters: int = 1000, days: int = 365, seed: int = 0, directory: Path | None = None
) -> BenchData:
    """Build the synthetic fleet. `meters` is rounded up to a multiple of 10 (one enterprise
    per 10 meters: electricity boundary/sub/export, PV generation, natural gas with a
    raw-material sub-meter, steam, heat). The registry CSVs go to `directory` (default: a new
    temporary directory, which the caller removes)."""
    rng = np.random.default_rng(seed)
    enterprises = max(1, -(-meters // 10))
    m_count = enterprises * 10
    n = days * 96
    slot = np.tile(np.arange(10), enterprises)
    ids = [f"E{e:04d}-{_SLOTS[s][0]}" for e in range(enterprises) for s in range(10)]
    multiplier = np.where(slot == 0, rng.choice([1.0, 40.0, 80.0, 200.0], m_count), 1.0)
    scale = rng.uniform(0.3, 3.0, m_count) * np.asarray(_MEAN)[slot]

    # consumption per interval (native units): daily profile x gamma noise; PV by daylight
    hour = (np.arange(n) % 96) / 4.0
    profile = 0.6 + 0.8 * np.exp(-(((hour - 13.0) / 5.0) ** 2))
    daylight = np.clip(np.sin((hour - 6.0) / 12.0 * np.pi), 0.0, None)
    consumption = rng.gamma(2.0, 0.5, size=(m_count, n)) * profile
    pv = slot == 5
    consumption[pv] = rng.gamma(4.0, 0.25, size=(int(pv.sum()), n)) * daylight * 1.6
    consumption *= scale[:, None]

    interval = np.asarray([_SLOTS[s][3] == "interval" for s in slot])
    rollover = np.asarray([_SLOTS[s][6] if _SLOTS[s][6] is not None else np.nan for s in slot])
    # what a wrap adds, by the registry's rule (999999.999 MWh shows thousandths: 1000000)
    modulus = np.asarray(
        [
            rollover_modulus(repr(_SLOTS[s][6])) if _SLOTS[s][6] is not None else np.nan
            for s in range(len(_SLOTS))
        ]
    )[slot]
    raw = consumption / multiplier[:, None]  # register units
    total = raw.sum(axis=1)
    start = rng.uniform(0.0, 0.3, m_count) * rollover
    # heat meters (whole GJ) and medium-voltage meters (MWh with three decimals) start close
    # to their rollover and wrap mid-range
    wraps = np.isin(slot, _WRAPPING)
    start[wraps] = modulus[wraps] - total[wraps] * rng.uniform(0.2, 0.8, int(wraps.sum()))
    values = np.cumsum(raw, axis=1) + start[:, None]
    registers = ~interval
    over = registers & (values.max(axis=1) >= modulus)
    values[over] = np.mod(values[over], modulus[over, None])
    values[interval] = raw[interval]

    faults = {
        "rollover_meters": int(over.sum()),
        "decimal_rollover_meters": int((over & (rollover != np.floor(rollover))).sum()),
    }

    # gaps: readings missing (the energy continues, the next reading covers it)
    keep = np.ones((m_count, n), dtype=bool)
    longest = max(5, min(300, n // 8))
    for m in range(m_count):
        for _ in range(3):
            at = int(rng.integers(20, max(21, n - longest - 20)))
            keep[m, at : at + int(rng.integers(4, longest))] = False
    faults["gap_readings"] = int((~keep).sum())

    # meter replacements: the new register starts from zero and covers its first interval
    # (meters that wrap are left alone so that a wrap and a reset never meet)
    candidates = np.flatnonzero(registers & ~np.isin(slot, _WRAPPING))
    reset_meters = rng.choice(candidates, max(1, m_count // 100), replace=False)
    for m in reset_meters:
        # replaced between two readings that arrive (inside a gap, what the old meter counted
        # after its last reading would be unknowable, and the truth below would not hold)
        fine = np.flatnonzero(keep[m, n // 4 - 1 : 3 * n // 4 - 1] & keep[m, n // 4 : 3 * n // 4])
        at = n // 4 + int(rng.choice(fine))
        values[m, at:] = np.cumsum(raw[m, at:])
    faults["resets"] = len(reset_meters)

    # single bad readings, each well inside a run of readings where the register is monotone
    # (not next to a gap, wrap or replacement) and away from each other
    spikes = dips = interval_spikes = 0
    spiked = np.zeros((m_count, n), dtype=bool)
    grid = np.arange(10, n - 10, 7)
    # a dozen spikes and two dips per meter and year (at least one and one)
    n_spikes = max(1, round(12 * days / 365))
    n_dips = max(1, round(2 * days / 365))
    for m in range(m_count):
        ok = keep[m, grid - 1] & keep[m, grid] & keep[m, grid + 1]
        if not interval[m]:
            ok &= (values[m, grid - 1] <= values[m, grid]) & (
                values[m, grid] <= values[m, grid + 1]
            )
            ok &= values[m, grid - 1] > 0
        positions = rng.choice(grid[ok], min(n_spikes + n_dips, int(ok.sum())), replace=False)
        if interval[m]:
            for p in positions[:n_spikes]:
                values[m, p] = values[m, p] * 100.0 + scale[m] * 500.0
                spiked[m, p] = True
                interval_spikes += 1
        else:
            for p in positions[:n_spikes]:
                values[m, p] += raw[m].mean() * 5000.0 + 1.0
                spikes += 1
            for p in positions[n_spikes:]:
                values[m, p] = values[m, p - 1] * 0.5
                dips += 1
    faults.update(spikes=spikes, dips=dips, interval_spikes=interval_spikes)

    # what an exact aggregation must count, per meter (native units): a register everything
    # after its first reading; an interval meter its readings that arrived and are not spikes
    truth_quantity = np.where(
        interval,
        np.where(keep & ~spiked, consumption, 0.0).sum(axis=1),
        consumption[:, 1:].sum(axis=1),
    )
    truth = pl.DataFrame({"meter": ids, "quantity": truth_quantity})

    times = int(_START.timestamp() * 1000) + (np.arange(1, n + 1, dtype=np.int64) * _STEP_MS)
    # As InfluxDB returns a query grouped by meter (series in tag order, each in time order),
    # followed by a late batch: 0.1 % of the readings arriving out of order, and duplicate
    # re-deliveries of 0.3 %.
    order = np.argsort(np.asarray(ids))
    code = np.repeat(order, n).reshape(m_count, n)
    mask = keep[order].ravel()
    meter_codes = code.ravel()[mask]
    frame_t = np.tile(times, m_count)[mask]
    frame_v = values[order].ravel()[mask]
    del values, raw, consumption, spiked
    late = np.zeros(meter_codes.size, dtype=bool)
    late[rng.choice(meter_codes.size, meter_codes.size // 1000, replace=False)] = True
    dup = rng.choice(meter_codes.size, meter_codes.size // 300, replace=False)
    faults["late"] = int(late.sum())
    faults["duplicates"] = int(dup.size)
    shuffled = rng.permutation(np.concatenate([np.flatnonzero(late), dup]))
    head = np.flatnonzero(~late)
    meter_codes = np.concatenate([meter_codes[head], meter_codes[shuffled]])
    frame_t = np.concatenate([frame_t[head], frame_t[shuffled]])
    frame_v = np.concatenate([frame_v[head], frame_v[shuffled]])
    readings = pl.DataFrame(
        {
            "meter": pl.Series(np.asarray(ids, dtype=object)[meter_codes], dtype=pl.String),
            "time": pl.Series(frame_t).cast(pl.Datetime("ms", "UTC")),
            "value": frame_v,
        }
    )

    directory = Path(directory or tempfile.mkdtemp(prefix="greenmon-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    _write_registry(directory, ids, slot, multiplier, interval, scale, enterprises, days, rng)
    registry = load_registry(directory)
    references = load_references()
    factors = meter_factors(registry.meters, references, [2025])
    reference_value = intensity_references(registry.enterprises, references, [2025])
    return BenchData(
        readings, registry, references, factors, reference_value, faults, directory, truth
    )


def _write_registry(
    directory: Path,
    ids: list[str],
    slot: np.ndarray,
    multiplier: np.ndarray,
    interval: np.ndarray,
    scale: np.ndarray,
    enterprises: int,
    days: int,
    rng: np.random.Generator,
) -> None:
    pl.DataFrame(
        {
            "enterprise_id": [f"E{e:04d}" for e in range(enterprises)],
            "name": [f"bench enterprise {e}" for e in range(enterprises)],
            "county": [_COUNTIES[e % len(_COUNTIES)] for e in range(enterprises)],
            "industry": [_INDUSTRIES[e % len(_INDUSTRIES)] for e in range(enterprises)],
            "land_area_mu": rng.uniform(20, 500, enterprises).round(1),
            "annual_quota_tce": rng.uniform(1000, 50000, enterprises).round(0),
            "intensity_target_tce_per_10k_yuan": rng.uniform(0.05, 0.8, enterprises).round(3),
        }
    ).write_csv(directory / "enterprises.csv")
    # half the slots carry a nameplate limit (native units per hour), the others rely on the
    # robust per-meter limit
    nameplate = np.isin(slot, (0, 2, 4, 6, 8))
    max_rate = np.where(nameplate, scale * 4 * 20.0, np.nan)
    pl.DataFrame(
        {
            "meter_id": ids,
            "enterprise_id": [i.split("-")[0] for i in ids],
            "carrier": [_SLOTS[s][1] for s in slot],
            "unit": [_SLOTS[s][2] for s in slot],
            "kind": [_SLOTS[s][3] for s in slot],
            "multiplier": multiplier,
            "rollover": [_SLOTS[s][6] for s in slot],
            "role": [_SLOTS[s][4] for s in slot],
            "raw_material": [str(_SLOTS[s][5]).lower() for s in slot],
            "interval_s": [900] * len(ids),
            "max_rate_per_h": pl.Series(max_rate).fill_nan(None),
        }
    ).write_csv(directory / "meters.csv")
    months = sorted({(2025 + (m // 12)) * 100 + m % 12 + 1 for m in range(-(-days // 28) + 1)})
    rows = []
    for e in range(enterprises):
        for ym in months:
            output = float(rng.uniform(500, 50000))
            rows.append(
                (
                    f"E{e:04d}",
                    f"{ym // 100}-{ym % 100:02d}",
                    round(output, 1),
                    round(output * 0.22, 1),
                    round(output * 0.97, 1),
                    round(output * 0.03, 1),
                    round(float(rng.uniform(10, 1000)), 1),
                    "t",
                )
            )
    pl.DataFrame(
        rows,
        schema=[
            "enterprise_id",
            "month",
            "output_value_10k_yuan",
            "value_added_10k_yuan",
            "sales_10k_yuan",
            "tax_10k_yuan",
            "product_output",
            "product_unit",
        ],
        orient="row",
    ).write_csv(directory / "monthly.csv")


# --------------------------------------------------------------------------- polars path


def polars_plan(data: BenchData) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(daily, monthly) through the production code (`greenmon.aggregator.pipeline.aggregate`:
    classification and windows in parts of whole meters side by side, then energy and
    intensity)."""
    reg = data.registry
    agg = aggregate(
        data.readings.lazy(),
        reg,
        data.references,
        windows=("1d", "1mo"),
        periods=("month",),
        tz=TZ,
        rules=ConsumptionRules(),
        factors=data.factors,
    )
    daily = agg.energy.filter((pl.col("window") == "1d") & (pl.col("carrier") == TOTAL)).select(
        "enterprise", "time", "kgce", "double_control_kgce"
    )
    assert agg.intensity is not None
    monthly = agg.intensity.select(
        "enterprise", "time", "tce", "tce_per_10k_yuan", "ratio_to_reference"
    )
    return daily, monthly


def run_polars(data: BenchData) -> tuple[pl.DataFrame, pl.DataFrame]:
    daily, monthly = pl.collect_all(list(polars_plan(data)))
    return daily, monthly


# --------------------------------------------------------------------------- shared inputs


def _meter_inputs(data: BenchData) -> pl.DataFrame:
    """Per meter, everything the independent paths need (reference numbers resolved once)."""
    meters = data.registry.meters
    limit = (
        pl.col("max_rate_per_h").cast(pl.Float64, strict=False)
        if "max_rate_per_h" in meters.columns
        else pl.lit(None, dtype=pl.Float64)
    )
    return (
        meters.select(
            pl.col("meter_id").alias("meter"),
            pl.col("enterprise_id").alias("enterprise"),
            "carrier",
            (pl.col("kind") == "interval").alias("is_interval"),
            pl.col("multiplier").alias("mult"),
            pl.col("rollover_modulus").alias("modulus"),
            (pl.col("interval_s") * 1000).alias("interval_ms"),
            limit.alias("reg_limit"),
            pl.col("role")
            .replace_strict({"boundary": 1.0, "generation": 1.0, "export": -1.0, "sub": 0.0})
            .alias("sign"),
            (pl.col("role") == "generation").alias("is_gen"),
            (pl.col("role") == "export").alias("is_exp"),
            (pl.col("raw_material") & pl.col("role").is_in(["boundary", "sub"])).alias("is_raw"),
        )
        .join(
            data.factors.filter(pl.col("year") == 2025).select(
                pl.col("meter_id").alias("meter"), pl.col("kgce_per_unit").alias("kgce")
            ),
            on="meter",
        )
        .sort("meter")
    )


def _stats_inputs(data: BenchData) -> pl.DataFrame:
    return data.registry.monthly.select(
        pl.col("enterprise_id").alias("enterprise"),
        pl.col("month_start").alias("month"),
        pl.col("output_value_10k_yuan").alias("output"),
        pl.col("value_added_10k_yuan").alias("added"),
    ).join(
        data.reference_value.select(
            pl.col("enterprise_id").alias("enterprise"),
            pl.col("reference_tce_per_10k_yuan").alias("ref"),
            "denominator",
        ),
        on="enterprise",
        how="left",
    )


# --------------------------------------------------------------------------- duckdb path

_DUCKDB_SQL: Final = """
WITH
u AS (      -- one row per (meter, time); the bench's duplicate copies carry identical values
    SELECT meter, epoch_ms(time) AS t, max(value) AS v
    FROM readings WHERE isfinite(value) GROUP BY meter, t
),
s AS (
    SELECT u.meter, u.t, u.v, m.is_interval, m.mult, m.modulus, m.interval_ms, m.reg_limit,
           lag(u.v) OVER w AS vp, lead(u.v) OVER w AS vn
    FROM u JOIN meters m USING (meter)
    WINDOW w AS (PARTITION BY u.meter ORDER BY u.t)
),
k AS (      -- drop register readings that stick out while their neighbours agree
    SELECT meter, t, v, is_interval, mult, modulus, interval_ms, reg_limit,
           lag(t) OVER w AS pt, lag(v) OVER w AS pv
    FROM s
    WHERE NOT coalesce(NOT is_interval AND vn >= vp AND (v > vn OR v < vp), false)
    WINDOW w AS (PARTITION BY meter ORDER BY t)
),
rt AS (     -- typical rate: the lower 0.9 quantile of the positive rates (native units/h)
    SELECT meter, list_sort(list(rate))[1 + floor(0.9 * (count(*) - 1))::BIGINT] AS typical,
           count(*) AS n
    FROM (
        SELECT meter,
               (CASE WHEN is_interval THEN v ELSE v - pv END) * mult
               / greatest(t - CASE WHEN is_interval THEN coalesce(pt, t - interval_ms) ELSE pt END,
                          interval_ms) * 3600000.0 AS rate
        FROM k
    ) WHERE rate > 0 GROUP BY meter
),
l AS (
    SELECT k.*, coalesce(reg_limit, CASE WHEN n >= 16 THEN typical * 10 END)
                / mult / 3600000.0 AS lim
    FROM k LEFT JOIN rt USING (meter)
),
c AS (
    SELECT meter, t,
        CASE WHEN is_interval THEN coalesce(pt, t - interval_ms) ELSE pt END AS t0,
        mult * CASE
            WHEN is_interval THEN CASE
                WHEN v < 0 THEN NULL
                WHEN lim IS NOT NULL AND v > lim
                     * greatest(t - coalesce(pt, t - interval_ms), interval_ms) THEN NULL
                ELSE v END
            WHEN pt IS NULL THEN NULL
            WHEN v >= pv THEN CASE
                WHEN lim IS NOT NULL AND v - pv > lim * greatest(t - pt, interval_ms) THEN NULL
                ELSE v - pv END
            WHEN modulus IS NOT NULL AND v - pv + modulus >= 0 AND (CASE
                WHEN lim IS NULL THEN pv >= modulus * 0.9 AND v <= modulus * 0.1
                ELSE v - pv + modulus <= lim * greatest(t - pt, interval_ms) END)
                THEN v - pv + modulus
            WHEN v >= 0 AND (lim IS NULL OR v <= lim * greatest(t - pt, interval_ms)) THEN v
            ELSE NULL END AS q
    FROM l
),
d AS (
    SELECT meter, t0, t, q,
           (t0 + {off}) // {day} AS d0, (t - 1 + {off}) // {day} AS d1
    FROM c WHERE q IS NOT NULL AND t0 IS NOT NULL
),
pieces AS (
    SELECT meter, d1 AS day, q FROM d WHERE d0 = d1
    UNION ALL
    SELECT meter, day,
           q * (least(t, (day + 1) * {day} - {off}) - greatest(t0, day * {day} - {off}))
             / (t - t0) AS q
    FROM (SELECT meter, t0, t, q, unnest(range(d0, d1 + 1)) AS day FROM d WHERE d0 < d1)
),
md AS (SELECT meter, day, sum(q) AS q FROM pieces GROUP BY meter, day),
ec AS (
    SELECT m.enterprise, m.carrier, md.day,
           sum(m.sign * md.q * m.kgce) AS kgce,
           sum(CASE WHEN m.is_gen THEN md.q * m.kgce ELSE 0 END) AS gen,
           sum(CASE WHEN m.is_exp THEN md.q * m.kgce ELSE 0 END) AS exp,
           sum(CASE WHEN m.is_raw THEN md.q * m.kgce ELSE 0 END) AS raw
    FROM md JOIN meters m USING (meter) GROUP BY m.enterprise, m.carrier, md.day
)
SELECT enterprise, day, sum(kgce) AS kgce,
       sum(kgce) - sum(greatest(gen - exp, 0)) - sum(raw) AS double_control_kgce
FROM ec GROUP BY enterprise, day
"""

_DUCKDB_MONTHLY_SQL: Final = """
WITH
mm AS (
    SELECT meter, date_trunc('month', DATE '1970-01-01' + CAST(day AS INTEGER)) AS month,
           sum(q) AS q
    FROM md GROUP BY ALL
),
em AS (
    SELECT m.enterprise, mm.month, sum(m.sign * mm.q * m.kgce) AS kgce
    FROM mm JOIN meters m USING (meter) GROUP BY ALL
)
SELECT em.enterprise, em.month, em.kgce / 1000.0 AS tce,
       CASE WHEN st.output > 0 THEN em.kgce / 1000.0 / st.output END AS tce_per_10k_yuan,
       CASE WHEN (CASE WHEN st.denominator = 'value_added' THEN st.added ELSE st.output END) > 0
            THEN em.kgce / 1000.0
                 / (CASE WHEN st.denominator = 'value_added' THEN st.added ELSE st.output END)
                 / st.ref END AS ratio_to_reference
FROM em LEFT JOIN stats st ON st.enterprise = em.enterprise AND st.month = em.month
"""


def run_duckdb(data: BenchData) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The same rules as one SQL query (plus the monthly roll-up) over the Arrow input."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute(f"SET threads = {os.cpu_count() or 1}")
        con.execute("SET enable_progress_bar = false")
        con.register("readings", data.readings.to_arrow())
        con.register("meters", _meter_inputs(data).to_arrow())
        con.register("stats", _stats_inputs(data).to_arrow())
        sql = _DUCKDB_SQL.format(off=_OFFSET_MS, day=_DAY_MS)
        # keep the per-meter-day sums for the monthly roll-up
        head, _, tail = sql.partition("ec AS (")
        con.execute(f"CREATE TEMP TABLE md AS {head.rstrip().rstrip(',')} SELECT * FROM md")
        daily_sql = "WITH ec AS (" + tail
        daily = con.sql(daily_sql).pl()
        monthly = con.sql(_DUCKDB_MONTHLY_SQL).pl()
    finally:
        con.close()
    return daily, monthly


# --------------------------------------------------------------------------- pandas path


def pandas_input(data: BenchData) -> Any:
    """The readings as a pandas DataFrame (meter as Categorical); not part of the timing."""
    return data.readings.with_columns(pl.col("meter").cast(pl.Categorical)).to_pandas()


def run_pandas(data: BenchData, frame: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The same rules with pandas and NumPy (attributes gathered by meter code on demand, so
    that memory stays within a few copies of the input)."""
    import pandas as pd

    meters = _meter_inputs(data).to_pandas().set_index("meter")
    finite = np.isfinite(frame["value"].to_numpy())
    df = pd.DataFrame(
        {
            "code": frame["meter"].cat.codes.to_numpy()[finite],
            "t": frame["time"]
            .dt.tz_convert(None)
            .dt.as_unit("ms")
            .astype("int64")
            .to_numpy()[finite],
            "v": frame["value"].to_numpy()[finite],
        }
    )
    by_code = meters.reindex(frame["meter"].cat.categories.astype(str))
    attr = {
        "is_interval": by_code["is_interval"].to_numpy(dtype=bool),
        "mult": by_code["mult"].to_numpy(dtype=float),
        "modulus": by_code["modulus"].to_numpy(dtype=float, na_value=np.nan),
        "interval_ms": by_code["interval_ms"].to_numpy(dtype=float),
        "reg_limit": by_code["reg_limit"].to_numpy(dtype=float, na_value=np.nan),
    }
    df = df.sort_values(["code", "t"], kind="stable").drop_duplicates(["code", "t"], keep="last")
    g = df.groupby("code", sort=False)["v"]
    vp, vn = g.shift(1).to_numpy(), g.shift(-1).to_numpy()
    v = df["v"].to_numpy()
    is_interval = attr["is_interval"][df["code"].to_numpy()]
    with np.errstate(invalid="ignore"):
        outlier = ~is_interval & (vn >= vp) & ((v > vn) | (v < vp))
    del g, vp, vn, v, is_interval
    k = df[~outlier]
    del df, outlier
    gk = k.groupby("code", sort=False)
    pt = gk["t"].shift(1).to_numpy()
    pv = gk["v"].shift(1).to_numpy()
    del gk
    code = k["code"].to_numpy()
    v, t = k["v"].to_numpy(), k["t"].to_numpy()
    is_interval = attr["is_interval"][code]
    interval_ms = attr["interval_ms"][code]
    mult = attr["mult"][code]

    # typical rate per meter: 0.9 quantile of the positive rates of the remaining intervals
    has_prev = ~np.isnan(pt)
    start_int = np.where(has_prev, pt, t - interval_ms)
    start = np.where(is_interval, start_int, pt)
    with np.errstate(invalid="ignore"):
        rate = np.where(is_interval, v, v - pv) * mult / np.maximum(t - start, interval_ms)
        rate *= 3_600_000.0
        positive = rate > 0
    rates = pd.Series(rate[positive])
    by_meter = rates.groupby(code[positive])
    typical = by_meter.quantile(0.9, interpolation="lower")
    counts = by_meter.size()
    robust = (typical * 10).where(counts >= 16).reindex(np.arange(len(by_code)))
    del rate, positive, rates, by_meter
    reg_limit = attr["reg_limit"][code]
    limit = np.where(
        np.isnan(reg_limit), robust.to_numpy(dtype=float, na_value=np.nan)[code], reg_limit
    )
    lim = limit / mult / 3_600_000.0
    modulus = attr["modulus"][code]
    del limit, reg_limit
    has_lim = ~np.isnan(lim)
    with np.errstate(invalid="ignore"):
        maxd = lim * np.maximum(t - pt, interval_ms)
        d = v - pv
        wrapped = d + modulus
        wrap = (
            ~np.isnan(modulus)
            & (wrapped >= 0)
            & np.where(has_lim, wrapped <= maxd, (pv >= modulus * 0.9) & (v <= modulus * 0.1))
        )
        interval_ok = (v >= 0) & ~(has_lim & (v > lim * np.maximum(t - start_int, interval_ms)))
        q = (
            np.select(
                [is_interval, ~has_prev, d >= 0, wrap, (v >= 0) & (~has_lim | (v <= maxd))],
                [
                    np.where(interval_ok, v, np.nan),
                    np.nan,
                    np.where(has_lim & (d > maxd), np.nan, d),
                    wrapped,
                    v,
                ],
                default=np.nan,
            )
            * mult
        )
    del maxd, d, wrapped, wrap, interval_ok, lim, modulus, mult, pv
    t0 = np.where(is_interval, start_int, pt)
    keep = ~np.isnan(q) & ~np.isnan(t0)
    names = by_code.index.to_numpy()
    c = pd.DataFrame({"meter": names[code[keep]], "t0": t0[keep], "t": t[keep], "q": q[keep]})
    del k, code, t0, t, q, keep, pt, start_int, start, v, is_interval, interval_ms
    d0 = (c["t0"].to_numpy().astype(np.int64) + _OFFSET_MS) // _DAY_MS
    d1 = (c["t"].to_numpy() - 1 + _OFFSET_MS) // _DAY_MS
    single = d0 == d1
    pieces = [
        pd.DataFrame(
            {
                "meter": c["meter"].to_numpy()[single],
                "day": d1[single],
                "q": c["q"].to_numpy()[single],
            }
        )
    ]
    if (~single).any():
        span = c[~single]
        s0, s1 = d0[~single], d1[~single]
        n = s1 - s0 + 1
        rows = np.repeat(np.arange(len(span)), n)
        day = s0[rows] + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
        st0, st1 = span["t0"].to_numpy()[rows], span["t"].to_numpy()[rows]
        overlap = np.minimum(st1, (day + 1) * _DAY_MS - _OFFSET_MS) - np.maximum(
            st0, day * _DAY_MS - _OFFSET_MS
        )
        pieces.append(
            pd.DataFrame(
                {
                    "meter": span["meter"].to_numpy()[rows],
                    "day": day,
                    "q": span["q"].to_numpy()[rows] * overlap / (st1 - st0),
                }
            )
        )
    md = pd.concat(pieces).groupby(["meter", "day"], observed=True, as_index=False)["q"].sum()
    md = md.join(meters, on="meter")
    md["kgce"] = md["q"] * md["kgce"]
    md["signed"] = md["sign"] * md["kgce"]
    md["gen"] = md["kgce"].where(md["is_gen"], 0.0)
    md["exp"] = md["kgce"].where(md["is_exp"], 0.0)
    md["raw"] = md["kgce"].where(md["is_raw"], 0.0)
    ec = md.groupby(["enterprise", "carrier", "day"], as_index=False)[
        ["signed", "gen", "exp", "raw"]
    ].sum()
    ec["renewable"] = (ec["gen"] - ec["exp"]).clip(lower=0.0)
    daily = ec.groupby(["enterprise", "day"], as_index=False)[["signed", "renewable", "raw"]].sum()
    daily["double_control_kgce"] = daily["signed"] - daily["renewable"] - daily["raw"]
    daily = daily.rename(columns={"signed": "kgce"})[
        ["enterprise", "day", "kgce", "double_control_kgce"]
    ]

    md["month"] = pd.to_datetime(md["day"], unit="D").dt.to_period("M").dt.start_time.dt.date
    mm = md.groupby(["meter", "month"], observed=True, as_index=False)["q"].sum()
    mm = mm.join(meters, on="meter")
    mm["kgce"] = mm["sign"] * mm["q"] * mm["kgce"]
    em = mm.groupby(["enterprise", "month"], as_index=False)["kgce"].sum()
    stats = _stats_inputs(data).to_pandas()
    stats["month"] = pd.to_datetime(stats["month"]).dt.date
    em = em.merge(stats, on=["enterprise", "month"], how="left")
    em["tce"] = em["kgce"] / 1000.0
    em["tce_per_10k_yuan"] = (em["tce"] / em["output"]).where(em["output"] > 0)
    denominator = np.where(em["denominator"] == "value_added", em["added"], em["output"])
    em["ratio_to_reference"] = (em["tce"] / denominator / em["ref"]).where(denominator > 0)
    monthly = em[["enterprise", "month", "tce", "tce_per_10k_yuan", "ratio_to_reference"]]
    return pl.from_pandas(daily), pl.from_pandas(monthly)


# --------------------------------------------------------------------------- comparison


def _normalise(
    daily: pl.DataFrame, monthly: pl.DataFrame, engine: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Key daily rows by (enterprise, local day index) and monthly rows by (enterprise, local
    month start date), whatever each engine produced."""
    if "day" not in daily.columns:
        day = (pl.col("time").dt.epoch("ms") + _OFFSET_MS) // _DAY_MS
        daily = daily.with_columns(day.alias("day"))
    daily = daily.select(
        "enterprise",
        pl.col("day").cast(pl.Int64),
        pl.col("kgce").cast(pl.Float64),
        pl.col("double_control_kgce").cast(pl.Float64),
    )
    if "month" not in monthly.columns:
        monthly = monthly.with_columns(
            pl.col("time").dt.convert_time_zone(TZ).dt.date().alias("month")
        )
    monthly = monthly.select(
        "enterprise",
        pl.col("month").cast(pl.Date),
        *(pl.col(c).cast(pl.Float64) for c in ("tce", "tce_per_10k_yuan", "ratio_to_reference")),
    )
    return daily, monthly


def _max_difference(a: pl.DataFrame, b: pl.DataFrame, keys: list[str]) -> tuple[float, int]:
    """Largest |a - b| / max(1, |a|) over all value columns (rows missing on one side count
    as zero), and the number of values outside the tolerance."""
    values = [c for c in a.columns if c not in keys]
    joined = a.join(b, on=keys, how="full", coalesce=True, suffix="_other")
    worst, bad = 0.0, 0
    for column in values:
        x = joined.get_column(column).fill_null(0.0).to_numpy()
        y = joined.get_column(f"{column}_other").fill_null(0.0).to_numpy()
        both_nan = np.isnan(x) & np.isnan(y)
        diff = np.where(both_nan, 0.0, np.abs(x - y))
        scale = np.maximum(1.0, np.abs(np.nan_to_num(x)))
        rel = np.nan_to_num(diff / scale, nan=np.inf)
        worst = max(worst, float(rel.max(initial=0.0)))
        bad += int((diff > _ATOL + _RTOL * np.abs(np.nan_to_num(x))).sum())
    return worst, bad


# --------------------------------------------------------------------------- measurement


def _status_kb(field_name: str) -> int | None:
    """A ``Vm*`` figure of /proc/self/status in kB (None when unavailable: not Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class _PeakRss:
    """The peak resident set size while active, in bytes.

    On Linux the kernel's own high-water mark (VmHWM) is reset on entry (``clear_refs``) and
    read on exit; where that is refused, a thread samples VmRSS every 2 ms instead.
    """

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._kernel = False

    @staticmethod
    def rss() -> int:
        return (_status_kb("VmRSS") or 0) * 1024

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.002)

    def __enter__(self) -> _PeakRss:
        self.peak = self.rss()
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")  # resets VmHWM to the current RSS
            self._kernel = _status_kb("VmHWM") is not None
        except OSError:
            self._kernel = False
        if not self._kernel:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._kernel:
            self.peak = max(self.peak, (_status_kb("VmHWM") or 0) * 1024)
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
        self.peak = max(self.peak, self.rss())


@dataclass
class EngineRun:
    engine: str
    wall_s: float
    cpu_s: float
    peak_extra_bytes: int
    daily: pl.DataFrame = field(repr=False)
    monthly: pl.DataFrame = field(repr=False)


def _measure(engine: str, fn: Callable[[], tuple[pl.DataFrame, pl.DataFrame]]) -> EngineRun:
    """Run `fn` once: wall and CPU time of this process, peak RSS above the RSS before."""
    import gc

    gc.collect()
    before = _PeakRss.rss()
    with _PeakRss() as sampler:
        wall, cpu = time.perf_counter(), time.process_time()
        daily, monthly = fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    daily, monthly = _normalise(daily, monthly, engine)
    return EngineRun(engine, wall, cpu, max(0, sampler.peak - before), daily, monthly)


_READINGS_FILE: Final = "readings.parquet"


def _load(directory: Path) -> BenchData:
    """The fleet `generate` wrote into `directory` (readings as Parquet, the registry)."""
    readings = pl.read_parquet(directory / _READINGS_FILE)
    registry = load_registry(directory)
    references = load_references()
    factors = meter_factors(registry.meters, references, [2025])
    reference_value = intensity_references(registry.enterprises, references, [2025])
    return BenchData(readings, registry, references, factors, reference_value, {}, directory)


def run_engine(engine: str, data: BenchData) -> EngineRun:
    """Run one engine on `data` in this process and measure it."""
    if engine == "polars":
        return _measure("polars", lambda: run_polars(data))
    if engine == "duckdb":
        return _measure("duckdb", lambda: run_duckdb(data))
    if engine == "pandas":
        frame = pandas_input(data)  # conversion from the Polars frame: not timed
        return _measure("pandas", lambda: run_pandas(data, frame))
    raise ValueError(f"unknown engine {engine!r}")


def _worker(engine: str, directory: str) -> None:
    """Child process: load the fleet, run one engine, leave its results and figures in
    `directory` (so each engine starts from a fresh process and allocator)."""
    folder = Path(directory)
    run = run_engine(engine, _load(folder))
    run.daily.write_parquet(folder / f"{engine}-daily.parquet")
    run.monthly.write_parquet(folder / f"{engine}-monthly.parquet")
    (folder / f"{engine}.json").write_text(
        json.dumps({"wall_s": run.wall_s, "cpu_s": run.cpu_s, "peak": run.peak_extra_bytes})
    )


def _isolated(engine: str, directory: Path) -> EngineRun:
    """Run one engine in a fresh interpreter (independent of how this one was started)."""
    import subprocess
    import sys

    code = f"from greenmon.aggregator.bench import _worker; _worker({engine!r}, {str(directory)!r})"
    done = subprocess.run([sys.executable, "-c", code], check=False, stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"the {engine} benchmark process failed (exit code {done.returncode})")
    figures = json.loads((directory / f"{engine}.json").read_text())
    return EngineRun(
        engine,
        figures["wall_s"],
        figures["cpu_s"],
        figures["peak"],
        pl.read_parquet(directory / f"{engine}-daily.parquet"),
        pl.read_parquet(directory / f"{engine}-monthly.parquet"),
    )


@dataclass
class BenchResult:
    meters: int
    days: int
    rows: int
    input_bytes: int
    faults: dict[str, int]
    runs: list[EngineRun]
    differences: dict[str, dict[str, float]]
    cores: int

    def to_dict(self) -> dict[str, Any]:
        polars_run = next(r for r in self.runs if r.engine == "polars")
        engines = {
            r.engine: {
                "wall_s": round(r.wall_s, 3),
                "cpu_s": round(r.cpu_s, 3),
                "peak_extra_mb": round(r.peak_extra_bytes / 1e6, 1),
                "peak_extra_x_input": round(r.peak_extra_bytes / self.input_bytes, 2),
                "vs_polars": round(r.wall_s / polars_run.wall_s, 2),
            }
            for r in self.runs
        }
        checks = {
            "polars_wall_le_5s": polars_run.wall_s <= 5.0,
            "polars_memory_le_3x_input": polars_run.peak_extra_bytes <= 3 * self.input_bytes,
        }
        for r in self.runs:
            if r.engine == "duckdb":
                checks["polars_not_slower_than_duckdb"] = polars_run.wall_s <= r.wall_s
            if r.engine == "pandas":
                checks["polars_5x_faster_than_pandas"] = r.wall_s >= 5 * polars_run.wall_s
        checks["all_equal"] = all(d["mismatches"] == 0 for d in self.differences.values())
        return {
            "meters": self.meters,
            "days": self.days,
            "rows": self.rows,
            "input_mb": round(self.input_bytes / 1e6, 1),
            "cores": self.cores,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "faults": self.faults,
            "engines": engines,
            "equality": self.differences,
            "checks": checks,
            "memory": "peak resident set size of the engine's own process while it computes, "
            "minus its resident size just before (the input is already resident), "
            "as a multiple of the input frame's estimated size",
        }


def compare(runs: list[EngineRun]) -> dict[str, dict[str, float]]:
    """Each run against the first: largest relative difference, values outside tolerance."""
    reference = runs[0]
    differences: dict[str, dict[str, float]] = {}
    for other in runs[1:]:
        d_worst, d_bad = _max_difference(reference.daily, other.daily, ["enterprise", "day"])
        m_worst, m_bad = _max_difference(reference.monthly, other.monthly, ["enterprise", "month"])
        differences[f"{reference.engine}_vs_{other.engine}"] = {
            "max_relative_difference": max(d_worst, m_worst),
            "mismatches": d_bad + m_bad,
        }
    return differences


def run_bench(
    meters: int = 1000,
    days: int = 365,
    seed: int = 0,
    engines: tuple[str, ...] = ("polars", "duckdb", "pandas"),
    progress: Callable[[str], None] | None = None,
    *,
    isolate: bool = True,
    repeat: int = 1,
) -> BenchResult:
    """Generate the fleet, run every engine (each run in a fresh process unless `isolate` is
    False) `repeat` times, keep each engine's fastest run (and its largest peak memory), and
    compare them with the first (polars)."""
    say = progress or (lambda _msg: None)
    say(f"generating {meters} meters x {days} days")
    with tempfile.TemporaryDirectory(prefix="greenmon-bench-") as tmp:
        folder = Path(tmp)
        data = generate(meters, days, seed, folder)
        input_bytes = int(data.readings.estimated_size())
        rows, faults, meter_count = data.readings.height, data.faults, data.registry.meters.height
        if isolate:
            data.readings.write_parquet(folder / _READINGS_FILE, compression="lz4")
            del data
        runs: list[EngineRun] = []
        for engine in engines:
            attempts = []
            for attempt in range(max(1, repeat)):
                say(f"running {engine}" + (f" ({attempt + 1}/{repeat})" if repeat > 1 else ""))
                attempts.append(_isolated(engine, folder) if isolate else run_engine(engine, data))
            best = min(attempts, key=lambda run: run.wall_s)
            best.peak_extra_bytes = max(run.peak_extra_bytes for run in attempts)
            runs.append(best)
        return BenchResult(
            meters=meter_count,
            days=days,
            rows=rows,
            input_bytes=input_bytes,
            faults=faults,
            runs=runs,
            differences=compare(runs),
            cores=os.cpu_count() or 1,
        )


# --------------------------------------------------------------------------- command line


def register_bench(bench: typer.Typer) -> None:
    """Add ``aggregate`` to the ``greenmon bench`` group."""
    if bench.registered_callback is None:
        # a group callback keeps ``aggregate`` a sub-command even while it is the only one

        @bench.callback()
        def _bench_group() -> None:
            """Benchmarks."""

    @bench.command("aggregate")
    def aggregate_command(
        meters: Annotated[
            int | None,
            typer.Option(min=10, help="Meters (10 per enterprise)."),
        ] = None,
        days: Annotated[
            int | None,
            typer.Option(min=1, max=3660, help="Days of 15-minute readings."),
        ] = None,
        seed: Annotated[int, typer.Option(help="Seed of the synthetic fleet.")] = 0,
        source: Annotated[
            str,
            typer.Option(
                help="memory: the Polars core against DuckDB and pandas on an in-memory frame "
                "(default 1,000 meters x 365 days); influx: greenmon aggregate against a "
                "private influxd beside the database's own read and write times (default "
                "10,000 meters = 1,000 enterprises x 1 day)."
            ),
        ] = "memory",
        rounds: Annotated[
            int, typer.Option(min=1, max=20, help="--source influx: rounds (medians reported).")
        ] = 3,
        chunk_readings: Annotated[
            int | None,
            typer.Option(min=1000, help="--source influx: greenmon's --chunk-readings."),
        ] = None,
        meter_windows: Annotated[
            str | None,
            typer.Option(help="--source influx: greenmon's --meter-windows."),
        ] = None,
        ranges: Annotated[
            str | None,
            typer.Option(
                help="--source influx: also run greenmon aggregate once over each of these "
                "ranges (days from the first, e.g. 1,7,30; the fleet is loaded for the longest) "
                "and report each one's time and peak RSS: memory must not grow with the range."
            ),
        ] = None,
        engine: Annotated[
            list[str] | None,
            typer.Option(
                "--engine",
                help="Engines to run (repeat the option); polars always runs first.",
                show_default="polars duckdb pandas",
            ),
        ] = None,
        repeat: Annotated[
            int, typer.Option(min=1, max=20, help="Runs per engine; the fastest is reported.")
        ] = 1,
        json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        """Readings -> daily per-enterprise kgce and monthly intensity at scale: the Polars
        code against independent DuckDB SQL and pandas implementations, checked equal, timed
        (wall and CPU) and with each one's peak memory, in one run. With --source influx:
        greenmon aggregate end to end against a private influxd, beside the time InfluxDB
        needs to read the range's readings and to write the results, and its peak memory.

        Examples: `greenmon bench aggregate --meters 200 --days 30`;
        `greenmon bench aggregate --source influx --meters 1000 --days 2 --rounds 1`;
        `greenmon bench aggregate --source influx --ranges 1,7,30 --rounds 1` (peak RSS of a
        day, a week and a month of the 1,000-enterprise fleet).
        """
        from rich.console import Console
        from rich.table import Table

        if source not in ("memory", "influx"):
            raise typer.BadParameter("use memory or influx", param_hint="--source")
        if source == "influx":
            from greenmon.aggregator.bench_influx import print_report, run_influx_bench

            try:
                lengths = tuple(int(d) for d in (ranges or "").split(",") if d.strip())
            except ValueError:
                raise typer.BadParameter("days, e.g. 1,7,30", param_hint="--ranges") from None
            if any(d < 1 for d in lengths):
                raise typer.BadParameter("days, e.g. 1,7,30", param_hint="--ranges")
            err = Console(stderr=True)
            influx = run_influx_bench(
                meters or 10_000,
                days or 1,
                rounds=rounds,
                seed=seed,
                chunk_readings=chunk_readings,
                meter_windows=meter_windows,
                ranges=lengths,
                say=None if json_out else err.print,
            )
            report = influx.to_dict()
            if json_out:
                typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
            else:
                print_report(report)
            return
        meters = meters or 1000
        days = days or 365
        if days < 2:
            raise typer.BadParameter("at least 2 days", param_hint="--days")

        chosen = ["polars", *(e for e in (engine or ["duckdb", "pandas"]) if e != "polars")]
        for name in chosen:
            if name not in ("polars", "duckdb", "pandas"):
                raise typer.BadParameter(f"unknown engine {name!r}", param_hint="--engine")
        err = Console(stderr=True)
        result = run_bench(
            meters,
            days,
            seed,
            tuple(chosen),
            progress=None if json_out else err.print,
            repeat=repeat,
        )
        summary = result.to_dict()
        if json_out:
            typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        else:
            console = Console()
            table = Table(
                title=f"aggregate: {summary['rows']:,} readings ({summary['meters']} meters x "
                f"{days} days, {summary['input_mb']} MB), {summary['cores']} cores"
            )
            for column in ("engine", "wall s", "cpu s", "x polars", "peak extra MB", "x input"):
                table.add_column(column, justify="right" if column != "engine" else "left")
            for name, row in summary["engines"].items():
                table.add_row(
                    name,
                    f"{row['wall_s']:.2f}",
                    f"{row['cpu_s']:.2f}",
                    f"{row['vs_polars']:.2f}",
                    f"{row['peak_extra_mb']:.0f}",
                    f"{row['peak_extra_x_input']:.2f}",
                )
            console.print(table)
            for pair, diff in summary["equality"].items():
                console.print(
                    f"{pair}: max relative difference {diff['max_relative_difference']:.2e}, "
                    f"{diff['mismatches']} values outside tolerance"
                )
            faults = ", ".join(f"{k} {v:,}" for k, v in summary["faults"].items())
            console.print(f"faults: {faults}")
            load = ", ".join(f"{x:.2f}" for x in summary["load_average"])
            console.print(
                f"load average after the run: {load} (other processes share the cores; "
                "cpu s is this engine's own CPU time)"
            )
            console.print(f"memory: {summary['memory']}")
            for check, ok in summary["checks"].items():
                console.print(f"{'PASS' if ok else 'FAIL'}  {check}")
        if not summary["checks"]["all_equal"]:
            raise typer.Exit(1)
