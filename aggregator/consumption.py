"""Registers -> consumption: each reading classified, with the interval it closes and its delta.

Input: readings as read from InfluxDB ``meter_reading`` — a LazyFrame with ``meter`` (String),
``time`` (Datetime, device time; naive = UTC; converted to ms) and ``value`` (Float64) — and the
registry's meters frame. Output (`classify`): one row per distinct (meter, time) reading, in a
LazyFrame with the schema `CLASSIFIED_SCHEMA`:

``meter`` (Enum of the registry's meter ids), ``time`` (Datetime ms UTC: the reading, the end
of its interval), ``value`` (the raw reading), ``start`` (start of the interval the reading
closes; null for a register's first reading), ``flag`` (`FLAGS`), ``delta`` (raw register units
over the interval; for an interval meter its value), ``quantity`` (``delta`` x multiplier, in the
meter's native unit), ``counted`` (the quantity is part of consumption), ``valid`` (the reading
counts towards completeness), ``limit_per_h`` (the plausibility limit that applied, native
units per hour; null = none known), ``copies`` (input rows for this meter and time) and
``conflict`` (those copies disagreed on the value).

Everything is vectorised over one sort of the frame by a single integer key (meter code << 43 |
epoch ms); there is no per-meter or per-row Python.

Rules (`ConsumptionRules` holds the tunable numbers; defaults in brackets):

- **Duplicates and order.** Rows are sorted by (meter, device time) with a stable sort and
  deduplicated on (meter, time); when copies disagree the one that comes *last in the input*
  is kept (InfluxDB's own last-write-wins, when the frame is concatenated in write order) and
  the reading is marked ``conflict``. Arrival order of distinct readings changes nothing.
- **Plausibility limit** per meter, in native units per hour: the registry's optional
  ``max_rate_per_h`` column (after the multiplier), else a `typical_rates` frame passed in
  (so that follow mode classifies independently of how the stream is chunked), else computed
  from the frame itself: ``spike_factor`` [10] x the ``typical_quantile`` [0.9] of the meter's
  positive rates (delta / max(dt, interval_s), quarantined readings left out; the quantile is
  the sample at index floor(q x (n - 1)) of the sorted rates), when at least
  ``min_rate_samples`` [16] positive deltas exist; otherwise no limit. A quantile is robust
  only while fewer than 1 - q of the samples are bad: with the default, spikes must be rarer
  than one in ten positive readings (or give a registry limit). The largest plausible delta
  over an interval of length dt is limit x max(dt, interval_s).
- **Spike / dip (register meters).** A reading is quarantined when its neighbours agree with
  each other and it does not: the next reading is not below the previous one, and the reading
  sticks out above the next (``spike``) or below the previous (``dip``). The quarantined
  reading is excluded; the delta from its previous to its next reading carries the energy, so
  energy is conserved (that bridging delta is then checked like any other: an implausible one
  is a jump). A register cannot run backwards, so this needs no threshold and also absorbs
  jitter; the reading is reported with its delta into it.
- **Jump (register meters).** An increase larger than the plausible maximum that does *not*
  return (no later reading brings it back) is quarantined: the delta is not summed and the
  reading becomes the new baseline. The last reading in the frame can only be a jump; when its
  successor arrives and the range is recomputed it may turn out to be a spike.
- **Rollover.** A drop where the wrapped delta ``value + modulus - previous`` is at least 0
  and plausible (with no limit known: the previous value is in the top ``wrap_fraction`` [10%] of
  the register and the new one in the bottom 10%) is a wrap; delta = the wrapped delta. The
  modulus is the registry's ``rollover_modulus``: the next value after the largest one shown,
  at the resolution the ``rollover`` is written with (``99999999`` -> 100000000, a register
  showing hundredths ``99999.99`` -> 100000.00; `greenmon.registry.rollover_modulus`).
- **Reset (meter replaced).** Any other drop. The new register is assumed to start at zero, so
  the delta is the new value; if even that is implausible for the interval (a second-hand
  register), the delta is not counted. Either way the interval is flagged ``reset``: what the
  old meter registered between its last reading and the replacement is unknowable.
- **Interval meters.** The reading is the consumption over [previous reading, reading) (the
  first: [time - interval_s, time)). A negative value (``negative``) or one above the plausible
  maximum (``spike``) is quarantined: not summed, not counted for completeness.
- **Multiplier.** quantity = delta x multiplier (CT/PT ratio), in the meter's native unit.
- **Unknown meters** (not in the registry) and non-finite values are dropped
  (`unknown_meters` reports the former; the ingestor already rejects both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import polars as pl

from greenmon.aggregator.errors import InputFrameError

__all__ = [
    "CLASSIFIED_SCHEMA",
    "EVENT_KINDS",
    "FLAGS",
    "KEY_MS_BITS",
    "ConsumptionRules",
    "classify",
    "classify_keyed",
    "events",
    "intervals",
    "keyed_readings",
    "meter_enum",
    "summary",
    "typical_rates",
    "unknown_meters",
]

#: Classification of a reading and of the interval it closes.
FLAGS: Final = ("baseline", "normal", "rollover", "reset", "jump", "spike", "dip", "negative")
FLAG: Final = pl.Enum(FLAGS)
#: What `events` reports: every flag except baseline/normal, plus duplicate-value conflicts.
EVENT_KINDS: Final = (*FLAGS[2:], "conflict")
_EVENT: Final = pl.Enum(EVENT_KINDS)

_TIME: Final = pl.Datetime("ms", "UTC")
#: Bits of epoch ms in the sort key (up to year 2248); the meter code is in the bits above.
KEY_MS_BITS: Final = 43
_MS_BITS: Final = KEY_MS_BITS
_MS_MOD: Final = 1 << _MS_BITS
_MS_PER_H: Final = 3_600_000.0

CLASSIFIED_SCHEMA_NO_METER: Final = {
    "time": _TIME,
    "value": pl.Float64,
    "start": _TIME,
    "flag": FLAG,
    "delta": pl.Float64,
    "quantity": pl.Float64,
    "counted": pl.Boolean,
    "valid": pl.Boolean,
    "limit_per_h": pl.Float64,
    "copies": pl.UInt32,
    "conflict": pl.Boolean,
}
#: Column names of `classify`'s output (``meter`` is an Enum of the registry's meter ids).
CLASSIFIED_SCHEMA: Final = ("meter", *CLASSIFIED_SCHEMA_NO_METER)


@dataclass(frozen=True)
class ConsumptionRules:
    """Tunable numbers of the classification (see the module docstring)."""

    #: The robust limit is this multiple of the meter's typical rate.
    spike_factor: float = 10.0
    #: The typical rate is this quantile of the meter's positive rates.
    typical_quantile: float = 0.9
    #: Fewer positive deltas than this in the frame: no robust limit is computed.
    min_rate_samples: int = 16
    #: With no limit known, a drop is a wrap when the previous value is in the top and the new
    #: value in the bottom `wrap_fraction` of the register's range.
    wrap_fraction: float = 0.1
    #: Optional registry column with each meter's plausible maximum (native units per hour,
    #: after the multiplier); it takes precedence over everything else.
    max_rate_column: str = "max_rate_per_h"

    def __post_init__(self) -> None:
        if not self.spike_factor > 1:
            raise ValueError("spike_factor must be > 1")
        if not 0 < self.typical_quantile <= 1:
            raise ValueError("typical_quantile must be in (0, 1]")
        if self.min_rate_samples < 1:
            raise ValueError("min_rate_samples must be >= 1")
        if not 0 < self.wrap_fraction < 0.5:
            raise ValueError("wrap_fraction must be in (0, 0.5)")


DEFAULT_RULES: Final = ConsumptionRules()


# --------------------------------------------------------------------------- meter table


def meter_enum(meters: pl.DataFrame) -> pl.Enum:
    """The Enum dtype of meter ids used by the aggregator's frames (sorted registry ids)."""
    return pl.Enum(sorted(meters.get_column("meter_id").to_list()))


