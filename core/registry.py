"""The registry: greenmon's master data, loaded from a directory of CSV files.

This module owns reading and validating the three registry files and nothing else:

- ``enterprises.csv`` — one row per enterprise (name, county, industry, land, quota, target);
- ``meters.csv`` — one row per meter (owner, carrier, unit, kind, multiplier, rollover, role, …);
- ``monthly.csv`` — economic statistics per enterprise and month (output value, value added, …);
- ``targets.csv`` (optional) — county and city energy quotas and intensity targets per year.

`load_registry` reads every file as text with Polars, checks every row with vectorised
expressions, and either returns a typed, immutable `Registry` or raises one `RegistryError`
listing *every* problem found (``meters.csv:7: carrier: unknown carrier 'gass'``), so a user
can fix a whole file in one pass. Line numbers are physical lines of the file; the header is
line 1.

It also owns the list of meter carriers and their reference units, read from the packaged copy
of ``energy_coefficients.csv`` (`carrier_units`). The coefficients themselves (kgce per unit)
are the aggregator's business; unit arithmetic is `greenmon.units`'.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Final

import polars as pl

from greenmon.errors import GreenmonError
from greenmon.units import KNOWN_UNITS, is_convertible

__all__ = [
    "DECLARED_FLAGS",
    "DECLARED_LEVELS",
    "DEFAULT_INTERVAL_S",
    "ENTERPRISES_FILE",
    "FALSE_VALUES",
    "GREEN_FACTORY_COLUMN",
    "KINDS",
    "METERS_FILE",
    "MONTHLY_FILE",
    "MONTHLY_OPTIONAL_NUMBERS",
    "OPTIONAL_ENTERPRISE_NUMBERS",
    "PERIOD_COLUMNS",
    "PRODUCTION_START_COLUMN",
    "ROLES",
    "TARGETS_FILE",
    "TARGET_COLUMNS",
    "TARGET_SCOPES",
    "TRUE_VALUES",
    "MeterInfo",
    "Registry",
    "RegistryError",
    "RegistryProblem",
    "carrier_units",
    "load_registry",
    "rollover_modulus",
    "volume_conversions",
]

ENTERPRISES_FILE: Final = "enterprises.csv"
METERS_FILE: Final = "meters.csv"
MONTHLY_FILE: Final = "monthly.csv"
#: Packaged kernel data: volume-unit conversions at stated reference conditions (Nm3 -> m3).
VOLUME_CONDITIONS_FILE: Final = "volume_conditions.csv"
_FILES: Final = (ENTERPRISES_FILE, METERS_FILE, MONTHLY_FILE)
#: Optional: county and city quotas and intensity targets per year (DESIGN.md §3). Without a
#: row, a county's or the city's quota is the sum of its enterprises' (the alerts say so).
TARGETS_FILE: Final = "targets.csv"
TARGET_COLUMNS: Final = (
    "scope",
    "subject",
    "year",
    "energy_quota_tce",
    "intensity_target_tce_per_10k_yuan",
)
#: ``scope`` values of targets.csv; a city row's ``subject`` is the word ``city``.
TARGET_SCOPES: Final = ("county", "city")
_TARGET_NUMBERS: Final = TARGET_COLUMNS[3:]
_PROBLEM_ORDER: Final = (*_FILES, TARGETS_FILE)

ENTERPRISE_COLUMNS: Final = (
    "enterprise_id",
    "name",
    "county",
    "industry",
    "land_area_mu",
    "annual_quota_tce",
    "intensity_target_tce_per_10k_yuan",
)
METER_COLUMNS: Final = (
    "meter_id",
    "enterprise_id",
    "carrier",
    "unit",
    "kind",
    "multiplier",
    "rollover",
    "role",
    "raw_material",
)
MONTHLY_COLUMNS: Final = (
    "enterprise_id",
    "month",
    "output_value_10k_yuan",
    "value_added_10k_yuan",
    "sales_10k_yuan",
    "tax_10k_yuan",
    "product_output",
    "product_unit",
)
_ENTERPRISE_NUMBERS: Final = ENTERPRISE_COLUMNS[4:]
#: Optional enterprises.csv columns that are numbers when present: name -> (low, high), bounds
#: inclusive, or None for "a number > 0" (the dashboards' map and capacity alert read them).
OPTIONAL_ENTERPRISE_NUMBERS: Final[dict[str, tuple[float, float] | None]] = {
    "latitude": (-90.0, 90.0),
    "longitude": (-180.0, 180.0),
    "contracted_capacity_kw": None,
}
_MONTHLY_NUMBERS: Final = MONTHLY_COLUMNS[2:7]

KINDS: Final = ("register", "interval")
ROLES: Final = ("boundary", "sub", "export", "generation")
DEFAULT_INTERVAL_S: Final = 900
#: Optional meters.csv column: the most a meter can plausibly register per hour (native units,
#: after the multiplier); the aggregator quarantines deltas above it as spikes or jumps.
MAX_RATE_COLUMN: Final = "max_rate_per_h"
#: Optional meters.csv columns of a meter's validity (see `load_registry`): one meter id may
#: have several rows (a replaced or re-rated meter) whose [valid_from, valid_to) do not overlap.
PERIOD_COLUMNS: Final = ("valid_from", "valid_to", "initial_reading", "final_reading")
#: Time zone of a valid_from/valid_to written without an offset (a date is its midnight).
REGISTRY_TZ: Final = "Asia/Shanghai"
_TRUE: Final = ("true", "1")
_FALSE: Final = ("false", "0")
TRUE_VALUES: Final = _TRUE
FALSE_VALUES: Final = _FALSE
_MONTH_PATTERN: Final = r"^\d{4}-(0[1-9]|1[0-2])$"

# Declared attributes: optional enterprises.csv columns the enterprise (or the bureau) declares,
# which the green-factory screening and the efficiency classes read (greenmon.rules.screening).
# Kept as text in the frame; validated here so that a bad value is a registry problem.
#: true/false (or 1/0) flags; empty = not declared.
DECLARED_FLAGS: Final = (
    "energy_management_certified",  # certified energy management system (GB/T 23331/ISO 50001)
    "major_violation",  # a major safety, environmental or quality violation in three years
    "above_scale",  # above designated size (规上)
    "evaluation_exempt",  # exempt from the resource-efficiency classes (class T)
)
#: Recognised green-factory level; empty = not declared.
DECLARED_LEVELS: Final = ("national", "provincial", "city", "none")
GREEN_FACTORY_COLUMN: Final = "green_factory_level"
PRODUCTION_START_COLUMN: Final = "production_start"  # YYYY-MM, first month of production
#: Optional monthly.csv columns (numbers >= 0, empty = unknown), typed Float64 when present.
MONTHLY_OPTIONAL_NUMBERS: Final = ("employees", "rd_expense_10k_yuan")

# Rows of energy_coefficients.csv that are a conversion basis, not something a meter measures.
_NOT_METER_CARRIERS: Final = {"electricity_equal_value": "electricity"}

_LINE: Final = "__line"  # physical line number of a row, header = 1
_HIDDEN: Final = "__column_"  # unnamed or repeated header columns


# --------------------------------------------------------------------------- public types


@dataclass(frozen=True, slots=True)
class RegistryProblem:
    """One thing wrong with the registry: where (file, line, column) and why."""

    file: str
    line: int | None
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return (
            f"{where}: {self.column}: {self.reason}" if self.column else f"{where}: {self.reason}"
        )


class RegistryError(GreenmonError):
    """The registry is invalid; `problems` lists every problem found, one per line in str()."""

    def __init__(self, problems: Iterable[RegistryProblem]) -> None:
        self.problems: tuple[RegistryProblem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """What the ingestor and aggregator need to know about one meter."""

    meter_id: str
    enterprise_id: str
    carrier: str
    unit: str
    kind: str
    multiplier: float
    rollover: float | None
    role: str
    raw_material: bool
    interval_s: int


_METER_INFO_FIELDS: Final = tuple(f.name for f in fields(MeterInfo))


@dataclass(frozen=True, eq=False)
class Registry:
    """The validated master data. Frames are typed; `meter` is a constant-time lookup.

    ``enterprises``: the required columns (``land_area_mu``, ``annual_quota_tce`` and
    ``intensity_target_tce_per_10k_yuan`` as Float64, null when empty), the optional
    `OPTIONAL_ENTERPRISE_NUMBERS` present (``latitude``, ``longitude``,
    ``contracted_capacity_kw``) as Float64, plus any other extra columns of the file as
    strings. ``meters``: ``multiplier``/``rollover`` Float64 (``rollover`` null
    = no known rollover) and ``rollover_modulus`` (what a wrap adds, `rollover_modulus`),
    ``raw_material`` Boolean, ``interval_s`` Int64, ``kind``/``role``
    lower-case. ``monthly``: ``month`` as ``YYYY-MM`` text plus ``month_start`` (Date, the
    first day of the month); money and output Float64 (null when empty). ``targets`` (the
    optional targets.csv; empty without it): ``scope`` (lower-case), ``subject``, ``year``
    (Int32), the quota and the intensity target as Float64 (null when empty).
    """

    root: Path
    enterprises: pl.DataFrame
    meters: pl.DataFrame
    monthly: pl.DataFrame
    targets: pl.DataFrame = field(default_factory=lambda: _type_targets(None))
    # Every row of meters.csv, with ``valid_from``/``valid_to`` (Datetime UTC, null: open) and
    # ``initial_reading``/``final_reading``; ``meters`` holds one row per meter, its latest.
    # None: the same as ``meters`` (no meter has more than one row).
    meter_periods: pl.DataFrame | None = None
    enterprise_ids: frozenset[str] = field(init=False)
    _meters_by_id: Mapping[str, MeterInfo] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.meter_periods is None:
            object.__setattr__(self, "meter_periods", self.meters)
        ids = frozenset(self.enterprises.get_column("enterprise_id").to_list())
        index = {
            row[0]: MeterInfo(*row) for row in self.meters.select(_METER_INFO_FIELDS).iter_rows()
        }
        object.__setattr__(self, "enterprise_ids", ids)
        object.__setattr__(self, "_meters_by_id", MappingProxyType(index))

    def meter(self, meter_id: str) -> MeterInfo | None:
        """The registered meter with this id, or None."""
        return self._meters_by_id.get(meter_id)

    def meter_infos(self) -> Iterable[MeterInfo]:
        """Every registered meter."""
        return self._meters_by_id.values()

    @property
    def periods(self) -> pl.DataFrame:
        """`meter_periods`, never None."""
        assert self.meter_periods is not None
        return self.meter_periods

    @property
    def has_periods(self) -> bool:
        """Whether any meter has more than one row or a validity bound (the aggregator then
        computes per period; `greenmon.aggregator.periods`)."""
        p = self.periods
        if p.height != self.meters.height:
            return True
        return any(
            c in p.columns and p.get_column(c).null_count() < p.height
            for c in ("valid_from", "valid_to", "initial_reading", "final_reading")
        )

    def __repr__(self) -> str:
        return (
            f"Registry(root={str(self.root)!r}, enterprises={self.enterprises.height}, "
            f"meters={self.meters.height}, monthly={self.monthly.height})"
        )


@cache
def volume_conversions() -> frozenset[tuple[str, str]]:
    """(from unit, to unit) pairs of the packaged ``volume_conditions.csv``: a gas meter may be
    registered in ``Nm3`` for a carrier whose reference unit is ``m3`` (the aggregator converts
    at the reference conditions the coefficient file states, with the factor from that file)."""
    text = resources.files("greenmon").joinpath("data", VOLUME_CONDITIONS_FILE).read_bytes()
    table = pl.read_csv(text, infer_schema=False, columns=["from_unit", "to_unit"])
    return frozenset(table.iter_rows())


def rollover_modulus(text: str | None) -> float | None:
    """What a register wrap adds: the next value after the largest one shown (`text`, the
    registry's ``rollover``), at the resolution of its last non-zero digit — ``99999999`` ->
    1e8, ``99999.99`` -> 100000 (the 0.01 after 99999.99), ``65535`` -> 65536. Trailing zeros
    after the decimal point say nothing (``99999999.0``, as spreadsheets export whole numbers,
    is whole units). Exact decimal arithmetic; None for an empty or invalid value."""
    if text is None or not text.strip():
        return None
    try:
        shown = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not shown.is_finite():
        return None
    exponent = shown.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return float(shown + Decimal(1).scaleb(min(0, exponent)))


@cache
def carrier_units() -> Mapping[str, tuple[str, ...]]:
    """Meter carriers and their reference units, from the packaged energy_coefficients.csv.

    ``heat`` has two reference units (MJ and GJ); ``electricity_equal_value`` is a conversion
    basis, not a meter carrier, and is left out.
    """
    text = resources.files("greenmon").joinpath("data", "energy_coefficients.csv").read_bytes()
    table = pl.read_csv(text, infer_schema=False, columns=["carrier", "unit"])
    units: dict[str, tuple[str, ...]] = {}
    for carrier, unit in table.iter_rows():
        if carrier not in _NOT_METER_CARRIERS:
            units[carrier] = (*units.get(carrier, ()), unit)
    return MappingProxyType(units)


# --------------------------------------------------------------------------- loading


def load_registry(path: Path, tz: str = REGISTRY_TZ) -> Registry:
    """Read and validate the registry directory `path`; raise `RegistryError` if anything is
    wrong, listing every problem in all three files. `tz`: the zone of a ``valid_from`` or
    ``valid_to`` written without an offset."""
    root = Path(path)
    problems: list[RegistryProblem] = []
    frames: dict[str, pl.DataFrame | None] = {}
    for name, required in (
        (ENTERPRISES_FILE, ENTERPRISE_COLUMNS),
        (METERS_FILE, METER_COLUMNS),
        (MONTHLY_FILE, MONTHLY_COLUMNS),
    ):
        frames[name] = _read(root / name, required, problems)

    enterprises, meters, monthly = (frames[name] for name in _FILES)
    targets: pl.DataFrame | None = None
    if (root / TARGETS_FILE).exists():  # optional
        targets = _read(root / TARGETS_FILE, TARGET_COLUMNS, problems)
    known_ids: pl.Series | None = None
    if enterprises is not None and "enterprise_id" in enterprises.columns:
        known_ids = enterprises.get_column("enterprise_id").drop_nulls().unique()

    checks = _Checks()
    if enterprises is not None and _has(enterprises, ENTERPRISE_COLUMNS):
        _check_enterprises(checks.on(ENTERPRISES_FILE, enterprises))
    if meters is not None and _has(meters, METER_COLUMNS):
        meters = _with_period_times(meters, tz)
        _check_meters(checks.on(METERS_FILE, meters), known_ids)
    if monthly is not None and _has(monthly, MONTHLY_COLUMNS):
        _check_monthly(checks.on(MONTHLY_FILE, monthly), known_ids)
    if targets is not None and _has(targets, TARGET_COLUMNS):
        counties = None
        if enterprises is not None and "county" in enterprises.columns:
            counties = enterprises.get_column("county").drop_nulls().unique()
        _check_targets(checks.on(TARGETS_FILE, targets), counties)
    problems.extend(checks.problems())

    if problems or enterprises is None or meters is None or monthly is None:
        problems.sort(key=lambda p: (_PROBLEM_ORDER.index(p.file), p.line or 0))
        raise RegistryError(problems)
    periods = _type_meters(meters)
    return Registry(
        root=root,
        enterprises=_type_enterprises(enterprises),
        meters=_latest_rows(periods),
        monthly=_type_monthly(monthly),
        targets=_type_targets(targets),
        meter_periods=periods,
    )


def _has(df: pl.DataFrame, columns: Sequence[str]) -> bool:
    return all(c in df.columns for c in columns)


def _read(
    path: Path, required: Sequence[str], problems: list[RegistryProblem]
) -> pl.DataFrame | None:
    """Read one file as text: stripped strings, empty -> null, blank rows dropped, a `_LINE`
    column. Header problems (missing/duplicate columns) are appended to `problems`; None is
    returned when the file cannot be read at all."""
    name = path.name

    def problem(line: int | None, column: str | None, reason: str) -> None:
        problems.append(RegistryProblem(name, line, column, reason))

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        problem(None, None, f"file not found in {path.parent}")
        return None
    except OSError as exc:
        problem(None, None, f"cannot read file: {exc.strerror or exc}")
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problem(line, None, "not valid UTF-8 (save the file as UTF-8 CSV)")
        return None

    header = [n.strip() for n in next(csv.reader(io.StringIO(text)), [])]

    def clean_names(names: list[str]) -> list[str]:
        # Polars has already renamed duplicates; name columns after the real header instead,
        # and give unnamed or repeated columns a private name (dropped below).
        out: list[str] = []
        for i, polars_name in enumerate(names):
            name = header[i] if i < len(header) else polars_name.strip()
            out.append(name if name and name not in out else f"{_HIDDEN}{i}")
        return out

    try:
        raw = pl.read_csv(
            data,
            infer_schema=False,
            with_column_names=clean_names,
            row_index_name=_LINE,
            raise_if_empty=True,
        )
    except pl.exceptions.NoDataError:
        problem(None, None, "file is empty (expected a header line)")
        return None
    except pl.exceptions.PolarsError as exc:
        ragged = _ragged_line(text)
        if ragged is not None:
            problem(ragged, None, "more fields than columns in the header")
        else:
            problem(None, None, f"cannot parse CSV: {str(exc).splitlines()[0]}")
        return None

    # Physical line numbers: the header is line 1; quoted values may span several lines.
    values = [c for c in raw.columns if c != _LINE]
    newlines = pl.sum_horizontal(pl.col(c).str.count_matches("\n").fill_null(0) for c in values)
    spread = newlines.cum_sum().shift(1, fill_value=0)
    df = raw.with_columns(
        (pl.col(_LINE).cast(pl.Int64) + 2 + spread).alias(_LINE),
        *(pl.col(c).str.strip_chars().replace("", None) for c in values),
    ).filter(pl.any_horizontal(pl.col(c).is_not_null() for c in values))

    seen: set[str] = set()
    for column in header:
        if column and column in seen:
            problem(1, column, "duplicate column")
        seen.add(column)
    hidden = [c for c in values if c.startswith(_HIDDEN)]
    for column in hidden:
        position = int(column.removeprefix(_HIDDEN))
        unnamed = position >= len(header) or not header[position]
        if unnamed and df.get_column(column).count():
            problem(1, None, f"column {position + 1} has values but no name in the header")
    df = df.drop(hidden)
    for column in required:
        if column not in df.columns:
            problem(1, column, "missing required column")
    return df


def _ragged_line(text: str) -> int | None:
    """Physical line of the first row with more fields than the header (slow path, only used
    when Polars refuses the file)."""
    reader = csv.reader(io.StringIO(text))
    width: int | None = None
    for row in reader:
        if width is None:
            width = len(row)
        elif len(row) > width:
            return reader.line_num
    return None


# --------------------------------------------------------------------------- row checks


class _Checks:
    """Collects problem rows as small frames (vectorised), converted to objects at the end."""

    def __init__(self) -> None:
        self._frames: list[pl.DataFrame] = []

    def on(self, file: str, df: pl.DataFrame) -> _FileChecks:
        return _FileChecks(self, file, df)

    def add(self, frame: pl.DataFrame) -> None:
        if frame.height:
            self._frames.append(frame)

    def problems(self) -> list[RegistryProblem]:
        return [
            RegistryProblem(*row)
            for frame in self._frames
            for row in frame.select("file", "line", "column", "reason").iter_rows()
        ]


class _FileChecks:
    def __init__(self, sink: _Checks, file: str, df: pl.DataFrame) -> None:
        self.sink, self.file, self.df = sink, file, df

    def flag(self, bad: pl.Expr, column: str | None, reason: pl.Expr | str) -> None:
        """Report every row where `bad` is true (the reason is computed over the whole file
        first, so window expressions such as ``.over()`` see every row)."""
        why = pl.lit(reason) if isinstance(reason, str) else reason
        self.sink.add(
            self.df.select(
                pl.lit(self.file).alias("file"),
                pl.col(_LINE).alias("line"),
                pl.lit(column, dtype=pl.String).alias("column"),
                why.cast(pl.String).alias("reason"),
                bad.fill_null(False).alias("__bad"),
            )
            .filter(pl.col("__bad"))
            .drop("__bad")
        )

    def required(self, column: str) -> None:
        self.flag(pl.col(column).is_null(), column, "required value is empty")

    def unique(self, columns: Sequence[str], what: pl.Expr) -> None:
        """Flag every repeat of a key after its first line, naming that first line."""
        first = pl.col(_LINE).min().over(columns)
        present = pl.all_horizontal(pl.col(c).is_not_null() for c in columns)
        reason = pl.format("duplicate {} (first on line {})", what, first)
        self.flag(present & (pl.col(_LINE) != first), columns[-1], reason)

    def known_enterprise(self, known_ids: pl.Series | None) -> None:
        if known_ids is None:  # enterprises.csv itself is unusable: reported there
            return
        value = pl.col("enterprise_id")
        reason = pl.format("unknown enterprise '{}' (not in {})", value, pl.lit(ENTERPRISES_FILE))
        self.flag(value.is_not_null() & ~value.is_in(known_ids.implode()), "enterprise_id", reason)

    def number(self, column: str, *, positive: bool = False) -> None:
        """Empty is allowed; otherwise a finite number, >= 0 (or > 0 when `positive`)."""
        text, value = pl.col(column), _number(column)
        not_number = text.is_not_null() & (value.is_null() | ~value.is_finite())
        self.flag(not_number, column, pl.format("not a number: '{}'", text))
        too_small = (value <= 0) if positive else (value < 0)
        bound = "> 0" if positive else ">= 0"
        self.flag(too_small, column, pl.format(f"must be {bound}, got {{}}", text))

    def number_between(self, column: str, low: float, high: float) -> None:
        """Empty is allowed; otherwise a finite number in [low, high]."""
        text, value = pl.col(column), _number(column)
        not_number = text.is_not_null() & (value.is_null() | ~value.is_finite())
        self.flag(not_number, column, pl.format("not a number: '{}'", text))
        reason = pl.format(f"must be between {low:g} and {high:g}, got {{}}", text)
        self.flag((value < low) | (value > high), column, reason)

    def choice(self, column: str, allowed: Sequence[str], *, fold_case: bool = True) -> None:
        value = pl.col(column).str.to_lowercase() if fold_case else pl.col(column)
        expected = " or ".join(", ".join(allowed).rsplit(", ", 1))
        reason = pl.format(f"must be {expected}, got '{{}}'", pl.col(column))
        self.flag(pl.col(column).is_not_null() & ~value.is_in(allowed), column, reason)


def _number(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Float64, strict=False)


def _check_enterprises(c: _FileChecks) -> None:
    for column in ("enterprise_id", "name", "county", "industry"):
        c.required(column)
    c.unique(["enterprise_id"], pl.format("enterprise_id '{}'", pl.col("enterprise_id")))
    for column in _ENTERPRISE_NUMBERS:
        c.number(column)
    for column, bounds in OPTIONAL_ENTERPRISE_NUMBERS.items():
        if column in c.df.columns:
            if bounds is None:
                c.number(column, positive=True)
            else:
                c.number_between(column, *bounds)
    _check_declared(c)


def _check_declared(c: _FileChecks) -> None:
    """The optional declared-attribute columns, when the file has them."""
    for column in DECLARED_FLAGS:
        if column in c.df.columns:
            c.flag(
                pl.col(column).is_not_null()
                & ~pl.col(column).str.to_lowercase().is_in([*_TRUE, *_FALSE]),
                column,
                pl.format("must be true or false (or 1/0), or empty, got '{}'", pl.col(column)),
            )
    if GREEN_FACTORY_COLUMN in c.df.columns:
        c.choice(GREEN_FACTORY_COLUMN, DECLARED_LEVELS)
    if PRODUCTION_START_COLUMN in c.df.columns:
        start = pl.col(PRODUCTION_START_COLUMN)
        c.flag(
            start.is_not_null() & ~start.str.contains(_MONTH_PATTERN),
            PRODUCTION_START_COLUMN,
            pl.format("bad month '{}' (expected YYYY-MM, e.g. 2019-04)", start),
        )


def _check_meters(c: _FileChecks, known_ids: pl.Series | None) -> None:
    for column in ("meter_id", "enterprise_id", "carrier", "unit", "kind", "role", "raw_material"):
        c.required(column)
    if any(column in c.df.columns for column in PERIOD_COLUMNS):
        _check_periods(c)
    else:
        c.unique(["meter_id"], pl.format("meter_id '{}'", pl.col("meter_id")))
    c.known_enterprise(known_ids)

    units = carrier_units()
    carrier, unit = pl.col("carrier"), pl.col("unit")
    known_carrier = carrier.is_in(list(units))
    for basis, use in _NOT_METER_CARRIERS.items():
        reason = f"unknown carrier '{basis}': a conversion basis, not a meter carrier (use '{use}')"
        c.flag(carrier == basis, "carrier", reason)
    c.flag(
        carrier.is_not_null() & ~known_carrier & ~carrier.is_in(list(_NOT_METER_CARRIERS)),
        "carrier",
        pl.format("unknown carrier '{}'", carrier),
    )

    known_units = sorted(KNOWN_UNITS)
    c.flag(
        unit.is_not_null() & ~unit.is_in(known_units),
        "unit",
        pl.format(f"unknown unit '{{}}' (known: {', '.join(known_units)})", unit),
    )
    volumes = volume_conversions()
    allowed_pairs = [
        f"{name}\t{u}"
        for name, refs in units.items()
        for u in known_units
        if any(is_convertible(u, ref) or (u, ref) in volumes for ref in refs)
    ]
    references = {name: " or ".join(refs) for name, refs in units.items()}
    c.flag(
        known_carrier
        & unit.is_in(known_units)
        & ~pl.concat_str(carrier, pl.lit("\t"), unit).is_in(allowed_pairs),
        "unit",
        pl.format(
            "unit '{}' cannot be converted to {} (reference unit of '{}')",
            unit,
            carrier.replace_strict(references, default=None, return_dtype=pl.String),
            carrier,
        ),
    )

    c.choice("kind", KINDS)
    c.choice("role", ROLES)
    flag = pl.col("raw_material").str.to_lowercase()
    c.flag(
        pl.col("raw_material").is_not_null() & ~flag.is_in([*_TRUE, *_FALSE]),
        "raw_material",
        pl.format("must be true or false (or 1/0), got '{}'", pl.col("raw_material")),
    )
    c.number("multiplier", positive=True)
    c.number("rollover", positive=True)
    if MAX_RATE_COLUMN in c.df.columns:
        c.number(MAX_RATE_COLUMN, positive=True)
    if "interval_s" in c.df.columns:
        seconds = _number("interval_s")
        whole = seconds.is_finite() & (seconds == seconds.floor()) & (seconds > 0)
        c.flag(
            pl.col("interval_s").is_not_null() & ~whole.fill_null(False),
            "interval_s",
            pl.format("must be a whole number of seconds > 0, got '{}'", pl.col("interval_s")),
        )


def _check_monthly(c: _FileChecks, known_ids: pl.Series | None) -> None:
    c.required("enterprise_id")
    c.required("month")
    c.known_enterprise(known_ids)
    month = pl.col("month")
    c.flag(
        month.is_not_null() & ~month.str.contains(_MONTH_PATTERN),
        "month",
        pl.format("bad month '{}' (expected YYYY-MM, e.g. 2025-06)", month),
    )
    c.unique(
        ["enterprise_id", "month"],
        pl.format("month '{}' for enterprise '{}'", month, pl.col("enterprise_id")),
    )
    for column in (*_MONTHLY_NUMBERS, *MONTHLY_OPTIONAL_NUMBERS):
        if column in c.df.columns:
            c.number(column)


def _check_targets(c: _FileChecks, counties: pl.Series | None) -> None:
    for column in ("scope", "subject", "year"):
        c.required(column)
    c.choice("scope", TARGET_SCOPES)
    scope, subject = pl.col("scope").str.to_lowercase(), pl.col("subject")
    c.flag(
        (scope == "city") & (subject != "city"),
        "subject",
        pl.format("a city row's subject is the word 'city', got '{}'", subject),
    )
    if counties is not None:
        unknown = (scope == "county") & subject.is_not_null() & ~subject.is_in(counties.implode())
        reason = pl.format("unknown county '{}' (no enterprise in {})", subject,
                           pl.lit(ENTERPRISES_FILE))  # fmt: skip
        c.flag(unknown, "subject", reason)
    year = pl.col("year")
    whole = year.str.contains(r"^\d{4}$") & year.cast(pl.Int32, strict=False).is_between(1900, 2100)
    c.flag(
        year.is_not_null() & ~whole.fill_null(False),
        "year",
        pl.format("must be a year such as 2025, got '{}'", year),
    )
    c.unique(["scope", "subject", "year"], pl.format("row for {} '{}' in {}", scope, subject, year))
    for column in _TARGET_NUMBERS:
        c.number(column)


# --------------------------------------------------------------------------- typing


def _extras(df: pl.DataFrame, *known: str) -> list[str]:
    return [c for c in df.columns if c != _LINE and c not in known]


def _type_enterprises(df: pl.DataFrame) -> pl.DataFrame:
    optional = [c for c in OPTIONAL_ENTERPRISE_NUMBERS if c in df.columns]
    return df.select(
        *ENTERPRISE_COLUMNS[:4],
        *(pl.col(c).cast(pl.Float64) for c in _ENTERPRISE_NUMBERS),
        *(pl.col(c).cast(pl.Float64) for c in optional),
        *_extras(df, *ENTERPRISE_COLUMNS, *optional),
    )


def _type_meters(df: pl.DataFrame) -> pl.DataFrame:
    interval = (
        pl.col("interval_s").cast(pl.Float64).cast(pl.Int64)
        if "interval_s" in df.columns
        else pl.lit(None, dtype=pl.Int64)
    )
    return df.select(
        *METER_COLUMNS[:4],
        pl.col("kind").str.to_lowercase(),
        pl.col("multiplier").cast(pl.Float64).fill_null(1.0),
        pl.col("rollover").cast(pl.Float64),
        pl.col("rollover")
        .map_elements(rollover_modulus, return_dtype=pl.Float64, skip_nulls=True)
        .alias("rollover_modulus"),
        pl.col("role").str.to_lowercase(),
        pl.col("raw_material").str.to_lowercase().is_in(_TRUE).alias("raw_material"),
        interval.fill_null(DEFAULT_INTERVAL_S).alias("interval_s"),
        *([pl.col(MAX_RATE_COLUMN).cast(pl.Float64)] if MAX_RATE_COLUMN in df.columns else []),
        *(
            [
                pl.col("__from").cast(_PERIOD_TIME).alias("valid_from"),
                pl.col("__to").cast(_PERIOD_TIME).alias("valid_to"),
                *(
                    (
                        pl.col(c).cast(pl.Float64) if c in df.columns else pl.lit(None, pl.Float64)
                    ).alias(c)
                    for c in ("initial_reading", "final_reading")
                ),
            ]
            if "__from" in df.columns
            else []
        ),
        *_extras(
            df, *METER_COLUMNS, "interval_s", MAX_RATE_COLUMN, *PERIOD_COLUMNS, "__from", "__to"
        ),
    )


# --------------------------------------------------------------------------- periods

_PERIOD_TIME: Final = pl.Datetime("ms", "UTC")
_PERIOD_HINT: Final = "expected 2025-06-02, 2025-06-02T12:00 or 2025-06-02T12:00:00+08:00"


def _instant_ms(text: str | None, tz: str) -> int | None:
    """A date (its local midnight), a local date-time, or an RFC 3339 instant -> epoch ms."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(tz))
    return int(moment.timestamp() * 1000)


def _with_period_times(df: pl.DataFrame, tz: str) -> pl.DataFrame:
    """Add ``__from``/``__to`` (epoch ms) parsed from the optional validity columns."""
    if not any(c in df.columns for c in PERIOD_COLUMNS):
        return df
    parsed = [
        (
            pl.col(c).map_elements(lambda v: _instant_ms(v, tz), return_dtype=pl.Int64)
            if c in df.columns
            else pl.lit(None, pl.Int64)
        ).alias(alias)
        for c, alias in (("valid_from", "__from"), ("valid_to", "__to"))
    ]
    return df.with_columns(parsed)


def _check_periods(c: _FileChecks) -> None:
    """A meter id may have several rows when their [valid_from, valid_to) do not overlap and
    they agree on what makes the meter the same metering point."""
    df = c.df
    for column, parsed in (("valid_from", "__from"), ("valid_to", "__to")):
        if column in df.columns:
            c.flag(
                pl.col(column).is_not_null() & pl.col(parsed).is_null(),
                column,
                pl.format(f"bad time '{{}}' ({_PERIOD_HINT})", pl.col(column)),
            )
    lo, hi = pl.col("__from"), pl.col("__to")
    c.flag(lo.is_not_null() & hi.is_not_null() & (hi <= lo), "valid_to",
           "must be after valid_from")  # fmt: skip
    for column in ("initial_reading", "final_reading"):
        if column in df.columns:
            c.number(column)
            c.flag(
                pl.col(column).is_not_null() & (pl.col("kind").str.to_lowercase() == "interval"),
                column,
                "only a register meter has a reading to start or end from",
            )
    if "initial_reading" in df.columns:
        c.flag(pl.col("initial_reading").is_not_null() & lo.is_null(), "initial_reading",
               "needs valid_from (the moment the register showed it)")  # fmt: skip
    if "final_reading" in df.columns:
        c.flag(pl.col("final_reading").is_not_null() & hi.is_null(), "final_reading",
               "needs valid_to (the moment the register showed it)")  # fmt: skip
    # Rows of one meter, in order of valid_from (open start first): each must end (valid_to)
    # no later than the next one starts, and agree on the metering point's identity.
    meter = pl.col("meter_id")
    ordered = df.with_columns(lo.fill_null(-(2**62)).alias("__lo")).sort(["meter_id", "__lo"])
    nxt_lo = pl.col("__from").shift(-1).over("meter_id")
    nxt_line = pl.col(_LINE).shift(-1).over("meter_id")
    overlap = (
        ordered.with_columns(nxt_lo.alias("__next_from"), nxt_line.alias("__other"))
        .filter(
            meter.is_not_null()
            & pl.col("__other").is_not_null()
            & (hi.is_null() | pl.col("__next_from").is_null() | (hi > pl.col("__next_from")))
        )
        .select("__other", _LINE, meter)
    )
    if overlap.height:
        pairs = {row[0]: (row[1], row[2]) for row in overlap.iter_rows()}
        c.flag(
            pl.col(_LINE).is_in(list(pairs)),
            "meter_id",
            pl.format(
                "duplicate meter_id '{}' (line {}): several rows of one meter need valid_from "
                "and valid_to that do not overlap (the earlier row's valid_to <= this one's "
                "valid_from)",
                meter,
                pl.col(_LINE).replace_strict(
                    {k: v[0] for k, v in pairs.items()}, default=None, return_dtype=pl.Int64
                ),
            ),
        )
    first = pl.col(_LINE).min().over("meter_id")
    for column in ("enterprise_id", "carrier", "unit", "kind", "role", "raw_material"):
        value = (
            pl.col(column).str.to_lowercase()
            if column in ("kind", "role", "raw_material")
            else pl.col(column)
        )
        head = value.sort_by(pl.col(_LINE)).first().over("meter_id")
        c.flag(
            meter.is_not_null() & (pl.col(_LINE) != first) & (value != head),
            column,
            pl.format(
                "meter '{}' has {} '{}' here but not on line {}: the rows of one meter must "
                "agree on it (another one is another meter: give it its own meter_id)",
                meter,
                pl.lit(column),
                pl.col(column),
                first,
            ),
        )


def _latest_rows(periods: pl.DataFrame) -> pl.DataFrame:
    """One row per meter id: the one that starts last (the meter as it is now)."""
    if "valid_from" not in periods.columns:
        return periods
    return (
        periods.with_row_index("__row")
        .sort(pl.col("valid_from").fill_null(pl.datetime(1, 1, 1, time_zone="UTC")), "__row")
        .group_by("meter_id", maintain_order=True)
        .last()
        .sort("__row")
        .drop("__row")
    )


def _type_monthly(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(
        "enterprise_id",
        "month",
        pl.col("month").str.to_date("%Y-%m").alias("month_start"),
        *(pl.col(c).cast(pl.Float64) for c in _MONTHLY_NUMBERS),
        "product_unit",
        *(pl.col(c).cast(pl.Float64) for c in MONTHLY_OPTIONAL_NUMBERS if c in df.columns),
        *_extras(df, *MONTHLY_COLUMNS, *MONTHLY_OPTIONAL_NUMBERS),
    )


def _type_targets(df: pl.DataFrame | None) -> pl.DataFrame:
    if df is None:
        return pl.DataFrame(
            schema={
                "scope": pl.String,
                "subject": pl.String,
                "year": pl.Int32,
                **dict.fromkeys(_TARGET_NUMBERS, pl.Float64),
            }
        )
    return df.select(
        pl.col("scope").str.to_lowercase(),
        "subject",
        pl.col("year").cast(pl.Int32),
        *(pl.col(c).cast(pl.Float64) for c in _TARGET_NUMBERS),
    )
