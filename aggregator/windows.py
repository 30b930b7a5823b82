"""Windows: classified intervals -> quantity and completeness per meter and window.

`attribute` turns `greenmon.aggregator.consumption.classify` output into one row per meter and
window (``15m``, ``1h``, ``1d``, ``1mo``) with

- ``quantity`` — the counted consumption in the window, native unit. An interval [t0, t1) that
  lies in one window goes there whole; one that spans several windows (a gap, or a reading
  that is not aligned) is spread over them in proportion to time, so energy across a gap is
  attributed, not lost, and sums over windows equal the sum of the intervals;
- ``readings`` — distinct valid readings with device time in [window start, window end);
- ``completeness`` — the share of the window that valid readings cover (``covered``, ms): a
  valid reading at t that closes an interval [t0, t) covers [max(t0, t - the meter's
  interval_s), t), spread over the windows it spans; completeness = min(1, covered time /
  window length). So a day whose
  readings all arrived is 1 for every meter, however its readings fall on the window edges (a
  reading at midnight closes the day before it) and whatever its nominal interval (an hourly
  meter is not 0.25 complete in a quarter of an hour it covers); a meter silent 3 of 24 hours
  is 0.875 for that day; a register's first reading (a baseline, closing no interval) and a
  quarantined reading cover nothing; a reading after a gap covers only its nominal interval.

Window starts: ``15m`` and ``1h`` are aligned in UTC (which is also local alignment for
Asia/Shanghai and every zone with a whole-quarter-hour offset); ``1d`` and ``1mo`` follow the
local time zone (default Asia/Shanghai), so a day may last 23 or 25 hours where the zone has DST
and its completeness is measured against its real length. Points are stamped with the window's
start as a UTC instant (``time``) and carry the window's end (``end``).

A window has a row when a reading (valid or quarantined) lies in it or counted energy falls
into it; a window inside a gap gets its share of the energy with ``readings`` 0. `roll_up`
sums rows of a finer window into a coarser one (what follow mode does with quarter hours).

Speed: one pass over the classified rows per base (15m, 1h, local day), grouped on a sorted
integer key (meter code, window start) rather than hashed; an interval lying in one window —
nearly all of them — is placed by integer arithmetic; the few that span windows go through a
small "slow lane". For a zone with a constant UTC offset since its last transition
(Asia/Shanghai since 1991) local days are integer arithmetic too; only readings before that
transition, or in a zone with DST, go through Polars' time-zone functions. Months are summed
from local days (a local month is a union of local days), never from raw rows. `attribute`
evaluates its passes when called (together, so the classification upstream runs once) and
returns a LazyFrame over their small results.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from greenmon.aggregator.consumption import meter_enum
from greenmon.aggregator.errors import AggregatorError, InputFrameError

__all__ = [
    "DEFAULT_TZ",
    "WINDOWS",
    "WINDOW_SCHEMA",
    "attribute",
    "roll_up",
    "window_start",
]

WINDOWS: Final = ("15m", "1h", "1d", "1mo")
DEFAULT_TZ: Final = "Asia/Shanghai"
_TIME: Final = pl.Datetime("ms", "UTC")
_FIXED_MS: Final = {"15m": 900_000, "1h": 3_600_000}
_DAY_MS: Final = 86_400_000
_HORIZON: Final = datetime(2100, 1, 1, tzinfo=UTC)

#: Columns and types of `attribute`'s output.
_WINDOW_COLUMNS: dict[str, pl.DataType] = {
    "meter": pl.String(),
    "window": pl.String(),
    "time": _TIME,
    "end": _TIME,
    "quantity": pl.Float64(),
    "readings": pl.UInt32(),
    "completeness": pl.Float64(),
    "covered": pl.Int64(),
}
WINDOW_SCHEMA: Final = pl.Schema(_WINDOW_COLUMNS)


# --------------------------------------------------------------------------- bins


@functools.cache
def _constant_offset(tz: str) -> tuple[int, int]:
    """(offset in ms, since epoch ms): the zone's UTC offset is `offset` for every instant from
    `since` to 2100 (the day after its last transition before then)."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise AggregatorError(f"unknown time zone {tz!r}") from exc
    start = int(datetime(1970, 1, 1, tzinfo=UTC).timestamp())
    end = int(_HORIZON.timestamp())

    def offset(seconds: int) -> int:
        delta = datetime.fromtimestamp(seconds, tz=zone).utcoffset()
        assert delta is not None
        return int(delta.total_seconds() * 1000)

    last = offset(end)
    since = start
    # walk back day by day from the horizon to the last change (cached per zone)
    day = 86_400
    t = end
    while t > start:
        if offset(t - day) != last:
            since = t + day
            break
        t -= day
    return last, since * 1000


