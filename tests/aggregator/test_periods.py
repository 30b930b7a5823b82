"""Meter periods (valid_from / valid_to in meters.csv): a replaced meter is not a reset and the
day total is right; completeness does not count a meter before it was commissioned."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from greenmon.aggregator.pipeline import aggregate
from greenmon.registry import Registry
from tests.aggregator.conftest import TIME, local, meter, readings, series, write_registry
from tests.ingest.support import GREENMON
from tests.ingest.support import client as support_client

DAY = local(2025, 6, 2)
NOON = local(2025, 6, 2, 12)
Q = timedelta(minutes=15)


def _replacement(final: float | str, initial: float | str) -> list[dict[str, object]]:
    """E1-EL-MAIN: the old register (CT ratio 1) until noon, a new one (CT ratio 2) after."""
    return [
        meter("E1-EL-MAIN", multiplier=1, rollover=99999999, valid_to="2025-06-02T12:00",
              final_reading=final),
        meter("E1-EL-MAIN", multiplier=2, rollover=99999999, valid_from="2025-06-02T12:00",
              initial_reading=initial),
    ]  # fmt: skip


# The old register: 10 kWh a quarter from 5000 at midnight; its last reading at 11:45 shows
# 5470, and it showed 5480 when it was taken out at noon. The new one starts at 0 at noon and
# counts 4 per quarter (x 2 = 8 kWh): its first reading at 12:15 shows 4.
OLD = series("E1-EL-MAIN", DAY, [5000 + 10 * i for i in range(48)])  # 00:00 .. 11:45
NEW = series("E1-EL-MAIN", NOON + Q, [4 * (i + 1) for i in range(48)])  # 12:15 .. 24:00
TRUE_DAY_KWH = (5480 - 5000) * 1 + (4 * 48 - 0) * 2


def _at(moment: datetime) -> pl.Expr:
    return pl.lit(moment.astimezone(UTC)).cast(TIME)


def _day(out: dict[str, pl.DataFrame], what: str = "meter_energy") -> pl.DataFrame:
    return out[what].filter((pl.col("window") == "1d") & (pl.col("time") == _at(DAY)))


def test_a_mid_day_replacement_is_not_a_reset_and_the_day_total_is_right(
    registry_factory: Callable[..., Registry],
) -> None:
    reg = registry_factory(_replacement(5480, 0))
    assert reg.has_periods and reg.meters.height == 1 and reg.periods.height == 2
    out = aggregate(readings(OLD + NEW), reg, windows=("1h", "1d")).collect()
    day = _day(out)
    assert day.height == 1
    assert day["quantity"][0] == pytest.approx(TRUE_DAY_KWH)
    assert day["completeness"][0] == pytest.approx(1.0)
    assert "reset" not in out["events"]["kind"].cast(pl.String).to_list()
    assert set(out["events"]["meter"].cast(pl.String)) <= {"E1-EL-MAIN"}
    # the hour of the change: the old register's last quarter, and the new one's first
    hour = out["meter_energy"].filter(
        (pl.col("window") == "1h") & (pl.col("time") == _at(local(2025, 6, 2, 11)))
    )
    assert hour["quantity"][0] == pytest.approx(40.0)
    noon = out["meter_energy"].filter((pl.col("window") == "1h") & (pl.col("time") == _at(NOON)))
    assert noon["quantity"][0] == pytest.approx(4 * 4 * 2)
    electricity = _day(out, "energy").filter(pl.col("carrier") == "electricity")
    assert electricity["quantity"][0] == pytest.approx(TRUE_DAY_KWH)


def test_without_periods_the_same_readings_are_a_reset_and_miss_the_truth(
    registry_factory: Callable[..., Registry],
) -> None:
    """What the periods fix: one row for the meter, the drop at noon is a reset, the new
    register's energy gets the old CT ratio, and the old register's last quarter is lost."""
    reg = registry_factory([meter("E1-EL-MAIN", multiplier=1, rollover=99999999)])
    out = aggregate(readings(OLD + NEW), reg, windows=("1d",)).collect()
    assert "reset" in out["events"]["kind"].cast(pl.String).to_list()
    assert _day(out)["quantity"][0] != pytest.approx(TRUE_DAY_KWH)


def test_without_the_edge_readings_the_change_is_a_known_gap(
    registry_factory: Callable[..., Registry],
) -> None:
    """No final or initial reading in the registry: the old register counts up to its last
    reading, the new one from its first; what lies between is unknown (not summed, not
    covered) — but it is still no reset, and each register has its own CT ratio."""
    reg = registry_factory(_replacement("", ""))
    out = aggregate(readings(OLD + NEW), reg, windows=("1d",)).collect()
    day = _day(out)
    assert day["quantity"][0] == pytest.approx((5470 - 5000) + (4 * 48 - 4) * 2)
    assert day["completeness"][0] == pytest.approx(1 - 2 * 15 / (24 * 60))
    assert "reset" not in out["events"]["kind"].cast(pl.String).to_list()


def test_completeness_does_not_count_a_meter_before_it_was_commissioned(
    registry_factory: Callable[..., Registry],
) -> None:
    rows = [
        meter("E1-EL-MAIN", valid_from="2025-06-02T12:00", initial_reading=0),
        meter("E1-NG-MAIN", carrier="natural_gas", unit="m3"),
    ]
    reg = registry_factory(rows)
    data = series("E1-EL-MAIN", NOON + Q, [10.0 * (i + 1) for i in range(48)])
    data += series("E1-NG-MAIN", DAY, [float(i) for i in range(97)])
    out = aggregate(readings(data), reg, windows=("1d",)).collect()
    el = _day(out).filter(pl.col("meter") == "E1-EL-MAIN")
    assert el["completeness"][0] == pytest.approx(1.0)  # all of the time it existed
    assert el["quantity"][0] == pytest.approx(480.0)  # from its initial reading at noon
    enterprise = _day(out, "energy").filter(pl.col("carrier") == "total")
    assert enterprise["completeness"][0] == pytest.approx(1.0)
    # the same meter without valid_from: half a day missing
    plain = registry_factory([meter("E1-EL-MAIN"), rows[1]])
    out = aggregate(readings(data), plain, windows=("1d",)).collect()
    el = _day(out).filter(pl.col("meter") == "E1-EL-MAIN")
    assert el["completeness"][0] < 0.51


def test_readings_outside_every_period_are_left_out(
    registry_factory: Callable[..., Registry],
) -> None:
    """A meter removed at noon that goes on sending (a gateway not reconfigured yet)."""
    reg = registry_factory([meter("E1-EL-MAIN", valid_to="2025-06-02T12:00")])
    data = series("E1-EL-MAIN", DAY, [float(i) for i in range(97)])
    out = aggregate(readings(data), reg, windows=("1d",)).collect()
    assert _day(out)["quantity"][0] == pytest.approx(47.0)  # 00:00 .. 11:45 only


def test_the_same_through_influxdb_and_the_command(
    influx_url: str, database: str, tmp_path: Path
) -> None:
    """Readings in InfluxDB, `greenmon aggregate` with the registry's two rows for the meter:
    the stored day total is the true one."""
    root = tmp_path / "registry"
    write_registry(root, _replacement(5480, 0))
    frame = readings(OLD + NEW).collect()
    lines = [
        f"meter_reading,carrier=electricity,enterprise=E1,meter=E1-EL-MAIN value={v} "
        f"{int(t.timestamp() * 1e9)}"
        for t, v in zip(frame["time"].to_list(), frame["value"].to_list(), strict=True)
    ]
    with support_client(influx_url, database) as client:
        client.write(lines, rp=client.policy("meter_reading"))
        res = subprocess.run(
            [GREENMON, "aggregate", "--registry", str(root), "--influx-url", influx_url,
             "--database", database, "--from", "2025-06-02", "--to", "2025-06-03",
             "--windows", "1d", "--json"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        summary = json.loads(res.stdout)
        stored = client.query(
            'SELECT "quantity", "completeness" FROM "energy" WHERE "carrier" = \'electricity\' '
            "AND \"window\" = '1d' AND time = '2025-06-01T16:00:00Z'"
        )
    assert summary["readings"] == len(lines)
    assert stored.height == 1
    assert stored["quantity"][0] == pytest.approx(TRUE_DAY_KWH)
    assert stored["completeness"][0] == pytest.approx(1.0)
    assert frame.schema["time"] == TIME


@pytest.mark.integration
def test_follow_mode_honours_periods_too(influx_url: str, database: str, tmp_path: Path) -> None:
    """The same day streamed in three-hour steps through `aggregate --follow`'s Follower: the
    replacement is not a reset, the day total is the true one, and a meter commissioned at
    noon is complete for the day."""
    from greenmon.aggregator.follow import Follower
    from greenmon.aggregator.service import default_options
    from greenmon.influx import InfluxClient

    rows = [*_replacement(5480, 0),
            meter("E1-PV", kind="register", role="generation", valid_from="2025-06-02T12:00",
                  initial_reading=0)]  # fmt: skip
    reg = write_registry(tmp_path / "registry", rows)
    pv = series("E1-PV", NOON + Q, [1.0 * (i + 1) for i in range(48)])
    frame = readings(OLD + NEW + pv).collect().sort("time")
    lines = [
        (t, f"meter_reading,carrier=electricity,enterprise=E1,meter={m} value={v} "
            f"{int(t.timestamp() * 1e9)}")
        for m, t, v in frame.iter_rows()
    ]  # fmt: skip
    with InfluxClient(influx_url, database) as client:
        client.ensure_database()
        follower = Follower(client, reg, default_options(), lateness=timedelta(minutes=30))
        clock = DAY + timedelta(hours=3)
        sent = 0
        while sent < len(lines):
            chunk = [line for t, line in lines[sent:] if t < clock]
            client.write(chunk)
            sent += len(chunk)
            follower.poll()
            clock += timedelta(hours=3)
        # a reading the next morning closes the day (the watermark passes its end)
        client.write([f"meter_reading,carrier=electricity,enterprise=E1,meter=E1-PV value=60 "
                      f"{int((DAY + timedelta(days=1, hours=3)).timestamp() * 1e9)}"])  # fmt: skip
        follower.poll()
        day = client.query(
            'SELECT "quantity", "completeness" FROM "meter_energy" WHERE "window" = \'1d\' '
            f'AND time = {int(DAY.timestamp() * 1000)}ms GROUP BY "meter"'
        )
    by_meter = {m: (q, c) for m, q, c in day.select("meter", "quantity", "completeness").rows()}
    assert by_meter["E1-EL-MAIN"][0] == pytest.approx(TRUE_DAY_KWH)
    assert by_meter["E1-EL-MAIN"][1] == pytest.approx(1.0)
    assert by_meter["E1-PV"] == (pytest.approx(48.0), pytest.approx(1.0))