def _meter_table(meters: pl.DataFrame, rules: ConsumptionRules) -> pl.DataFrame:
    """Per meter, in Enum (code) order: the attributes the row expressions gather by code."""
    required = ("meter_id", "kind", "multiplier", "rollover", "interval_s")
    missing = [c for c in required if c not in meters.columns]
    if missing:
        raise InputFrameError(f"meters frame lacks column(s) {', '.join(missing)}")
    if rules.max_rate_column in meters.columns:
        given = pl.col(rules.max_rate_column).cast(pl.String).str.strip_chars()
        max_rate = given.cast(pl.Float64, strict=False)
        bad = meters.filter(
            given.is_not_null() & (given != "") & (max_rate.is_null() | ~(max_rate > 0))
        )
        if bad.height:
            ids = ", ".join(bad.get_column("meter_id").head(5).to_list())
            raise InputFrameError(
                f"meters: {rules.max_rate_column} must be a number > 0 (meters {ids})"
            )
    else:
        max_rate = pl.lit(None, dtype=pl.Float64)
    # what a wrap adds: the registry's modulus (the next value after the largest shown, at the
    # resolution the rollover is written with), else rollover + 1 (a frame built by hand)
    modulus = (
        pl.col("rollover_modulus").cast(pl.Float64)
        if "rollover_modulus" in meters.columns
        else pl.col("rollover").cast(pl.Float64) + 1
    )
    return meters.sort("meter_id").select(
        "meter_id",
        (pl.col("kind") == "interval").alias("is_interval"),
        pl.col("multiplier").cast(pl.Float64).fill_null(1.0),
        modulus.alias("modulus"),
        (pl.col("interval_s").cast(pl.Int64) * 1000).alias("interval_ms"),
        max_rate.alias("registry_limit_per_h"),
    )


