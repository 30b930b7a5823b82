"""The aggregator's InfluxDB side: readings in, measurements out.

Owns reading ``meter_reading`` in time chunks (InfluxQL with CSV answers into Polars, so a year
of a city never has to fit in one response), the bounds and per-day counts follow mode watches,
and turning the aggregator's frames into line protocol — vectorised, with the same escaping and
refusals as `greenmon.lineprotocol` (a test checks them against each other) — written through
the one `InfluxClient`. Writes are idempotent: a window is a point with fixed tags at the
window's start, so writing it again overwrites it.

Every numeric field is written as a float, always, so that a field never changes type between
writes (InfluxDB refuses that); null and non-finite values are left out of the line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import polars as pl

from greenmon.aggregator.energy import (
    ENERGY_FIELDS,
    ENERGY_TAGS,
    METER_ENERGY_FIELDS,
    METER_ENERGY_TAGS,
)
from greenmon.aggregator.errors import AggregatorError
from greenmon.aggregator.intensity import INTENSITY_FIELDS, INTENSITY_TAGS
from greenmon.influx import InfluxClient, quote_literal

__all__ = [
    "MEASUREMENTS",
    "StoreError",
    "day_counts",
    "edge_readings",
    "enterprise_filter",
    "read_readings",
    "read_references",
    "reading_bounds",
    "reference_points",
    "to_lines",
    "write_frame",
    "write_lines",
    "write_references",
]

READINGS: Final = "meter_reading"
#: measurement -> (tags, fields) as DESIGN.md §3 defines them (plus intensity's extra fields).
MEASUREMENTS: Final = {
    "meter_energy": (METER_ENERGY_TAGS, METER_ENERGY_FIELDS),
    "energy": (ENERGY_TAGS, ENERGY_FIELDS),
    "intensity": (INTENSITY_TAGS, INTENSITY_FIELDS),
}
#: String fields: every stored figure names the reference rows it was computed with (energy
#: points by the label's compact id, resolved in the `REFERENCE` measurement).
STRING_FIELDS: Final = {
    "meter_energy": ("reference_id",),
    "energy": ("reference_id",),
    "intensity": ("reference", "reference_status"),
}
#: One point per reference id: tag ``id``, string field ``text`` (the full label), stamped
#: with the local start of the year the label applies to.
REFERENCE: Final = "reference"
#: Lines per write request.
WRITE_BATCH: Final = 20_000
_TIME: Final = pl.Datetime("ms", "UTC")
_READINGS_SCHEMA: Final = pl.Schema(
    [("meter", pl.String()), ("time", _TIME), ("value", pl.Float64())]
)

Progress = Callable[[int, int], None]
_VALUE: Final = {"value": pl.Float64()}  # every column's type known: no inference pass


class StoreError(AggregatorError):
    """A frame cannot be written as line protocol (a tag value no InfluxDB reads back)."""


def _ms(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 1000)


def _readings_frame(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(
        pl.col("meter").cast(pl.String),
        pl.col("time").cast(pl.Int64).cast(_TIME),
        pl.col("value").cast(pl.Float64),
    )


def enterprise_filter(enterprises: Sequence[str] | None) -> str:
    """An InfluxQL condition (`` AND (...)``) selecting the ``enterprise`` tags given; ""
    for None (all). Callers skip the query for an empty list."""
    if not enterprises:
        return ""
    ors = " OR ".join(f'"enterprise" = {quote_literal(e)}' for e in enterprises)
    return f" AND ({ors})"


def read_readings(
    client: InfluxClient,
    start: datetime,
    end: datetime,
    *,
    chunk: timedelta = timedelta(days=1),
    enterprises: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """``meter, time, value`` of every reading with device time in [start, end) (of the
    meters of `enterprises`, when given), read one `chunk` of time per query; rows in no
    particular order (the aggregator sorts)."""
    if end <= start or (enterprises is not None and not enterprises):
        return pl.DataFrame(schema=_READINGS_SCHEMA)
    frames: list[pl.DataFrame] = []
    steps = max(1, -(-(end - start) // chunk))
    which = enterprise_filter(enterprises)
    lo = start
    for i in range(steps):
        hi = min(end, lo + chunk)
        df = client.query(
            f'SELECT "value" FROM {client.source(READINGS)} '
            f'WHERE time >= {_ms(lo)}ms AND time < {_ms(hi)}ms{which} GROUP BY "meter"',
            epoch="ms",
            schema_overrides=_VALUE,
        )
        if df.height:
            frames.append(_readings_frame(df))
        if progress is not None:
            progress(i + 1, steps)
        lo = hi
    if not frames:
        return pl.DataFrame(schema=_READINGS_SCHEMA)
    return pl.concat(frames)


def edge_readings(
    client: InfluxClient,
    start: datetime,
    end: datetime,
    *,
    per_meter: int = 2,
    enterprises: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Each meter's last `per_meter` readings before `start` and first after `end` (however
    long ago or ahead; of the meters of `enterprises`, when given): the intervals that cross
    the range's edges, and the neighbours the spike rule needs, whatever the gaps."""
    if enterprises is not None and not enterprises:
        return pl.DataFrame(schema=_READINGS_SCHEMA)
    frames = []
    which = enterprise_filter(enterprises)
    for where, order in ((f"time < {_ms(start)}ms", " ORDER BY time DESC"),
                         (f"time >= {_ms(end)}ms", "")):  # fmt: skip
        df = client.query(
            f'SELECT "value" FROM {client.source(READINGS)} WHERE {where}{which} '
            f'GROUP BY "meter"{order} LIMIT {per_meter}',
            epoch="ms",
            schema_overrides=_VALUE,
        )
        if df.height:
            frames.append(_readings_frame(df))
    return pl.concat(frames) if frames else pl.DataFrame(schema=_READINGS_SCHEMA)


