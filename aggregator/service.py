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

`Follower` is ``greenmon aggregate --follow``: a watermark (the newest device time minus a
lateness bound) decides which windows are complete; every poll it compares the readings per
local day with what it saw before, and recomputes each day that changed (late data, catch-up
after a gap, and with it the day before: the interval a late reading closes may begin there)
together with the days that became complete, and the month they belong to (month to date).
Results overwrite earlier ones (same tags and timestamp), so nothing is counted twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
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
    day_counts,
    edge_readings,
    read_readings,
    reading_bounds,
    reference_points,
    write_frame,
    write_references,
)
from greenmon.aggregator.windows import DEFAULT_TZ, WINDOWS
from greenmon.influx import InfluxClient, InfluxConnectionError, InfluxUnavailableError
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
    chunk: timedelta = timedelta(days=1)
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


def _write_new_references(
    client: InfluxClient, frames: Iterable[pl.DataFrame], tz: str, result: RangeResult
) -> None:
    """Write the `reference` points of labels not written yet in this range."""
    used = [
        frame.select("time", pl.col("reference", "reference_id").cast(pl.String))
        for frame in frames
        if frame.height
    ]
    if not used:
        return
    points = reference_points(pl.concat(used), tz)
    new = points.filter(~pl.col("id").is_in(list(result.references)))
    if new.height:
        result.written[REFERENCE] = result.written.get(REFERENCE, 0) + write_references(client, new)
        result.references.update(zip(new.get_column("id"), new.get_column("text"), strict=True))


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
    )


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
    groups of whole enterprises (`greenmon.aggregator.chunks`): each group's readings over the
    range are read, computed and written before the next group is read. `keep` names the
    frames to return in `RangeResult.frames` (``meter_energy``, ``energy``, ``intensity``,
    ``events``); the others are written and dropped."""
    result = RangeResult(start, end)
    wanted = windows or opts.windows
    references = opts.references or load_references()
    years = local_years(start, end, opts.tz)
    factors = meter_factors(registry.meters, references, years, opts.choice)
    hours = (end - start).total_seconds() / 3600
    planner = ChunkPlanner.for_range(registry.meters, hours, opts.chunk_readings)
    kept: dict[str, list[pl.DataFrame]] = {name: [] for name in keep}
    months: list[pl.DataFrame] = []
    for group in planner:
        single = planner.groups == 1 and planner.remaining() == 0
        which = None if single else group
        clock = time.perf_counter()
        readings = pl.concat(
            [
                read_readings(client, start, end, chunk=opts.chunk, enterprises=which),
                edge_readings(client, start, end, enterprises=which),
            ]
        )
        clock = result._lap("read", clock)
        planner.observe(group, readings.height)
        result.readings += readings.height
        result.chunks += 1
        if readings.is_empty():
            continue
        part = registry if single else subset(registry, group)
        meter_ids = part.meters.get_column("meter_id").implode()
        agg = aggregate(
            readings.lazy(),
            part,
            references,
            windows=wanted,
            periods=(),
            tz=opts.tz,
            choice=opts.choice,
            since=start,
            until=None if partial else end,
            factors=factors.filter(pl.col("meter_id").is_in(meter_ids)),
        )
        del readings
        frames = agg.collect("meter_energy", "energy", "events")
        if partial:
            for name in ("meter_energy", "energy"):
                frames[name] = frames[name].filter(pl.col("time") < end)
        clock = result._lap("compute", clock)
        written = {
            "meter_energy": frames["meter_energy"].filter(
                pl.col("window").is_in(opts.meter_windows)
            ),
            "energy": frames["energy"],
        }
        for name, frame in written.items():
            count = write_frame(client, name, frame)
            result.written[name] = result.written.get(name, 0) + count
        _write_new_references(client, written.values(), opts.tz, result)
        clock = result._lap("write", clock)
        energy = frames["energy"]
        months.append(energy.filter((pl.col("window") == "1mo") & (pl.col("carrier") == TOTAL)))
        totals = _range_totals(energy, start, end)
        if totals.height:
            result._totals.append(totals)
        for name, frame in frames.items():
            if name in kept:
                kept[name].append(frame)
        if say is not None:
            say(
                f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC, chunk {result.chunks} "
                f"({len(group)} enterprises, {planner.remaining()} to go): "
                f"{result.readings:,} readings so far"
            )
    if "1mo" in wanted and months:
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


# --------------------------------------------------------------------------- follow mode


def local_day_start(moment: datetime, tz: str) -> datetime:
    local = moment.astimezone(ZoneInfo(tz))
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def local_month_start(moment: datetime, tz: str) -> datetime:
    local = moment.astimezone(ZoneInfo(tz))
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def next_day(moment: datetime, tz: str) -> datetime:
    """Start of the local day after the one holding `moment`."""
    return local_day_start(local_day_start(moment, tz) + timedelta(hours=36), tz)


def _floor(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // step) * step


@dataclass
class Follower:
    """``--follow``: see the module docstring. `poll` does one round; `run` loops."""

    client: InfluxClient
    registry: Registry
    opts: Options
    lateness: timedelta = timedelta(minutes=30)
    horizon: timedelta = timedelta(days=40)
    say: Say | None = None
    # Where each round takes the registry from (a RegistryWatcher's `current`): a registry
    # edited while following applies from the next round on, the same for the whole round.
    registry_source: Callable[[], Registry] | None = None
    seen: dict[datetime, int] = field(default_factory=dict)
    partial: dict[datetime, tuple[int, datetime]] = field(default_factory=dict)
    watermark: datetime | None = None
    rounds: int = 0
    recomputed_days: int = 0

    def poll(self) -> list[RangeResult]:
        """One round: returns what was recomputed (nothing when nothing changed)."""
        self.rounds += 1
        if self.registry_source is not None:
            self.registry = self.registry_source()
        bounds = reading_bounds(self.client)
        if bounds is None:
            return []
        first, last = bounds
        watermark = _floor(last - self.lateness, timedelta(minutes=15))
        since = max(first - timedelta(days=1), last - self.horizon)
        counts = day_counts(self.client, local_day_start(since, self.opts.tz), self.opts.tz)
        # A day is recomputed while it is incomplete and has new data or a later watermark,
        # and again whenever its count of readings changes after it was complete.
        dirty = sorted(
            day
            for day, n in counts.items()
            if day < watermark
            and self.seen.get(day) != n
            and self.partial.get(day) != (n, watermark)
        )
        results: list[RangeResult] = []
        months: set[datetime] = set()
        for day in dirty:
            end = min(next_day(day, self.opts.tz), watermark)
            # A day that changed after it was complete: late data, whose first interval may
            # begin the day before.
            start = (
                local_day_start(day - timedelta(hours=12), self.opts.tz)
                if day in self.seen
                else day
            )
            results.append(
                run_range(
                    self.client,
                    self.registry,
                    start,
                    end,
                    self.opts,
                    windows=tuple(w for w in self.opts.windows if w != "1mo"),
                    say=self.say,
                )
            )
            self.recomputed_days += 1
            months.add(local_month_start(day, self.opts.tz))
            if end == next_day(day, self.opts.tz):
                self.seen[day] = counts[day]  # a complete day: only a change reopens it
                self.partial.pop(day, None)
            else:
                self.partial[day] = (counts[day], watermark)
        if "1mo" in self.opts.windows:
            for month in sorted(months):
                results.append(
                    run_range(
                        self.client,
                        self.registry,
                        month,
                        watermark,
                        self.opts,
                        partial=True,
                        windows=("1mo",),
                        say=self.say,
                    )
                )
        self.watermark = watermark
        return results

    def run(self, stop: threading.Event, poll_s: float) -> None:
        """Poll until `stop` is set. InfluxDB being away (after the client's own retries) is
        logged once per outage and retried next round: follow mode outlives it."""
        down = False
        while not stop.is_set():
            try:
                self.poll()
                if down:
                    log.warning("InfluxDB answers again; following")
                    down = False
            except (InfluxConnectionError, InfluxUnavailableError) as exc:
                if not down:
                    log.warning("InfluxDB unavailable (%s); retrying every %.0f s", exc, poll_s)
                    down = True
            stop.wait(poll_s)


def default_options(
    *,
    windows: tuple[str, ...] = WINDOWS,
    tz: str = DEFAULT_TZ,
    references: References | None = None,
    choice: ReferenceChoice | None = None,
    chunk: timedelta = timedelta(days=1),
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