class _Bins:
    """Window arithmetic on epoch-ms Int64 expressions."""

    def start(self, t: pl.Expr) -> pl.Expr:  # pragma: no cover - interface
        raise NotImplementedError

    def next(self, ws: pl.Expr) -> pl.Expr:  # pragma: no cover - interface
        raise NotImplementedError

    def starts(self, first: pl.Expr, last: pl.Expr) -> pl.Expr:  # pragma: no cover
        """List of window starts from `first` to `last` (both window starts), inclusive."""
        raise NotImplementedError


@dataclass(frozen=True)
class _Fixed(_Bins):
    length: int
    offset: int = 0  # local = utc + offset

    def start(self, t: pl.Expr) -> pl.Expr:
        return (t + self.offset) // self.length * self.length - self.offset

    def next(self, ws: pl.Expr) -> pl.Expr:
        return ws + self.length

    def starts(self, first: pl.Expr, last: pl.Expr) -> pl.Expr:
        return pl.int_ranges(first, last + 1, self.length, dtype=pl.Int64)


@dataclass(frozen=True)
class _Calendar(_Bins):
    tz: str
    every: str  # "1d" or "1mo"

    def _local(self, t: pl.Expr) -> pl.Expr:
        return t.cast(_TIME).dt.convert_time_zone(self.tz)

    def start(self, t: pl.Expr) -> pl.Expr:
        return self._local(t).dt.truncate(self.every).dt.epoch("ms")

    def next(self, ws: pl.Expr) -> pl.Expr:
        return self._local(ws).dt.offset_by(self.every).dt.epoch("ms")

    def starts(self, first: pl.Expr, last: pl.Expr) -> pl.Expr:
        return pl.datetime_ranges(self._local(first), self._local(last), self.every).list.eval(
            pl.element().dt.epoch("ms")
        )


def window_start(time: pl.Expr, window: str, tz: str = DEFAULT_TZ) -> pl.Expr:
    """The start (Datetime ms UTC) of the `window` containing each instant of `time`."""
    _check_window(window)
    t = time.dt.epoch("ms")
    if window in _FIXED_MS:
        return _Fixed(_FIXED_MS[window]).start(t).cast(_TIME)
    return _Calendar(tz, window).start(t).cast(_TIME)


def _check_window(window: str) -> None:
    if window not in WINDOWS:
        raise AggregatorError(f"unknown window {window!r} (known: {', '.join(WINDOWS)})")


# --------------------------------------------------------------------------- attribution

_CODE_SHIFT: Final = 1 << 44  # group key = meter code * 2**44 + window start ms + 2**43
_MS_BIAS: Final = 1 << 43
MAX_METERS: Final = (1 << 63) // _CODE_SHIFT - 1


def _pieces(base: pl.LazyFrame, bins: _Bins) -> pl.LazyFrame:
    """``meter, ws, quantity, readings, touch`` contributions (not yet summed) for `bins`.

    Straightforward form for small frames (it reads `base` three times): one group-by keyed
    by the window holding each interval's last millisecond; intervals that start in an
    earlier window are spread piecewise; a reading exactly on a window start counts for that
    (next) window.
    """
    t, t0 = pl.col("t"), pl.col("t0")
    keyed = base.with_columns(bins.start(t - 1).alias("ws"))
    ws = pl.col("ws")
    inside = pl.col("counted") & (t0 >= ws)
    on_edge = bins.next(ws) == t
    c0 = pl.col("c0")
    covers = c0.is_not_null() & (c0 >= ws)
    grouped = keyed.group_by("meter", "ws").agg(
        pl.col("q").filter(inside).sum().alias("quantity"),
        (pl.col("valid") & ~on_edge).sum().cast(pl.UInt32).alias("readings"),
        (pl.col("valid") & on_edge).sum().cast(pl.UInt32).alias("edge"),
        (inside | covers | ~on_edge).sum().cast(pl.UInt32).alias("touch"),
        on_edge.sum().cast(pl.UInt32).alias("edge_touch"),
        (pl.col("t") - c0).filter(covers).sum().cast(pl.Int64).alias("covered"),
    )
    spread = _spread(keyed.filter(pl.col("counted") & (t0 < ws)), bins, "t0")
    cover = _spread(keyed.filter(c0 < ws), bins, "c0")
    edge = grouped.filter(pl.col("edge_touch") > 0).select(
        "meter",
        bins.next(ws).alias("ws"),
        pl.lit(0.0).alias("quantity"),
        pl.col("edge").alias("readings"),
        pl.col("edge_touch").alias("touch"),
        pl.lit(0, pl.Int64).alias("covered"),
    )
    return pl.concat([grouped.drop("edge", "edge_touch"), spread, cover, edge], how="vertical")


