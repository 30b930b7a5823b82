"""Batch and follow mode: which range to (re)compute, reading it, writing the results.

`run_range` recomputes every window in [start, end): it reads the readings of that range plus
each meter's two readings either side of it, however far away (so the intervals that cross its
edges are attributed correctly and the spike rule sees its neighbours, whatever the gaps), runs
`greenmon.aggregator.pipeline.aggregate`, and writes ``meter_energy``, ``energy`` and
``intensity``. Windows only partly inside the range are left out unless `partial` is set (then
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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl

from greenmon.aggregator.energy import TOTAL
from greenmon.aggregator.pipeline import aggregate
from greenmon.aggregator.reference import ReferenceChoice, References, load_references
from greenmon.aggregator.store import (
    day_counts,
    edge_readings,
    read_readings,
    reading_bounds,
    write_frame,
)
from greenmon.aggregator.windows import DEFAULT_TZ, WINDOWS
from greenmon.influx import InfluxClient, InfluxConnectionError, InfluxUnavailableError
from greenmon.registry import Registry

log = logging.getLogger("greenmon.aggregator")

Say = Callable[[str], None]
_MEASUREMENTS = ("meter_energy", "energy", "intensity")


@dataclass(frozen=True)
class Options:
    windows: tuple[str, ...] = WINDOWS
    tz: str = DEFAULT_TZ
    chunk: timedelta = timedelta(days=1)
    references: References | None = None
    choice: ReferenceChoice = field(default_factory=ReferenceChoice)


@dataclass
class RangeResult:
    start: datetime
    end: datetime
    readings: int = 0
    written: dict[str, int] = field(default_factory=dict)
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)

    def totals(self) -> pl.DataFrame:
        """Per enterprise over the range: kgce, tce, kgCO2, double-control kgce and the least
        completeness, summed from the finest window computed."""
        energy = self.frames.get("energy")
        if energy is None or energy.is_empty():
            return pl.DataFrame()
        finest = next(w for w in WINDOWS if w in set(energy.get_column("window").to_list()))
        rows = energy.filter(
            (pl.col("carrier") == TOTAL)
            & (pl.col("window") == finest)
            & (pl.col("time") >= self.start)
            & (pl.col("time") < self.end)
        )
        return (
            rows.group_by("enterprise", "county", "industry")
            .agg(
                pl.col("kgce").sum(),
                pl.col("kgco2").sum(),
                pl.col("double_control_kgce").sum(),
                pl.col("completeness").min(),
                pl.len().alias("windows"),
            )
            .with_columns((pl.col("kgce") / 1000).alias("tce"), pl.lit(finest).alias("window"))
            .sort("enterprise")
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
    say: Say | None = None,
) -> RangeResult:
    """Recompute and write every window in [start, end) (see the module docstring)."""
    result = RangeResult(start, end)
    readings = pl.concat(
        [read_readings(client, start, end, chunk=opts.chunk), edge_readings(client, start, end)]
    )
    result.readings = readings.height
    if readings.is_empty():
        return result
    agg = aggregate(
        readings.lazy(),
        registry,
        opts.references,
        windows=windows or opts.windows,
        tz=opts.tz,
        choice=opts.choice,
        since=start,
        until=None if partial else end,
    )
    frames = agg.collect(*[m for m in _MEASUREMENTS if getattr(agg, m) is not None], "events")
    if partial:
        for name in ("meter_energy", "energy"):
            frames[name] = frames[name].filter(pl.col("time") < end)
        if "intensity" in frames:  # month to date only: longer periods need earlier months
            frames["intensity"] = frames["intensity"].filter(
                (pl.col("period") == "month") & (pl.col("time") >= start)
            )
    elif "intensity" in frames:
        frames["intensity"] = _whole_periods(frames["intensity"], start, end, opts.tz)
    for name in _MEASUREMENTS:
        if name in frames:
            result.written[name] = write_frame(client, name, frames[name])
    result.frames = frames
    if say is not None:
        say(
            f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC: {result.readings:,} readings, "
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
) -> Options:
    return Options(
        windows=windows,
        tz=tz,
        chunk=chunk,
        references=references or load_references(),
        choice=choice or ReferenceChoice(),
    )
