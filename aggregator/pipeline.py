"""The whole computation in one call: readings -> windows -> meter and enterprise energy ->
intensity, events and a per-meter summary.

`aggregate` is what the InfluxDB reader/writer, batch mode and follow mode call. It evaluates
the heavy part at once — the sort and classification of the readings (kept in memory, shared by
windows, events and summary) and the pass that turns them into per-meter windows — and returns
the outputs as LazyFrames over those small results; `Aggregation.collect` evaluates them
together.

Incremental use (follow mode, late data): to (re)compute the windows in [since, until), pass
the readings in that range plus each meter's two readings before and after it (`with_context`
builds that from a larger frame) — a fixed time margin is not enough when a gap is longer than
the margin — and ``since``/``until`` so that windows only partly covered are not emitted; pass
``rates`` (`typical_rates` over a longer history) so that spike and jump decisions do not depend
on the chunk. Recomputing a window from the same readings yields the same rows (writes are
idempotent: same tags, same timestamp); a window whose readings changed is simply rewritten.
A reading that arrives late changes the windows its interval spans, back to the classified
``start`` of that interval (the previous reading): recompute from there.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import polars as pl

from greenmon.aggregator import periods as meter_periods
from greenmon.aggregator.consumption import (
    KEY_MS_BITS,
    ConsumptionRules,
    classify,
    classify_keyed,
    events,
    keyed_readings,
    summary,
)
from greenmon.aggregator.energy import enterprise_energy, meter_energy
from greenmon.aggregator.intensity import PERIODS, intensity
from greenmon.aggregator.reference import (
    ReferenceChoice,
    References,
    load_references,
    meter_factors,
)
from greenmon.aggregator.windows import DEFAULT_TZ, WINDOWS, attribute
from greenmon.registry import Registry

__all__ = ["Aggregation", "aggregate", "data_years", "with_context"]

_OUTPUTS: Final = ("meter_energy", "energy", "intensity", "events", "summary")
#: Frames of this many readings or more are classified in parts of whole meters, side by side.
PARTITION_ROWS: Final = 2_000_000
_MS_MOD: Final = 1 << KEY_MS_BITS


@dataclass(frozen=True, eq=False)
class Aggregation:
    """The plan of one aggregation run. Frames are lazy; `collect` evaluates them together.

    - ``classified``: every distinct reading with its flag and interval (`consumption`);
    - ``windows``: per meter and window: quantity, readings, completeness (`windows`);
    - ``meter_energy`` / ``energy`` / ``intensity``: the InfluxDB measurements (`energy`,
      `intensity`; ``intensity`` is None unless ``1mo`` windows were requested);
    - ``events`` / ``summary``: quarantined and flagged readings (those in [since, until)
      when given), per-meter counts (over every reading passed);
    - ``factors``: the coefficient and emission factor chosen per meter and year (eager).
    """

    classified: pl.LazyFrame
    windows: pl.LazyFrame
    meter_energy: pl.LazyFrame
    energy: pl.LazyFrame
    intensity: pl.LazyFrame | None
    events: pl.LazyFrame
    summary: pl.LazyFrame
    factors: pl.DataFrame
    references: References

    def collect(self, *outputs: str) -> dict[str, pl.DataFrame]:
        """Evaluate the named outputs (default: meter_energy, energy, intensity, events,
        summary) in one pass over the readings."""
        names = list(outputs or _OUTPUTS)
        frames = {name: getattr(self, name) for name in names}
        present = {name: lf for name, lf in frames.items() if lf is not None}
        results = pl.collect_all(list(present.values()))
        return dict(zip(present, results, strict=True))


def with_context(
    readings: pl.LazyFrame, since: datetime, until: datetime, around: int = 2
) -> pl.LazyFrame:
    """The readings in [since, until) plus, for every meter, the `around` readings just
    before and just after — what a recomputation of the windows in [since, until) needs: the
    interval crossing each edge (however long a gap it spans) and the neighbours that decide
    whether an edge reading is a spike. (From InfluxDB: ``... WHERE time < since GROUP BY
    meter ORDER BY time DESC LIMIT 2`` and the same after `until`.)"""
    lo, hi = since.astimezone(UTC), until.astimezone(UTC)
    time = pl.col("time")
    inside = (time >= lo) & (time < hi)
    ranked = readings.with_columns(
        time.rank("dense", descending=True).over("meter", (time < lo)).alias("__before"),
        time.rank("dense").over("meter", (time >= hi)).alias("__after"),
    )
    return ranked.filter(
        inside
        | ((time < lo) & (pl.col("__before") <= around))
        | ((time >= hi) & (pl.col("__after") <= around))
    ).drop("__before", "__after")


def data_years(readings: pl.LazyFrame, tz: str = DEFAULT_TZ) -> list[int]:
    """The local years the readings span (evaluates the min and max of ``time``), including
    the year of the instant a day before the first reading (an interval meter's first reading
    covers time before it)."""
    bounds = readings.select(
        pl.col("time").min().alias("lo"), pl.col("time").max().alias("hi")
    ).collect()
    lo, hi = bounds.row(0)
    if lo is None or hi is None:
        return [datetime.now(UTC).astimezone(ZoneInfo(tz)).year]
    zone = ZoneInfo(tz)
    if lo.tzinfo is None:
        lo, hi = lo.replace(tzinfo=UTC), hi.replace(tzinfo=UTC)
    first = (lo - timedelta(days=1)).astimezone(zone).year
    last = hi.astimezone(zone).year
    return list(range(first, last + 1))


def _classify_and_attribute(
    readings: pl.LazyFrame,
    meters: pl.DataFrame,
    windows: list[str],
    rules: ConsumptionRules | None,
    rates: pl.LazyFrame | pl.DataFrame | None,
    tz: str,
    since: datetime | None,
    until: datetime | None,
    partitions: int | None,
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(classified rows, window rows), both evaluated, lazily wrapped."""
    parts = partitions
    if parts is None:
        rows = readings.select(pl.len()).collect().item()
        parts = min(pl.thread_pool_size(), 4) if rows >= PARTITION_ROWS else 1
    parts = max(1, min(parts, meters.height))
    if parts == 1:
        classified = classify(readings, meters, rules, rates).collect().lazy()
        return classified, attribute(classified, meters, windows, tz=tz, since=since, until=until)
    # sorted by (meter code, time) once; each part is a contiguous slice of whole meters,
    # cut where the meter holding each equal share of the rows begins
    keyed = keyed_readings(readings, meters).collect()
    key = keyed.get_column("key")
    cuts = [0]
    for i in range(1, parts):
        at = i * keyed.height // parts
        if at >= keyed.height:
            break
        first_key = key[at] // _MS_MOD * _MS_MOD  # the first possible key of that meter
        cut = int(key.search_sorted(first_key, side="left"))
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(keyed.height)

    def work(i: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        part = keyed.slice(cuts[i], cuts[i + 1] - cuts[i]).lazy()
        classified = classify_keyed(part, meters, rules, rates).collect()
        rows = attribute(classified.lazy(), meters, windows, tz=tz, since=since, until=until)
        return classified, rows.collect()

    with ThreadPoolExecutor(len(cuts) - 1, thread_name_prefix="greenmon-part") as pool:
        done = list(pool.map(work, range(len(cuts) - 1)))
    return (
        pl.concat([c for c, _ in done]).lazy(),
        pl.concat([w for _, w in done]).lazy(),
    )


def aggregate(
    readings: pl.LazyFrame,
    registry: Registry,
    references: References | None = None,
    *,
    windows: Iterable[str] = WINDOWS,
    periods: Iterable[str] = PERIODS,
    tz: str = DEFAULT_TZ,
    choice: ReferenceChoice | None = None,
    rules: ConsumptionRules | None = None,
    rates: pl.LazyFrame | pl.DataFrame | None = None,
    years: Iterable[int] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    factors: pl.DataFrame | None = None,
    partitions: int | None = None,
) -> Aggregation:
    """Run the computation for `readings` (``meter, time, value``) up to per-meter windows;
    return the outputs lazily (see the module docstring).

    `references` defaults to the packaged tables (`load_references`); `years` (the local
    years whose factors to resolve) defaults to `data_years` (one cheap scan of ``time``);
    `factors` (`meter_factors` output, resolved once by a caller running many chunks) skips
    that step. ``intensity`` is computed when ``1mo`` is among `windows` and `periods` is not
    empty. `partitions`: how many parts of whole meters the classification and the windows
    are computed in, side by side (default: one per Polars thread, up to 4, for frames of
    `PARTITION_ROWS` rows or more; 1 below). See the module docstring for `since`, `until` and
    `rates` in incremental use.
    """
    references = references or load_references()
    choice = choice or ReferenceChoice()
    wanted = list(dict.fromkeys(windows))
    period_list = list(periods)
    if factors is None:
        year_list = sorted(set(years)) if years is not None else data_years(readings, tz)
        factors = meter_factors(registry.meters, references, year_list, choice)

    # The classification is evaluated here, once, and shared by windows, events and summary;
    # a large frame in parts of whole meters, side by side (each meter's figures depend only
    # on its own readings).
    if registry.has_periods:  # a meter with several rows: computed per period (`periods`)
        table = meter_periods.series_table(registry.periods)
        classified, per_series = _classify_and_attribute(
            meter_periods.split(readings, table),
            meter_periods.series_meters(table),
            wanted,
            rules,
            meter_periods.series_rates(rates, table),
            tz,
            since,
            until,
            partitions,
        )
        window_rows = meter_periods.merge(per_series, table)
        # events and summary speak of meters: the series' names mapped back
        classified = meter_periods.to_meters(classified, table)
    else:
        classified, window_rows = _classify_and_attribute(
            readings, registry.meters, wanted, rules, rates, tz, since, until, partitions
        )
    meter_rows = meter_energy(window_rows, registry.meters, factors, tz=tz)
    energy_rows = enterprise_energy(meter_rows, registry.meters, registry.enterprises, factors)
    intensity_rows = (
        intensity(
            energy_rows,
            registry.monthly,
            registry.enterprises,
            references,
            choice=choice,
            periods=period_list,
            tz=tz,
        )
        if "1mo" in wanted and period_list
        else None
    )
    # events of the readings in [since, until) only: the context around belongs to (and is
    # reported with) the neighbouring ranges
    reported = events(classified)
    if since is not None:
        reported = reported.filter(pl.col("time") >= since.astimezone(UTC))
    if until is not None:
        reported = reported.filter(pl.col("time") < until.astimezone(UTC))
    return Aggregation(
        classified=classified,
        windows=window_rows,
        meter_energy=meter_rows,
        energy=energy_rows,
        intensity=intensity_rows,
        events=reported,
        summary=summary(classified),
        factors=factors,
        references=references,
    )
