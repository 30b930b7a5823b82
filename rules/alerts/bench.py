"""`greenmon bench alerts`: judging a city's year, against reading its daily rows.

The speed goal of the alerts: evaluating 1,000 enterprises as of the last day of a year of
daily data in at most 5 s, in at most 500 MB. The benchmark builds that case on its own local
services and measures, in one run:

- **read**: the query that fetches the year's daily ``energy`` rows (the baseline: the least
  any evaluation has to do);
- **evaluate**: one whole evaluation as ``alerts check`` does it — read the inputs (daily
  rows, the judged day's meter completeness, the newest reading per meter), judge every
  enterprise, county and the city, step the lifecycle, record states, transitions and the
  outbox in SQLite (fresh state: the first evaluation records the most) — split into its
  parts, median of ``--rounds``;
- **command**: ``greenmon alerts check --json`` as a user runs it, in a new process (start-up,
  imports, delivering to InfluxDB and MQTT included): its wall time and its peak resident set
  size (the 500 MB goal).

The case: a simulated fleet (`greenmon.simulators.fleet`, the given seed) as registry; for
each enterprise a year of daily double-control consumption around its designed annual figure
(season, weekly rhythm, noise; a few spike days), written as ``energy`` points; every meter's
completeness on the last day (a few below 90%) as ``meter_energy`` points; a last reading per
meter shortly before the moment (a few meters silent) as ``meter_reading`` points.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import typer

__all__ = ["register_bench", "run_bench"]

_TZ = "Asia/Shanghai"
_TIME = pl.Datetime("ms", "UTC")


def _daily_frame(fleet_dir: Path, year: int, days: int, seed: int) -> pl.DataFrame:
    """``energy`` rows (window 1d, carrier total) for `days` local days of `year`."""
    enterprises = pl.read_csv(fleet_dir / "enterprises.csv", infer_schema=False).select(
        "enterprise_id", "county", "industry"
    )
    sim = pl.read_csv(fleet_dir / "simulation_enterprises.csv").select(
        "enterprise_id", pl.col("designed_tce").cast(pl.Float64)
    )
    ents = enterprises.join(sim, on="enterprise_id")
    n = ents.height
    rng = np.random.default_rng(seed)
    first = date(year, 1, 1)
    day_index = np.arange(days)
    season = 1 + 0.15 * np.cos(2 * np.pi * (day_index - 200) / 365)  # summer peak
    weekday = np.array([(first + timedelta(days=int(d))).weekday() for d in day_index])
    rhythm = np.where(weekday == 6, 0.8, 1.0)
    noise = rng.lognormal(0.0, 0.08, size=(n, days))
    kgce = (
        ents.get_column("designed_tce").to_numpy()[:, None]
        * 1000
        / 365
        * (season * rhythm)[None, :]
        * noise
    )
    spikes = rng.random((n, days)) < 0.002
    kgce = np.where(spikes, kgce * 3.0, kgce)
    completeness = np.where(rng.random((n, days)) < 0.01, 0.85, 1.0)
    zone = ZoneInfo(_TZ)
    starts = np.array(
        [
            int(datetime(year, 1, 1, tzinfo=zone).timestamp() * 1000) + int(d) * 86_400_000
            for d in day_index
        ],
        dtype=np.int64,
    )
    return pl.DataFrame(
        {
            "enterprise": np.repeat(ents.get_column("enterprise_id").to_numpy(), days),
            "county": np.repeat(ents.get_column("county").to_numpy(), days),
            "industry": np.repeat(ents.get_column("industry").to_numpy(), days),
            "time": np.tile(starts, n),
            "kgce": kgce.ravel(),
            "double_control_kgce": (kgce * 0.97).ravel(),
            "completeness": completeness.ravel(),
        }
    ).with_columns(
        pl.col("time").cast(_TIME),
        pl.lit("total").alias("carrier"),
        pl.lit("1d").alias("window"),
    )


def build(
    folder: Path,
    client: Any,
    settings: Any,
    enterprises: int,
    year: int,
    days: int,
    seed: int,
    as_of: datetime,
) -> dict[str, int]:
    """Write the fleet into `folder` and the case into InfluxDB; returns the point counts."""
    from greenmon.aggregator.store import to_lines, write_frame
    from greenmon.registry import load_registry
    from greenmon.retention import ensure_quietly
    from greenmon.simulators.fleet import generate_fleet, write_fleet

    write_fleet(generate_fleet(enterprises, seed, year=year), folder)
    registry = load_registry(folder)
    client.ensure_database()
    daily = _daily_frame(folder, year, days, seed)
    written = {"energy": write_frame(client, "energy", daily)}
    # and the monthly windows the aggregator writes beside them (a month = the sum of its days)
    monthly = (
        daily.with_columns(
            pl.col("time").dt.convert_time_zone(_TZ).dt.month_start().alias("month"),
            pl.col("time").dt.convert_time_zone(_TZ).dt.month_end().dt.day().alias("dim"),
        )
        .group_by("enterprise", "county", "industry", "month")
        .agg(
            pl.col("kgce").sum(),
            pl.col("double_control_kgce").sum(),
            (pl.col("completeness").sum() / pl.col("dim").first()).alias("completeness"),
        )
        .with_columns(
            pl.col("month").dt.convert_time_zone("UTC").alias("time"),
            pl.lit("total").alias("carrier"),
            pl.lit("1mo").alias("window"),
        )
    )
    written["energy"] += write_frame(client, "energy", monthly)
    rng = np.random.default_rng(seed + 1)
    meters = registry.meters.select(
        pl.col("meter_id").alias("meter"),
        pl.col("enterprise_id").alias("enterprise"),
        "carrier",
        "role",
    )
    last_day = (as_of.astimezone(ZoneInfo(_TZ)).date()) - timedelta(days=1)
    start = datetime(last_day.year, last_day.month, last_day.day, tzinfo=ZoneInfo(_TZ))
    m = meters.height
    meter_days = meters.with_columns(
        pl.lit(start).cast(_TIME).alias("time"),
        pl.lit("1d").alias("window"),
        pl.Series("completeness", np.where(rng.random(m) < 0.01, 0.8, 1.0)),
        pl.lit(0.0).alias("quantity"),
    )
    written["meter_energy"] = write_frame(client, "meter_energy", meter_days)
    silent = rng.random(m) < 0.005
    ago_s = np.where(silent, 3 * 3600, 300)
    readings = meters.with_columns(
        (pl.lit(as_of).cast(_TIME) - pl.duration(seconds=pl.lit(pl.Series(ago_s)))).alias("time"),
        pl.lit(1.0).alias("value"),
    )
    # raw readings live in their own retention policy (`greenmon db init` makes it)
    ensure_quietly(client, settings)
    lines = to_lines(readings, "meter_reading", ["enterprise", "meter", "carrier"], ["value"])
    written["meter_reading"] = client.write(
        lines.to_list(), precision="ms", rp=client.policy("meter_reading")
    )
    return written


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def run_bench(
    enterprises: int = 1000,
    days: int = 365,
    year: int = 2025,
    seed: int = 7,
    rounds: int = 3,
    say: Any = None,
) -> dict[str, Any]:
    from greenmon.config import Settings
    from greenmon.deploy.local import LocalServices
    from greenmon.influx import InfluxClient
    from greenmon.registry import load_registry
    from greenmon.rules.alerts.inputs import read_daily
    from greenmon.rules.alerts.rulefile import load_alert_rules
    from greenmon.rules.alerts.service import judge, make_sinks, read_inputs, record
    from greenmon.rules.alerts.store import AlertStore

    say = say or (lambda _m: None)
    zone = ZoneInfo(_TZ)
    as_of = datetime(year, 12, 31, 23, 0, tzinfo=zone)  # the last day of the year
    with tempfile.TemporaryDirectory(prefix="greenmon-bench-alerts-") as tmp:
        root = Path(tmp)
        svc = LocalServices(root / "run")
        say("starting local services")
        svc.up()
        try:
            settings = Settings(
                influx_url=svc.influx_url,
                mqtt_url=svc.mqtt_url,
                database="bench_alerts",
                registry=root / "fleet",
                runtime_dir=root / "run",
            )
            client = InfluxClient.from_settings(settings, timeout=120)
            say(f"writing {enterprises} enterprises x {days} days")
            written = build(root / "fleet", client, settings, enterprises, year, days, seed, as_of)
            registry = load_registry(root / "fleet")
            rules = load_alert_rules()
            sinks, _ = make_sinks(settings)
            figures: dict[str, list[float]] = {
                k: [] for k in ("read", "inputs", "judge", "record", "evaluate")
            }
            rows = 0
            for i in range(rounds):
                say(f"round {i + 1}/{rounds}")
                t0 = time.perf_counter()
                daily = read_daily(client, date(year, 1, 1), date(year, 12, 31), _TZ)
                figures["read"].append(time.perf_counter() - t0)
                rows = daily.height
                with AlertStore(root / f"state-{i}.sqlite") as store:
                    t0 = time.perf_counter()
                    inputs = read_inputs(client, rules.rules, as_of, _TZ)
                    t1 = time.perf_counter()
                    judgement = judge(inputs, registry, rules.rules, as_of, _TZ)
                    t2 = time.perf_counter()
                    outcome = record(judgement, registry, rules, store, settings, sinks=sinks)
                    t3 = time.perf_counter()
                figures["inputs"].append(t1 - t0)
                figures["judge"].append(t2 - t1)
                figures["record"].append(t3 - t2)
                figures["evaluate"].append(t3 - t0)
            client.close()
            levels = {
                lv: sum(o["level"] == lv for o in outcome.objects)
                for lv in ("red", "yellow", "green")
            }
            say("running `greenmon alerts check` in a new process")
            command = _command(settings, as_of, root)
        finally:
            svc.down()
    med = {k: round(_median(v), 3) for k, v in figures.items()}
    return {
        "enterprises": enterprises,
        "days": days,
        "daily_rows_read": rows,
        "points_written": written,
        "as_of": as_of.isoformat(),
        "rounds": rounds,
        "seconds": med,
        "evaluate_vs_read": round(med["evaluate"] / med["read"], 2) if med["read"] else None,
        "all_rounds": {k: [round(x, 3) for x in v] for k, v in figures.items()},
        "levels": levels,
        "subjects": len(outcome.objects),
        "transitions": len(outcome.transitions),
        "command": command,
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "checks": {
            "evaluate_le_5s": med["evaluate"] <= 5.0,
            "command_peak_rss_le_500mb": command["peak_rss_mb"] <= 500,
        },
    }


# A small launcher process forks and execs the command and reports the child's peak RSS:
# Linux carries a process's peak RSS across exec, so a child forked straight from this (large)
# benchmark process would report this process's peak, not its own.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "greenmon.cli", *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write("\\n@@peak_rss_kb=%d\\n" % usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _command(settings: Any, as_of: datetime, root: Path) -> dict[str, Any]:
    args = [
        "alerts", "check", "--json", "--as-of", as_of.isoformat(),
        "--registry", str(settings.registry), "--influx-url", str(settings.influx_url),
        "--mqtt-url", str(settings.mqtt_url), "--database", settings.database,
        "--runtime-dir", str(root / "cmd"),
    ]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *args], capture_output=True, check=False
    )
    wall = time.perf_counter() - t0
    err = done.stderr.decode(errors="replace")
    if done.returncode != 0:
        raise RuntimeError(f"alerts check failed ({done.returncode}): {err[-2000:]}")
    peak_kb = int(err.rsplit("@@peak_rss_kb=", 1)[1].split()[0])
    return {
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "subjects": len(json.loads(done.stdout)),
        "delivery": [line for line in err.splitlines() if "delivered" in line],
    }


def register_bench(bench: typer.Typer) -> None:
    """Add ``alerts`` to the ``greenmon bench`` group."""

    @bench.command("alerts")
    def alerts_command(
        enterprises: Annotated[int, typer.Option(min=1, max=20_000, help="Enterprises.")] = 1000,
        days: Annotated[
            int, typer.Option(min=30, max=365, help="Days of daily data from 1 January.")
        ] = 365,
        seed: Annotated[int, typer.Option(help="Seed of the fleet and the daily data.")] = 7,
        rounds: Annotated[int, typer.Option(min=1, max=20, help="Rounds; medians shown.")] = 3,
        json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        """Evaluate a city's alerts as of 31 December (1,000 enterprises x a year of daily
        data by default) against the time to read the same daily rows from InfluxDB, and the
        `alerts check` command's wall time and peak memory, on private local services.

        Example: `greenmon bench alerts --enterprises 200 --rounds 1`
        """
        from rich.console import Console
        from rich.table import Table

        err = Console(stderr=True)
        result = run_bench(
            enterprises, days, seed=seed, rounds=rounds, say=None if json_out else err.print
        )
        if json_out:
            typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
        else:
            console = Console()
            s = result["seconds"]
            table = Table(
                title=f"alerts: {result['enterprises']} enterprises x {days} days "
                f"({result['daily_rows_read']:,} daily rows), as of {result['as_of']}, "
                f"median of {rounds}, {result['cores']} cores"
            )
            table.add_column("step")
            table.add_column("s", justify="right")
            table.add_column("x read", justify="right")
            for label, key in (
                ("read the daily rows (baseline)", "read"),
                ("evaluate: read inputs", "inputs"),
                ("evaluate: judge", "judge"),
                ("evaluate: lifecycle + record", "record"),
                ("evaluate, whole", "evaluate"),
            ):
                ratio = s[key] / s["read"] if s["read"] else float("nan")
                table.add_row(label, f"{s[key]:.3f}", f"{ratio:.2f}")
            console.print(table)
            c = result["command"]
            console.print(
                f"`greenmon alerts check --json` in a new process: {c['wall_s']:.2f} s "
                f"wall, peak RSS {c['peak_rss_mb']:.0f} MB, {c['subjects']} subjects"
            )
            lv = result["levels"]
            console.print(
                f"levels: {lv['red']} red, {lv['yellow']} yellow, {lv['green']} green; "
                f"{result['transitions']} transitions on a fresh state"
            )
            load = ", ".join(f"{x:.2f}" for x in result["load_average"])
            console.print(f"load average after the run: {load}")
            for check, ok in result["checks"].items():
                console.print(f"{'PASS' if ok else 'FAIL'}  {check}")
