"""`greenmon demo`: the whole chain, end to end, on the local services, in a few minutes.

Owns the orchestration only — every step is the real component: the local Mosquitto and
influxd, a seeded simulated fleet, its gateways publishing a simulated week with faults over
MQTT (QoS 1), the `greenmon ingest` process, the `greenmon aggregate --follow` process
running while the data streams, then one closing batch pass over the whole range (follow mode
leaves the last `lateness` of data open until newer data comes; the batch pass closes it
and writes month-to-date intensity). The summary is read back from InfluxDB and compared with
the simulators' ground truth.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from greenmon.aggregator.energy import ROLE_SIGN
from greenmon.config import Settings
from greenmon.errors import GreenmonError
from greenmon.influx import InfluxClient
from greenmon.retention import policies_of

Say = Callable[[str], None]
Progress = Callable[[str, int, int], None]


class DemoError(GreenmonError):
    """A step of the demo failed (the message says which, and where its log is)."""


@dataclass(frozen=True)
class DemoOptions:
    enterprises: int = 30
    days: float = 7.0
    seed: int = 7
    faults: str = "demo"
    start: str = "2025-06-02"
    database: str = "greenmon_demo"
    lateness: str = "30m"
    poll_s: float = 2.0


def fleet_for_demo(directory: Path, opts: DemoOptions | None = None) -> Any:
    """Write the demo's fleet (registry and simulation files) into `directory`; return it.
    docs/gateways.md's examples name its enterprises, meters and gateways."""
    from greenmon.simulators.fleet import generate_fleet, write_fleet

    opts = opts or DemoOptions()
    fleet = generate_fleet(opts.enterprises, opts.seed)
    write_fleet(fleet, directory, overwrite=True)
    return fleet


