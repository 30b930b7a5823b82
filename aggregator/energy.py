"""Energy and carbon: per meter and window, and per enterprise (comprehensive consumption).

`meter_energy` converts `greenmon.aggregator.windows.attribute` rows into the InfluxDB
``meter_energy`` measurement: quantity (native unit), kgce and kgCO2 with the factors that
`greenmon.aggregator.reference.meter_factors` chose for the meter and the window's local year.

`enterprise_energy` sums meters into the ``energy`` measurement, per carrier and then as
``carrier=total``, exactly as DESIGN.md §4 defines it (everything in kgce per carrier first):

- comprehensive = Σ ``boundary`` + Σ ``generation`` − Σ ``export`` (``sub`` meters are a
  breakdown: never added);
- renewable consumed on site, per carrier = max(0, generation − export of the same carrier);
- double-control = comprehensive − Σ renewable consumed on site − energy of meters flagged
  ``raw_material``. The flag is honoured on ``boundary`` and ``sub`` meters (a sub-meter
  measuring feedstock taken from a boundary supply is the usual case); flag either a boundary
  meter or the sub-meters below it, never both. On ``export``/``generation`` meters it is
  meaningless and ignored.
- carbon per carrier uses the same signs: electricity kgCO2 = grid factor x (purchased −
  exported) — net purchased electricity, negative for a net exporter — and on-site renewable
  generation is zero-carbon. The formulas apply per window: because of max(0, ·) a month's
  double-control figure is computed from the month's sums, not summed from its days.

A ``meter_energy`` row carries the meter's own figures with positive signs (an export meter's
kgCO2 is what its electricity would have emitted; a generation meter's is 0); the signs are
applied in the enterprise sums.

Completeness of an enterprise row is the smallest completeness of the meters it is made of;
a registered ``boundary``/``generation``/``export`` meter with no row in the window counts as
0 (a carrier with no row at all makes the total 0 — the registry has no commissioning dates,
so a meter added later makes earlier windows look incomplete). ``quantity`` of a carrier row
is in the carrier's reference unit (``unit`` column); a total row has no quantity.

Output columns are the InfluxDB tags and fields by name (`METER_ENERGY_TAGS`,
`METER_ENERGY_FIELDS`, `ENERGY_TAGS`, `ENERGY_FIELDS`), ``time`` (the window start), plus
metadata the writer may keep or drop (`METER_ENERGY_EXTRA`, `ENERGY_EXTRA`), among them
``reference``: the coefficient and emission-factor rows used (file:line, value, year, status),
and ``reference_id``, its compact id (`greenmon.aggregator.reference.reference_id`), which is
what the points store.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from greenmon.aggregator.errors import InputFrameError
from greenmon.aggregator.reference import with_reference_ids
from greenmon.aggregator.windows import DEFAULT_TZ
from greenmon.registry import carrier_units
from greenmon.units import conversion_factor

__all__ = [
    "ENERGY_EXTRA",
    "ENERGY_FIELDS",
    "ENERGY_TAGS",
    "METER_ENERGY_EXTRA",
    "METER_ENERGY_FIELDS",
    "METER_ENERGY_TAGS",
    "ROLE_SIGN",
    "TOTAL",
    "enterprise_energy",
    "meter_energy",
]

METER_ENERGY_TAGS: Final = ("enterprise", "meter", "carrier", "role", "window")
METER_ENERGY_FIELDS: Final = ("quantity", "kgce", "kgco2", "completeness")
METER_ENERGY_EXTRA: Final = ("end", "readings", "unit", "reference", "reference_id", "year")
ENERGY_TAGS: Final = ("enterprise", "carrier", "county", "industry", "window")
ENERGY_FIELDS: Final = ("quantity", "kgce", "kgco2", "completeness", "double_control_kgce")
ENERGY_EXTRA: Final = (
    "end",
    "unit",
    "renewable_kgce",
    "raw_material_kgce",
    "reference",
    "reference_id",
)
#: The ``carrier`` tag value of an enterprise's all-carrier series.
TOTAL: Final = "total"
#: How each meter role enters comprehensive consumption.
ROLE_SIGN: Final = {"boundary": 1.0, "generation": 1.0, "export": -1.0, "sub": 0.0}
_TIME: Final = pl.Datetime("ms", "UTC")


def meter_energy(
    windows: pl.LazyFrame,
    meters: pl.DataFrame,
    factors: pl.DataFrame,
    *,
    tz: str = DEFAULT_TZ,
) -> pl.LazyFrame:
    """``meter_energy`` rows: `windows` (attribute output) x the meter's factors.

    `factors` is `meter_factors` output; each window uses the factors of its local year (a
    year outside the factors' years uses the nearest one). Columns: ``time``, the tags
    `METER_ENERGY_TAGS`, the fields `METER_ENERGY_FIELDS`, and `METER_ENERGY_EXTRA`.
    """
    if factors.is_empty():
        raise InputFrameError("factors frame is empty (meter_factors found no meter)")
    years = factors.get_column("year").cast(pl.Int32)
    lo, hi = int(years.min()), int(years.max())  # type: ignore[arg-type]
    info = meters.select(
        pl.col("meter_id").alias("meter"),
        pl.col("enterprise_id").alias("enterprise"),
        "carrier",
        "role",
    ).lazy()
    per_year = factors.select(
        pl.col("meter_id").alias("meter"),
        pl.col("year").cast(pl.Int32),
        pl.col("unit").cast(pl.Categorical),
        "kgce_per_unit",
        "kgco2_per_unit",
        pl.col("reference").cast(pl.Categorical),
        pl.col("reference_id").cast(pl.Categorical),
    ).lazy()
    year = pl.col("time").dt.convert_time_zone(tz).dt.year().cast(pl.Int32).clip(lo, hi)
    return (
        windows.with_columns(year.alias("year"))
        .join(info, on="meter", how="inner")
        .join(per_year, on=["meter", "year"], how="left")
        .select(
            "time",
            "enterprise",
            "meter",
            "carrier",
            "role",
            "window",
            "quantity",
            (pl.col("quantity") * pl.col("kgce_per_unit")).alias("kgce"),
            (pl.col("quantity") * pl.col("kgco2_per_unit")).alias("kgco2"),
            "completeness",
            "end",
            "readings",
            "unit",
            "reference",
            "reference_id",
            "year",
        )
    )


def _meter_roles(meters: pl.DataFrame, factors: pl.DataFrame) -> pl.DataFrame:
    units = carrier_units()
    # the factor into the carrier's reference unit (for a meter in Nm3 it needs the reference
    # conditions, which meter_factors resolved)
    to_carrier = dict(
        factors.select("meter_id", "to_carrier_unit").unique("meter_id", keep="first").iter_rows()
    )
    rows = [
        {
            "meter": meter_id,
            "sign": ROLE_SIGN[role],
            "is_generation": role == "generation",
            "is_export": role == "export",
            "is_raw": bool(raw) and role in ("boundary", "sub"),
            "to_carrier_unit": to_carrier.get(meter_id)
            or conversion_factor(unit, units[carrier][0]),
            "carrier_unit": units[carrier][0],
        }
        for meter_id, carrier, unit, role, raw in meters.select(
            "meter_id", "carrier", "unit", "role", "raw_material"
        ).iter_rows()
    ]
    return pl.DataFrame(
        rows,
        schema={
            "meter": pl.String,
            "sign": pl.Float64,
            "is_generation": pl.Boolean,
            "is_export": pl.Boolean,
            "is_raw": pl.Boolean,
            "to_carrier_unit": pl.Float64,
            "carrier_unit": pl.String,
        },
        orient="row",
    )


def enterprise_energy(
    meter_rows: pl.LazyFrame,
    meters: pl.DataFrame,
    enterprises: pl.DataFrame,
    factors: pl.DataFrame,
) -> pl.LazyFrame:
    """``energy`` rows per enterprise, carrier and window, plus ``carrier=total`` rows.

    `meter_rows` is `meter_energy` output, `factors` the `meter_factors` frame it used (for
    the ``reference`` labels). Evaluates the per-carrier sums now (one pass over
    `meter_rows`); the LazyFrame returned holds only enterprise rows. Columns: ``time``, the
    tags `ENERGY_TAGS`, the fields `ENERGY_FIELDS` (``double_control_kgce`` on total rows
    only, ``quantity`` on carrier rows only) and `ENERGY_EXTRA`.
    """
    roles = _meter_roles(meters, factors).lazy()
    counted = pl.col("sign") != 0
    # registered counted meters per enterprise and carrier, and counted carriers per enterprise
    registered = (
        meters.lazy()
        .filter(pl.col("role") != "sub")
        .group_by(pl.col("enterprise_id").alias("enterprise"), "carrier")
        .agg(pl.len().cast(pl.UInt32).alias("registered"))
    )
    carriers_registered = registered.group_by("enterprise").agg(
        pl.len().cast(pl.UInt32).alias("registered_carriers")
    )
    kgce, sign = pl.col("kgce"), pl.col("sign")
    # per-row terms first (plain sums group fastest), then one group-by
    rows = meter_rows.join(roles, on="meter", how="inner").select(
        "enterprise",
        "carrier",
        "window",
        "time",
        "end",
        (sign * pl.col("quantity") * pl.col("to_carrier_unit")).alias("quantity"),
        (sign * kgce).alias("kgce"),
        (sign * pl.col("kgco2")).alias("kgco2"),
        pl.when(counted).then(pl.col("completeness")).alias("completeness"),
        counted.alias("meters"),
        pl.when(pl.col("is_generation")).then(kgce).otherwise(0.0).alias("generation_kgce"),
        pl.when(pl.col("is_export")).then(kgce).otherwise(0.0).alias("export_kgce"),
        pl.when(pl.col("is_raw")).then(kgce).otherwise(0.0).alias("raw_material_kgce"),
        pl.col("carrier_unit").alias("unit"),
        "year",
    )
    sums = ("quantity", "kgce", "kgco2", "generation_kgce", "export_kgce", "raw_material_kgce")
    per_carrier = (
        rows.group_by("enterprise", "carrier", "window", "time")
        .agg(
            *(pl.col(c).first() for c in ("end", "unit", "year")),
            *(pl.col(c).sum() for c in sums),
            pl.col("completeness").min(),
            pl.col("meters").sum().cast(pl.UInt32),
        )
        .join(registered, on=["enterprise", "carrier"], how="left")
        .with_columns(
            pl.when(pl.col("meters") < pl.col("registered").fill_null(0))
            .then(0.0)
            .otherwise(pl.col("completeness"))
            .alias("completeness"),
            pl.max_horizontal(pl.col("generation_kgce") - pl.col("export_kgce"), pl.lit(0.0)).alias(
                "renewable_kgce"
            ),
        )
    )
    per_carrier = per_carrier.collect().lazy()
    # the reference rows in force per enterprise, carrier and year: those of its counted
    # meters (from the factors, not per window)
    labels = (
        factors.select("meter_id", "year", "reference")
        .lazy()
        .join(
            meters.lazy()
            .filter(pl.col("role") != "sub")
            .select(pl.col("meter_id"), pl.col("enterprise_id").alias("enterprise"), "carrier"),
            on="meter_id",
        )
        .select("enterprise", "carrier", pl.col("year").cast(pl.Int32), "reference")
        .unique()
        .group_by("enterprise", "carrier", "year")
        .agg(pl.col("reference").sort().str.join(" | "))
    )
    total_labels = labels.group_by("enterprise", "year").agg(
        pl.col("reference").sort().str.join(" | ")
    )
    # one id per distinct label (few: enterprises share their reference rows); categories,
    # so that the long label is not copied onto every row
    as_categories = pl.col("reference", "reference_id").cast(pl.Categorical)
    labels = labels.collect().pipe(with_reference_ids).with_columns(as_categories).lazy()
    total_labels = (
        total_labels.collect().pipe(with_reference_ids).with_columns(as_categories).lazy()
    )
    per_carrier = per_carrier.join(labels, on=["enterprise", "carrier", "year"], how="left")
    carrier_rows = per_carrier.filter(pl.col("meters") > 0)
    totals = (
        per_carrier.group_by("enterprise", "window", "time")
        .agg(
            pl.col("end").first(),
            pl.col("kgce").sum(),
            pl.col("kgco2").sum(),
            pl.col("completeness").min(),
            (pl.col("meters") > 0).sum().cast(pl.UInt32).alias("carriers"),
            pl.col("renewable_kgce").sum(),
            pl.col("raw_material_kgce").sum(),
            pl.col("year").first(),
        )
        .join(carriers_registered, on="enterprise", how="left")
        .join(total_labels, on=["enterprise", "year"], how="left")
        .with_columns(
            pl.lit(TOTAL).alias("carrier"),
            pl.lit(None, dtype=pl.Float64).alias("quantity"),
            pl.lit(None, dtype=pl.String).alias("unit"),
            pl.when(pl.col("carriers") < pl.col("registered_carriers").fill_null(0))
            .then(0.0)
            .otherwise(pl.col("completeness"))
            .alias("completeness"),
            (pl.col("kgce") - pl.col("renewable_kgce") - pl.col("raw_material_kgce")).alias(
                "double_control_kgce"
            ),
        )
    )
    tags = enterprises.select(
        pl.col("enterprise_id").alias("enterprise"), "county", "industry"
    ).lazy()
    columns = [
        "time",
        "enterprise",
        "carrier",
        "county",
        "industry",
        "window",
        "quantity",
        "kgce",
        "kgco2",
        "completeness",
        "double_control_kgce",
        "end",
        "unit",
        "renewable_kgce",
        "raw_material_kgce",
        "reference",
        "reference_id",
    ]
    carrier_out = carrier_rows.with_columns(
        pl.lit(None, dtype=pl.Float64).alias("double_control_kgce"),
        pl.lit(None, dtype=pl.Float64).alias("renewable_kgce"),
        pl.lit(None, dtype=pl.Float64).alias("raw_material_kgce"),
    )
    return pl.concat(
        [
            carrier_out.join(tags, on="enterprise", how="left").select(columns),
            totals.join(tags, on="enterprise", how="left").select(columns),
        ]
    )
