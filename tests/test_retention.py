"""Retention: the layout (raw readings in `raw`, results in the default policy), applying it
(`greenmon db init`, `services up`), refusing readings InfluxDB would drop, and the results
outliving the raw readings they were computed from."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenmon.config import ConfigError, load_settings
from greenmon.deploy.local import LocalServices
from greenmon.influx import InfluxClient
from greenmon.ingest.codec import DecodeLimits, RejectReason, decode, encode_batch, topic_for
from greenmon.ingest.fastpath import SeriesTable, format_lines, plain_readings
from greenmon.registry import load_registry
from greenmon.retention import (
    Policy,
    RetentionReport,
    complete_since,
    ensure_retention,
    parse_duration,
    policies_of,
    raw_max_age_s,
    show_policies,
)
from tests.ingest.support import BASE_MS, GREENMON, REGISTRY

DAY_S = 86_400


# -- settings and pure parts ---------------------------------------------------------------


def test_the_default_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GREENMON_RETENTION__RAW_DAYS", raising=False)
    s = load_settings()
    assert (s.retention.raw_policy, s.retention.raw_days, s.retention.results_days) == (
        "raw",
        1096,
        0,
    )
    assert policies_of(s) == {"meter_reading": "raw"}
    assert raw_max_age_s(s) == 1096 * DAY_S - 3600
    c = InfluxClient.from_settings(load_settings(influx_url="http://127.0.0.1:1"))
    assert c.source("meter_reading") == '"raw"."meter_reading"'
    assert c.source("energy") == '"energy"' and c.policy("energy") is None
    flat = load_settings(influx_url="http://127.0.0.1:1", retention={"raw_policy": ""})
    assert InfluxClient.from_settings(flat).source("meter_reading") == '"meter_reading"'


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("raw_days", 30, "at least 92"),
        ("results_days", 100, "at least 366"),
        ("raw_policy", "no spaces", "pattern"),
    ],
)
def test_bad_retention_settings_name_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"retention\.{key}: .*{message}"):
        load_settings(retention={key: value})


def test_complete_since_follows_the_policy_influxdb_has() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    s = load_settings(retention={"raw_days": 400})
    assert complete_since(None, s, now) == now - timedelta(days=399)
    as_set = RetentionReport(
        "gm", policies=[Policy("autogen", 0, True), Policy("raw", 3600, False)]
    )
    assert complete_since(as_set, s, now) == now - timedelta(hours=1) + timedelta(days=1)
    assert complete_since(None, load_settings(retention={"raw_days": 0}), now) is None
    flat = load_settings(retention={"raw_policy": "", "results_days": 400})
    assert complete_since(as_set, flat, now) is None  # raw readings in autogen: forever


def test_durations() -> None:
    assert parse_duration("26304h0m0s") == 1096 * DAY_S
    assert parse_duration("0s") == 0
    assert parse_duration("1w2d3h4m5s") == 9 * DAY_S + 3 * 3600 + 4 * 60 + 5


def test_readings_older_than_kept_are_refused_with_their_own_reason() -> None:
    """InfluxDB drops points older than their policy's duration ("partial write: points beyond
    retention policy"); the ingestor refuses them first, as dead letters (replayable once the
    duration is raised), and fast path and codec agree."""
    registry = load_registry(REGISTRY)
    table = SeriesTable(registry.meter_infos())
    now = BASE_MS + 400 * DAY_S * 1000
    limits = DecodeLimits(max_age_s=100 * DAY_S)
    topic = topic_for("E0001", "gw-01")
    old_ts, fresh_ts = now - 101 * DAY_S * 1000, now - 99 * DAY_S * 1000
    mixed = encode_batch("gw-01", fresh_ts, [
        {"meter": "E0001-EL-MAIN", "value": 1.0},  # the message's ts: fresh
        {"meter": "E0001-NG-MAIN", "value": 2.0, "ts": old_ts},
    ])  # fmt: skip
    out = decode(topic, mixed, registry, now, limits)
    assert [r.meter for r in out.readings] == ["E0001-EL-MAIN"]
    assert [(r.reason, r.index) for r in out.rejections] == [(RejectReason.BEYOND_RETENTION, 1)]
    assert plain_readings(topic, mixed, table, now, limits) is None  # declines: codec says why
    all_old = encode_batch("gw-01", old_ts, [{"meter": "E0001-EL-MAIN", "value": 1.0}])
    assert plain_readings(topic, all_old, table, now, limits) is None
    assert decode(topic, all_old, registry, now, limits).rejections[0].reason == "beyond_retention"
    fresh = encode_batch("gw-01", fresh_ts, [{"meter": "E0001-EL-MAIN", "value": 1.0}])
    plain = plain_readings(topic, fresh, table, now, limits)
    assert plain is not None
    assert format_lines(plain) == format_lines(
        table.columns(decode(topic, fresh, registry, now, limits).readings)
    )
    assert not decode(topic, all_old, registry, now, DecodeLimits()).rejections  # no limit


# -- applying it to InfluxDB ---------------------------------------------------------------


def _policies(client: InfluxClient) -> dict[str, tuple[int, bool]]:
    return {p.name: (p.duration_s, p.default) for p in show_policies(client)}


@pytest.mark.integration
def test_ensure_creates_then_changes_only_when_asked(influx_url: str, database: str) -> None:
    s = load_settings(influx_url=influx_url, database=database, retention={"raw_days": 400})
    with InfluxClient.from_settings(s) as c:
        first = ensure_retention(c, s, alter=False)
        assert first.supported and first.actions == ["created policy raw (400 days)"]
        assert _policies(c) == {"autogen": (0, True), "raw": (400 * DAY_S, False)}
        assert ensure_retention(c, s, alter=True).actions == []  # idempotent
        longer = load_settings(influx_url=influx_url, database=database,
                               retention={"raw_days": 800, "results_days": 3650})  # fmt: skip
        quiet = ensure_retention(c, longer, alter=False)
        assert quiet.actions == [] and len(quiet.pending) == 2  # noted, not done
        done = ensure_retention(c, longer, alter=True)
        assert done.actions == ["policy raw: 400 days -> 800 days"]  # longer: applied
        # forever -> 3650 days shortens: refused, and says what it would delete
        assert len(done.pending) == 1 and "autogen" in done.pending[0]
        assert "would be deleted" in done.pending[0]
        assert _policies(c) == {"autogen": (0, True), "raw": (800 * DAY_S, False)}
        done = ensure_retention(c, longer, alter=True, allow_shorten=True)
        assert done.actions == ["policy autogen: forever -> 3650 days"]
        back = ensure_retention(c, s, alter=True)  # 400 days and forever again
        assert back.actions == ["policy autogen: 3650 days -> forever"]
        assert len(back.pending) == 1 and "policy raw" in back.pending[0]
        assert _policies(c)["raw"] == (800 * DAY_S, False)
        shortened = ensure_retention(c, s, alter=True, allow_shorten=True)
        assert shortened.actions == ["policy raw: 800 days -> 400 days"]
        c.drop_database()


def _cli(*args: str) -> tuple[int, Any]:
    res = subprocess.run([GREENMON, *args, "--json"], capture_output=True, text=True, check=False)
    try:
        return res.returncode, json.loads(res.stdout)
    except ValueError:
        return res.returncode, res.stderr


@pytest.mark.integration
def test_db_init_command(influx_url: str, database: str) -> None:
    conn = ("--influx-url", influx_url, "--database", database)
    rc, out = _cli("db", "init", *conn)
    assert rc == 0 and out["supported"]
    assert out["actions"] == ["created policy raw (forever)"]  # the suite keeps raw for good
    assert out["holds"] == {"meter_reading": "raw"}
    rc, out = _cli("db", "init", *conn, "--raw-days", "1096")
    assert rc == 1 and out["actions"] == []  # forever -> 1096 days shortens: refused...
    assert "would be deleted" in out["pending"][0] and "--allow-shorten" in out["pending"][0]
    rc, out = _cli("db", "init", *conn, "--raw-days", "1096", "--allow-shorten")
    assert rc == 0 and out["actions"] == ["policy raw: forever -> 1096 days"]  # ... unless asked
    rc, out = _cli("db", "init", *conn, "--raw-days", "2000")
    assert rc == 0 and out["actions"] == ["policy raw: 1096 days -> 2000 days"]  # longer: fine
    rc, err = _cli("db", "init", *conn, "--raw-days", "30")
    assert rc == 2 and "--raw-days: must be 0 (forever) or at least 92" in " ".join(err.split())
    InfluxClient(influx_url, database).drop_database()


@pytest.mark.integration
def test_services_up_creates_the_policies(tmp_path: Path) -> None:
    rt = ("--runtime-dir", str(tmp_path / "rt"))
    try:
        rc, out = _cli("services", "up", *rt, "--database", "gm_layout")
        assert rc == 0, out
        assert out["retention"]["holds"] == {"meter_reading": "raw"}
        assert {p["name"] for p in out["retention"]["policies"]} == {"autogen", "raw"}
    finally:
        subprocess.run([GREENMON, "services", "down", *rt], check=False, capture_output=True)


# -- results outlive the raw readings ------------------------------------------------------


def _results(client: InfluxClient) -> dict[str, pl.DataFrame]:
    out = {}
    for name, query in {
        "energy": 'SELECT * FROM "energy" WHERE "window" = \'1d\' OR "window" = \'1mo\' GROUP BY *',
        "meter_energy": 'SELECT * FROM "meter_energy" WHERE "window" = \'1d\' '
        "OR \"window\" = '1mo' GROUP BY *",
        "intensity": 'SELECT * FROM "intensity" GROUP BY *',
    }.items():
        df = client.query(query)
        out[name] = df.sort(sorted(df.columns)).select(sorted(df.columns))
    return out


@pytest.mark.integration
def test_daily_and_monthly_results_survive_the_expiry_of_raw_readings(tmp_path: Path) -> None:
    """A month of simulated readings is aggregated; then InfluxDB's own retention service
    deletes every raw reading (the policy is shortened to its minimum, which is what years
    passing does to 2025 data). The daily and monthly points are all still there, unchanged,
    and neither a re-run over the expired range nor follow mode touches them."""
    from greenmon.simulators.faults import parse_faults
    from greenmon.simulators.fleet import generate_fleet, write_fleet
    from greenmon.simulators.runner import RunSpec, parse_start, plan_run

    svc = LocalServices(tmp_path / "svc", retention_check="1s")
    svc.runtime_dir.mkdir(parents=True)
    svc.start("influxd")
    try:
        fleet_dir = tmp_path / "fleet"
        fleet = generate_fleet(3, 11)
        write_fleet(fleet, fleet_dir)
        registry = load_registry(fleet_dir)
        settings = load_settings(influx_url=svc.influx_url, database="gm")
        client = InfluxClient.from_settings(settings)
        ensure_retention(client, settings, alter=True)
        plan = plan_run(fleet, RunSpec(parse_start("2025-06-01", 900), 31, 900, 11,
                                       parse_faults("none"))).plan  # fmt: skip
        table = SeriesTable(registry.meter_infos())
        rp = client.policy("meter_reading")
        assert rp == "raw"
        readings = []
        for topic, payload in plan.messages.select("topic", "payload").iter_rows():
            out = decode(topic, payload.encode(), registry, 1_900_000_000_000)
            assert not out.rejections
            readings += out.readings
        n = 0
        for i in range(0, len(readings), 5000):
            part = readings[i : i + 5000]
            n += client.write_body(format_lines(table.columns(part)), len(part), rp=rp)
        raw = f'SELECT count("value") FROM {client.source("meter_reading")}'
        assert int(client.query(raw)["count"][0]) == n > 20_000
        conn = ("--influx-url", svc.influx_url, "--database", "gm", "--registry", str(fleet_dir))
        rc, first = _cli("aggregate", *conn, "--from", "2025-06-01", "--to", "2025-07-01")
        assert rc == 0, first
        before = _results(client)
        assert before["energy"].height > 0 and before["intensity"].height > 0
        days = before["energy"].filter(pl.col("window") == "1d")["time"].unique().len()
        months = before["energy"].filter(pl.col("window") == "1mo")["time"].unique().len()
        assert (days, months) == (30, 1)
        judge_alerts = ("alerts", "check", *conn, "--as-of", "2025-06-30", "--dry-run",
                        "--runtime-dir", str(tmp_path / "run"))  # fmt: skip
        rc, alerts_before = _cli(*judge_alerts)
        assert rc == 0, alerts_before
        assert {o["scope"] for o in alerts_before} == {"enterprise", "county", "city"}
        judge_screen = ("screen", *conn, "--year", "2025", "--as-of", "2025-07-01")
        rc, screen_before = _cli(*judge_screen)
        assert rc == 0, screen_before
        assert len(screen_before["candidates"]) == 3

        # Years pass: InfluxDB deletes the raw readings (and only them).
        client.query_json('ALTER RETENTION POLICY "raw" ON "gm" DURATION 1h SHARD DURATION 1h')
        deadline = time.monotonic() + 60
        while client.query(raw).height and int(client.query(raw)["count"][0]) > 0:
            assert time.monotonic() < deadline, "influxd did not expire the raw readings"
            time.sleep(0.5)
        assert_results_equal(before, _results(client))

        # Recomputing the expired range is refused (it would write sums of what is left),
        # and so is recomputing "everything": there is nothing left.
        rc, again = _cli("aggregate", *conn, "--from", "2025-06-01", "--to", "2025-07-01")
        assert rc == 2 and "raw readings are complete only from" in " ".join(again.split())
        rc, again = _cli("aggregate", *conn)
        assert rc == 2 and "no readings" in again
        assert_results_equal(before, _results(client))
        # Follow mode over a database whose raw readings are gone: runs, changes nothing.
        follow = subprocess.Popen([GREENMON, "aggregate", *conn, "--follow", "--poll-seconds",
                                   "0.3", "--json"], stdout=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(4)
        follow.terminate()
        out, _ = follow.communicate(timeout=60)
        assert follow.returncode == 0 and json.loads(out)["rounds"] >= 1
        assert_results_equal(before, _results(client))
        # Alerts and screening read the daily and monthly points: they judge the same
        # (the gateway-silence rule, the one reader of raw readings, says it cannot judge).
        rc, alerts_after = _cli(*judge_alerts)
        assert rc == 0, alerts_after
        assert alerts_after == alerts_before
        rc, screen_after = _cli(*judge_screen)
        assert rc == 0, screen_after
        timing = "seconds"  # how long each step took: the one thing allowed to differ
        assert {k: v for k, v in screen_after.items() if k != timing} == {
            k: v for k, v in screen_before.items() if k != timing
        }
        silent = subprocess.run([GREENMON, *judge_alerts, "--json"], capture_output=True, text=True)
        assert "gateway_silent not judged" in " ".join(silent.stderr.split())
        client.close()
    finally:
        svc.stop("influxd")


def assert_results_equal(before: dict[str, pl.DataFrame], after: dict[str, pl.DataFrame]) -> None:
    for name, frame in before.items():
        assert_frame_equal(after[name], frame, check_row_order=True)
