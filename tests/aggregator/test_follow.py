"""Follow mode streams a simulated week — late data, gateway catch-up, duplicates, spikes,
rollovers and meter replacements — and ends with exactly the points a batch run of the same
range writes; a quiet round costs the new data, not the day so far."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenmon.aggregator.follow import Follower
from greenmon.aggregator.service import default_options, run_range
from greenmon.influx import InfluxClient
from greenmon.ingest.codec import decode
from greenmon.lineprotocol import format_line
from greenmon.registry import Registry, load_registry
from greenmon.simulators.faults import parse_faults
from greenmon.simulators.fleet import generate_fleet, write_fleet
from greenmon.simulators.runner import RunSpec, parse_start, plan_run

pytestmark = pytest.mark.integration

START = datetime(2025, 6, 1, 16, 0, tzinfo=UTC)  # 2025-06-02 00:00 Asia/Shanghai
FAULTS = (
    "rollover=0.2,reset=0.1,spike=0.002,gap_catchup=0.01,gap_lost=0.005,duplicate=0.02,"
    "out_of_order=0.03,clock_skew=0.2,disconnect=0.01"
)
STEP = timedelta(hours=3)
NOW_MS = 1_900_000_000_000


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, list[tuple[int, str]]]:
    """(publication time ms, line) of every valid reading of a simulated week."""
    root: Path = tmp_path_factory.mktemp("fleet")
    fleet = generate_fleet(5, 31)
    write_fleet(fleet, root)
    registry = load_registry(root)
    planned = plan_run(
        fleet, RunSpec(parse_start("2025-06-02", 900), 7, 900, 31, parse_faults(FAULTS))
    )
    counts = planned.plan.counts
    assert counts["gap_catchup"] and counts["out_of_order"] and counts["spike"]
    out = []
    for at, topic, payload in planned.plan.messages.select("at_ms", "topic", "payload").rows():
        for r in decode(topic, payload.encode(), registry, NOW_MS).readings:
            tags = {"carrier": r.carrier, "enterprise": r.enterprise, "meter": r.meter}
            out.append((at, format_line("meter_reading", tags, {"value": r.value}, r.ts_ns)))
    return registry, out


@pytest.fixture
def databases(influx_url: str, database: str) -> Iterator[tuple[InfluxClient, InfluxClient]]:
    with InfluxClient(influx_url, database) as a, InfluxClient(influx_url, database + "_b") as b:
        for c in (a, b):
            c.ensure_database()
        yield a, b
        for c in (a, b):
            c.drop_database()


def _points(client: InfluxClient, measurement: str, until: datetime) -> pl.DataFrame:
    """The 15m, 1h and 1d points of [START, until) (the follower also wrote the day before
    the first reading, which an interval meter's first reading reaches into)."""
    df = client.query(
        f'SELECT "quantity", "kgce", "kgco2", "completeness" FROM "{measurement}" '
        f"WHERE \"window\" != '1mo' AND time >= {int(START.timestamp() * 1000)}ms "
        f"AND time < {int(until.timestamp() * 1000)}ms GROUP BY *",
        epoch="ms",
    )
    keys = [c for c in df.columns if c not in ("name", "quantity", "kgce", "kgco2", "completeness")]
    return df.select(
        *keys, *(pl.col(c).cast(pl.Float64) for c in ("quantity", "kgce", "kgco2", "completeness"))
    ).sort(keys)


def test_a_streamed_week_ends_as_the_batch_run_of_it(
    databases: tuple[InfluxClient, InfluxClient],
    stream: tuple[Registry, list[tuple[int, str]]],
) -> None:
    live, batch = databases
    registry, lines = stream
    opts = default_options(meter_windows=("15m", "1h", "1d", "1mo"))
    follower = Follower(live, registry, opts, lateness=timedelta(minutes=30))
    lines.sort(key=lambda pair: pair[0])
    sent = 0
    clock = START + timedelta(days=1)  # a day of history before following starts
    quiet: list[int] = []
    late_days: set[datetime] = set()
    while sent < len(lines):
        upto = int(clock.timestamp() * 1000)
        chunk = [line for at, line in lines[sent:] if at <= upto]
        live.write(chunk)
        sent += len(chunk)
        done = follower.poll()
        if follower.rounds > 1 and not done.recomputed:
            quiet.append(done.readings)
        late_days.update(done.recomputed if follower.rounds > 1 else ())
        clock += STEP
    for _ in range(2):  # the last of the data, then nothing new
        follower.poll()
    assert follower.last.readings == 0 and not follower.last.recomputed
    end = follower.watermark
    assert end is not None and end > START + timedelta(days=6)
    # late data and catch-up were recomputed by the day, not by re-reading the month
    assert late_days and len(late_days) < 7
    # a quiet round reads about the new data (three hours of readings), not the day so far
    per_hour = len(lines) / (7 * 24)
    assert quiet and max(quiet) < 6 * per_hour

    batch.write([line for _, line in lines])
    run_range(batch, registry, START, end, opts)
    for measurement in ("energy", "meter_energy"):
        got, expected = _points(live, measurement, end), _points(batch, measurement, end)
        assert got.height == expected.height > 0, measurement
        assert set(got.get_column("window")) == {"15m", "1h", "1d"}
        assert_frame_equal(got, expected, rel_tol=1e-9, abs_tol=1e-9)
    # month to date: the complete days plus the open day's quarter hours
    month = live.query(
        'SELECT "kgce" FROM "energy" WHERE "window" = \'1mo\' AND "carrier" = \'total\' '
        'GROUP BY "enterprise"'
    )
    assert month.height == registry.enterprises.height
