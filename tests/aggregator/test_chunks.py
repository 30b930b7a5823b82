"""Chunked range computation: the groups stay within their budget, and a range computed in
many groups is exactly the range computed at once (every fault kind, against a real influxd)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenmon.aggregator.chunks import ChunkPlanner, expected_readings
from greenmon.aggregator.service import default_options, run_range
from greenmon.influx import InfluxClient
from greenmon.registry import Registry, load_registry
from greenmon.simulators.faults import parse_faults
from greenmon.simulators.fleet import generate_fleet, write_fleet
from greenmon.simulators.runner import RunSpec, parse_start, plan_run
from tests.aggregator.conftest import ingested_lines, meter

DAY0 = datetime(2025, 6, 1, 16, 0, tzinfo=UTC)  # 2025-06-02 00:00 Asia/Shanghai
DAY = timedelta(days=1)
ALL = ("meter_energy", "energy", "events", "intensity")
FAULTS = (
    "rollover=0.3,reset=0.15,spike=0.002,gap_catchup=0.01,gap_lost=0.01,duplicate=0.02,"
    "out_of_order=0.02,clock_skew=0.3,disconnect=0.01"
)
KEYS = {
    "meter_energy": ["meter", "window", "time"],
    "energy": ["enterprise", "carrier", "window", "time"],
    "events": ["meter", "time", "kind"],
    "intensity": ["enterprise", "period", "time"],
}


# --------------------------------------------------------------------------- planning


@pytest.mark.parametrize(
    ("expected", "budget", "seen", "groups"),
    [
        # budget None: everything at once
        ([10.0, 10.0, 10.0], None, None, [["a", "b", "c"]]),
        # the first group gets an eighth of the budget (at least one enterprise)
        ([10.0] * 6, 160, None, [["a", "b"], ["c", "d", "e", "f"]]),
        # an enterprise larger than the budget is a group on its own
        ([5.0, 500.0, 5.0, 5.0], 80, None, [["a"], ["b"], ["c", "d"]]),
        # the first group held 4x the expected readings: later groups are 4x smaller
        ([10.0] * 6, 320, 4.0, [["a", "b", "c", "d"], ["e", "f"]]),
        # half silent: bigger groups, but never planned on less than a quarter
        ([10.0] * 8, 80, 0.0, [["a"], ["b", "c", "d", "e", "f", "g", "h"]]),
    ],
)
def test_groups_follow_the_budget_and_the_density_seen(
    expected: list[float], budget: int | None, seen: float | None, groups: list[list[str]]
) -> None:
    ids = [chr(ord("a") + i) for i in range(len(expected))]
    planner = ChunkPlanner(ids, expected, budget)
    got = []
    for group in planner:
        got.append(group)
        if seen is not None:
            planner.observe(group, round(seen * sum(expected[ids.index(e)] for e in group)))
    assert got == groups
    assert planner.groups == len(groups)


def test_expected_readings_come_from_each_meters_interval(
    registry_factory: object,
) -> None:
    registry = registry_factory(  # type: ignore[operator]
        [
            meter("A-1", enterprise="A"),
            meter("A-2", enterprise="A", kind="interval", interval_s=3600),
            meter("B-1", enterprise="B", interval_s=60),
        ]
    )
    table = expected_readings(registry.meters, 2.0)
    assert table.to_dicts() == [
        {"enterprise_id": "A", "expected": 10.0},
        {"enterprise_id": "B", "expected": 120.0},
    ]


# --------------------------------------------------------------------------- identical results


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, list[str]]:
    root: Path = tmp_path_factory.mktemp("fleet")
    fleet = generate_fleet(8, 23)
    write_fleet(fleet, root)
    registry = load_registry(root)
    spec = RunSpec(parse_start("2025-06-02", 900), 4, 900, 23, parse_faults(FAULTS))
    planned = plan_run(fleet, spec)
    return registry, [line for _, line in ingested_lines(registry, planned.plan.messages)]


@pytest.fixture
def client(influx_url: str, database: str) -> Iterator[InfluxClient]:
    with InfluxClient(influx_url, database) as c:
        c.ensure_database()
        yield c
        c.drop_database()


def _same(a: dict[str, pl.DataFrame], b: dict[str, pl.DataFrame]) -> None:
    assert set(a) == set(b)
    for name, frame in a.items():
        other = b[name]
        assert frame.height == other.height, name
        columns = sorted(frame.columns)
        assert_frame_equal(
            frame.sort(KEYS[name]).select(columns),
            other.sort(KEYS[name]).select(columns),
            check_dtypes=False,
            rel_tol=1e-12,
            abs_tol=1e-9,
        )


@pytest.mark.integration
@pytest.mark.parametrize(
    ("start", "end", "partial"),
    [
        (DAY0, DAY0 + 4 * DAY, False),  # whole local days
        (DAY0 + DAY + timedelta(hours=5), DAY0 + 3 * DAY + timedelta(hours=7), False),
        (DAY0 - 6 * DAY, DAY0 + 4 * DAY, True),  # month to date, with intensity
    ],
)
def test_a_range_in_many_chunks_equals_it_at_once(
    client: InfluxClient,
    faulty: tuple[Registry, list[str]],
    start: datetime,
    end: datetime,
    partial: bool,
) -> None:
    registry, lines = faulty
    client.write(lines)
    whole = run_range(
        client, registry, start, end, default_options(chunk_readings=None), keep=ALL,
        partial=partial,
    )  # fmt: skip
    chunked = run_range(
        client, registry, start, end, default_options(chunk_readings=3_000), keep=ALL,
        partial=partial,
    )  # fmt: skip
    assert whole.chunks == 1 and chunked.chunks >= 4
    assert chunked.readings == whole.readings
    assert chunked.written == whole.written
    kinds = set(whole.frames["events"].get_column("kind").cast(pl.String))
    assert {"rollover", "reset", "spike"} <= kinds
    if partial:
        assert whole.frames["intensity"].height > 0
    _same(whole.frames, chunked.frames)
    assert_frame_equal(whole.totals(), chunked.totals(), rel_tol=1e-12)