def reading_bounds(client: InfluxClient) -> tuple[datetime, datetime] | None:
    """Device times of the oldest and the newest reading, or None when there are none."""
    bounds: list[int] = []
    for fn in ("first", "last"):
        df = client.query(f'SELECT {fn}("value") FROM {client.source(READINGS)}', epoch="ms")
        if not df.height:
            return None
        bounds.append(int(df.get_column("time")[0]))
    return tuple(datetime.fromtimestamp(b / 1000, UTC) for b in bounds)  # type: ignore[return-value]


def day_counts(
    client: InfluxClient,
    since: datetime,
    tz: str,
    *,
    until: datetime | None = None,
    every: timedelta = timedelta(days=1),
) -> dict[datetime, int]:
    """Readings per local day (or per `every`, a divisor of a day, aligned to local midnight)
    in [since, until) — what follow mode compares to spot late data. Keys: bucket starts;
    empty buckets are left out."""
    upper = f" AND time < {_ms(until)}ms" if until is not None else ""
    df = client.query(
        f'SELECT count("value") FROM {client.source(READINGS)} WHERE time >= {_ms(since)}ms'
        f"{upper} GROUP BY time({int(every.total_seconds())}s) tz('{tz}')",
        epoch="ms",
    )
    if not df.height:
        return {}
    return {
        datetime.fromtimestamp(t / 1000, UTC): int(c)
        for t, c in zip(df.get_column("time"), df.get_column("count").fill_null(0), strict=True)
        if c
    }


# --------------------------------------------------------------------------- line protocol

# What `greenmon.lineprotocol` refuses in a name (see its docstring for why).
_FORBIDDEN = r"[\x00-\x1f\x7f]"
_AMBIGUOUS_BACKSLASH = r"\\([\\,= ]|$)"


def _escape_key_expr(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.String).str.replace_all(r"([,= ])", r"\$1")


def to_lines(
    frame: pl.DataFrame,
    measurement: str,
    tags: Sequence[str],
    fields: Sequence[str],
    strings: Sequence[str] = (),
) -> pl.Series:
    """Line protocol for every row of `frame` (``time`` + `tags` + `fields`), vectorised.

    Tag values are escaped as `greenmon.lineprotocol.escape_tag` does; a row with a null or
    empty tag value is written without that tag; a value that cannot be written portably
    raises `StoreError` naming it. Fields are floats, `strings` are string fields (quoted,
    ``\\`` and ``"`` escaped); nulls and non-finite values are left out, and a row with no
    field left is dropped (InfluxDB needs at least one).
    """
    missing = [c for c in ("time", *tags, *fields, *strings) if c not in frame.columns]
    if missing:
        raise StoreError(f"{measurement}: frame lacks column(s) {', '.join(missing)}")
    if frame.is_empty():
        return pl.Series("line", [], dtype=pl.String)
    for tag in tags:
        values = frame.get_column(tag).cast(pl.String)
        bad = values.filter(
            values.str.contains(_FORBIDDEN) | values.str.contains(_AMBIGUOUS_BACKSLASH)
        )
        if bad.len():
            raise StoreError(
                f"{measurement}: tag {tag}={bad[0]!r} cannot be written to InfluxDB "
                "(control character, or a backslash before \\ , = space or at the end)"
            )
    tag_parts = [
        pl.when(pl.col(t).is_not_null() & (pl.col(t).cast(pl.String) != ""))
        .then(pl.concat_str(pl.lit("," + t + "="), _escape_key_expr(t)))
        .otherwise(pl.lit(""))
        for t in sorted(tags)  # sorted tag keys: what InfluxDB stores fastest
    ]
    field_parts = [
        pl.when(pl.col(f).cast(pl.Float64).is_finite()).then(
            pl.concat_str(pl.lit(f + "="), pl.col(f).cast(pl.Float64).cast(pl.String))
        )
        for f in fields
    ]
    field_parts += [
        pl.when(pl.col(f).is_not_null()).then(
            pl.concat_str(
                pl.lit(f + '="'),
                pl.col(f)
                .cast(pl.String)
                .str.replace_all("\\", "\\\\", literal=True)
                .str.replace_all('"', '\\"', literal=True),
                pl.lit('"'),
            )
        )
        for f in strings
    ]
    fields_expr = pl.concat_str(field_parts, separator=",", ignore_nulls=True)
    return (
        frame.select(
            pl.concat_str(
                pl.lit(measurement),
                *tag_parts,
                pl.lit(" "),
                fields_expr,
                pl.lit(" "),
                pl.col("time").cast(_TIME).dt.epoch("ms").cast(pl.String),
            ).alias("line"),
            fields_expr.alias("__fields"),
        )
        .filter(pl.col("__fields") != "")
        .get_column("line")
    )


