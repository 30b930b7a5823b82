"""Backup and restore as docs/operations.md gives them: `influxd backup -portable` from a
running influxd, `influxd restore -portable` into a fresh one, and every point is back, in
every retention policy, with the policies themselves."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenmon.aggregator.service import default_options, run_range
from greenmon.config import load_settings
from greenmon.deploy.local import LocalServices, find_binary
from greenmon.influx import InfluxClient, quote_ident
from greenmon.ingest.codec import decode
from greenmon.ingest.fastpath import SeriesTable, format_lines
from greenmon.ingest.metrics import IngestMetrics
from greenmon.registry import load_registry
from greenmon.retention import ensure_retention, show_policies
from greenmon.simulators.faults import parse_faults
from greenmon.simulators.fleet import generate_fleet, write_fleet
from greenmon.simulators.runner import RunSpec, parse_start, plan_run

pytestmark = pytest.mark.integration

DB = "greenmon"


def _influxd(root: Path) -> LocalServices:
    svc = LocalServices(root)
    svc.runtime_dir.mkdir(parents=True)
    svc.start("influxd")
    return svc


def _everything(client: InfluxClient) -> dict[str, pl.DataFrame]:
    """Every point of the database: per retention policy and measurement, all series."""
    out: dict[str, pl.DataFrame] = {}
    for policy in show_policies(client):
        measurements = client.query_json("SHOW MEASUREMENTS")
        names = [v[0] for r in measurements for s in r.get("series", []) for v in s["values"]]
        for name in names:
            source = f"{quote_ident(policy.name)}.{quote_ident(name)}"
            df = client.query(f"SELECT * FROM {source} GROUP BY *")
            if df.height:
                out[f"{policy.name}.{name}"] = df.select(sorted(df.columns)).sort(
                    sorted(df.columns)
                )
    return out


def test_backup_of_a_running_influxd_restores_every_point(tmp_path: Path) -> None:
    influxd = find_binary("influxd")
    source = _influxd(tmp_path / "source")
    target: LocalServices | None = None
    try:
        # A simulated day, stored as greenmon stores it: raw readings in `raw`, the
        # aggregator's windows and self-monitoring in the default policy.
        fleet_dir = tmp_path / "fleet"
        fleet = generate_fleet(4, 5)
        write_fleet(fleet, fleet_dir)
        registry = load_registry(fleet_dir)
        settings = load_settings(influx_url=source.influx_url, database=DB,
                                 retention={"raw_days": 1096})  # fmt: skip
        client = InfluxClient.from_settings(settings)
        ensure_retention(client, settings, alter=True)
        plan = plan_run(fleet, RunSpec(parse_start("2025-06-02", 900), 1, 900, 5,
                                       parse_faults("none"))).plan  # fmt: skip
        readings = [
            r
            for topic, payload in plan.messages.select("topic", "payload").iter_rows()
            for r in decode(topic, payload.encode(), registry, 1_900_000_000_000).readings
        ]
        # Readings within the policy's 1096 days: shift the simulated day to last week.
        shift = int((datetime.now(UTC) - timedelta(days=7)).timestamp() * 1e9) - min(
            r.ts_ns for r in readings
        )
        readings = [r._replace(ts_ns=r.ts_ns + shift) for r in readings]
        table = SeriesTable(registry.meter_infos())
        client.write_body(format_lines(table.columns(readings)), len(readings),
                          rp=client.policy("meter_reading"))  # fmt: skip
        start = datetime.fromtimestamp(min(r.ts_ns for r in readings) / 1e9, UTC)
        run_range(client, registry, start - timedelta(days=1), start + timedelta(days=2),
                  default_options())  # fmt: skip
        metrics = IngestMetrics()
        metrics.written.inc(len(readings))
        client.write_batch([metrics.stats_line("ingest-1", int(start.timestamp() * 1e9))])
        before = _everything(client)
        assert {"raw.meter_reading", "autogen.energy", "autogen.meter_energy",
                "autogen.greenmon_ingest"} <= set(before)  # fmt: skip
        assert before["raw.meter_reading"].height == len(readings) > 1000
        policies = {(p.name, p.duration_s, p.default) for p in show_policies(client)}
        client.close()

        # docs/operations.md: back up the running influxd ...
        backup = tmp_path / "backup" / "greenmon-2026-12-01"
        res = subprocess.run(
            [influxd, "backup", "-portable", "-db", DB, "-host", source.influx_rpc, str(backup)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert any(backup.glob("*.manifest"))
        # ... restore into a fresh one (the source could be gone by now).
        source.stop("influxd")
        target = _influxd(tmp_path / "target")
        res = subprocess.run(
            [influxd, "restore", "-portable", "-db", DB, "-host", target.influx_rpc, str(backup)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        restored = InfluxClient.from_settings(settings.model_copy(
            update={"influx_url": target.influx_url}))  # fmt: skip
        assert {(p.name, p.duration_s, p.default) for p in show_policies(restored)} == policies
        after = _everything(restored)
        assert set(after) == set(before)
        for key, frame in before.items():
            assert_frame_equal(after[key], frame, check_row_order=True)
        restored.close()
    finally:
        source.stop("influxd")
        if target is not None:
            target.stop("influxd")
