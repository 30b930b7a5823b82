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
from greenmon.influx import InfluxClient

__all__ = [
    "MEASUREMENTS",
    "StoreError",
    "day_counts",
    "edge_readings",
    "read_readings",
    "reading_bounds",
    "to_lines",
    "write_frame",
]

READINGS: Final = "meter_reading"
#: measurement -> (tags, fields) as DESIGN.md §3 defines them (plus intensity's extra fields).
MEASUREMENTS: Final = {
    "meter_energy": (METER_ENERGY_TAGS, METER_ENERGY_FIELDS),
    "energy": (ENERGY_TAGS, ENERGY_FIELDS),
    "intensity": (INTENSITY_TAGS, INTENSITY_FIELDS),
}
#: String fields: every stored figure names the reference rows it was computed with.
STRING_FIELDS: Final = {
    "meter_energy": ("reference",),
    "energy": ("reference",),
    "intensity": ("reference", "reference_status"),
}
_TIME: Final = pl.Datetime("ms", "UTC")
_READINGS_SCHEMA: Final = pl.Schema(
    [("meter", pl.String()), ("time", _TIME), ("value", pl.Float64())]
)

Progress = Callable[[int, int], None]


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


def read_readings(
    client: InfluxClient,
    start: datetime,
    end: datetime,
    *,
    chunk: timedelta = timedelta(days=1),
    progress: Progress | None = None,
) -> pl.DataFrame:
    """``meter, time, value`` of every reading with device time in [start, end), read one
    `chunk` of time per query; rows in no particular order (the aggregator sorts)."""
    if end <= start:
        return pl.DataFrame(schema=_READINGS_SCHEMA)
    frames: list[pl.DataFrame] = []
    steps = max(1, -(-(end - start) // chunk))
    lo = start
    for i in range(steps):
        hi = min(end, lo + chunk)
        df = client.query(
            f'SELECT "value" FROM "{READINGS}" '
            f'WHERE time >= {_ms(lo)}ms AND time < {_ms(hi)}ms GROUP BY "meter"',
            epoch="ms",
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
    client: InfluxClient, start: datetime, end: datetime, *, per_meter: int = 2
) -> pl.DataFrame:
    """Each meter's last `per_meter` readings before `start` and first after `end` (however
    long ago or ahead): the intervals that cross the range's edges, and the neighbours the
    spike rule needs, whatever the gaps."""
    frames = []
    for where, order in ((f"time < {_ms(start)}ms", " ORDER BY time DESC"),
                         (f"time >= {_ms(end)}ms", "")):  # fmt: skip
        df = client.query(
            f'SELECT "value" FROM "{READINGS}" WHERE {where} GROUP BY "meter"{order} '
            f"LIMIT {per_meter}",
            epoch="ms",
        )
        if df.height:
            frames.append(_readings_frame(df))
    return pl.concat(frames) if frames else pl.DataFrame(schema=_READINGS_SCHEMA)


def reading_bounds(client: InfluxClient) -> tuple[datetime, datetime] | None:
    """Device times of the oldest and the newest reading, or None when there are none."""
    bounds: list[int] = []
    for fn in ("first", "last"):
        df = client.query(f'SELECT {fn}("value") FROM "{READINGS}"', epoch="ms")
        if not df.height:
            return None
        bounds.append(int(df.get_column("time")[0]))
    return tuple(datetime.fromtimestamp(b / 1000, UTC) for b in bounds)  # type: ignore[return-value]


def day_counts(client: InfluxClient, since: datetime, tz: str) -> dict[datetime, int]:
    """Readings per local day from `since` on (what follow mode compares to spot late data)."""
    df = client.query(
        f'SELECT count("value") FROM "{READINGS}" WHERE time >= {_ms(since)}ms '
        f"GROUP BY time(1d) tz('{tz}')",
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
    lines = to_lines(frame, measurement, tag_list, field_list, strings)
    if lines.is_empty():
        return 0
    return client.write(lines.to_list(), precision="ms")