def _attr(table: pl.DataFrame, column: str, code: pl.Expr) -> pl.Expr:
    """The meter attribute `column` for each row, by gathering on the meter code (no join)."""
    return pl.lit(table.get_column(column)).gather(code)


# --------------------------------------------------------------------------- input


def _prepare(readings: pl.LazyFrame, enum: pl.Enum) -> pl.LazyFrame:
    """Validate the input schema; return ``key`` (meter code << 43 | epoch ms) and ``v`` for
    known meters, finite values and times from 1970 on."""
    schema = readings.collect_schema()
    missing = [c for c in ("meter", "time", "value") if c not in schema]
    if missing:
        raise InputFrameError(f"readings frame lacks column(s) {', '.join(missing)}")
    meter_dtype, time_dtype = schema["meter"], schema["time"]
    if not isinstance(time_dtype, pl.Datetime):
        raise InputFrameError(f"readings.time must be a Datetime, got {time_dtype}")
    if not schema["value"].is_numeric():
        raise InputFrameError(f"readings.value must be numeric, got {schema['value']}")
    meter = pl.col("meter")
    if meter_dtype != pl.String and not isinstance(meter_dtype, pl.Categorical | pl.Enum):
        raise InputFrameError(f"readings.meter must be a String, got {meter_dtype}")
    if isinstance(meter_dtype, pl.Enum) and meter_dtype != enum:
        meter = meter.cast(pl.String)  # another Enum: map through the names
    time = pl.col("time")
    if time_dtype.time_zone is None:
        time = time.dt.replace_time_zone("UTC")
    elif time_dtype.time_zone != "UTC":
        time = time.dt.convert_time_zone("UTC")
    code = meter.cast(enum, strict=False).to_physical().cast(pl.UInt64)
    t = time.dt.epoch("ms")
    value = pl.col("value").cast(pl.Float64)
    return readings.select(
        # one sort key: meter code in the high bits, epoch ms in the low 43 bits
        (code * _MS_MOD + t.cast(pl.UInt64, strict=False)).alias("key"),
        value.alias("v"),
    ).filter(pl.col("key").is_not_null() & pl.col("v").is_finite())


