"""Ground truth: what every meter truly consumed, and what was actually sent, as Parquet.

This module owns the truth files a run writes with ``--truth FILE.parquet`` (Polars, zstd).

``FILE.parquet`` — one row per meter and nominal reading, sorted by ``meter_id, end``:

- ``meter_id``, ``enterprise_id``, ``gateway_id`` (String);
- ``carrier``, ``role`` (``boundary``/``sub``/``export``/``generation``), ``kind``
  (``register``/``interval``), ``unit`` (the registered unit), ``multiplier`` (Float64; 1 for
  interval meters) — copied from the registry;
- ``start``, ``end`` (Datetime ms UTC): the interval ``[start, end)`` in *true* time; the
  reading is stamped ``end`` (register meters also have a baseline row ``end = run start``
  covering the step before it);
- ``quantity`` (Float64): the true consumption over ``[start, end)`` in the registered unit,
  after the multiplier: what the aggregator should report;
- ``register`` (Float64): the true displayed register at ``end`` in whole display units,
  wraps and meter replacements included, spikes not; null for interval meters;
- ``sent`` (Boolean): a valid reading for ``end`` was published at least once;
  ``publishes`` (Int32): how many times (0, 1, or 2 when duplicated);
- ``seq`` (Int64): the first message carrying it (the out-file's ``seq``), null if never sent;
- ``sent_ts`` (Datetime ms UTC): the device time sent (``end`` + the gateway's clock skew);
  ``sent_value`` (Float64): the value sent, in ``sent_unit`` (String; null = unit omitted),
  spikes included; ``skew_ms`` (Int64): the gateway's clock skew (0 if none);
- ``faults`` (List(String)): the faults affecting this reading or interval: ``rollover`` (the
  register wrapped in this interval), ``reset`` (meter replaced in this interval), ``spike``
  (this reading's value is wrong), ``gap_catchup`` (sent late), ``gap_lost`` (never sent),
  ``duplicate``, ``out_of_order``, ``clock_skew``, ``disconnect`` (the gateway reconnected
  before this reading's message).

``FILE.malformed.parquet`` — the extra malformed messages: ``seq`` (Int64), ``at`` (publication
time), ``gateway_id``, ``enterprise_id`` (the gateway's owner), ``kind`` (``bad_json``,
``unknown_meter``, ``wrong_enterprise``, ``nan``, ``wrong_unit``), ``topic``, ``payload``
(String), ``reason`` (the `greenmon.ingest.codec.RejectReason` value the ingestor must give),
``meter_id``, ``ts`` (the device time of the reading it was derived from).

What the aggregator should find: for a register meter, the delta of two successive *received*
readings (device-time order) times the multiplier equals the sum of ``quantity`` over the
intervals between them, except across a ``reset`` interval (flagged) and on a ``spike`` reading
(quarantined: its neighbours' delta carries the energy). An interval meter's reading carries
its own interval's ``quantity``. Completeness per window counts distinct received readings
(``sent``) with ``sent_ts`` in the window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import polars as pl

from greenmon.simulators.errors import SimulatorError
from greenmon.simulators.faults import BIT, FAULT_KINDS
from greenmon.simulators.fleet import Fleet
from greenmon.simulators.messages import Plan

__all__ = [
    "MALFORMED_SCHEMA",
    "TRUTH_SCHEMA",
    "faults_list",
    "malformed_frame",
    "malformed_path",
    "truth_frame",
    "write_truth",
]

_TS: Final = pl.Datetime("ms", "UTC")
TRUTH_SCHEMA: Final = {
    "meter_id": pl.String,
    "enterprise_id": pl.String,
    "gateway_id": pl.String,
    "carrier": pl.String,
    "role": pl.String,
    "kind": pl.String,
    "unit": pl.String,
    "multiplier": pl.Float64,
    "start": _TS,
    "end": _TS,
    "quantity": pl.Float64,
    "register": pl.Float64,
    "sent": pl.Boolean,
    "publishes": pl.Int32,
    "seq": pl.Int64,
    "sent_ts": _TS,
    "sent_value": pl.Float64,
    "sent_unit": pl.String,
    "skew_ms": pl.Int64,
    "faults": pl.List(pl.String),
}
MALFORMED_SCHEMA: Final = {
    "seq": pl.Int64,
    "at": _TS,
    "gateway_id": pl.String,
    "enterprise_id": pl.String,
    "kind": pl.String,
    "topic": pl.String,
    "payload": pl.String,
    "reason": pl.String,
    "meter_id": pl.String,
    "ts": _TS,
}


def faults_list(flags: pl.Expr) -> pl.Expr:
    """Fault bit mask -> sorted list of fault names (FAULT_KINDS order)."""
    names = [
        pl.when((flags & BIT[name]) > 0).then(pl.lit(name)).otherwise(pl.lit(None, pl.String))
        for name in FAULT_KINDS
    ]
    return pl.concat_list(names).list.drop_nulls()


def truth_frame(fleet: Fleet, plan: Plan) -> pl.DataFrame:
    """The truth table (TRUTH_SCHEMA) of a planned run."""
    meters = fleet.meters.select(
        pl.int_range(pl.len(), dtype=pl.Int32).alias("row"),
        "meter_id",
        "enterprise_id",
        "carrier",
        "role",
        "kind",
        "unit",
        pl.col("multiplier").cast(pl.Float64).fill_null(1.0),
    )
    gateways = fleet.gateways.select(
        pl.int_range(pl.len(), dtype=pl.Int32).alias("gateway"), "gateway_id"
    )
    return (
        plan.readings.join(meters, on="row", how="left")
        .join(gateways, on="gateway", how="left")
        .with_columns(
            pl.col("start_ms").cast(_TS).alias("start"),
            pl.col("end_ms").cast(_TS).alias("end"),
            pl.col("register").cast(pl.Float64),
            (pl.col("publishes") > 0).alias("sent"),
            pl.col("sent_ts_ms").cast(_TS).alias("sent_ts"),
            faults_list(pl.col("flags")).alias("faults"),
        )
        .select(list(TRUTH_SCHEMA))
        .cast(TRUTH_SCHEMA)  # type: ignore[arg-type]
        .sort("meter_id", "end")
    )


def malformed_frame(plan: Plan) -> pl.DataFrame:
    """The malformed extras (MALFORMED_SCHEMA) of a planned run."""
    return (
        plan.malformed.with_columns(
            pl.col("at_ms").cast(_TS).alias("at"), pl.col("ts_ms").cast(_TS).alias("ts")
        )
        .select(list(MALFORMED_SCHEMA))
        .cast(MALFORMED_SCHEMA)  # type: ignore[arg-type]
        .sort("seq")
    )


def malformed_path(truth_path: Path) -> Path:
    """``run.parquet`` -> ``run.malformed.parquet`` (beside it)."""
    path = Path(truth_path)
    stem = path.name.removesuffix(".parquet")
    return path.with_name(f"{stem}.malformed.parquet")


def write_truth(truth: pl.DataFrame, malformed: pl.DataFrame, path: Path) -> tuple[Path, Path]:
    """Write both tables (zstd Parquet, deterministic bytes); return their paths."""
    path = Path(path)
    other = malformed_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        truth.write_parquet(path, compression="zstd", statistics=True)
        malformed.write_parquet(other, compression="zstd", statistics=True)
    except OSError as exc:
        raise SimulatorError(f"cannot write the truth to {path}: {exc.strerror or exc}") from exc
    return path, other
