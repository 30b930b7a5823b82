"""Reference data: conversion coefficients, emission factors and intensity references.

This module owns reading the reference files (packaged defaults plus the user's overrides),
validating them, and choosing which row applies to a meter or an enterprise in a given year.
Every row carries its year, source and status, and every choice comes with a ``label`` naming
the file, line, value, year and status, which the outputs carry in their ``reference`` column.

Files and keys (a user file has the same columns; a user row replaces the packaged row with the
same key, other keys are added):

- ``energy_coefficients.csv`` — GB/T 2589 kgce per unit. The packaged default is the kernel's
  ``greenmon/data/energy_coefficients.csv`` (the registry's carrier list comes from the same
  file, so the facts live in one place). Key: carrier, unit, enterprise_id, meter_id — and
  year for ``electricity_equal_value`` (等价值, the year's supply coal consumption, one row per
  year, only when the user supplies it). Optional ``enterprise_id``/``meter_id`` columns carry
  measured calorific values: the most specific row wins (meter, then enterprise, then generic).
- ``emission_factors.csv`` — kgCO2 per unit by carrier, scope and year. Electricity per kWh
  (grid factors); fuels, heat and steam per GJ of energy content, which is derived from the
  carrier's kgce coefficient (so a measured calorific value changes CO2 too).
- ``volume_conditions.csv`` — volume conversions at stated reference conditions (the kernel's
  ``greenmon/data/volume_conditions.csv``: 1 Nm3 at 0 °C = 1.07322 m3 at 20 °C, 101.325 kPa).
  A meter in ``Nm3`` takes the coefficient row in ``m3`` at the ``conditions`` that row states
  (its optional ``conditions`` column), times the matching conversion; the label names both.
  Key: from_unit, to_unit, to_conditions.
- ``intensity_references.csv`` — provincial (or industry) energy intensity in tce per 10k yuan
  by year, region, industry (GB/T 4754 code prefix, empty = all industry) and metric
  (``gdp``, ``industrial_value_added``: compared with energy per value added;
  ``output_value``: compared with energy per output value).

Choices (`ReferenceChoice`): electricity basis 当量值 (``calorific``, 0.1229 kgce/kWh, the default)
or 等价值 (``equal_value``, per year, must be supplied); the emission-factor scope per carrier
(electricity: ``Jiangsu provincial`` by default); the intensity region and metric. For a year
without a row the latest earlier year is used (else the earliest later one), and the label says
which year it was.

Validation collects every problem of every file and raises one `ReferenceDataError` listing
them as ``file:line: column: reason``.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

import polars as pl

from greenmon.aggregator.errors import (
    MissingReferenceError,
    ReferenceDataError,
    ReferenceProblem,
)
from greenmon.registry import VOLUME_CONDITIONS_FILE, carrier_units, volume_conversions
from greenmon.units import KNOWN_UNITS, conversion_factor, is_convertible

__all__ = [
    "COEFFICIENTS_FILE",
    "EMISSION_FACTORS_FILE",
    "INTENSITY_FILE",
    "INTENSITY_METRICS",
    "MJ_PER_KGCE",
    "STATUSES",
    "ReferenceChoice",
    "References",
    "intensity_references",
    "label_rows",
    "load_references",
    "meter_factors",
    "reference_id",
    "with_reference_ids",
]

COEFFICIENTS_FILE: Final = "energy_coefficients.csv"
EMISSION_FACTORS_FILE: Final = "emission_factors.csv"
INTENSITY_FILE: Final = "intensity_references.csv"
VOLUME_FILE: Final = VOLUME_CONDITIONS_FILE

#: 1 kgce = 29.3076 MJ (7000 kcal), GB/T 2589.
MJ_PER_KGCE: Final = 29.3076
STATUSES: Final = ("verified", "third-party", "derived", "measured", "unverified", "placeholder")
#: Intensity metrics and the enterprise denominator each one is compared with.
INTENSITY_METRICS: Final = MappingProxyType(
    {"gdp": "value_added", "industrial_value_added": "value_added", "output_value": "output_value"}
)
INTENSITY_UNIT: Final = "tce/10k yuan"
EQUAL_VALUE: Final = "electricity_equal_value"
_ENERGY_UNITS: Final = ("MJ", "GJ")
_PACKAGED: Final = "packaged"
_FREE_TEXT: Final = ("note", "comment")  # extra columns any file may carry
_USER: Final = "user"


_VOL_SCHEMA: Final = {
    "from_unit": pl.String,
    "from_conditions": pl.String,
    "to_unit": pl.String,
    "to_conditions": pl.String,
    "factor": pl.Float64,
    "status": pl.String,
    "source": pl.String,
    "origin": pl.String,
    "file": pl.String,
    "line": pl.Int64,
    "label": pl.String,
}


# --------------------------------------------------------------------------- reference ids


def reference_id(text: str) -> str:
    """The compact id of a reference label: ``r`` + 10 hex digits of its BLAKE2b digest.

    Stored points carry the id (``reference_id``); the label itself is written once per id
    (the ``reference`` measurement, `greenmon.aggregator.store.write_references`), so the
    provenance of every figure costs a few bytes per point and stays retrievable."""
    return "r" + hashlib.blake2b(text.encode("utf-8"), digest_size=5).hexdigest()


def label_rows(text: str) -> list[str]:
    """The reference rows a label names, each once: a `meter_factors` label is ``kgce: <row>;
    kgCO2: <row>`` (``<row> x <volume row>`` for a meter in Nm3), an enterprise label several
    of them joined by `` | ``."""
    rows: list[str] = []
    for factor in text.split(" | "):
        kgce, _, kgco2 = factor.partition("; kgCO2: ")
        # a meter in Nm3: "<coefficient row> x <volume_conditions row>"
        for row in (*kgce.removeprefix("kgce: ").split(" x "), kgco2):
            if row and row not in rows:
                rows.append(row)
    return rows


def with_reference_ids(
    frame: pl.DataFrame, column: str = "reference", out: str = "reference_id"
) -> pl.DataFrame:
    """`frame` with `out` = `reference_id` of each `column` value (one hash per distinct
    label, mapped back with a join; nulls stay null)."""
    labels = frame.get_column(column).cast(pl.String).drop_nulls().unique().to_list()
    ids = pl.DataFrame(
        {column: labels, out: [reference_id(label) for label in labels]},
        schema={column: pl.String, out: pl.String},
    )
    dtype = frame.schema[column]
    return frame.join(
        ids.with_columns(pl.col(column).cast(dtype)), on=column, how="left", maintain_order="left"
    )


# --------------------------------------------------------------------------- public types


@dataclass(frozen=True)
class ReferenceChoice:
    """Which reference rows apply (documented defaults)."""

    #: ``calorific`` = 当量值 (GB/T 2589 electricity 0.1229 kgce/kWh); ``equal_value`` = 等价值
    #: (the year's national supply coal consumption: ``electricity_equal_value`` rows per year,
    #: which the user must supply).
    electricity_basis: Literal["calorific", "equal_value"] = "calorific"
    #: Emission-factor scope per carrier. A carrier not listed uses its only scope (or, when the
    #: user file adds another scope, the user's).
    emission_scopes: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({"electricity": "Jiangsu provincial"})
    )
    #: Region and metric of the provincial intensity reference.
    intensity_region: str = "Jiangsu"
    intensity_metric: str = "gdp"
    #: Prefer a reference row for the enterprise's industry (GB/T 4754 code prefix) when one
    #: exists.
    industry_specific: bool = True


@dataclass(frozen=True, eq=False)
class References:
    """The merged reference tables (packaged defaults overridden by the user's rows).

    Each frame has the file's columns typed, plus ``origin`` (``packaged`` or ``user``),
    ``file`` (the file as shown in labels), ``line`` (physical line, header = 1) and ``label``
    (file:line, value, year and status, as the outputs' ``reference`` column shows it).
    """

    coefficients: pl.DataFrame
    emission_factors: pl.DataFrame
    intensity: pl.DataFrame
    files: tuple[str, ...]
    volume_conditions: pl.DataFrame = field(
        default_factory=lambda: pl.DataFrame(schema=_VOL_SCHEMA)
    )

    def __repr__(self) -> str:
        return (
            f"References(coefficients={self.coefficients.height}, "
            f"emission_factors={self.emission_factors.height}, "
            f"intensity={self.intensity.height}, "
            f"volume_conditions={self.volume_conditions.height}, files={list(self.files)})"
        )


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Source:
    name: str  # as shown in labels and errors
    text: str | None  # None: could not be read (problem already reported)
    origin: str


class _Problems:
    def __init__(self) -> None:
        self.items: list[ReferenceProblem] = []

    def add(self, file: str, line: int | None, column: str | None, reason: str) -> None:
        self.items.append(ReferenceProblem(file, line, column, reason))


def _packaged(package: str, *parts: str) -> _Source:
    text = resources.files(package).joinpath(*parts).read_text(encoding="utf-8-sig")
    shown = "/".join((*package.split("."), *parts))
    return _Source(shown, text, _PACKAGED)


def _user(path: Path, problems: _Problems) -> _Source:
    name = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        problems.add(name, None, None, "file not found")
        return _Source(name, None, _USER)
    except OSError as exc:
        problems.add(name, None, None, f"cannot read file: {exc.strerror or exc}")
        return _Source(name, None, _USER)
    try:
        return _Source(name, data.decode("utf-8-sig"), _USER)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problems.add(name, line, None, "not valid UTF-8 (save the file as UTF-8 CSV)")
        return _Source(name, None, _USER)


def _rows(
    source: _Source,
    required: Sequence[str],
    optional: Sequence[str],
    problems: _Problems,
) -> list[tuple[int, dict[str, str | None]]]:
    """Rows of a CSV as (physical line, {column: stripped text or None}); blank rows skipped."""
    if source.text is None:
        return []
    reader = csv.reader(io.StringIO(source.text))
    header: list[str] | None = None
    out: list[tuple[int, dict[str, str | None]]] = []
    known = (*required, *optional, *_FREE_TEXT)
    start = 1
    for raw in reader:
        line, start = start, reader.line_num + 1
        if header is None:
            header = [h.strip() for h in raw]
            for column in required:
                if column not in header:
                    problems.add(source.name, 1, column, "missing required column")
            seen: set[str] = set()
            for column in header:
                if column in seen:
                    problems.add(source.name, 1, column, "duplicate column")
                seen.add(column)
                if column and column not in known:
                    problems.add(
                        source.name, 1, column, f"unknown column (known: {', '.join(known)})"
                    )
            if any(p.file == source.name and p.line == 1 for p in problems.items):
                return []
            continue
        if not any(cell.strip() for cell in raw):
            continue
        if len(raw) > len(header):
            problems.add(source.name, line, None, "more fields than columns in the header")
            continue
        row = {h: (raw[i].strip() or None) if i < len(raw) else None for i, h in enumerate(header)}
        out.append((line, row))
    if header is None:
        problems.add(source.name, None, None, "file is empty (expected a header line)")
    return out


def _number(
    value: str | None,
    where: tuple[str, int],
    column: str,
    problems: _Problems,
    *,
    positive: bool = False,
) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        problems.add(*where, column, f"not a number: {value!r}")
        return None
    if number != number or number in (float("inf"), float("-inf")):
        problems.add(*where, column, f"not a finite number: {value!r}")
        return None
    if number < 0 or (positive and number == 0):
        problems.add(*where, column, f"must be {'> 0' if positive else '>= 0'}, got {value}")
        return None
    return number


def _year(
    value: str | None, where: tuple[str, int], column: str, problems: _Problems
) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or not 1900 <= int(value) <= 2200:
        problems.add(*where, column, f"must be a year such as 2024, got {value!r}")
        return None
    return int(value)


def _required(
    row: Mapping[str, str | None],
    columns: Iterable[str],
    where: tuple[str, int],
    problems: _Problems,
) -> bool:
    ok = True
    for column in columns:
        if row.get(column) is None:
            problems.add(*where, column, "required value is empty")
            ok = False
    return ok


def _status(row: Mapping[str, str | None], where: tuple[str, int], problems: _Problems) -> None:
    status = row.get("status")
    if status is not None and status not in STATUSES:
        problems.add(*where, "status", f"must be one of {', '.join(STATUSES)}, got {status!r}")


def _merge(
    packaged: list[dict[str, object]],
    user: list[dict[str, object]],
    key: Callable[[Mapping[str, object]], tuple[object, ...]],
    problems: _Problems,
) -> list[dict[str, object]]:
    """User rows replace packaged rows with the same key; a key twice in one file is an error."""
    for rows in (packaged, user):
        first: dict[tuple[object, ...], int] = {}
        for row in rows:
            k = key(row)
            if k in first:
                shown = ", ".join("" if part is None else str(part) for part in k)
                problems.add(
                    str(row["file"]),
                    int(str(row["line"])),
                    None,
                    f"duplicate key ({shown}) (first on line {first[k]})",
                )
            else:
                first[k] = int(str(row["line"]))
    replaced = {key(row) for row in user}
    return [row for row in packaged if key(row) not in replaced] + user


def _fmt(value: float) -> str:
    return f"{value:.6g}"


# --------------------------------------------------------------------------- coefficients

_COEF_REQUIRED: Final = ("carrier", "unit", "kgce_per_unit", "status", "source")
_COEF_OPTIONAL: Final = ("basis", "year", "enterprise_id", "meter_id", "conditions")
_COEF_SCHEMA: Final = {
    "carrier": pl.String,
    "unit": pl.String,
    "kgce_per_unit": pl.Float64,
    "year": pl.Int64,
    "enterprise_id": pl.String,
    "meter_id": pl.String,
    "basis": pl.String,
    "conditions": pl.String,
    "status": pl.String,
    "source": pl.String,
    "origin": pl.String,
    "file": pl.String,
    "line": pl.Int64,
    "label": pl.String,
}


def _coefficients(source: _Source, problems: _Problems) -> list[dict[str, object]]:
    units = carrier_units()
    out: list[dict[str, object]] = []
    for line, row in _rows(source, _COEF_REQUIRED, _COEF_OPTIONAL, problems):
        where = (source.name, line)
        carrier, unit = row.get("carrier"), row.get("unit")
        # The kernel file documents 等价值 as a row without a number: no value, nothing to use.
        if row.get("kgce_per_unit") is None and source.origin == _PACKAGED:
            continue
        if not _required(
            row, ("carrier", "unit", "kgce_per_unit", "status", "source"), where, problems
        ):
            continue
        _status(row, where, problems)
        value = _number(row["kgce_per_unit"], where, "kgce_per_unit", problems, positive=True)
        year = _year(row.get("year"), where, "year", problems)
        assert carrier is not None and unit is not None
        refs = ("kWh",) if carrier == EQUAL_VALUE else units.get(carrier)
        if refs is None:
            problems.add(*where, "carrier", f"unknown carrier {carrier!r}")
            continue
        if unit not in KNOWN_UNITS:
            problems.add(*where, "unit", f"unknown unit {unit!r}")
            continue
        if not any(_reaches(unit, ref) for ref in refs):
            problems.add(
                *where, "unit", f"unit {unit!r} cannot be converted to {' or '.join(refs)}"
            )
            continue
        if carrier == EQUAL_VALUE and year is None and row.get("year") is None:
            problems.add(*where, "year", "required for electricity_equal_value (the data year)")
            continue
        if value is None:
            continue
        scope = "".join(
            f" {name} {row[column]}"
            for name, column in (("meter", "meter_id"), ("enterprise", "enterprise_id"))
            if row.get(column) is not None
        )
        label = (
            f"{source.name}:{line} {carrier} {_fmt(value)} kgce/{unit}{scope}"
            f" ({year if year is not None else 'n.d.'}, {row['status']})"
        )
        out.append(
            {
                "carrier": carrier,
                "unit": unit,
                "kgce_per_unit": value,
                "year": year,
                "enterprise_id": row.get("enterprise_id"),
                "meter_id": row.get("meter_id"),
                "basis": row.get("basis"),
                "conditions": row.get("conditions"),
                "status": row["status"],
                "source": row["source"],
                "origin": source.origin,
                "file": source.name,
                "line": line,
                "label": label,
            }
        )
    return out


def _coef_key(row: Mapping[str, object]) -> tuple[object, ...]:
    year = row["year"] if row["carrier"] == EQUAL_VALUE else None
    return (row["carrier"], row["unit"], row["enterprise_id"], row["meter_id"], year)


# --------------------------------------------------------------------------- emission factors

_EF_REQUIRED: Final = ("carrier", "scope", "year", "kgco2_per_unit", "unit", "status", "source")
_EF_SCHEMA: Final = {
    "carrier": pl.String,
    "scope": pl.String,
    "year": pl.Int64,
    "kgco2_per_unit": pl.Float64,
    "unit": pl.String,
    "status": pl.String,
    "source": pl.String,
    "origin": pl.String,
    "file": pl.String,
    "line": pl.Int64,
    "label": pl.String,
}


def _emission_factors(source: _Source, problems: _Problems) -> list[dict[str, object]]:
    units = carrier_units()
    out: list[dict[str, object]] = []
    for line, row in _rows(source, _EF_REQUIRED, (), problems):
        where = (source.name, line)
        if not _required(row, _EF_REQUIRED, where, problems):
            continue
        _status(row, where, problems)
        value = _number(row["kgco2_per_unit"], where, "kgco2_per_unit", problems)
        year = _year(row["year"], where, "year", problems)
        carrier, unit = str(row["carrier"]), str(row["unit"])
        refs = units.get(carrier)
        if refs is None:
            problems.add(*where, "carrier", f"unknown carrier {carrier!r}")
            continue
        if unit not in KNOWN_UNITS:
            problems.add(*where, "unit", f"unknown unit {unit!r}")
            continue
        if unit not in _ENERGY_UNITS and not any(is_convertible(unit, ref) for ref in refs):
            problems.add(
                *where,
                "unit",
                f"unit {unit!r} is neither convertible to {' or '.join(refs)} nor an energy "
                "unit (MJ, GJ)",
            )
            continue
        if value is None or year is None:
            continue
        label = (
            f"{source.name}:{line} {carrier} {row['scope']} {year} {_fmt(value)} kgCO2/{unit}"
            f" ({row['status']})"
        )
        out.append(
            {
                "carrier": carrier,
                "scope": row["scope"],
                "year": year,
                "kgco2_per_unit": value,
                "unit": unit,
                "status": row["status"],
                "source": row["source"],
                "origin": source.origin,
                "file": source.name,
                "line": line,
                "label": label,
            }
        )
    return out


def _ef_key(row: Mapping[str, object]) -> tuple[object, ...]:
    return (row["carrier"], row["scope"], row["year"])


# --------------------------------------------------------------------------- gas volumes

_VOL_REQUIRED: Final = (
    "from_unit",
    "from_conditions",
    "to_unit",
    "to_conditions",
    "factor",
    "status",
    "source",
)


def _empty_volumes() -> pl.DataFrame:
    return pl.DataFrame(schema=_VOL_SCHEMA)


def _conditions(text: str | None) -> str | None:
    """Reference conditions compared as written, whitespace normalised."""
    return " ".join(text.split()) if text else None


def _reaches(unit: str, ref: str) -> bool:
    """`unit` converts to `ref` by units alone, or by a volume conversion (Nm3 -> m3)."""
    return is_convertible(unit, ref) or (unit, ref) in volume_conversions()


def _volumes(source: _Source, problems: _Problems) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for line, row in _rows(source, _VOL_REQUIRED, (), problems):
        where = (source.name, line)
        if not _required(row, _VOL_REQUIRED, where, problems):
            continue
        _status(row, where, problems)
        value = _number(row["factor"], where, "factor", problems, positive=True)
        bad = [c for c in ("from_unit", "to_unit") if row[c] not in KNOWN_UNITS]
        for column in bad:
            problems.add(*where, column, f"unknown unit {row[column]!r}")
        if bad or value is None:
            continue
        label = (
            f"{source.name}:{line} 1 {row['from_unit']} ({row['from_conditions']}) = "
            f"{_fmt(value)} {row['to_unit']} ({row['to_conditions']}) ({row['status']})"
        )
        out.append(
            {
                "from_unit": row["from_unit"],
                "from_conditions": _conditions(row["from_conditions"]),
                "to_unit": row["to_unit"],
                "to_conditions": _conditions(row["to_conditions"]),
                "factor": value,
                "status": row["status"],
                "source": row["source"],
                "origin": source.origin,
                "file": source.name,
                "line": line,
                "label": label,
            }
        )
    return out


def _vol_key(row: Mapping[str, object]) -> tuple[object, ...]:
    return (row["from_unit"], row["to_unit"], row["to_conditions"])


def _volume_factor(
    volumes: list[dict[str, object]], unit: str, target: str, conditions: object
) -> tuple[float, str] | str:
    """(factor, label) converting a quantity in `unit` into `target` at `conditions` (the
    coefficient row's), or a message saying what to supply."""
    if conditions is None:
        return (
            f"the {COEFFICIENTS_FILE} row in {target} states no reference `conditions`, so a "
            f"meter in {unit} cannot be converted to it: add the conditions (e.g. "
            f"'20 °C, 101.325 kPa') or a row in {unit}"
        )
    for row in sorted(volumes, key=lambda r: r["origin"] != _USER):
        if (row["from_unit"], row["to_unit"], row["to_conditions"]) == (unit, target, conditions):
            return float(str(row["factor"])), str(row["label"])
    return (
        f"no {VOLUME_FILE} row converting {unit} to {target} at {conditions}: add one "
        f"(from_unit,from_conditions,to_unit,to_conditions,factor,status,source)"
    )


# --------------------------------------------------------------------------- intensity

_INT_REQUIRED: Final = ("year", "region", "metric", "value", "unit", "status", "source")
_INT_OPTIONAL: Final = ("industry", "price_base")
_INT_SCHEMA: Final = {
    "year": pl.Int64,
    "region": pl.String,
    "industry": pl.String,
    "metric": pl.String,
    "denominator": pl.String,
    "value": pl.Float64,
    "unit": pl.String,
    "price_base": pl.String,
    "status": pl.String,
    "source": pl.String,
    "origin": pl.String,
    "file": pl.String,
    "line": pl.Int64,
    "label": pl.String,
}


def _intensity(source: _Source, problems: _Problems) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for line, row in _rows(source, _INT_REQUIRED, _INT_OPTIONAL, problems):
        where = (source.name, line)
        if not _required(row, _INT_REQUIRED, where, problems):
            continue
        _status(row, where, problems)
        value = _number(row["value"], where, "value", problems, positive=True)
        year = _year(row["year"], where, "year", problems)
        metric = str(row["metric"])
        if metric not in INTENSITY_METRICS:
            problems.add(
                *where, "metric", f"must be one of {', '.join(INTENSITY_METRICS)}, got {metric!r}"
            )
            continue
        if row["unit"] != INTENSITY_UNIT:
            problems.add(*where, "unit", f"must be {INTENSITY_UNIT!r}, got {row['unit']!r}")
            continue
        if value is None or year is None:
            continue
        industry = row.get("industry")
        label = (
            f"{source.name}:{line} {row['region']}{' ' + industry if industry else ''} "
            f"{metric} {year} {_fmt(value)} {INTENSITY_UNIT}"
            f"{' (' + str(row['price_base']) + ')' if row.get('price_base') else ''}"
            f" ({row['status']})"
        )
        out.append(
            {
                "year": year,
                "region": row["region"],
                "industry": industry,
                "metric": metric,
                "denominator": INTENSITY_METRICS[metric],
                "value": value,
                "unit": row["unit"],
                "price_base": row.get("price_base"),
                "status": row["status"],
                "source": row["source"],
                "origin": source.origin,
                "file": source.name,
                "line": line,
                "label": label,
            }
        )
    return out


def _int_key(row: Mapping[str, object]) -> tuple[object, ...]:
    return (row["year"], row["region"], row["industry"], row["metric"])


# --------------------------------------------------------------------------- loading


def load_references(
    overrides: Path | None = None,
    *,
    coefficients: Path | None = None,
    emission_factors: Path | None = None,
    intensity: Path | None = None,
    volume_conditions: Path | None = None,
) -> References:
    """Load the packaged reference tables and apply the user's overrides.

    `overrides` is a directory; any of ``energy_coefficients.csv``, ``emission_factors.csv``,
    ``intensity_references.csv`` and ``volume_conditions.csv`` found in it override the
    packaged rows. The keyword
    arguments name single files (they win over the directory's). Raises `ReferenceDataError`
    listing every problem of every file.
    """
    problems = _Problems()
    user_files: dict[str, Path | None] = {
        COEFFICIENTS_FILE: coefficients,
        EMISSION_FACTORS_FILE: emission_factors,
        INTENSITY_FILE: intensity,
        VOLUME_FILE: volume_conditions,
    }
    if overrides is not None:
        directory = Path(overrides)
        if not directory.is_dir():
            problems.add(str(directory), None, None, "override directory not found")
        else:
            for name in user_files:
                if user_files[name] is None and (directory / name).is_file():
                    user_files[name] = directory / name

    packaged = {
        COEFFICIENTS_FILE: _packaged("greenmon", "data", COEFFICIENTS_FILE),
        EMISSION_FACTORS_FILE: _packaged("greenmon.aggregator", "data", EMISSION_FACTORS_FILE),
        INTENSITY_FILE: _packaged("greenmon.aggregator", "data", INTENSITY_FILE),
        VOLUME_FILE: _packaged("greenmon", "data", VOLUME_FILE),
    }
    readers = {
        COEFFICIENTS_FILE: (_coefficients, _coef_key, _COEF_SCHEMA),
        EMISSION_FACTORS_FILE: (_emission_factors, _ef_key, _EF_SCHEMA),
        INTENSITY_FILE: (_intensity, _int_key, _INT_SCHEMA),
        VOLUME_FILE: (_volumes, _vol_key, _VOL_SCHEMA),
    }
    frames: dict[str, pl.DataFrame] = {}
    files: list[str] = []
    for name, (parse, key, schema) in readers.items():
        base = parse(packaged[name], problems)
        files.append(packaged[name].name)
        extra: list[dict[str, object]] = []
        path = user_files[name]
        if path is not None:
            source = _user(Path(path), problems)
            extra = parse(source, problems)
            files.append(source.name)
        merged = _merge(base, extra, key, problems)
        frames[name] = (
            pl.DataFrame(merged, schema=schema, orient="row")
            if merged
            else (pl.DataFrame(schema=schema))
        )
    if problems.items:
        raise ReferenceDataError(problems.items)
    return References(
        coefficients=frames[COEFFICIENTS_FILE],
        emission_factors=frames[EMISSION_FACTORS_FILE],
        intensity=frames[INTENSITY_FILE],
        files=tuple(files),
        volume_conditions=frames[VOLUME_FILE],
    )


# --------------------------------------------------------------------------- choosing rows


def _pick_year(rows: list[dict[str, object]], year: int) -> dict[str, object]:
    """The row of the latest year not after `year`, else of the earliest year."""
    earlier = [r for r in rows if int(str(r["year"])) <= year]
    if earlier:
        return max(earlier, key=lambda r: (int(str(r["year"])), r["origin"] == _USER))
    return min(rows, key=lambda r: (int(str(r["year"])), r["origin"] != _USER))


def _pick_coefficient(
    rows: list[dict[str, object]], meter_id: str, enterprise_id: str, unit: str
) -> dict[str, object] | None:
    usable = [r for r in rows if _reaches(unit, str(r["unit"]))]
    for tier in (
        [r for r in usable if r["meter_id"] == meter_id],
        [r for r in usable if r["meter_id"] is None and r["enterprise_id"] == enterprise_id],
        [r for r in usable if r["meter_id"] is None and r["enterprise_id"] is None],
    ):
        if tier:
            # the user's rows first, then the meter's own unit, then units that convert
            # without reference conditions (a volume conversion last)
            return min(
                tier,
                key=lambda r: (
                    r["origin"] != _USER,
                    r["unit"] != unit,
                    not is_convertible(unit, str(r["unit"])),
                ),
            )
    return None


def _per_unit(
    unit: str, row: Mapping[str, object], volumes: list[dict[str, object]]
) -> tuple[float, str] | str:
    """(factor, label suffix) converting a quantity in the meter's `unit` into the unit of a
    coefficient `row`: by units alone (no suffix), or at the row's reference ``conditions``
    with a `VOLUME_FILE` row (named in the suffix); or a message saying what is missing."""
    target = str(row["unit"])
    if is_convertible(unit, target):
        return conversion_factor(unit, target), ""
    found = _volume_factor(volumes, unit, target, row.get("conditions"))
    if isinstance(found, str):
        return found
    factor, label = found
    return factor, f" x {label}"


def _to_carrier_unit(
    unit: str,
    carrier_unit: str,
    kgce_row: Mapping[str, object],
    to_row: float,
    rows: list[dict[str, object]],
    volumes: list[dict[str, object]],
) -> float | str:
    """The factor from the meter's `unit` into the carrier's reference unit: by units alone,
    else through the coefficient row used (`to_row` took the meter's unit to it), else at the
    reference conditions of the carrier's generic row in its reference unit."""
    if is_convertible(unit, carrier_unit):
        return conversion_factor(unit, carrier_unit)
    row_unit = str(kgce_row["unit"])
    if is_convertible(row_unit, carrier_unit):
        return to_row * conversion_factor(row_unit, carrier_unit)
    base = [
        r
        for r in rows
        if r["unit"] == carrier_unit and r["meter_id"] is None and r["enterprise_id"] is None
    ]
    if not base:
        return f"no {COEFFICIENTS_FILE} row in {carrier_unit} to convert {unit} to"
    found = _per_unit(unit, min(base, key=lambda r: r["origin"] != _USER), volumes)
    return found if isinstance(found, str) else found[0]


def meter_factors(
    meters: pl.DataFrame,
    references: References,
    years: Iterable[int],
    choice: ReferenceChoice | None = None,
) -> pl.DataFrame:
    """Per meter and year: kgce and kgCO2 per unit of the meter's own (native) unit.

    `meters` is `Registry.meters` (meter_id, enterprise_id, carrier, unit, role, ...). Returns
    ``meter_id, year, unit, carrier_unit, to_carrier_unit, kgce_per_unit, kgco2_per_unit,
    reference, reference_id`` (the label and its `reference_id`): ``to_carrier_unit``
    converts the meter's quantity into the carrier's reference unit (the first unit the
    coefficient table lists for the carrier: kWh, m3, kg, MJ, ...), in which enterprise totals
    per carrier are expressed.

    Carbon: electricity uses the grid factor of the chosen scope and year; a ``generation``
    meter (on-site renewable output) is zero-carbon; fuels, heat and steam use their factor per
    GJ of energy content, from the meter's kgce coefficient x 29.3076 MJ/kgce. Raises
    `MissingReferenceError` naming what to supply when a carrier has no coefficient or factor.
    """
    choice = choice or ReferenceChoice()
    wanted = sorted(set(years))
    coef_rows = references.coefficients.to_dicts()
    ef_rows = references.emission_factors.to_dicts()
    units = carrier_units()
    by_carrier: dict[str, list[dict[str, object]]] = {}
    for row in coef_rows:
        by_carrier.setdefault(str(row["carrier"]), []).append(row)
    ef_by_carrier: dict[str, list[dict[str, object]]] = {}
    for row in ef_rows:
        ef_by_carrier.setdefault(str(row["carrier"]), []).append(row)

    volumes = references.volume_conditions.to_dicts()
    missing: list[str] = []
    out: list[dict[str, object]] = []
    columns = ("meter_id", "enterprise_id", "carrier", "unit", "role")
    for meter_id, enterprise_id, carrier, unit, role in meters.select(columns).iter_rows():
        coef = _pick_coefficient(by_carrier.get(carrier, []), meter_id, enterprise_id, unit)
        if coef is None:
            missing.append(f"no kgce coefficient for carrier {carrier!r} in unit {unit!r}")
            continue
        carrier_unit = units[carrier][0]
        ef_candidates = _ef_candidates(ef_by_carrier.get(carrier, []), carrier, choice)
        if isinstance(ef_candidates, str):
            if role != "generation":
                missing.append(ef_candidates)
                continue
            ef_candidates = []
        for year in wanted:
            kgce_row = coef
            if carrier == "electricity" and choice.electricity_basis == "equal_value":
                equal = [
                    r
                    for r in by_carrier.get(EQUAL_VALUE, [])
                    if r["year"] == year
                    and r["meter_id"] in (None, meter_id)
                    and r["enterprise_id"] in (None, enterprise_id)
                ]
                picked = _pick_coefficient(equal, meter_id, enterprise_id, unit)
                if picked is None:
                    missing.append(
                        f"no electricity_equal_value (等价值) row for year {year}: add "
                        f"'electricity_equal_value,kWh,<kgce per kWh>,...,{year}' to the "
                        f"user's {COEFFICIENTS_FILE}"
                    )
                    continue
                kgce_row = picked
            per_unit = _per_unit(unit, kgce_row, volumes)
            if isinstance(per_unit, str):
                missing.append(f"carrier {carrier!r} in unit {unit!r}: {per_unit}")
                continue
            to_row, volume_label = per_unit
            kgce = float(str(kgce_row["kgce_per_unit"])) * to_row
            to_carrier = _to_carrier_unit(
                unit, carrier_unit, kgce_row, to_row, by_carrier.get(carrier, []), volumes
            )
            if isinstance(to_carrier, str):
                missing.append(f"carrier {carrier!r} in unit {unit!r}: {to_carrier}")
                continue
            if role == "generation":
                kgco2, co2_label = 0.0, "zero-carbon on-site renewable generation"
            else:
                ef = _pick_year(ef_candidates, year)
                ef_unit, ef_value = str(ef["unit"]), float(str(ef["kgco2_per_unit"]))
                if is_convertible(unit, ef_unit):
                    kgco2 = ef_value * conversion_factor(unit, ef_unit)
                elif is_convertible(str(kgce_row["unit"]), ef_unit):  # a volume, like the row's
                    kgco2 = ef_value * to_row * conversion_factor(str(kgce_row["unit"]), ef_unit)
                else:  # per unit of energy content, from the kgce coefficient
                    kgco2 = kgce * MJ_PER_KGCE * conversion_factor("MJ", ef_unit) * ef_value
                co2_label = str(ef["label"])
                if int(str(ef["year"])) != year:
                    co2_label += f" [for {year}]"
            out.append(
                {
                    "meter_id": meter_id,
                    "year": year,
                    "unit": unit,
                    "carrier_unit": carrier_unit,
                    "to_carrier_unit": to_carrier,
                    "kgce_per_unit": kgce,
                    "kgco2_per_unit": kgco2,
                    "reference": f"kgce: {kgce_row['label']}{volume_label}; kgCO2: {co2_label}",
                }
            )
    if missing:
        raise MissingReferenceError("; ".join(dict.fromkeys(missing)))
    return with_reference_ids(
        pl.DataFrame(
            out,
            schema={
                "meter_id": pl.String,
                "year": pl.Int32,
                "unit": pl.String,
                "carrier_unit": pl.String,
                "to_carrier_unit": pl.Float64,
                "kgce_per_unit": pl.Float64,
                "kgco2_per_unit": pl.Float64,
                "reference": pl.String,
            },
            orient="row",
        )
    )


def _ef_candidates(
    rows: list[dict[str, object]], carrier: str, choice: ReferenceChoice
) -> list[dict[str, object]] | str:
    """The emission-factor rows of the scope that applies to `carrier` (all its years), or a
    message saying what is missing."""
    if not rows:
        return f"no emission factor for carrier {carrier!r} in {EMISSION_FACTORS_FILE}"
    scope = choice.emission_scopes.get(carrier)
    if scope is not None:
        chosen = [r for r in rows if r["scope"] == scope]
        if not chosen:
            scopes = sorted({str(r["scope"]) for r in rows})
            return (
                f"no emission factor for carrier {carrier!r} in scope {scope!r} "
                f"(available: {', '.join(scopes)})"
            )
        return chosen
    scopes = sorted({str(r["scope"]) for r in rows})
    if len(scopes) > 1:
        user_scopes = sorted({str(r["scope"]) for r in rows if r["origin"] == _USER})
        if len(user_scopes) == 1:
            scopes = user_scopes
        else:
            return (
                f"several emission-factor scopes for carrier {carrier!r} "
                f"({', '.join(scopes)}): choose one in ReferenceChoice.emission_scopes"
            )
    return [r for r in rows if r["scope"] == scopes[0]]


def intensity_references(
    enterprises: pl.DataFrame,
    references: References,
    years: Iterable[int],
    choice: ReferenceChoice | None = None,
) -> pl.DataFrame:
    """Per enterprise and year: the intensity reference that applies.

    A row for the enterprise's industry (the longest GB/T 4754 code prefix of ``industry``)
    in the chosen region wins when `choice.industry_specific`; otherwise the region's row of
    the chosen metric. Year: the latest not after the period's year, else the earliest.
    Returns ``enterprise_id, year, reference_tce_per_10k_yuan, metric, denominator
    (value_added | output_value), reference_status, reference`` (null reference when none
    exists: the ratio is then null too).
    """
    choice = choice or ReferenceChoice()
    rows = [r for r in references.intensity.to_dicts() if r["region"] == choice.intensity_region]
    general = [r for r in rows if r["industry"] is None and r["metric"] == choice.intensity_metric]
    specific = [r for r in rows if r["industry"] is not None] if choice.industry_specific else []
    out: list[dict[str, object]] = []
    for enterprise_id, industry in enterprises.select("enterprise_id", "industry").iter_rows():
        matches = [r for r in specific if industry and str(industry).startswith(str(r["industry"]))]
        if matches:
            longest = max(len(str(r["industry"])) for r in matches)
            candidates = [r for r in matches if len(str(r["industry"])) == longest]
            # one metric per enterprise: the chosen one if present, else the first listed
            metrics = [r["metric"] for r in candidates]
            metric = choice.intensity_metric if choice.intensity_metric in metrics else metrics[0]
            candidates = [r for r in candidates if r["metric"] == metric]
        else:
            candidates = general
        for year in sorted(set(years)):
            if not candidates:
                out.append({"enterprise_id": enterprise_id, "year": year})
                continue
            ref = _pick_year(candidates, year)
            label = str(ref["label"])
            if int(str(ref["year"])) != year:
                label += f" [for {year}]"
            out.append(
                {
                    "enterprise_id": enterprise_id,
                    "year": year,
                    "reference_tce_per_10k_yuan": ref["value"],
                    "metric": ref["metric"],
                    "denominator": ref["denominator"],
                    "reference_status": ref["status"],
                    "reference": label,
                }
            )
    return pl.DataFrame(
        out,
        schema={
            "enterprise_id": pl.String,
            "year": pl.Int32,
            "reference_tce_per_10k_yuan": pl.Float64,
            "metric": pl.String,
            "denominator": pl.String,
            "reference_status": pl.String,
            "reference": pl.String,
        },
        orient="row",
    )
