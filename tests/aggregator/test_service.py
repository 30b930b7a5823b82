"""Batch and follow mode against a real influxd, with a simulated fleet as the data source.

The readings are the simulators' own MQTT payloads decoded by the ingestor's codec and
written as the ingestor writes them (the MQTT hop is covered by the ingest tests), so what is
checked here is reading back, recomputing, overwriting and following.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenmon.aggregator.follow import Follower
from greenmon.aggregator.service import default_options, run_range
from greenmon.deploy.local import LocalServices
from greenmon.influx import InfluxClient
from greenmon.registry import Registry, load_registry
from greenmon.simulators.faults import parse_faults
from greenmon.simulators.fleet import generate_fleet, write_fleet
from greenmon.simulators.runner import RunSpec, parse_start, plan_run
from greenmon.simulators.truth import truth_frame
from tests.aggregator.conftest import ingested_lines

pytestmark = pytest.mark.integration

DAY0 = datetime(2025, 6, 1, 16, 0, tzinfo=UTC)  # 2025-06-02 00:00 Asia/Shanghai
DAY = timedelta(days=1)
ALL = ("meter_energy", "energy", "events", "intensity")


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Registry, pl.DataFrame, list[tuple[int, str]]]:
    root: Path = tmp_path_factory.mktemp("fleet")
    fleet = generate_fleet(4, 11)
    write_fleet(fleet, root)
    registry = load_registry(root)
    spec = RunSpec(parse_start("2025-06-02", 900), 3, 900, 11, parse_faults("none"))
    planned = plan_run(fleet, spec)
    lines = ingested_lines(registry, planned.plan.messages)
    return registry, truth_frame(fleet, planned.plan), lines


@pytest.fixture
def client(influx_url: str, database: str) -> Iterator[InfluxClient]:
    with InfluxClient(influx_url, database) as c:
        c.ensure_database()
        yield c
        c.drop_database()


def _daily(frame: pl.DataFrame) -> pl.DataFrame:
    return (
        frame.filter(pl.col("window") == "1d")
        .select("meter", "time", "quantity")
        .sort("meter", "time")
    )


def test_batch_equals_truth_and_reruns_change_nothing(
    client: InfluxClient, world: tuple[Registry, pl.DataFrame, list[tuple[int, str]]]
) -> None:
    registry, truth, lines = world
    client.write([line for _, line in lines])
    opts = default_options()
    first = run_range(client, registry, DAY0, DAY0 + 3 * DAY, opts, keep=ALL)
    assert first.readings == len(lines)
    # Per meter and local day, the computed quantity is the true consumption (no faults).
    expected = (
        truth.filter(pl.col("start") < pl.col("end"))
        .filter((pl.col("start") >= DAY0) & (pl.col("end") <= DAY0 + 3 * DAY))
        .with_columns(
            (DAY0 + ((pl.col("start") - DAY0).dt.total_days() * DAY)).alias("time")  # type: ignore[operator]
        )
        .group_by(pl.col("meter_id").alias("meter"), "time")
        .agg(pl.col("quantity").sum())
        .with_columns(pl.col("time").cast(pl.Datetime("ms", "UTC")))
        .sort("meter", "time")
    )
    got = _daily(first.frames["meter_energy"])
    assert_frame_equal(got, expected, check_dtypes=False, rel_tol=1e-9, abs_tol=1e-6)
    points = client.query('SELECT count("kgce") FROM "meter_energy"')["count"][0]
    assert points == first.written["meter_energy"]

    again = run_range(client, registry, DAY0, DAY0 + 3 * DAY, opts, keep=ALL)
    for name, key in (("meter_energy", "meter"), ("energy", "carrier")):
        order = ["window", "enterprise", key, "time"]
        assert_frame_equal(again.frames[name].sort(order), first.frames[name].sort(order))
    assert client.query('SELECT count("kgce") FROM "meter_energy"')["count"][0] == points


def test_follow_recomputes_the_day_late_data_changes(
    client: InfluxClient, world: tuple[Registry, pl.DataFrame, list[tuple[int, str]]]
) -> None:
    registry, _truth, lines = world
    # A gateway's afternoon of the second day arrives late; everything else on time.
    late_lo, late_hi = DAY0 + DAY + timedelta(hours=12), DAY0 + DAY + timedelta(hours=16)
    first_meter = lines[0][1].split("meter=")[1].split(" ")[0]
    lo_ms, hi_ms = late_lo.timestamp() * 1000, late_hi.timestamp() * 1000
    late = [line for ts, line in lines if lo_ms <= ts < hi_ms and f"meter={first_meter} " in line]
    on_time = [line for _, line in lines if line not in set(late)]
    assert late
    client.write(on_time)
    opts = default_options(windows=("15m", "1h", "1d"))
    follower = Follower(client, registry, opts, lateness=timedelta(minutes=30))
    follower.poll()  # the horizon, from the month's first day to the watermark
    first = follower.recomputed_days
    assert first >= 3 and DAY0 + DAY in follower.last.recomputed
    follower.poll()
    assert follower.recomputed_days == first  # nothing changed: nothing recomputed

    client.write(late)
    follower.poll()
    # only the day the late data belongs to (it lies inside the day: no neighbour changes)
    assert follower.last.recomputed == [DAY0 + DAY]
    assert follower.recomputed_days == first + 1

    # What follow mode wrote equals a batch recompute from all the data.
    batch = run_range(client, registry, DAY0, DAY0 + 2 * DAY, opts, keep=ALL)
    stored = client.query(
        f'SELECT "quantity" FROM "meter_energy" WHERE "window" = \'1d\' AND '
        f'time < {int((DAY0 + 2 * DAY).timestamp() * 1000)}ms GROUP BY "meter"',
        epoch="ms",
    ).select(
        "meter",
        pl.col("time").cast(pl.Datetime("ms", "UTC")),
        pl.col("quantity").cast(pl.Float64),
    )
    assert_frame_equal(
        stored.sort("meter", "time"), _daily(batch.frames["meter_energy"]), rel_tol=1e-12
    )


def test_a_range_after_a_long_gap_gets_its_share(
    client: InfluxClient, world: tuple[Registry, pl.DataFrame, list[tuple[int, str]]]
) -> None:
    """A meter silent for two days: the interval that ends inside the range started long
    before it, and the range still gets exactly its share of that interval's energy."""
    registry, _truth, lines = world
    meter = lines[0][1].split("meter=")[1].split(" ")[0]
    lo_ms = (DAY0 + timedelta(hours=6)).timestamp() * 1000
    hi_ms = (DAY0 + 2 * DAY + timedelta(hours=6)).timestamp() * 1000
    kept = [
        line for ts, line in lines
        if not (lo_ms < ts < hi_ms and f"meter={meter} " in line)
    ]  # fmt: skip
    client.write(kept)
    opts = default_options(windows=("1h", "1d"))
    whole = run_range(client, registry, DAY0, DAY0 + 3 * DAY, opts, keep=ALL)
    last_day = run_range(client, registry, DAY0 + 2 * DAY, DAY0 + 3 * DAY, opts, keep=ALL)

    def day3(result: object) -> pl.DataFrame:
        frame = result.frames["meter_energy"]  # type: ignore[attr-defined]
        return _daily(frame).filter((pl.col("meter") == meter) & (pl.col("time") == DAY0 + 2 * DAY))

    expected = day3(whole)
    assert expected.height == 1 and expected["quantity"][0] > 0
    assert_frame_equal(day3(last_day), expected, rel_tol=1e-12)


