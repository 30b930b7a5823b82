"""Batch and follow mode: which range to (re)compute, reading it, writing the results.

`run_range` recomputes every window in [start, end), one group of whole enterprises at a time
(`greenmon.aggregator.chunks`: groups sized to ``Options.chunk_readings``, so memory does not
grow with the range or the fleet): for each group it reads the readings of the range plus each
meter's two readings either side of it, however far away (so the intervals that cross its edges
are attributed correctly and the spike rule sees its neighbours, whatever the gaps), runs
`greenmon.aggregator.pipeline.aggregate`, and writes ``energy`` (every window),
``meter_energy`` (the ``Options.meter_windows``) and the ``reference`` points of the labels it
used (points carry a compact ``reference_id``). Per-meter and per-enterprise results depend
only on the enterprise's own meters, so the groups give exactly the unchunked results;
``intensity`` (whose ranks compare enterprises) is computed once at the end from every group's
monthly totals. Windows only partly inside the range are left out unless `partial` is set (then
the window holding `end` is written from the data so far, e.g. month to date, and its
completeness says how much of it is there).

Follow mode (``--follow``) lives in `greenmon.aggregator.follow`; the helpers it shares
(time-zone arithmetic, group subsets, writing a group's frames) are here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import polars as pl

from greenmon.aggregator.chunks import DEFAULT_CHUNK_READINGS, ChunkPlanner
from greenmon.aggregator.energy import TOTAL
from greenmon.aggregator.intensity import intensity
from greenmon.aggregator.pipeline import aggregate
from greenmon.aggregator.reference import (
    ReferenceChoice,
    References,
    load_references,
    meter_factors,
)
from greenmon.aggregator.store import (
    REFERENCE,
    edge_readings,
    read_readings,
    reference_points,
    write_frame,
    write_references,
)
from greenmon.aggregator.windows import DEFAULT_TZ, WINDOWS
from greenmon.influx import InfluxClient
from greenmon.registry import Registry

log = logging.getLogger("greenmon.aggregator")

Say = Callable[[str], None]
_MEASUREMENTS = ("meter_energy", "energy", "intensity")


#: Per-meter windows written by default: ``energy`` already holds every enterprise's 15-minute
#: totals, and per-meter 15-minute points would be as many as the readings.
DEFAULT_METER_WINDOWS: Final = ("1h", "1d", "1mo")


@dataclass(frozen=True)
class Options:
    windows: tuple[str, ...] = WINDOWS
    tz: str = DEFAULT_TZ
    #: the longest stretch of time one query asks for (a group is bounded by chunk_readings)
    chunk: timedelta = timedelta(days=31)
    references: References | None = None
    choice: ReferenceChoice = field(default_factory=ReferenceChoice)
    #: readings one pass holds in memory (`greenmon.aggregator.chunks`); None = all at once
    chunk_readings: int | None = DEFAULT_CHUNK_READINGS
    #: the windows written per meter (``meter_energy``); ``energy`` gets every window
    meter_windows: tuple[str, ...] = DEFAULT_METER_WINDOWS


@dataclass
class RangeResult:
    """What `run_range` did: readings read, points written per measurement, the chunks, and
    the frames asked for with `keep` (every group's rows, concatenated)."""

    start: datetime
    end: datetime
    readings: int = 0
    written: dict[str, int] = field(default_factory=dict)
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    chunks: int = 0
    #: reference id -> full label, of every point written
    references: dict[str, str] = field(default_factory=dict)
    #: seconds spent reading readings, computing and writing results
    seconds: dict[str, float] = field(default_factory=dict)
    _totals: list[pl.DataFrame] = field(default_factory=list, repr=False)

    def _lap(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - since
        return now

    def totals(self) -> pl.DataFrame:
        """Per enterprise over the range: kgce, tce, kgCO2 and double-control kgce, summed
        from the finest window computed, and completeness: the share of the range its
        windows cover (their completeness weighted by length; a window with no row counts 0)."""
        if not self._totals:
            return pl.DataFrame()
        return pl.concat(self._totals).sort("enterprise")


def _range_totals(energy: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """`RangeResult.totals` rows of one group's ``energy`` frame."""
    if energy.is_empty():
        return pl.DataFrame()
    present = set(energy.get_column("window").unique().to_list())
    finest = next(w for w in WINDOWS if w in present)
    rows = energy.filter(
        (pl.col("carrier") == TOTAL)
        & (pl.col("window") == finest)
        & (pl.col("time") >= start)
        & (pl.col("time") < end)
    )
    return (
        rows.group_by("enterprise", "county", "industry")
        .agg(
            pl.col("kgce").sum(),
            pl.col("kgco2").sum(),
            pl.col("double_control_kgce").sum(),
            (
                (pl.col("completeness") * (pl.col("end") - pl.col("time")).dt.total_milliseconds())
                .sum()
                .truediv((end - start).total_seconds() * 1000)
                .clip(upper_bound=1.0)
            ).alias("completeness"),
            pl.len().alias("windows"),
        )
        .with_columns((pl.col("kgce") / 1000).alias("tce"), pl.lit(finest).alias("window"))
    )


def _new_references(frames: Iterable[pl.DataFrame], tz: str, written: set[str]) -> pl.DataFrame:
    """The `reference` points of the labels `frames` carry that this range has not written
    yet (`written` is updated)."""
    used = [
        frame.select("time", pl.col("reference", "reference_id").cast(pl.String))
        for frame in frames
        if frame.height
    ]
    if not used:
        return reference_points(pl.DataFrame(), tz)
    points = reference_points(pl.concat(used), tz)
    new = points.filter(~pl.col("id").is_in(list(written)))
    written.update(new.get_column("id").to_list())
    return new


def local_years(start: datetime, end: datetime, tz: str) -> list[int]:
    """The local years of [start - 1 day, end]: the years whose factors a range needs (an
    interval meter's first reading covers time before it)."""
    zone = ZoneInfo(tz)
    first = (start - timedelta(days=1)).astimezone(zone).year
    return list(range(first, end.astimezone(zone).year + 1))


def subset(registry: Registry, enterprises: list[str]) -> Registry:
    """The registry restricted to `enterprises` (their meters and statistics)."""
    ids = pl.Series(enterprises, dtype=pl.String).implode()
    return Registry(
        root=registry.root,
        enterprises=registry.enterprises.filter(pl.col("enterprise_id").is_in(ids)),
        meters=registry.meters.filter(pl.col("enterprise_id").is_in(ids)),
        monthly=registry.monthly.filter(pl.col("enterprise_id").is_in(ids)),
        meter_periods=registry.periods.filter(pl.col("enterprise_id").is_in(ids)),
    )


def _read_group(
    client: InfluxClient,
    start: datetime,
    end: datetime,
    opts: Options,
    enterprises: list[str] | None,
) -> tuple[pl.DataFrame, float]:
    """A group's readings of [start, end) plus its meters' edge readings; and the seconds."""
    clock = time.perf_counter()
    readings = pl.concat(
        [
            read_readings(client, start, end, chunk=opts.chunk, enterprises=enterprises),
            edge_readings(client, start, end, enterprises=enterprises),
        ]
    )
    return readings, time.perf_counter() - clock


def _write_group(
    client: InfluxClient, frames: dict[str, pl.DataFrame]
) -> tuple[dict[str, int], float]:
    """Write a group's frames (measurement -> rows); points written per measurement, seconds."""
    clock = time.perf_counter()
    written = {}
    for name, frame in frames.items():
        if name == REFERENCE:
            written[name] = write_references(client, frame)
        else:
            written[name] = write_frame(client, name, frame)
    return written, time.perf_counter() - clock


def _compute_group(
    readings: pl.DataFrame,
    registry: Registry,
    references: References,
    factors: pl.DataFrame,
    opts: Options,
    windows: tuple[str, ...],
    start: datetime,
    end: datetime,
    partial: bool,
) -> dict[str, pl.DataFrame]:
    """``meter_energy`` (the windows written per meter), ``energy`` and ``events`` of one
    group (its classification and windows are dropped on return)."""
    meter_ids = registry.meters.get_column("meter_id").implode()
    agg = aggregate(
        readings.lazy(),
        registry,
        references,
        windows=windows,
        periods=(),
        tz=opts.tz,
        choice=opts.choice,
        since=start,
        until=None if partial else end,
        factors=factors.filter(pl.col("meter_id").is_in(meter_ids)),
    )
    # per-meter rows only of the windows written (15-minute ones are as many as the readings)
    meters = agg.meter_energy.filter(pl.col("window").is_in(opts.meter_windows))
    energy, events = pl.collect_all([agg.energy, agg.events])
    frames = {"meter_energy": meters.collect(), "energy": energy, "events": events}
    if partial:
        for name in ("meter_energy", "energy"):
            frames[name] = frames[name].filter(pl.col("time") < end)
    return frames


def run_range(
    client: InfluxClient,
    registry: Registry,
    start: datetime,
    end: datetime,
    opts: Options,
    *,
    partial: bool = False,
    windows: tuple[str, ...] | None = None,
    keep: tuple[str, ...] = ("events", "intensity"),
    say: Say | None = None,
) -> RangeResult:
    """Recompute and write every window in [start, end) (see the module docstring), in
    groups of whole enterprises (`greenmon.aggregator.chunks`). Reading, computing and
    writing overlap: while a group is computed the next one is read (a thread), and its
    results are written (another thread) while the next is computed; at most one group's
    results wait to be written. `keep` names the frames to return in `RangeResult.frames`
    (``meter_energy`` — the windows written per meter —, ``energy``, ``intensity``,
    ``events``); the others are written and dropped."""
    result = RangeResult(start, end)
    clock = time.perf_counter()
    wanted = windows or opts.windows
    references = opts.references or load_references()
    years = local_years(start, end, opts.tz)
    factors = meter_factors(registry.meters, references, years, opts.choice)
    hours = (end - start).total_seconds() / 3600
    planner = ChunkPlanner.for_range(registry.meters, hours, opts.chunk_readings)
    groups = iter(planner)
    kept: dict[str, list[pl.DataFrame]] = {name: [] for name in keep}
    months: list[pl.DataFrame] = []
    written_ids: set[str] = set()
    result._lap("setup", clock)

    def count(done: Future[tuple[dict[str, int], float]]) -> None:
        counts, seconds = done.result()
        for name, n in counts.items():
            result.written[name] = result.written.get(name, 0) + n
        result.seconds["write"] = result.seconds.get("write", 0.0) + seconds

    with (
        ThreadPoolExecutor(1, thread_name_prefix="greenmon-read") as reader,
        ThreadPoolExecutor(1, thread_name_prefix="greenmon-write") as writer,
    ):

        def read_next() -> tuple[list[str], bool, Future[tuple[pl.DataFrame, float]]] | None:
            group = next(groups, None)
            if group is None:
                return None
            single = planner.groups == 1 and planner.remaining() == 0
            which = None if single else group
            return group, single, reader.submit(_read_group, client, start, end, opts, which)

        upcoming = read_next()
        pending: Future[tuple[dict[str, int], float]] | None = None
        try:
            while upcoming is not None:
                group, single, reading = upcoming
                readings, seconds = reading.result()
                result.seconds["read"] = result.seconds.get("read", 0.0) + seconds
                planner.observe(group, readings.height)
                upcoming = read_next()  # read the next group while this one is computed
                result.readings += readings.height
                result.chunks += 1
                if readings.is_empty():
                    continue
                clock = time.perf_counter()
                part = registry if single else subset(registry, group)
                frames = _compute_group(readings, part, references, factors, opts, wanted,
                                        start, end, partial)  # fmt: skip
                del readings  # only the group's results live on
                out = {"meter_energy": frames["meter_energy"], "energy": frames["energy"]}
                labels = _new_references(out.values(), opts.tz, written_ids)
                if labels.height:
                    out[REFERENCE] = labels
                    result.references.update(
                        zip(labels.get_column("id"), labels.get_column("text"), strict=True)
                    )
                energy = frames["energy"]
                months.append(
                    energy.filter((pl.col("window") == "1mo") & (pl.col("carrier") == TOTAL))
                )
                totals = _range_totals(energy, start, end)
                if totals.height:
                    result._totals.append(totals)
                for name, frame in frames.items():
                    if name in kept:
                        kept[name].append(frame)
                del frames, energy
                result._lap("compute", clock)
                if pending is not None:  # at most one group's results waiting
                    count(pending)
                pending = writer.submit(_write_group, client, out)
                if say is not None:
                    say(
                        f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC, chunk "
                        f"{result.chunks} ({len(group)} enterprises, {planner.remaining()} to "
                        f"go): {result.readings:,} readings so far"
                    )
            if pending is not None:
                count(pending)
                pending = None
        finally:
            if upcoming is not None:
                upcoming[2].cancel()
    if "1mo" in wanted and months:
        clock = time.perf_counter()
        monthly = pl.concat(months, how="diagonal_relaxed")
        rows = intensity(
            monthly.lazy(),
            registry.monthly,
            registry.enterprises,
            references,
            choice=opts.choice,
            tz=opts.tz,
        ).collect()
        if partial:  # month to date only: longer periods need earlier months
            rows = rows.filter((pl.col("period") == "month") & (pl.col("time") >= start))
        else:
            rows = _whole_periods(rows, start, end, opts.tz)
        result.written["intensity"] = write_frame(client, "intensity", rows)
        if "intensity" in kept:
            kept["intensity"].append(rows)
        result._lap("compute", clock)
    result.frames = {
        name: pl.concat(parts, how="diagonal_relaxed") for name, parts in kept.items() if parts
    }
    if say is not None:
        say(
            f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC: {result.readings:,} readings "
            f"in {result.chunks} chunk(s), "
            + ", ".join(f"{n}={c:,}" for n, c in result.written.items())
        )
    return result


def _whole_periods(frame: pl.DataFrame, start: datetime, end: datetime, tz: str) -> pl.DataFrame:
    """Intensity rows whose whole period lies in [start, end): a quarter or a year computed from
    part of its months would overwrite a right figure with a wrong one."""
    if frame.is_empty():
        return frame
    local = pl.col("time").dt.convert_time_zone(tz)
    first = pl.when(pl.col("period") == "ytd").then(local.dt.truncate("1y")).otherwise(local)
    span = (
        pl.when(pl.col("period") == "quarter")
        .then(pl.lit("3mo"))
        .when(pl.col("period") == "year")
        .then(pl.lit("1y"))
        .otherwise(pl.lit("1mo"))
    )
    last = local.dt.offset_by(span)
    return frame.filter(
        (first.dt.convert_time_zone("UTC") >= start) & (last.dt.convert_time_zone("UTC") <= end)
    )


# --------------------------------------------------------------------------- local time


def local_day_start(moment: datetime, tz: str) -> datetime:
    local = moment.astimezone(ZoneInfo(tz))
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def local_month_start(moment: datetime, tz: str) -> datetime:
    local = moment.astimezone(ZoneInfo(tz))
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def next_day(moment: datetime, tz: str) -> datetime:
    """Start of the local day after the one holding `moment`."""
    return local_day_start(local_day_start(moment, tz) + timedelta(hours=36), tz)


def default_options(
    *,
    windows: tuple[str, ...] = WINDOWS,
    tz: str = DEFAULT_TZ,
    references: References | None = None,
    choice: ReferenceChoice | None = None,
    chunk: timedelta = timedelta(days=31),
    chunk_readings: int | None = DEFAULT_CHUNK_READINGS,
    meter_windows: tuple[str, ...] = DEFAULT_METER_WINDOWS,
) -> Options:
    return Options(
        windows=windows,
        tz=tz,
        chunk=chunk,
        references=references or load_references(),
        choice=choice or ReferenceChoice(),
        chunk_readings=chunk_readings,
        meter_windows=meter_windows,
    )
