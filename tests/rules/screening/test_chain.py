"""Screening on what the real chain wrote: simulated gateways -> codec -> `meter_reading` ->
`greenmon aggregate` -> `greenmon screen`.

Six simulated enterprises (one or more of them green leaders with rooftop PV) publish January
2025 at 15-minute readings; the messages are decoded by the ingestor's codec and written to
`meter_reading` as the ingestor writes them (MQTT itself is tested elsewhere), except that one
enterprise's gateways fall silent for the last five days of the month. `greenmon aggregate`
turns the readings into `energy` and `meter_energy`; `greenmon screen --as-of 2025-02-01`
judges January from those. What is checked: screening reads the aggregator's tags and fields
(totals, completeness, generation) as the aggregator wrote them; the silent enterprise fails
online monitoring and its energy ratios are not computed over missing days.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from greenmon.config import Settings
from greenmon.influx import InfluxClient
from greenmon.ingest.codec import decode
from greenmon.lineprotocol import format_line
from greenmon.registry import load_registry
from greenmon.retention import ensure_retention, policies_of
from greenmon.simulators.faults import parse_faults
from greenmon.simulators.fleet import Fleet, generate_fleet, write_fleet
from greenmon.simulators.runner import RunSpec, parse_start, plan_run
from tests.ingest.support import GREENMON

pytestmark = pytest.mark.integration

SILENT_FROM = datetime(2025, 1, 27, tzinfo=ZoneInfo("Asia/Shanghai"))
NOW_MS = 1_900_000_000_000


def _greenmon(*args: str) -> str:
    out = subprocess.run([GREENMON, *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def chain(
    influx_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Fleet, str, dict[str, Any], InfluxClient]]:
    root = tmp_path_factory.mktemp("chain") / "fleet"
    fleet = generate_fleet(6, 5, leader_share=0.35, history_years=1)
    write_fleet(fleet, root)
    registry = load_registry(root)
    silent = fleet.enterprises["enterprise_id"][-1]
    plan = plan_run(
        fleet, RunSpec(parse_start("2025-01-01", 900), 31, 900, 5, parse_faults("none"))
    ).plan
    cutoff_ns = int(SILENT_FROM.timestamp()) * 1_000_000_000
    lines = []
    for topic, payload in plan.messages.select("topic", "payload").iter_rows():
        for r in decode(topic, payload.encode(), registry, NOW_MS).readings:
            if r.enterprise == silent and r.ts_ns >= cutoff_ns:
                continue
            tags = {"enterprise": r.enterprise, "meter": r.meter, "carrier": r.carrier}
            lines.append(format_line("meter_reading", tags, {"value": r.value}, r.ts_ns))
    database = "t_" + uuid.uuid4().hex[:12]
    settings = Settings(influx_url=influx_url, database=database)
    client = InfluxClient(influx_url, database, timeout=120.0, policies=policies_of(settings))
    ensure_retention(client, settings, alter=False)  # readings live in the raw policy
    try:
        client.write(lines, precision="ns", rp=client.policy("meter_reading"))
        common = ["--influx-url", influx_url, "--database", database, "--registry", str(root)]
        _greenmon("aggregate", *common, "--from", "2025-01-01", "--to", "2025-02-01",
                  "--windows", "1d,1mo", "--json")  # fmt: skip
        screened = json.loads(
            _greenmon("screen", *common, "--year", "2025", "--as-of", "2025-02-01", "--json")
        )
        yield fleet, silent, screened, client
    finally:
        client.drop_database()
        client.close()


def _candidate(screened: dict[str, Any], enterprise: str) -> dict[str, Any]:
    return next(c for c in screened["candidates"] if c["enterprise"] == enterprise)


def test_period_is_january(chain: tuple[Fleet, str, dict[str, Any], InfluxClient]) -> None:
    _, _, screened, _ = chain
    period = screened["period"]
    assert (period["from"], period["to"], period["days"], period["months"]) == (
        "2025-01-01", "2025-01-31", 31, 1,
    )  # fmt: skip
    assert not period["whole_year"]


def test_totals_and_generation_are_the_aggregators(
    chain: tuple[Fleet, str, dict[str, Any], InfluxClient],
) -> None:
    fleet, silent, screened, client = chain
    totals = client.query(
        'SELECT sum("kgce") AS kgce FROM "energy" WHERE "window" = \'1d\' AND '
        '"carrier" = \'total\' GROUP BY "enterprise"'
    )
    kgce = dict(zip(totals["enterprise"], totals["kgce"], strict=True))
    generation = client.query(
        'SELECT sum("kgce") AS kgce FROM "meter_energy" WHERE "window" = \'1d\' AND '
        '"role" = \'generation\' GROUP BY "enterprise"'
    )
    generated = dict(zip(generation["enterprise"], generation["kgce"], strict=True))
    leaders = fleet.sim_enterprises.filter(pl.col("design") == "green_leader")["enterprise_id"]
    assert len(leaders) >= 1 and set(leaders) <= set(generated)  # leaders have rooftop PV
    product = dict(
        fleet.monthly.filter(pl.col("month") == "2025-01")
        .select("enterprise_id", "product_output")
        .iter_rows()
    )
    for enterprise in fleet.enterprises["enterprise_id"]:
        c = _candidate(screened, enterprise)
        ind = {i["id"]: i for i in c["indicators"]}
        share = 100 * generated.get(enterprise, 0.0) / kgce[enterprise]
        assert ind["renewable_share"]["value"] == pytest.approx(share, abs=1e-6)
        if enterprise == silent:
            continue
        assert ind["unit_product_energy"]["value"] == pytest.approx(
            kgce[enterprise] / product[enterprise], abs=1e-6
        )


def test_a_silent_gateway_fails_online_monitoring(
    chain: tuple[Fleet, str, dict[str, Any], InfluxClient],
) -> None:
    fleet, silent, screened, _ = chain
    for enterprise in fleet.enterprises["enterprise_id"]:
        c = _candidate(screened, enterprise)
        monitoring = next(r for r in c["requirements"] if r["id"] == "online_monitoring")
        if enterprise == silent:
            assert not monitoring["met"] and not c["passed"]
            assert "over 31 days (26 with data)" in monitoring["detail"]
            ind = {i["id"]: i for i in c["indicators"]}
            for name in ("energy_intensity", "unit_product_energy", "intensity_vs_province"):
                assert ind[name]["value"] is None
                assert ind[name]["reason"] == "energy data on only 26 of 31 days of 2025-01"
        else:
            assert monitoring["met"], monitoring["detail"]
            assert monitoring["detail"].startswith("mean daily completeness 1.0 over 31 days")