def _spread(rows: pl.LazyFrame, bins: _Bins, start: str) -> pl.LazyFrame:
    """Spread spans [`start`, t) over the windows they span (``ws`` = the window of the
    span's last millisecond): for ``start="t0"`` the interval's quantity ``q`` in proportion
    to time, for ``start="c0"`` the time a valid reading covers (``covered``, ms)."""
    t, t0, ws = pl.col("t"), pl.col(start), pl.col("ws")
    overlap = pl.min_horizontal(t, pl.col("we")) - pl.max_horizontal(t0, ws)
    if start == "t0":
        # the share of the interval inside the window (exact for whole minutes)
        share = overlap.cast(pl.Float64) / (t - t0).cast(pl.Float64)
        quantity, covered = pl.col("q") * share, pl.lit(0, pl.Int64)
    else:
        quantity, covered = pl.lit(0.0), overlap.cast(pl.Int64)
    return (
        rows.select("meter", "t", start, "q", bins.starts(bins.start(t0), ws).alias("ws"))
        .explode("ws")
        .with_columns(bins.next(ws).alias("we"))
        .select(
            "meter",
            "ws",
            quantity.alias("quantity"),
            pl.lit(0, pl.UInt32).alias("readings"),
            pl.lit(1, pl.UInt32).alias("touch"),
            covered.alias("covered"),
        )
    )