def keyed_readings(readings: pl.LazyFrame, meters: pl.DataFrame) -> pl.LazyFrame:
    """The readings as `classify_keyed` takes them, evaluated now: ``key`` (meter code << 43
    | epoch ms, the code being the meter's index in `meter_enum`) and ``v``, for known meters
    and finite values, sorted by key with a stable sort (copies of a reading keep their input
    order). A caller can cut the result into parts of whole meters (contiguous key ranges)."""
    if "meter_id" not in meters.columns:
        raise InputFrameError("meters frame lacks column(s) meter_id")
    prepared = _prepare(readings, meter_enum(meters)).collect()
    return _stable_sort(prepared).lazy()


def _stable_sort(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` sorted by ``key``, copies with equal keys in input order.

    Readings usually arrive nearly sorted (InfluxDB returns each series in time order; late
    data is a small tail), so the rows that are not below any earlier key — already in order
    — are kept as they are, only the others are sorted, and the two are merged. For equal
    keys the in-order rows came first in the input (a row after a larger key is not in
    order, nor is any row after it with the same key), so a left-biased merge keeps the
    input order, exactly as a stable sort of the whole frame does."""
    key = pl.col("key")
    in_order = frame.select(key >= key.cum_max()).to_series()
    late = in_order.len() - in_order.sum()
    if late == 0:
        return frame.set_sorted("key")
    if late > frame.height // 2:
        return frame.sort("key", maintain_order=True)
    head = frame.filter(in_order).set_sorted("key")
    tail = frame.filter(~in_order).sort("key", maintain_order=True)
    return head.merge_sorted(tail, "key", maintain_order=True)


def _sorted_unique(frame: pl.DataFrame) -> pl.DataFrame:
    """Keep the last copy of each (meter, time) of `frame` (sorted by key, stable): ``key``,
    ``v``, ``copies`` (the input rows of each kept reading) and ``conflict`` (whether they
    disagreed).

    Copies are rare, so they are handled on the side: the rows that belong to a run of equal
    keys are summed up per key in a small frame, and their figures scattered into columns of
    ones and falses at the positions their last copy takes in the deduplicated frame (no
    index column, running sum or filter over every reading for them)."""
    key = pl.col("key")
    superseded = frame.select((key == key.shift(-1)).fill_null(False)).to_series()
    n_superseded = superseded.sum()
    kept = frame.filter(~superseded) if n_superseded else frame
    n = kept.height
    copies = pl.repeat(1, n, dtype=pl.UInt32, eager=True).alias("copies")
    conflict = pl.repeat(False, n, dtype=pl.Boolean, eager=True).alias("conflict")
    if n_superseded:
        s = pl.col("superseded")
        runs = (
            frame.with_columns(superseded.alias("superseded"))
            .lazy()
            .with_row_index("idx")
            .filter(s | (key == key.shift(1)).fill_null(False))
            # the last copy's row in `kept`: its row here less the superseded rows before it
            .with_columns((pl.col("idx").cast(pl.Int64) - s.cast(pl.Int64).cum_sum()).alias("pos"))
            .group_by("key", maintain_order=True)
            .agg(
                pl.col("pos").last(),
                pl.len().cast(pl.UInt32).alias("copies"),
                (pl.col("v").max() != pl.col("v").min()).alias("conflict"),
            )
            .collect()
        )
        pos = runs.get_column("pos")
        copies = copies.scatter(pos, runs.get_column("copies"))
        conflict = conflict.scatter(pos.filter(runs.get_column("conflict")), True)
    return kept.with_columns(copies, conflict)


# --------------------------------------------------------------------------- rates

_LOW: Final = pl.lit(_MS_MOD - 1, pl.UInt64)  # key & _LOW = epoch ms
_HIGH: Final = pl.lit((1 << 64) - _MS_MOD, pl.UInt64)  # key & _HIGH = code << 43


def _steps(
    keyed: pl.LazyFrame, meters: pl.DataFrame, rules: ConsumptionRules
) -> tuple[pl.DataFrame, pl.DataFrame, pl.Enum]:
    """Evaluate the sorted, deduplicated frame through steps A and B (outliers, previous
    valid reading): ``code``, ``t``, ``v``, ``copies``, ``conflict``, ``iv`` (interval meter),
    ``outlier``, ``above``, ``prev_v`` (the previous valid reading's value) and ``start_ms``
    (start of the interval each reading closes; null for a register's first reading). None
    of this depends on a plausibility limit; `_span` and `_raw_rate` derive the rest."""
    table = _meter_table(meters, rules)
    enum = meter_enum(meters)
    unique = _sorted_unique(keyed.collect())
    key, code, t, v = pl.col("key"), pl.col("code"), pl.col("t"), pl.col("v")
    iv = pl.col("iv")

    # -- step A: register readings that stick out while their neighbours agree. (Whether the
    # bridging delta is plausible is decided below like any other delta: if it is not, it
    # becomes a quarantined jump.)
    same_prev = code == code.shift(1)
    same_next = code == code.shift(-1)
    v_prev, v_next = v.shift(1), v.shift(-1)
    outlier = ~iv & same_prev & same_next & (v_next >= v_prev) & ((v > v_next) | (v < v_prev))

    # -- step B: the previous reading that is not an outlier. ``start_ms``: the start of the
    # interval a reading closes (a register's previous valid reading; an interval meter's
    # previous reading, or time - interval_s for its first). The previous valid key belongs
    # to the same meter exactly when it is at least this meter's first possible key.
    ok = ~pl.col("outlier")
    prev_key = pl.col("prev_key")
    has_prev = (prev_key >= (key & _HIGH)).fill_null(False)
    prev_t = (prev_key & _LOW).cast(pl.Int64)
    interval_ms = _attr(table, "interval_ms", code)
    frame = (
        unique.lazy()
        .with_columns((key // _MS_MOD).cast(pl.UInt32).alias("code"))
        .with_columns(
            (key & _LOW).cast(pl.Int64).alias("t"),
            # per-row meter attributes: gathered by code where used (no join)
            _attr(table, "is_interval", code).alias("iv"),
        )
        .with_columns(
            outlier.fill_null(False).alias("outlier"),
            (v > v_next).fill_null(False).alias("above"),
        )
        .with_columns(
            pl.when(ok).then(key).shift(1).forward_fill().alias("prev_key"),
            pl.when(ok).then(v).shift(1).forward_fill().alias("prev_v"),
        )
        .select(
            "code",
            "t",
            "v",
            "copies",
            "conflict",
            "iv",
            "outlier",
            "above",
            # a register has a previous reading exactly when its interval has a start
            pl.when(has_prev).then(pl.col("prev_v")).alias("prev_v"),
            pl.when(has_prev).then(prev_t).when(iv).then(t - interval_ms).alias("start_ms"),
        )
        .collect()
    )
    return frame, table, enum


def _span(table: pl.DataFrame) -> pl.Expr:
    """The length of the interval a reading closes (ms), at least the meter's nominal one."""
    t = pl.col("t")
    return pl.max_horizontal(t - pl.col("start_ms"), _attr(table, "interval_ms", pl.col("code")))


def _raw_rate(table: pl.DataFrame) -> pl.Expr:
    """Raw register units per hour over the interval a reading closes (null: outliers and
    registers' first readings)."""
    v, start = pl.col("v"), pl.col("start_ms")
    delta = pl.when(pl.col("iv")).then(v).when(start.is_not_null()).then(v - pl.col("prev_v"))
    return pl.when(~pl.col("outlier")).then(delta / _span(table) * _MS_PER_H)


def _typical(
    frame: pl.DataFrame, table: pl.DataFrame, rules: ConsumptionRules, only_unlimited: bool
) -> pl.Series:
    """Per meter (in code order): the ``typical_quantile`` of its positive raw rates (null
    with fewer than ``min_rate_samples``), from one group-by of `frame`'s positive rates."""
    rows = frame.lazy()
    if only_unlimited:  # meters with a registry limit need no robust one
        rows = rows.filter(_attr(table, "registry_limit_per_h", pl.col("code")).is_null())
    per_meter = (
        rows.select("code", _raw_rate(table).alias("sample"))
        .filter(pl.col("sample") > 0)
        .group_by("code")
        .agg(
            pl.len().alias("n"),
            pl.col("sample").quantile(rules.typical_quantile, interpolation="lower").alias("q"),
        )
        .filter(pl.col("n") >= rules.min_rate_samples)
        .collect()
    )
    return pl.Series("typical", [None] * table.height, dtype=pl.Float64).scatter(
        per_meter.get_column("code"), per_meter.get_column("q")
    )


def typical_rates(
    readings: pl.LazyFrame, meters: pl.DataFrame, rules: ConsumptionRules | None = None
) -> pl.LazyFrame:
    """Each meter's typical rate (native units per hour) from a stretch of readings.

    Returns ``meter`` (String), ``typical_rate_per_h`` (the ``typical_quantile`` of the
    positive rates of the intervals it closed, quarantined readings left out), ``samples``.
    Compute it once over a representative history (weeks) and pass it to `classify` in
    follow mode, so that a reading is classified the same whichever chunk it arrives in.
    """
    rules = rules or DEFAULT_RULES
    frame, table, _ = _steps(keyed_readings(readings, meters), meters, rules)
    code = pl.col("code")
    return (
        frame.lazy()
        .select(code, (_raw_rate(table) * _attr(table, "multiplier", code)).alias("rate"))
        .filter(pl.col("rate") > 0)
        .group_by("code")
        .agg(
            pl.col("rate")
            .quantile(rules.typical_quantile, interpolation="lower")
            .alias("typical_rate_per_h"),
            pl.len().cast(pl.UInt32).alias("samples"),
        )
        .select(_attr(table, "meter_id", code).alias("meter"), "typical_rate_per_h", "samples")
        .sort("meter")
    )


def _limits(
    frame: pl.DataFrame,
    table: pl.DataFrame,
    rules: ConsumptionRules,
    rates: pl.LazyFrame | pl.DataFrame | None,
) -> pl.Series:
    """Per meter (in code order): the plausibility limit, native units per hour (null = none
    known): the registry's, else from `rates`, else robust from the frame itself."""
    registry = table.get_column("registry_limit_per_h")
    if registry.null_count() == 0:
        return registry
    if rates is None:
        typical = _typical(frame, table, rules, only_unlimited=True)
        robust = typical * table.get_column("multiplier") * rules.spike_factor
        return registry.fill_null(robust)
    given = rates.lazy()
    names = given.collect_schema().names()
    if "meter" not in names or "typical_rate_per_h" not in names:
        raise InputFrameError("rates frame needs columns meter, typical_rate_per_h")
    if "samples" not in names:
        given = given.with_columns(pl.lit(rules.min_rate_samples, pl.UInt32).alias("samples"))
    enum = pl.Enum(table.get_column("meter_id").to_list())
    limits = (
        given.select(
            pl.col("meter")
            .cast(pl.String)
            .cast(enum, strict=False)
            .to_physical()
            .cast(pl.UInt32)
            .alias("code"),
            pl.when(pl.col("samples").cast(pl.UInt32) >= rules.min_rate_samples)
            .then(pl.col("typical_rate_per_h").cast(pl.Float64) * rules.spike_factor)
            .alias("given_limit"),
        )
        .filter(pl.col("code").is_not_null())
        .collect()
    )
    dense = pl.Series("given", [None] * table.height, dtype=pl.Float64).scatter(
        limits.get_column("code"), limits.get_column("given_limit")
    )
    return registry.fill_null(dense)


# --------------------------------------------------------------------------- classification


def classify(
    readings: pl.LazyFrame,
    meters: pl.DataFrame,
    rules: ConsumptionRules | None = None,
    rates: pl.LazyFrame | pl.DataFrame | None = None,
) -> pl.LazyFrame:
    """Classify every distinct reading and derive the delta of the interval it closes.

    `readings`: ``meter, time, value`` (see the module docstring); `meters`:
    `Registry.meters`; `rates`: optional `typical_rates` output. Returns a LazyFrame with the
    columns `CLASSIFIED_SCHEMA`, sorted by meter (registry id order) and time. Feed it to
    `intervals`, `events`, `summary` or `greenmon.aggregator.windows.attribute`.

    The sort, the deduplication, steps A and B and the per-meter limits are evaluated here
    (each in its own pass, so that every step runs in the form it is fastest in); what is
    returned is one row-wise projection of that frame.
    """
    return classify_keyed(keyed_readings(readings, meters), meters, rules, rates)


def classify_keyed(
    keyed: pl.LazyFrame,
    meters: pl.DataFrame,
    rules: ConsumptionRules | None = None,
    rates: pl.LazyFrame | pl.DataFrame | None = None,
) -> pl.LazyFrame:
    """`classify` of readings already keyed and sorted by `keyed_readings` (or any contiguous
    range of whole meters of its result)."""
    rules = rules or DEFAULT_RULES
    frame, table, enum = _steps(keyed, meters, rules)
    limit_per_h = _limits(frame, table, rules, rates)
    code, t, v = pl.col("code"), pl.col("t"), pl.col("v")
    # the largest plausible delta over the interval a reading closes, raw register units
    # (null when no limit is known): per meter limit / multiplier / ms per hour, x span
    per_ms = (limit_per_h / table.get_column("multiplier") / _MS_PER_H).alias("per_ms")
    maxd = pl.col("maxd")
    iv = pl.col("iv")
    no_limit = maxd.is_null()
    # for a register, a previous reading exists exactly when its interval has a start
    has_pv, prev_v = pl.col("start_ms").is_not_null(), pl.col("prev_v")
    modulus = _attr(table, "modulus", code)
    d = v - prev_v
    wrapped = d + modulus
    is_wrap = (
        modulus.is_not_null()
        & (wrapped >= 0)
        & pl.when(no_limit)
        .then(
            (prev_v >= modulus * (1 - rules.wrap_fraction)) & (v <= modulus * rules.wrap_fraction)
        )
        .otherwise(wrapped <= maxd)
    )
    # flag as its index in FLAGS (cheap integers; the Enum is gathered at the end)
    code_of = {name: i for i, name in enumerate(FLAGS)}
    flag = (
        pl.when(iv)
        .then(
            pl.when(v < 0)
            .then(code_of["negative"])
            .when(v > maxd)
            .then(code_of["spike"])
            .otherwise(code_of["normal"])
        )
        .when(pl.col("outlier"))
        .then(pl.when(pl.col("above")).then(code_of["spike"]).otherwise(code_of["dip"]))
        .when(~has_pv)
        .then(code_of["baseline"])
        .when(d >= 0)
        .then(pl.when(d > maxd).then(code_of["jump"]).otherwise(code_of["normal"]))
        .when(is_wrap)
        .then(code_of["rollover"])
        .otherwise(code_of["reset"])
        .cast(pl.UInt8)
    )
    fc = pl.col("fc")
    delta = (
        pl.when(iv | (fc == code_of["reset"]))
        .then(v)
        .when(fc == code_of["rollover"])
        .then(wrapped)
        .when(has_pv)
        .then(d)
    )
    counted = (
        (fc == code_of["normal"])
        | (fc == code_of["rollover"])
        | ((fc == code_of["reset"]) & (v >= 0) & (no_limit | (v <= maxd)).fill_null(False))
    )
    start = pl.col("start_ms")
    flags = pl.Series(FLAGS, dtype=FLAG)
    meters_enum = pl.Series(table.get_column("meter_id"), dtype=enum)
    return (
        frame.lazy()
        .with_columns((pl.lit(per_ms).gather(code) * _span(table)).alias("maxd"))
        .with_columns(flag.alias("fc"))
        .select(
            pl.lit(meters_enum).gather(code).alias("meter"),
            t.cast(_TIME).alias("time"),
            v.alias("value"),
            start.cast(_TIME).alias("start"),
            pl.lit(flags).gather(fc).alias("flag"),
            delta.alias("delta"),
            (delta * _attr(table, "multiplier", code)).alias("quantity"),
            counted.alias("counted"),
            (fc < code_of["spike"]).alias("valid"),
            pl.lit(limit_per_h).gather(code).alias("limit_per_h"),
            "copies",
            "conflict",
        )
    )


# --------------------------------------------------------------------------- reports


def intervals(classified: pl.LazyFrame) -> pl.LazyFrame:
    """The counted intervals: ``meter`` (String), ``start``, ``end``, ``quantity``, ``flag``."""
    return classified.filter(pl.col("counted")).select(
        pl.col("meter").cast(pl.String),
        "start",
        pl.col("time").alias("end"),
        "quantity",
        "flag",
    )


def events(classified: pl.LazyFrame) -> pl.LazyFrame:
    """Everything worth reporting, one row per reading: rollovers, resets, jumps, spikes,
    dips, negative interval values, and readings whose duplicate copies disagreed.

    Columns: ``meter`` (String), ``time``, ``kind`` (`EVENT_KINDS`), ``value``, ``start``,
    ``quantity`` (native units: for spikes and dips the delta *into* the quarantined reading,
    for jumps the quarantined delta, for resets and rollovers the counted delta), ``counted``.
    A reading with a conflict and another flag yields two rows.
    """
    flagged = classified.filter(~pl.col("flag").is_in(["baseline", "normal"])).select(
        pl.col("meter").cast(pl.String),
        "time",
        pl.col("flag").cast(pl.String).cast(_EVENT).alias("kind"),
        "value",
        "start",
        "quantity",
        "counted",
    )
    conflicts = classified.filter(pl.col("conflict")).select(
        pl.col("meter").cast(pl.String),
        "time",
        pl.lit("conflict", dtype=_EVENT).alias("kind"),
        "value",
        "start",
        "quantity",
        "counted",
    )
    return pl.concat([flagged, conflicts]).sort("meter", "time", "kind")


def summary(classified: pl.LazyFrame) -> pl.LazyFrame:
    """Per meter: readings, duplicates, conflicts, a count per flag, counted and quarantined
    quantity (native units), first and last reading time."""
    flag = pl.col("flag")
    counts = [(flag == name).sum().cast(pl.UInt32).alias(name) for name in FLAGS[2:]]
    return (
        classified.group_by("meter")
        .agg(
            pl.len().cast(pl.UInt32).alias("readings"),
            (pl.col("copies") - 1).sum().cast(pl.UInt32).alias("duplicates"),
            pl.col("conflict").sum().cast(pl.UInt32).alias("conflicts"),
            *counts,
            pl.col("quantity").filter(pl.col("counted")).sum().alias("counted_quantity"),
            pl.col("quantity")
            .filter(~pl.col("counted") & flag.is_in(["jump", "spike", "negative", "reset"]))
            .sum()
            .alias("quarantined_quantity"),
            pl.col("time").min().alias("first"),
            pl.col("time").max().alias("last"),
        )
        .with_columns(pl.col("meter").cast(pl.String))
        .sort("meter")
    )


def unknown_meters(readings: pl.LazyFrame, meters: pl.DataFrame | Sequence[str]) -> pl.LazyFrame:
    """Readings whose meter is not registered: ``meter``, ``readings`` (count)."""
    ids = meters.get_column("meter_id").to_list() if isinstance(meters, pl.DataFrame) else meters
    return (
        readings.select(pl.col("meter").cast(pl.String))
        .filter(~pl.col("meter").is_in(list(ids)))
        .group_by("meter")
        .agg(pl.len().cast(pl.UInt32).alias("readings"))
        .sort("meter")
    )
