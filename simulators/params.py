"""The simulators' parameter tables: every domain constant they use, read from packaged data.

This module owns loading `simulators/data/*.csv` (shipped as ``greenmon.simulators/data``) into
typed, immutable tables, once per process. Each file carries, per row, where the number comes
from (``source``), its ``year`` and a ``status`` (``verified`` = seen in a repost of the
official text, ``third-party``, ``approximate``, ``unverified``, or ``assumption`` = a
simulation parameter chosen to look plausible, not a reference value):

- ``industries.csv`` — GB/T 4754-2017 classes of Nantong's six clusters with their shift
  patterns, typical energy intensity, output per mu, land, value-added and tax ratios,
  product unit and price, energy-carrier shares and rooftop-PV probability;
- ``clusters.csv``, ``counties.csv`` — the six clusters and the ten counties/districts with
  their centroids and cluster affinities;
- ``patterns.csv``, ``hourly.csv`` — shift patterns: base load, weekend/holiday/Spring Festival
  activity, hourly working-day shape;
- ``holidays.csv`` — China's public holidays and make-up working days (调休) 2024-2026 from the
  State Council General Office notices;
- ``climate.csv`` — Nantong's monthly mean temperature (seasonal heating/cooling);
- ``meter_types.csv`` — per meter type: carrier, registered unit, kind, noise, seasonality;
- ``constants.csv`` — scalar knobs (PV yield, spreads, shares of green/breaching firms, ...);
- ``names.csv`` — characters for fictitious firm names.

Conversion to standard coal (kgce per unit) comes from the kernel's packaged
``energy_coefficients.csv``, the same file the registry and the aggregator use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Final

import polars as pl

__all__ = [
    "CARRIER_CODES",
    "CLUSTERS",
    "FUEL_CARRIERS",
    "PATTERNS",
    "Params",
    "load_params",
]

PATTERNS: Final = ("one_shift", "two_shift", "three_shift", "continuous")
CLUSTERS: Final = ("ship", "textile", "electronics", "materials", "equipment", "energy")
FUEL_CARRIERS: Final = ("electricity", "natural_gas", "steam", "diesel", "raw_coal")
CARRIER_CODES: Final = MappingProxyType(
    {"electricity": "EL", "natural_gas": "NG", "steam": "ST", "diesel": "DS", "raw_coal": "CL"}
)


@dataclass(frozen=True)
class Params:
    """All parameter tables, typed. Frames are read-only by convention (never mutated)."""

    industries: pl.DataFrame
    clusters: pl.DataFrame
    counties: pl.DataFrame
    patterns: pl.DataFrame
    hourly: pl.DataFrame
    holidays: pl.DataFrame
    climate: pl.DataFrame
    meter_types: pl.DataFrame
    constants: Mapping[str, float]
    names: Mapping[str, tuple[str, ...]]
    kgce_per_unit: Mapping[tuple[str, str], float]
    meter_types_by_name: Mapping[str, Mapping[str, Any]]

    def const(self, name: str) -> float:
        return self.constants[name]

    def meter_type(self, name: str) -> Mapping[str, Any]:
        return self.meter_types_by_name[name]


def _read(name: str, schema: Mapping[str, Any] | None = None) -> pl.DataFrame:
    data = resources.files("greenmon.simulators").joinpath("data", name).read_bytes()
    return pl.read_csv(data, schema_overrides=schema)


@cache
def load_params() -> Params:
    """Read every packaged parameter table (cached: one read per process)."""
    industries = _read("industries.csv", {"code": pl.String})
    holidays = _read("holidays.csv").with_columns(pl.col("date").str.to_date())
    constants = _read("constants.csv")
    names = _read("names.csv")
    coefficients = pl.read_csv(
        resources.files("greenmon").joinpath("data", "energy_coefficients.csv").read_bytes(),
        columns=["carrier", "unit", "kgce_per_unit"],
        schema_overrides={"kgce_per_unit": pl.Float64},
    ).drop_nulls()
    meter_types = _read("meter_types.csv", {"interval_s": pl.Int64})
    return Params(
        industries=industries,
        clusters=_read("clusters.csv"),
        counties=_read("counties.csv"),
        patterns=_read("patterns.csv"),
        hourly=_read("hourly.csv").sort("pattern", "hour"),
        holidays=holidays,
        climate=_read("climate.csv").sort("month"),
        meter_types=meter_types,
        constants=MappingProxyType(
            dict(zip(constants["name"], constants["value"].cast(pl.Float64), strict=True))
        ),
        names=MappingProxyType(
            {part: tuple(text.split()) for part, text in names.select("part", "text").iter_rows()}
        ),
        kgce_per_unit=MappingProxyType({(c, u): float(k) for c, u, k in coefficients.iter_rows()}),
        meter_types_by_name=MappingProxyType(
            {row["meter_type"]: MappingProxyType(row) for row in meter_types.to_dicts()}
        ),
    )
