"""Follow mode (``greenmon aggregate --follow``): windows written as their data completes, each
round costing in proportion to the data that is new, not to the day or month so far.

A watermark W (the newest device time minus the lateness bound, on a quarter hour) says which
quarter hours are complete. The first round computes the horizon (from the start of the month
`horizon` back, or the first reading) like a batch range, in groups of enterprises; then every
round:

1. **Late data.** Readings are counted per local day: every round for the days of the last
   `recent`, every `recheck` for the whole horizon. A day whose count differs from that of
   what was processed is recomputed from its readings. For each meter the interval that
   crosses a day boundary (from its last reading before it to its first after) is kept from
   the last computation; when a recomputed day finds another one at its start or end — a late
   reading became the first or last of its day, or changed whether its neighbour is a spike —
   the day before or after is recomputed too.
2. **New data.** The readings of [W_prev, W) — with each meter's two readings either side,
   however far — are classified with the meters' typical rates (`typical_rates` over the
   `history` before the watermark, learnt at start and again each day, so a reading is judged
   the same whichever round it arrives in) and attributed to quarter hours. When the interval
   crossing W_prev is not the one the previous round saw (a gateway silent longer than the
   lateness came back), windows already written lack its energy: the days it spans are
   recomputed.
3. **Roll-ups.** Hours, days and months are not recomputed from readings: they are summed from
   the quarter hours (`greenmon.aggregator.windows.roll_up`), which are kept per meter for the
   days not complete yet; a completed day's per-meter sums are kept for its month. Each
   completed hour and day is written once; every month something changed in gets its month to
   date (complete days plus the open day so far) and its intensity, summed in memory.

``energy`` gets 15m, 1h, 1d and 1mo points; ``meter_energy`` the ``Options.meter_windows``.
Writes overwrite (same tags and timestamp), so nothing is counted twice. A round that fails
(InfluxDB away) leaves the watermark where it was and marks its days for recomputation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import polars as pl

from greenmon.aggregator import periods
from greenmon.aggregator.chunks import ChunkPlanner
from greenmon.aggregator.consumption import classify, events, typical_rates
from greenmon.aggregator.energy import TOTAL, enterprise_energy, meter_energy
from greenmon.aggregator.intensity import intensity
from greenmon.aggregator.reference import load_references, meter_factors
from greenmon.aggregator.service import (
    Options,
    Say,
    _new_references,
    _write_group,
    local_day_start,
    local_month_start,
    local_years,
    next_day,
    subset,
)
from greenmon.aggregator.store import (
    day_counts,
    edge_readings,
    read_readings,
    reading_bounds,
)
from greenmon.aggregator.windows import attribute, roll_up
from greenmon.influx import InfluxClient, InfluxConnectionError, InfluxUnavailableError
from greenmon.registry import Registry

__all__ = ["Follower"]

log = logging.getLogger("greenmon.aggregator")

QUARTER: Final = timedelta(minutes=15)
_DAY: Final = timedelta(days=1)
_TIME: Final = pl.Datetime("ms", "UTC")
#: Per-meter rows kept between rounds (quarter hours of open days, sums of complete days).
_BASE: Final[dict[str, pl.DataType]] = {
    "meter": pl.String(),
    "time": _TIME,
    "end": _TIME,
    "quantity": pl.Float64(),
    "readings": pl.UInt32(),
    "covered": pl.Int64(),
}


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=_BASE)


def _floor(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // step) * step


@dataclass
class Round:
    """What one round did."""

    watermark: datetime | None = None
    recomputed: list[datetime] = field(default_factory=list)
    readings: int = 0
    written: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)

    def add(self, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            self.written[name] = self.written.get(name, 0) + n


@dataclass
class Follower:
    """``--follow``: see the module docstring. `poll` does one round; `run` loops."""

    client: InfluxClient
    registry: Registry
    opts: Options
    lateness: timedelta = timedelta(minutes=30)
    horizon: timedelta = timedelta(days=40)
    history: timedelta = timedelta(days=7)
    recent: timedelta = timedelta(days=2)
    recheck: timedelta = timedelta(minutes=10)
    say: Say | None = None
    # Where each round takes the registry from (a RegistryWatcher's `current`): a registry
    # edited while following applies from the next round on, the same for the whole round.
    registry_source: Callable[[], Registry] | None = None
    watermark: datetime | None = None
    start: datetime | None = None  # the horizon's first day (a local month start)
    rounds: int = 0
    recomputed_days: int = 0
    last: Round = field(default_factory=Round)
    counts: dict[datetime, int] = field(default_factory=dict)  # readings processed per day
    quarters: pl.DataFrame = field(default_factory=_empty)  # open days, per meter
    days: pl.DataFrame = field(default_factory=_empty)  # complete days, per meter
    rates: pl.DataFrame | None = None
    rates_day: datetime | None = None
    #: boundary (day start or watermark) -> per meter the interval crossing it
    crossings: dict[datetime, pl.DataFrame] = field(default_factory=dict)
    # Told after every round of `run` whether it succeeded (and why not): the heartbeat
    # that health checks read (greenmon.health).
    on_round: Callable[[bool, str], None] | None = None
    _checked: float = 0.0
    _dirty: set[datetime] = field(default_factory=set)
    _written_ids: set[str] = field(default_factory=set)

    # ------------------------------------------------------------------ rounds

    def poll(self) -> Round:
        """One round (see the module docstring); returns what it did."""
        self.rounds += 1
        if self.registry_source is not None:
            self.registry = self.registry_source()
        done = Round(watermark=self.watermark)
        bounds = reading_bounds(self.client)
        if bounds is None:
            self.last = done
            return done
        first, newest = bounds
        tz = self.opts.tz
        watermark = _floor(newest - self.lateness, QUARTER)
        if self.watermark is None:
            start = local_month_start(max(first - _DAY, watermark - self.horizon), tz)
            if watermark <= start:
                self.last = done
                return done
            self._learn_rates(watermark)
            self._checked = time.monotonic()
            self.start = start
            touched = self._process(start, watermark, done, recompute=True)
            self.watermark = watermark
            self._write_months(touched, done)
            return self._finish(done)
        assert self.start is not None
        previous = self.watermark
        months: set[datetime] = set()
        try:
            full = time.monotonic() - self._checked >= self.recheck.total_seconds()
            since = (
                self.start if full else max(self.start, local_day_start(previous - self.recent, tz))
            )
            self._dirty |= self._changed(since, previous)
            months |= self._recompute(previous, done)
            if full:
                self._checked = time.monotonic()
            if watermark > previous:
                months |= self._process(previous, watermark, done)
                self.watermark = watermark
                months |= self._recompute(watermark, done)
            self._write_months(months, done)
            if self.rates_day is None or local_day_start(watermark, tz) > self.rates_day:
                self._learn_rates(watermark)
            self._trim()
        except Exception:
            # what this round was doing is done again, from the readings, next round
            self._dirty.update(self._days_of(previous, max(previous, watermark) + QUARTER))
            raise
        return self._finish(done)

    def _finish(self, done: Round) -> Round:
        done.watermark = self.watermark
        self.last = done
        if self.say is not None and (done.readings or done.recomputed):
            recomputed = ", ".join(f"{d:%Y-%m-%d}" for d in done.recomputed) or "none"
            self.say(
                f"watermark {self.watermark:%Y-%m-%d %H:%M} UTC: {done.readings:,} readings, "
                f"days recomputed: {recomputed}; "
                + ", ".join(f"{n}={c:,}" for n, c in done.written.items())
            )
        return done

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
                if self.on_round is not None:
                    self.on_round(True, "")
            except (InfluxConnectionError, InfluxUnavailableError) as exc:
                if not down:
                    log.warning("InfluxDB unavailable (%s); retrying every %.0f s", exc, poll_s)
                    down = True
                if self.on_round is not None:
                    self.on_round(False, f"InfluxDB unavailable: {exc}")
            stop.wait(poll_s)

    def summary(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "days_recomputed": self.recomputed_days,
            "watermark": self.watermark.isoformat() if self.watermark else None,
        }

    # ------------------------------------------------------------------ what to recompute

    def _days_of(self, lo: datetime, hi: datetime) -> list[datetime]:
        """The local days [lo, hi) touches."""
        out, day = [], local_day_start(lo, self.opts.tz)
        while day < hi:
            out.append(day)
            day = next_day(day, self.opts.tz)
        return out

    def _count(self, lo: datetime, hi: datetime) -> dict[datetime, int]:
        """Readings per local day in [lo, hi)."""
        return day_counts(self.client, lo, self.opts.tz, until=hi)

    def _changed(self, since: datetime, until: datetime) -> set[datetime]:
        """Days in [since, until) whose readings differ from those processed."""
        got = self._count(since, until)
        known = {d for d in self.counts if d >= since}
        return {d for d in known | set(got) if d < until and got.get(d, 0) != self.counts.get(d)}

    def _recompute(self, until: datetime, done: Round) -> set[datetime]:
        """Recompute the dirty days before `until` (and those their recomputation finds
        affected), each at most twice a round; return the months touched."""
        assert self.start is not None
        tz = self.opts.tz
        months: set[datetime] = set()
        rounds: dict[datetime, int] = {}
        while True:
            days = sorted(
                d for d in self._dirty if self.start <= d < until and rounds.get(d, 0) < 2
            )
            self._dirty -= set(days)
            if not days:
                return months
            ranges: list[tuple[datetime, datetime]] = []
            for day in days:
                rounds[day] = rounds.get(day, 0) + 1
                hi = min(next_day(day, tz), until)
                if ranges and ranges[-1][1] == day:
                    ranges[-1] = (ranges[-1][0], hi)
                else:
                    ranges.append((day, hi))
            for lo, hi in ranges:
                months |= self._process(lo, hi, done, recompute=True)

    # ------------------------------------------------------------------ computing

    def _learn_rates(self, until: datetime) -> None:
        """Each meter's typical rate over the `history` before `until`, in groups."""
        since = until - self.history
        frames = []
        hours = self.history.total_seconds() / 3600
        planner = ChunkPlanner.for_range(self.registry.meters, hours, self.opts.chunk_readings)
        for group in planner:
            which = None if planner.groups == 1 and planner.remaining() == 0 else group
            readings = read_readings(self.client, since, until, enterprises=which)
            planner.observe(group, readings.height)
            if readings.height:
                part = subset(self.registry, group) if which else self.registry
                frames.append(typical_rates(readings.lazy(), part.meters).collect())
        self.rates = pl.concat(frames) if frames else None
        self.rates_day = local_day_start(until, self.opts.tz)

    def _process(
        self, lo: datetime, hi: datetime, done: Round, *, recompute: bool = False
    ) -> set[datetime]:
        """Compute [lo, hi) (quarter-hour aligned; for a slice of an open day the part before
        `lo` is in `quarters`), write its quarter hours and the hours and days it completes,
        compare the intervals crossing its edges with those seen before; return the local
        months it touched."""
        tz, opts = self.opts.tz, self.opts
        counts = self._count(lo, hi)  # before reading: data arriving meanwhile shows later
        references = opts.references or load_references()
        factors = meter_factors(
            self.registry.meters, references, local_years(lo, hi, tz), opts.choice
        )
        hours = (hi - lo).total_seconds() / 3600
        planner = ChunkPlanner.for_range(self.registry.meters, hours, opts.chunk_readings)
        first_hour = _floor(lo, timedelta(hours=1))
        last_hour = _floor(hi, timedelta(hours=1))
        completed = [d for d in self._days_of(lo, hi) if next_day(d, tz) <= hi]
        day_start = local_day_start(lo, tz)
        edges = sorted({lo, hi, *(d for d in self._days_of(lo, hi) if lo < d)})
        for group in planner:
            single = planner.groups == 1 and planner.remaining() == 0
            which = None if single else group
            readings = pl.concat(
                [
                    read_readings(self.client, lo, hi, enterprises=which),
                    edge_readings(self.client, lo, hi, enterprises=which),
                ]
            )
            planner.observe(group, readings.height)
            part = self.registry if single else subset(self.registry, group)
            ids = part.meters.get_column("meter_id").implode()
            mine = pl.col("meter").is_in(ids)
            if readings.is_empty():
                classified = pl.DataFrame()
                base = _empty()
            else:
                classified, base = _classify(readings, part, self.rates, lo, hi, tz)
                inside = (pl.col("time") >= lo) & (pl.col("time") < hi)
                done.readings += classified.filter(inside).height
                flagged = events(classified.lazy()).filter(inside).group_by("kind").len()
                for kind, n in flagged.collect().rows():
                    done.flagged[str(kind)] = done.flagged.get(str(kind), 0) + n
            self._compare_crossings(classified, edges, mine, lo, hi)
            span = (pl.col("time") >= lo) & (pl.col("time") < hi)
            self.quarters = pl.concat([self.quarters.filter(~(mine & span)), base])
            # everything known of the group's meters from the first hour (or day) touched
            known = self.quarters.filter(mine & (pl.col("time") >= min(first_hour, day_start)))
            hourly = roll_up(
                known.lazy().filter((pl.col("time") >= first_hour) & (pl.col("time") < last_hour)),
                "1h",
                tz,
            ).collect()
            rows = [base.with_columns(pl.lit("15m").alias("window")), hourly]
            if completed:
                daily = roll_up(
                    known.lazy().filter(
                        (pl.col("time") >= completed[0])
                        & (pl.col("time") < next_day(completed[-1], tz))
                    ),
                    "1d",
                    tz,
                ).collect()
                rows.append(daily)
                complete = pl.col("time").is_in(pl.Series(completed, dtype=_TIME).implode())
                self.days = pl.concat(
                    [self.days.filter(~(mine & complete)), daily.select(list(_BASE))]
                )
                self.quarters = self.quarters.filter(
                    ~(mine & (pl.col("time") < next_day(completed[-1], tz)))
                )
            self._write(pl.concat(rows, how="diagonal_relaxed"), part, factors, done)
        for day in self._days_of(lo, hi):
            if day >= lo:  # the day from its start: replaced
                self.counts[day] = counts.get(day, 0)
            else:  # the open day's slice: added
                self.counts[day] = self.counts.get(day, 0) + counts.get(day, 0)
            if not self.counts[day]:
                del self.counts[day]
        if recompute:
            days = self._days_of(lo, hi)
            done.recomputed += days
            self.recomputed_days += len(days)
        return {local_month_start(d, tz) for d in self._days_of(lo, hi)}

    def _compare_crossings(
        self,
        classified: pl.DataFrame,
        edges: list[datetime],
        mine: pl.Expr,
        lo: datetime,
        hi: datetime,
    ) -> None:
        """Record, per meter, the interval crossing each edge of [lo, hi) (and each day start
        inside); where it differs from the one recorded before at `lo` or `hi`, the days on
        the other side of that edge become dirty."""
        for edge in edges:
            now = _crossing(classified, edge)
            before = self.crossings.get(edge)
            if before is not None and edge in (lo, hi):
                old = before.filter(mine)
                if not now.sort("meter").equals(old.sort("meter")):
                    changed = pl.concat([old, now]).join(
                        old.join(now, on=list(now.columns), how="semi"),
                        on=list(now.columns),
                        how="anti",
                    )
                    if edge == lo and changed.height:
                        first: datetime = changed.get_column("start").min()  # type: ignore[assignment]
                        self._dirty.update(self._days_of(first, lo))
                    # (past the watermark the next slice takes over: nothing to redo there)
                    if edge == hi and hi != self.watermark and changed.height:
                        last: datetime = changed.get_column("time").max()  # type: ignore[assignment]
                        self._dirty.update(self._days_of(hi, last + QUARTER))
            kept = before.filter(~mine) if before is not None else _crossing(pl.DataFrame(), edge)
            self.crossings[edge] = pl.concat([kept, now])

    def _write(
        self, rows: pl.DataFrame, registry: Registry, factors: pl.DataFrame, done: Round
    ) -> None:
        """``meter_energy`` (the windows written per meter) and ``energy`` of window rows."""
        if rows.is_empty():
            return
        rows = _completeness(rows, registry)
        meters = meter_energy(rows.lazy(), registry.meters, factors, tz=self.opts.tz).collect()
        energy = enterprise_energy(
            meters.lazy(), registry.meters, registry.enterprises, factors
        ).collect()
        out = {
            "meter_energy": meters.filter(pl.col("window").is_in(self.opts.meter_windows)),
            "energy": energy,
        }
        labels = _new_references(out.values(), self.opts.tz, self._written_ids)
        if labels.height:
            out["reference"] = labels
        counts, _seconds = _write_group(self.client, out)
        done.add(counts)

    def _write_months(self, months: Iterable[datetime], done: Round) -> None:
        """Month to date of `months`: complete days plus the open days' quarter hours."""
        tz = self.opts.tz
        wanted = sorted(m for m in months if self.start is not None and m >= self.start)
        if not wanted or "1mo" not in self.opts.windows:
            return
        references = self.opts.references or load_references()
        for month in wanted:
            end = local_month_start(month + timedelta(days=40), tz)
            span = (pl.col("time") >= month) & (pl.col("time") < end)
            rows = pl.concat([self.days.filter(span), self.quarters.filter(span)])
            if rows.is_empty():
                continue
            factors = meter_factors(
                self.registry.meters, references, local_years(month, end, tz), self.opts.choice
            )
            monthly = _completeness(roll_up(rows.lazy(), "1mo", tz).collect(), self.registry)
            meters = meter_energy(monthly.lazy(), self.registry.meters, factors, tz=tz).collect()
            energy = enterprise_energy(
                meters.lazy(), self.registry.meters, self.registry.enterprises, factors
            ).collect()
            out = {
                "meter_energy": meters.filter(pl.col("window").is_in(self.opts.meter_windows)),
                "energy": energy,
                "intensity": intensity(
                    energy.filter(pl.col("carrier") == TOTAL).lazy(),
                    self.registry.monthly,
                    self.registry.enterprises,
                    references,
                    choice=self.opts.choice,
                    periods=("month",),
                    tz=tz,
                ).collect(),
            }
            labels = _new_references([out["meter_energy"], out["energy"]], tz, self._written_ids)
            if labels.height:
                out["reference"] = labels
            counts, _seconds = _write_group(self.client, out)
            done.add(counts)

    def _trim(self) -> None:
        """Forget what lies before the horizon (its month is over)."""
        assert self.watermark is not None and self.start is not None
        start = local_month_start(self.watermark - self.horizon, self.opts.tz)
        if start <= self.start:
            return
        self.start = start
        self.days = self.days.filter(pl.col("time") >= start)
        self.quarters = self.quarters.filter(pl.col("time") >= start)
        self.counts = {d: c for d, c in self.counts.items() if d >= start}
        self.crossings = {e: c for e, c in self.crossings.items() if e >= start}


