"""Measure InfluxDB disk use per meter and year, for the sizing notes (README.md beside this).

Run from a clone (`make install` first): ``.venv/bin/python deploy/production/measure_disk.py``.
It starts a private influxd (Debian's 1.x, TSI index as InfluxDB 2.x uses, on a free
127.0.0.1 port in a scratch directory), writes a simulated fleet's raw readings at 15 minutes
for ``--days`` days in the form greenmon's ingestor writes them (``meter_reading``: tags
enterprise, meter, carrier; field value in the meter's registered unit; millisecond time),
lets influxd flush and fully compact every shard, and measures the data directory with ``du``;
then runs the real aggregator over the whole range (``meter_energy`` 1h/1d/1mo, ``energy``
15m/1h/1d/1mo, ``intensity``: the defaults), compacts again and measures again. It prints
bytes per reading and the extrapolation to 1,000 meters and a year, as JSON.

The readings come from the simulator (`greenmon.simulators`), without faults, one run of at
`--chunk-days` days at a time (the simulator holds a run in memory, at most 5 million
readings); each run starts
from the fleet's register values, so a register restarts at the start of each run, as a
replaced meter would: that changes the values' compression a little, not the point count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from greenmon.aggregator.service import default_options, run_range
from greenmon.deploy.local import find_binary, free_port
from greenmon.influx import InfluxClient
from greenmon.registry import load_registry
from greenmon.simulators.faults import parse_faults
from greenmon.simulators.fleet import generate_fleet, write_fleet
from greenmon.simulators.runner import RunSpec, parse_start, plan_run
from greenmon.units import conversion_factor

CONFIG = """reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{dir}/meta"
[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  index-version = "tsi1"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "5s"
  compact-full-write-cold-duration = "10s"
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{http}"
  log-enabled = false
  max-body-size = 0
[continuous_queries]
  enabled = false
[logging]
  level = "warn"
"""


def du_bytes(path: Path) -> int:
    """Bytes of disk `path` really takes (`du -s`, blocks: InfluxDB preallocates its series
    file segments sparsely, so the apparent size overstates it)."""
    out = subprocess.run(
        ["du", "-s", "--block-size=1", str(path)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[0])


def breakdown(root: Path) -> dict[str, int]:
    """Disk bytes by kind of file: TSM data, TSI index, series file, the rest."""
    kinds = {"tsm": 0, "index": 0, "series": 0, "other": 0}
    for dirpath, _, files in os.walk(root / "data"):
        for name in files:
            path = Path(dirpath) / name
            used = path.stat().st_blocks * 512
            if name.endswith(".tsm"):
                kinds["tsm"] += used
            elif "_series" in path.parts:
                kinds["series"] += used
            elif "index" in path.parts:
                kinds["index"] += used
            else:
                kinds["other"] += used
    return kinds


def settle(root: Path, quiet_s: float = 30.0, limit_s: float = 900.0) -> int:
    """Wait until influxd has flushed its WAL and compacted: the data directory's size and
    file list stop changing for `quiet_s`. Returns its size in bytes."""
    deadline = time.monotonic() + limit_s
    last: tuple[int, int] | None = None
    since = time.monotonic()
    while time.monotonic() < deadline:
        files = sum(len(f) for _, _, f in os.walk(root / "data"))
        now = (du_bytes(root / "data"), files)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(2)
    return du_bytes(root / "data")


def reading_lines(readings: pl.DataFrame, meters: pl.DataFrame) -> pl.DataFrame:
    """The ingestor's line protocol for the sent readings (one line per reading, ms time)."""
    m = meters.with_row_index("row").select(
        pl.col("row").cast(pl.Int32), "meter_id", "enterprise_id", "carrier", "unit"
    )
    sent = readings.filter(pl.col("publishes") > 0).join(m, on="row")
    units = sent.select("sent_unit", "unit").unique()
    factors = units.with_columns(
        pl.struct("sent_unit", "unit")
        .map_elements(
            lambda r: conversion_factor(r["sent_unit"] or r["unit"], r["unit"]),
            return_dtype=pl.Float64,
        )
        .alias("factor")
    )
    return sent.join(factors, on=["sent_unit", "unit"], how="left", nulls_equal=True).select(
        pl.format(
            "meter_reading,carrier={},enterprise={},meter={} value={} {}",
            "carrier",
            "enterprise_id",
            "meter_id",
            (pl.col("sent_value") * pl.col("factor")).cast(pl.String),
            "sent_ts_ms",
        ).alias("line")
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--enterprises", type=int, default=104, help="fleet size (~9.6 meters each)")
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--start", default="2025-01-01")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--chunk-days", type=int, default=15, help="days simulated at a time")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="greenmon-disk-"))
    http, rpc = free_port(), free_port()
    (work / "influxdb.conf").write_text(CONFIG.format(dir=work, http=http, rpc=rpc))
    log = (work / "influxd.log").open("wb")
    proc = subprocess.Popen(
        [find_binary("influxd"), "-config", str(work / "influxdb.conf")], stdout=log, stderr=log
    )
    try:
        client = InfluxClient(f"http://127.0.0.1:{http}", "greenmon")
        for _ in range(100):
            try:
                client.ensure_database()
                break
            except Exception:
                time.sleep(0.2)
        fleet = generate_fleet(args.enterprises, args.seed)
        write_fleet(fleet, work / "fleet", overwrite=True)
        registry = load_registry(work / "fleet")
        start_ms = parse_start(args.start, 900)
        readings = 0
        t0 = time.perf_counter()
        done = 0
        while done < args.days:
            days = min(args.chunk_days, args.days - done)
            spec = RunSpec(
                start_ms=start_ms + done * 86_400_000,
                days=days,
                step_s=900,
                seed=args.seed + done,
                faults=parse_faults("none"),
            )
            plan = plan_run(fleet, spec).plan
            lines = reading_lines(plan.readings, fleet.meters).get_column("line")
            for i in range(0, lines.len(), 50_000):
                chunk = lines.slice(i, 50_000)
                client.write_body(("\n".join(chunk.to_list()) + "\n").encode(), chunk.len(), "ms")
            readings += lines.len()
            done += days
            print(f"wrote {done}/{args.days} days, {readings:,} readings", file=sys.stderr)
        write_s = time.perf_counter() - t0
        raw_bytes = settle(work)
        raw_kinds = breakdown(work)
        t1 = time.perf_counter()
        lo = datetime.fromtimestamp(start_ms / 1000, UTC)
        result = run_range(client, registry, lo, lo + timedelta(days=args.days), default_options())
        aggregate_s = time.perf_counter() - t1
        all_bytes = settle(work)
        all_kinds = breakdown(work)
        meters = fleet.meters.height
        year = 365 / args.days
        per_1000 = 1000 / meters
        out = {
            "enterprises": args.enterprises,
            "meters": meters,
            "days": args.days,
            "readings": readings,
            "influxd": subprocess.run(
                [find_binary("influxd"), "version"], capture_output=True, text=True, check=False
            ).stdout.strip(),
            "raw_bytes": raw_bytes,
            "raw_bytes_per_reading": round(raw_bytes / readings, 3),
            "raw_by_kind": raw_kinds,
            "raw_tsm_bytes_per_reading": round(raw_kinds["tsm"] / readings, 3),
            "all_by_kind": all_kinds,
            "results_points": result.written,
            "results_bytes": all_bytes - raw_bytes,
            "total_bytes": all_bytes,
            "per_1000_meters_per_year_mb": {
                "raw": round(raw_bytes * year * per_1000 / 1e6, 1),
                "results": round((all_bytes - raw_bytes) * year * per_1000 / 1e6, 1),
                "total": round(all_bytes * year * per_1000 / 1e6, 1),
            },
            "write_s": round(write_s, 1),
            "aggregate_s": round(aggregate_s, 1),
        }
        print(json.dumps(out, indent=2))
        client.close()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