def write_lines(client: InfluxClient, lines: pl.Series, batch: int = WRITE_BATCH) -> int:
    """Write line protocol (`to_lines` output, ms timestamps) in requests of `batch` lines,
    each joined into one UTF-8 body (no Python string per line); returns the lines written."""
    written = 0
    for offset in range(0, lines.len(), batch):
        part = lines.slice(offset, batch)
        body = part.str.join("\n").item().encode("utf-8")
        written += client.write_body(body, part.len(), precision="ms")
    return written


def write_frame(
    client: InfluxClient,
    measurement: str,
    frame: pl.DataFrame,
    *,
    tags: Iterable[str] | None = None,
    fields: Iterable[str] | None = None,
) -> int:
    """Write `frame` as `measurement` (tags and fields from `MEASUREMENTS` unless given);
    returns the number of points written."""
    default_tags, default_fields = MEASUREMENTS.get(measurement, ((), ()))
    tag_list = list(tags if tags is not None else default_tags)
    field_list = [
        f for f in (fields if fields is not None else default_fields) if f in frame.columns
    ]
    strings = [f for f in STRING_FIELDS.get(measurement, ()) if f in frame.columns]
    written = 0
    # formatted a request at a time: the lines of a whole frame never sit in memory at once
    for offset in range(0, max(frame.height, 1), WRITE_BATCH):
        part = frame.slice(offset, WRITE_BATCH)
        written += write_lines(client, to_lines(part, measurement, tag_list, field_list, strings))
    return written


def reference_points(frame: pl.DataFrame, tz: str) -> pl.DataFrame:
    """The `REFERENCE` points of the labels `frame` carries (``reference``, ``reference_id``,
    ``time``): one per id and local year, stamped with the year's local start."""
    if frame.is_empty():
        return pl.DataFrame(schema={"time": _TIME, "id": pl.String, "text": pl.String})
    year = pl.col("time").dt.convert_time_zone(tz).dt.truncate("1y")
    return (
        frame.select(
            year.dt.convert_time_zone("UTC").cast(_TIME).alias("time"),
            pl.col("reference_id").alias("id"),
            pl.col("reference").alias("text"),
        )
        .drop_nulls("id")
        .unique(["time", "id"])
        .with_columns(pl.col("id", "text").cast(pl.String))
        .sort("time", "id")
    )


def write_references(client: InfluxClient, points: pl.DataFrame) -> int:
    """Write `reference_points` output as the `REFERENCE` measurement."""
    return write_lines(client, to_lines(points, REFERENCE, ["id"], [], ["text"]))


def read_references(client: InfluxClient, ids: Iterable[str] | None = None) -> dict[str, str]:
    """The full label of each reference id (all stored ids when `ids` is None)."""
    wanted = sorted(set(ids)) if ids is not None else None
    if wanted is not None and not wanted:
        return {}
    where = (
        " WHERE " + " OR ".join(f'"id" = {quote_literal(i)}' for i in wanted)
        if wanted is not None
        else ""
    )
    df = client.query(f'SELECT last("text") AS "text" FROM "{REFERENCE}"{where} GROUP BY "id"')
    if not df.height:
        return {}
    return dict(zip(df.get_column("id").to_list(), df.get_column("text").to_list(), strict=True))