def _crossing(classified: pl.DataFrame, edge: datetime) -> pl.DataFrame:
    """Per meter, the interval crossing `edge` (start < edge <= time): its first such row,
    with its flag (a late reading may also turn a neighbour into a spike)."""
    schema: dict[str, pl.DataType] = {
        "meter": pl.String(),
        "start": _TIME,
        "time": _TIME,
        "flag": pl.String(),
    }
    if classified.is_empty():
        return pl.DataFrame(schema=schema)
    return (
        classified.filter((pl.col("start") < edge) & (pl.col("time") >= edge))
        .group_by(pl.col("meter").cast(pl.String))
        .agg(pl.col("start", "time", "flag").sort_by("time").first())
        .select(
            "meter",
            pl.col("start").cast(_TIME),
            pl.col("time").cast(_TIME),
            pl.col("flag").cast(pl.String),
        )
    )


def _classify(
    readings: pl.DataFrame,
    registry: Registry,
    rates: pl.DataFrame | None,
    lo: datetime,
    hi: datetime,
    tz: str,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Classified readings (named by meter) and their quarter hours in [lo, hi); a registry
    with meter periods is computed per period (`greenmon.aggregator.periods`)."""
    if not registry.has_periods:
        classified = classify(readings.lazy(), registry.meters, rates=rates).collect()
        return classified, quarter_hours(classified, registry.meters, lo, hi, tz)
    table = periods.series_table(registry.periods)
    series = periods.series_meters(table)
    per_series = classify(
        periods.split(readings.lazy(), table), series, rates=periods.series_rates(rates, table)
    ).collect()
    rows = attribute(per_series.lazy(), series, ("15m",), tz=tz, since=lo, until=hi)
    base = periods.merge(rows, table).select(list(_BASE)).collect()
    return periods.to_meters(per_series.lazy(), table).collect(), base


def _completeness(rows: pl.DataFrame, registry: Registry) -> pl.DataFrame:
    """Covered time over the window's length (`greenmon.aggregator.windows`), or over the part
    in which the meter was valid when the registry has periods."""
    if registry.has_periods:
        table = periods.series_table(registry.periods)
        return periods.with_completeness(rows.lazy(), table).collect()
    length = (pl.col("end") - pl.col("time")).dt.total_milliseconds().cast(pl.Float64)
    ratio = pl.col("covered").cast(pl.Float64) / length
    return rows.with_columns(pl.min_horizontal(ratio, pl.lit(1.0)).alias("completeness"))


def quarter_hours(
    classified: pl.DataFrame, meters: pl.DataFrame, lo: datetime, hi: datetime, tz: str
) -> pl.DataFrame:
    """The quarter hours in [lo, hi) of classified readings (`_BASE` columns)."""
    rows = attribute(classified.lazy(), meters, ("15m",), tz=tz, since=lo, until=hi)
    return rows.select(list(_BASE)).collect()