def test_follow_outlives_an_influxdb_outage(
    own_services: Callable[..., LocalServices],
    database: str,
    world: tuple[Registry, pl.DataFrame, list[tuple[int, str]]],
) -> None:
    import threading
    import time

    registry, _truth, lines = world
    svc = own_services("influxd")
    # No client retries: each round fails fast while InfluxDB is away.
    client = InfluxClient(svc.influx_url, database, max_retries=0, timeout=2)
    client.ensure_database()
    half = len(lines) // 2
    client.write([line for _, line in lines[:half]])
    follower = Follower(client, registry, default_options(windows=("1h", "1d")))
    stop = threading.Event()
    thread = threading.Thread(target=follower.run, args=(stop, 0.2), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while follower.recomputed_days == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert follower.recomputed_days > 0
        svc.stop("influxd")
        rounds = follower.rounds
        time.sleep(1.5)
        assert thread.is_alive() and follower.rounds > rounds  # still polling, not dead
        svc.start("influxd")
        before = follower.watermark
        assert before is not None
        client.write([line for _, line in lines[half:]])
        deadline = time.monotonic() + 30
        while follower.watermark == before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert follower.watermark is not None and follower.watermark > before  # picked up
    finally:
        stop.set()
        thread.join(10)
        client.close()