def _pass(
    base: pl.LazyFrame, fast: _Fixed, since: int | None, meter_ids: pl.Series
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """The ONE pass over the classified rows for `fast` bins: (per meter-window sums, the
    rows the fixed arithmetic cannot place). Both read the same plan; `attribute` collects
    them together, so the classification upstream runs once.

    Sums: a row's interval goes whole to the window holding its last millisecond when it
    starts in that window; its reading counts for the window holding it (a reading exactly on
    a window start: that next window, via ``edge``). The slow lane: intervals spanning several
    windows (their energy only; their readings were counted) and rows before `since` (the
    zone's last UTC-offset change: everything), placed afterwards with the exact bins.

    `base` is expected in `classify`'s order (by meter, then time): the group key (meter
    code, window start) is then sorted and Polars groups runs instead of hashing. (Any other
    order gives the same result, more slowly: the sums are regrouped afterwards.)
    """
    t, t0 = pl.col("t"), pl.col("t0")
    ws = fast.start(t - 1)
    key = pl.col("meter").to_physical().cast(pl.Int64) * _CODE_SHIFT + ws + _MS_BIAS
    keyed = base.with_columns(ws.alias("ws"), key.alias("key"))
    ws = pl.col("ws")
    valid = pl.col("valid")
    # the time a valid reading covers (`attribute`): here when it lies in the reading's window
    c0 = pl.col("c0")
    counted = pl.col("counted")
    covers = (c0 >= ws).fill_null(False)
    spans = (c0 < ws).fill_null(False)
    on_edge = fast.next(ws) == t
    readings, edge, touch_edge = valid & ~on_edge, valid & on_edge, on_edge
    old: pl.Expr | None = None
    if since is not None:  # rows before `since` all go to the slow lane
        old = pl.coalesce(t0, t) < since
        current = ~old
        counted, covers, spans = counted & current, covers & current, spans & current
        readings, edge, touch_edge = readings & current, edge & current, touch_edge & current
    inside = counted & (t0 >= ws)
    touch = inside | covers | ~on_edge
    if old is not None:
        touch = touch & ~old
    sums = (
        keyed.select(
            "key",
            pl.when(inside).then(pl.col("q")).otherwise(0.0).alias("quantity"),
            readings.alias("readings"),
            edge.alias("edge"),
            touch.alias("touch"),
            touch_edge.alias("edge_touch"),
            pl.when(covers).then(t - c0).otherwise(0).alias("covered"),
        )
        .set_sorted("key")
        .group_by("key")
        .agg(
            pl.col("quantity").sum(),
            *(pl.col(c).sum().cast(pl.UInt32) for c in ("readings", "edge", "touch", "edge_touch")),
            pl.col("covered").sum(),
        )
        # meter and window start back from the group key (cheaper than two more aggregations)
        .with_columns(
            pl.lit(meter_ids).gather(pl.col("key") // _CODE_SHIFT).alias("meter"),
            (pl.col("key") % _CODE_SHIFT - _MS_BIAS).alias("ws"),
        )
    )
    lane = counted & (t0 < ws) | spans
    slow = keyed.filter(lane if old is None else old | lane).select(
        "meter",
        "t",
        "t0",
        "q",
        pl.col("counted"),
        # a spanning interval's reading was counted above
        (valid & old).alias("valid") if old is not None else pl.lit(False).alias("valid"),
        # coverage not placed above
        pl.when(spans if old is None else old | spans).then(c0).alias("c0"),
    )
    return sums, slow


def _contributions(
    sums: pl.LazyFrame, slow: pl.LazyFrame, fast: _Fixed, exact: _Bins
) -> pl.LazyFrame:
    """Contributions from a collected `_pass`: the sums, readings exactly on a window start
    moved to that window, and the slow lane placed with the `exact` bins."""
    ws = pl.col("ws")
    edge = sums.filter(pl.col("edge_touch") > 0).select(
        "meter",
        fast.next(ws).alias("ws"),
        pl.lit(0.0).alias("quantity"),
        pl.col("edge").alias("readings"),
        pl.col("edge_touch").alias("touch"),
        pl.lit(0, pl.Int64).alias("covered"),
    )
    main = sums.select("meter", "ws", "quantity", "readings", "touch", "covered")
    return pl.concat([main, edge, _pieces(slow, exact)], how="vertical")


def _sum(pieces: pl.LazyFrame) -> pl.LazyFrame:
    """Sum contributions per meter and window; windows nothing touched are dropped."""
    return (
        pieces.group_by("meter", "ws")
        .agg(
            pl.col("quantity").sum(),
            pl.col("readings").sum().cast(pl.UInt32),
            pl.col("touch").sum().cast(pl.UInt32),
            pl.col("covered").sum(),
        )
        .filter(pl.col("touch") > 0)
    )


def attribute(
    classified: pl.LazyFrame,
    meters: pl.DataFrame,
    windows: Iterable[str] = ("1d",),
    *,
    tz: str = DEFAULT_TZ,
    since: datetime | None = None,
    until: datetime | None = None,
) -> pl.LazyFrame:
    """Quantity, readings and completeness per meter and window (`WINDOW_SCHEMA`).

    Evaluates the pass over `classified` now (one pass per 15m, 1h and day base, collected
    together); the LazyFrame returned only holds per-window rows.

    `classified`: `classify` output, in its order (by meter, then time; filtering keeps
    that order, concatenating or shuffling does not); `meters`: `Registry.meters` (for
    ``interval_s``); `windows`: any of `WINDOWS` (rows for all of them in one frame, told
    apart by ``window``). `since`/`until` keep only windows starting at or after `since` and
    ending at or before `until`: give them when `classified` was computed from a slice of the
    stream, so that windows only partly covered by the slice are not emitted (the slice must
    also hold the readings just before `since`; see `greenmon.aggregator.pipeline`).
    """
    wanted = list(dict.fromkeys(windows))
    for window in wanted:
        _check_window(window)
    _check_classified(classified)
    if meters.height > MAX_METERS:
        raise AggregatorError(f"at most {MAX_METERS} meters are supported")
    enum = meter_enum(meters)
    interval_ms = meters.sort("meter_id").get_column("interval_s").cast(pl.Int64) * 1000

    t, t0 = pl.col("time").dt.epoch("ms"), pl.col("start").dt.epoch("ms")
    interval = pl.lit(interval_ms).gather(pl.col("meter").cast(enum).to_physical())
    base = classified.select(
        pl.col("meter").cast(enum),
        t.alias("t"),
        t0.alias("t0"),
        pl.col("quantity").alias("q"),
        pl.col("counted") & pl.col("start").is_not_null(),
        "valid",
        # c0: the start of the time a valid reading covers, [c0, t) (null: covers nothing)
        pl.when(pl.col("valid") & t0.is_not_null())
        .then(pl.max_horizontal(t0, t - interval))
        .alias("c0"),
    )
    # One pass over the readings per base: 15m, 1h, local days (months are summed from days).
    # The passes are evaluated here, together, so the classification upstream runs once; what
    # is returned is lazy over their (small) results.
    offset, since_ms = _constant_offset(tz)
    plans: dict[str, tuple[_Fixed, _Bins, int | None]] = {}
    for window in wanted:
        if window in _FIXED_MS:
            fixed = _Fixed(_FIXED_MS[window])
            plans[window] = (fixed, fixed, None)
        else:
            plans["1d"] = (
                _Fixed(_DAY_MS, offset),
                _Calendar(tz, "1d"),
                since_ms if since_ms > 0 else None,
            )
    meter_ids = pl.Series(enum.categories, dtype=enum)
    if since_ms > 0 and "1d" in plans:
        # rows before the zone's last offset change go through the slow lane: none, usually
        first = base.select(pl.min_horizontal(pl.col("t0").min(), pl.col("t").min())).collect()
        if first.item() is None or first.item() >= since_ms:
            plans["1d"] = (*plans["1d"][:2], None)
    lanes = [_pass(base, fast, since, meter_ids) for fast, _, since in plans.values()]
    collected = pl.collect_all([frame for pair in lanes for frame in pair])
    summed = {
        name: _sum(
            _contributions(collected[2 * i].lazy(), collected[2 * i + 1].lazy(), fast, exact)
        )
        for i, (name, (fast, exact, _)) in enumerate(plans.items())
    }
    frames: list[pl.LazyFrame] = []
    for window in wanted:
        if window in _FIXED_MS:
            bins: _Bins = _Fixed(_FIXED_MS[window])
            rows = summed[window]
        elif window == "1d":
            bins, rows = _Calendar(tz, "1d"), summed["1d"]
        else:
            bins = _Calendar(tz, "1mo")
            rows = _sum(summed["1d"].with_columns(bins.start(pl.col("ws")).alias("ws")))
        frames.append(_finish(rows, bins, window))
    if not frames:
        return pl.LazyFrame(schema=WINDOW_SCHEMA)
    out = pl.concat(frames)
    if since is not None:
        out = out.filter(pl.col("time") >= _utc(since))
    if until is not None:
        out = out.filter(pl.col("end") <= _utc(until))
    return out


def _finish(summed: pl.LazyFrame, bins: _Bins, window: str) -> pl.LazyFrame:
    ws = pl.col("ws")
    end = bins.next(ws)
    # covered time / window length, as one division of integers
    ratio = pl.col("covered").cast(pl.Float64) / (end - ws).cast(pl.Float64)
    return summed.select(
        pl.col("meter").cast(pl.String),
        pl.lit(window).alias("window"),
        ws.cast(_TIME).alias("time"),
        end.cast(_TIME).alias("end"),
        "quantity",
        "readings",
        pl.min_horizontal(ratio, pl.lit(1.0)).alias("completeness"),
        pl.col("covered").cast(pl.Int64),
    )


def roll_up(rows: pl.LazyFrame, window: str, tz: str = DEFAULT_TZ) -> pl.LazyFrame:
    """`attribute` rows of a coarser `window` summed from rows of a finer one (15m -> 1h, 1d,
    1mo; 1h -> 1d in zones with a whole-hour offset; 1d -> 1mo): quantity, readings and
    covered time add up, completeness is covered time / the window's length. Every window is
    a union of 15-minute windows in every zone whose UTC offset is a whole number of quarter
    hours, which all zones in use are. Follow mode builds hours, days and months this way from
    the quarter hours it computes as the data arrives; the result equals `attribute`'s own
    (quantities up to the rounding of a different order of additions)."""
    _check_window(window)
    bins: _Bins = _Fixed(_FIXED_MS[window]) if window in _FIXED_MS else _Calendar(tz, window)
    summed = (
        rows.select(
            "meter",
            bins.start(pl.col("time").dt.epoch("ms")).alias("ws"),
            "quantity",
            "readings",
            "covered",
        )
        .group_by("meter", "ws")
        .agg(
            pl.col("quantity").sum(),
            pl.col("readings").sum().cast(pl.UInt32),
            pl.col("covered").sum(),
        )
    )
    return _finish(summed, bins, window)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise AggregatorError(f"{moment!r} has no time zone; give an aware datetime")
    return moment.astimezone(UTC)


def _check_classified(classified: pl.LazyFrame) -> None:
    names = classified.collect_schema().names()
    missing = [
        c for c in ("meter", "time", "start", "quantity", "counted", "valid") if c not in names
    ]
    if missing:
        raise InputFrameError(
            f"classified frame lacks column(s) {', '.join(missing)} (use consumption.classify)"
        )