def _clean_session(mqtt_url: str, client_id: str) -> None:
    """Drop the broker's persistent session of `client_id` (what a previous demo left)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    host, port = mqtt_url.split("//")[1].rsplit(":", 1)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    with contextlib.suppress(OSError):
        client.connect(host, int(port), clean_start=True)
        client.loop_start()
        time.sleep(0.3)
        client.disconnect()
        client.loop_stop()


def run_demo(
    settings: Settings, opts: DemoOptions, say: Say, progress: Progress | None = None
) -> dict[str, Any]:
    from greenmon.aggregator.reference import ReferenceChoice, load_references, meter_factors
    from greenmon.aggregator.service import (
        default_options,
        local_day_start,
        local_month_start,
        next_day,
        run_range,
    )
    from greenmon.deploy.local import LocalServices
    from greenmon.ingest.process import IngestorProcess
    from greenmon.registry import load_registry
    from greenmon.simulators.faults import parse_faults
    from greenmon.simulators.gateways import PublishOptions, publish
    from greenmon.simulators.runner import RunSpec, parse_start, plan_run
    from greenmon.simulators.truth import malformed_frame, truth_frame, write_truth

    started = time.perf_counter()
    work = settings.runtime_dir.resolve() / "demo"
    work.mkdir(parents=True, exist_ok=True)
    say("starting the local Mosquitto and InfluxDB")
    services = LocalServices(settings.runtime_dir)
    services.up()

    say(f"generating a fleet of {opts.enterprises} Nantong enterprises (seed {opts.seed})")
    fleet_dir = work / "fleet"
    fleet = fleet_for_demo(fleet_dir, opts)
    registry = load_registry(fleet_dir)
    spec = RunSpec(
        start_ms=parse_start(opts.start, 900),
        days=opts.days,
        step_s=900,
        seed=opts.seed,
        faults=parse_faults(opts.faults),
    )
    planned = plan_run(fleet, spec)
    plan = planned.plan
    truth = truth_frame(fleet, plan)
    write_truth(truth, malformed_frame(plan), work / "truth.parquet")
    expected_written = int(plan.readings.get_column("publishes").sum())
    say(
        f"planned {plan.messages.height:,} MQTT messages ({expected_written:,} readings) over "
        f"{opts.days:g} simulated days, faults: "
        + ", ".join(f"{k} {v}" for k, v in sorted(plan.counts.items()) if v)
    )

    client = InfluxClient(services.influx_url, opts.database, policies=policies_of(settings))
    client.drop_database()
    client.ensure_database()
    client_id = f"greenmon-demo-{opts.database}"
    _clean_session(services.mqtt_url, client_id)
    # Simulated history: its raw readings are kept for good, however old they get.
    history = {"GREENMON_RETENTION__RAW_DAYS": "0"}
    ingestor = IngestorProcess(services, fleet_dir, opts.database, client_id, work, env=history)
    follower: subprocess.Popen[bytes] | None = None
    follow_log = (work / "aggregate-follow.log").open("wb")
    try:
        ingestor.wait_connected()
        time.sleep(0.5)  # SUBSCRIBE follows CONNACK
        follower = subprocess.Popen(
            [
                sys.executable, "-m", "greenmon.cli", "aggregate", "--follow",
                "--registry", str(fleet_dir), "--influx-url", services.influx_url,
                "--database", opts.database, "--runtime-dir", str(settings.runtime_dir),
                "--poll-seconds", str(opts.poll_s), "--lateness", opts.lateness, "--json",
            ],
            stdout=follow_log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **history},
        )  # fmt: skip
        say("streaming through MQTT (QoS 1) while the ingestor and aggregate --follow run")
        total = plan.messages.height
        sent = [0]

        def advance(n: int) -> None:
            sent[0] += n
            if progress:
                progress("publishing", sent[0], total)

        result = publish(plan.messages, PublishOptions(mqtt_url=services.mqtt_url), advance)
        deadline = time.monotonic() + 300
        while (written := ingestor.written()) < expected_written:
            if progress:
                progress("ingesting", written, expected_written)
            if time.monotonic() > deadline:
                raise DemoError(
                    f"the ingestor wrote {written:,} of {expected_written:,} readings in 5 "
                    f"minutes; see {ingestor.log_path}"
                )
            time.sleep(0.2)
        if progress:
            progress("ingesting", expected_written, expected_written)
        time.sleep(opts.poll_s * 2)  # let follow mode see the last of the data once
    finally:
        if follower is not None:
            follower.send_signal(signal.SIGTERM)
            try:
                follower.wait(60)
            except subprocess.TimeoutExpired:
                follower.kill()
        follow_log.close()
        ingest_summary = ingestor.stop()
        _clean_session(services.mqtt_url, client_id)
    follow_text = (work / "aggregate-follow.log").read_text(errors="replace")
    follow_summary: dict[str, Any] = {}
    with contextlib.suppress(ValueError):
        follow_summary = json.loads(follow_text[follow_text.find("{") :])

    tz = settings.timezone
    run_start = datetime.fromtimestamp(spec.start_ms / 1000, UTC)
    run_end = run_start + timedelta(days=opts.days)
    lo, hi = local_day_start(run_start, tz), next_day(run_end - timedelta(seconds=1), tz)
    say("closing batch pass over the whole range (and month-to-date intensity)")
    refs = load_references()
    aopts = default_options(tz=tz, references=refs)
    final = run_range(client, registry, lo, hi, aopts)
    month = run_range(
        client,
        registry,
        local_month_start(lo, tz),
        hi,
        aopts,
        partial=True,
        windows=("1mo",),
    )

    summary = _summarize(
        client, registry, truth, plan, final, month, refs, meter_factors, ReferenceChoice(),
        opts, ingest_summary, follow_summary, result.published, lo, hi, tz,
    )  # fmt: skip
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["work_dir"] = str(work)
    client.close()
    return summary


def _summarize(
    client: InfluxClient,
    registry: Any,
    truth: pl.DataFrame,
    plan: Any,
    final: Any,
    month: Any,
    refs: Any,
    meter_factors: Any,
    choice: Any,
    opts: DemoOptions,
    ingest: dict[str, Any],
    follow: dict[str, Any],
    published: int,
    lo: datetime,
    hi: datetime,
    tz: str,
) -> dict[str, Any]:
    # Energy by county and industry: read back what was written (1d windows, carrier=total).
    energy = client.query(
        'SELECT "kgce", "kgco2" FROM "energy" WHERE "window" = \'1d\' AND '
        f"\"carrier\" = 'total' AND time >= {int(lo.timestamp() * 1000)}ms AND "
        f'time < {int(hi.timestamp() * 1000)}ms GROUP BY "enterprise", "county", "industry"',
        epoch="ms",
    )
    by = {}
    for key in ("county", "industry"):
        by[key] = (
            energy.group_by(key)
            .agg(
                (pl.col("kgce").sum() / 1000).round(3).alias("tce"),
                pl.col("kgco2").sum().round(0).alias("kgco2"),
                pl.col("enterprise").n_unique().alias("enterprises"),
            )
            .sort("tce", descending=True)
            .to_dicts()
        )
    city_kgce = float(energy.get_column("kgce").sum()) if energy.height else 0.0

    # Truth: the same roles and coefficients, applied to the true consumption.
    years = sorted({lo.year, hi.year})
    factors = meter_factors(registry.meters, refs, years, choice).filter(pl.col("year") == lo.year)
    true_kgce = (
        truth.filter(pl.col("start").is_not_null() & (pl.col("start") < pl.col("end")))
        .filter((pl.col("start") >= lo) & (pl.col("end") <= hi))
        .join(factors.select("meter_id", "kgce_per_unit"), on="meter_id", how="left")
        .select(
            (
                pl.col("quantity")
                * pl.col("kgce_per_unit")
                * pl.col("role").replace_strict(ROLE_SIGN, default=0.0)
            ).sum()
        )
        .item()
    )
    events = final.frames.get("events")
    flagged = (
        {str(k): n for k, n in events.group_by("kind").len().sort("kind").iter_rows()}
        if events is not None and events.height
        else {}
    )

    # Intensity: month-to-date rows, pro-rated to the days the demo covers (a week of energy
    # against a whole month's output would flatter everyone by the same factor).
    intensity = month.frames.get("intensity")
    top: list[dict[str, Any]] = []
    bottom: list[dict[str, Any]] = []
    reference = None
    if intensity is not None and intensity.height:
        days_covered = (hi - lo).total_seconds() / 86400
        first = lo.astimezone(ZoneInfo(tz)).replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        days_in_month = (following - first).days
        scale = days_in_month / min(days_covered, days_in_month)
        ranked = (
            intensity.filter(pl.col("ratio_to_reference").is_not_null())
            .with_columns(
                (pl.col("tce_per_10k_yuan_value_added") * scale).alias("tce_per_10k_yuan_va"),
                (pl.col("ratio_to_reference") * scale).alias("ratio"),
            )
            .select(
                "enterprise", "county", "industry", "tce",
                pl.col("tce_per_10k_yuan_va").round(4),
                pl.col("reference_tce_per_10k_yuan").round(4).alias("reference"),
                pl.col("ratio").round(3),
            )
            .sort("ratio")
        )  # fmt: skip
        bottom = ranked.head(10).to_dicts()  # least intensive
        top = ranked.tail(10).reverse().to_dicts()  # most intensive
        if "reference" in intensity.columns and intensity.height:
            reference = intensity.get_column("reference")[0]
    return {
        "enterprises": registry.enterprises.height,
        "meters": registry.meters.height,
        "range": {"from": lo.isoformat(), "to": hi.isoformat()},
        "messages_published": published,
        "ingest": {
            "readings_written": ingest.get("written"),
            "rejected_by_reason": ingest.get("rejected_by_reason", {}),
            "malformed_injected": int(plan.malformed.height),
        },
        "aggregate_follow": follow,
        "energy_by_county": by["county"],
        "energy_by_industry": by["industry"],
        "most_intensive": top,
        "least_intensive": bottom,
        "intensity_reference": reference,
        "city_total": {
            "tce": round(city_kgce / 1000, 3),
            "truth_tce": round(true_kgce / 1000, 3),
            "difference_pct": round(100 * (city_kgce - true_kgce) / true_kgce, 4)
            if true_kgce
            else None,
        },
        "flagged_readings": flagged,
    }
