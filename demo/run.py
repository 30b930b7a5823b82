"""`greenmon demo`: the whole chain, end to end, on the local services, in a few minutes.

Owns the orchestration only — every step is the real component:

1. the local Mosquitto and influxd (`greenmon services up`), the demo's database emptied, its
   alert state and the broker's retained alert topics cleared (running it twice works);
2. a fleet built on purpose (`greenmon.demo.fleet`): enterprises that breach their quota,
   green leaders, one gateway that goes silent;
3. the year to date and the year before it (`greenmon.demo.history`): hourly readings of the
   counted meters from the same simulator, written straight into the raw retention policy
   with the one InfluxDB client, then aggregated in one batch pass (daily and monthly
   windows) — so that alerts and screening judge a real year;
4. the live days up to now, streamed through MQTT (QoS 1) with faults while `greenmon
   ingest`, `greenmon aggregate --follow` and `greenmon alerts watch` run as processes; then
   one closing batch pass (follow mode leaves the last `lateness` open until newer data comes);
5. `greenmon alerts check`, `greenmon screen` and `greenmon classify` (with their HTML
   reports) and `greenmon dashboards build`, run as the commands a user would type;
6. the summary (`greenmon.demo.summary`), read back from InfluxDB and the commands' JSON,
   with the city's live-days total and the year to date against the simulators' ground truth.

The services stay up afterwards; the processes the demo started are stopped.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import polars as pl

from greenmon.config import Settings
from greenmon.demo.errors import DemoError
from greenmon.influx import InfluxClient, InfluxError

Say = Callable[[str], None]
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DemoOptions:
    enterprises: int = 60
    days: int = 7
    seed: int = 7
    faults: str = "demo"
    database: str = "greenmon_demo"
    lateness: str = "30m"
    poll_s: float = 2.0
    watch_interval_s: float = 10.0
    #: full: the year before and the year to date; none: the live days only
    history: str = "full"


class _Processes:
    """The long-running commands the demo starts; all stopped (SIGTERM, then kill) at the end."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: dict[str, tuple[subprocess.Popen[bytes], IO[bytes]]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.work / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "greenmon.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.procs[name] = (proc, log)

    def check(self) -> None:
        for name, (proc, _log) in self.procs.items():
            if proc.poll() is not None:
                raise DemoError(
                    f"`greenmon {name}` stopped (exit {proc.returncode}); "
                    f"see {self.work / (name + '.log')}"
                )

    def stop(self, name: str) -> str:
        proc, log = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        return (self.work / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def _command(args: list[str], work: Path, name: str, timeout: float = 300) -> Any:
    """Run `greenmon ARGS --json` as a new process; its JSON output."""
    res = subprocess.run(
        [sys.executable, "-m", "greenmon.cli", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    (work / f"{name}.log").write_text(res.stderr + res.stdout, encoding="utf-8")
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-3:]
        raise DemoError(
            f"`greenmon {' '.join(args[:2])}` failed (exit {res.returncode}): "
            + " / ".join(tail)
            + f"; see {work / (name + '.log')}"
        )
    try:
        return json.loads(res.stdout)
    except ValueError as exc:
        raise DemoError(f"`greenmon {args[0]}` printed no JSON; see {work / name}.log") from exc


def run_demo(
    settings: Settings,
    opts: DemoOptions,
    say: Say,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    from greenmon.aggregator.reference import load_references
    from greenmon.aggregator.service import (
        default_options,
        local_month_start,
        next_day,
        run_range,
    )
    from greenmon.demo.broker import clean_session, clear_retained
    from greenmon.demo.fleet import (
        cast_of,
        double_control_tce,
        fleet_for_demo,
        with_breach_quotas,
    )
    from greenmon.demo.history import history_lines, history_readings
    from greenmon.demo.live import cut_outage, live_window, outage_start
    from greenmon.demo.summary import summarize
    from greenmon.deploy.local import LocalServices
    from greenmon.health import heartbeat_path
    from greenmon.ingest.process import IngestorProcess
    from greenmon.registry import load_registry
    from greenmon.retention import ensure_retention, policies_of
    from greenmon.rules.alerts.store import default_path
    from greenmon.simulators.faults import parse_faults
    from greenmon.simulators.fleet import write_fleet
    from greenmon.simulators.gateways import PublishOptions, publish
    from greenmon.simulators.runner import RunSpec, plan_run
    from greenmon.simulators.truth import malformed_frame, truth_frame, write_truth

    def bar(label: str, done: int, total: int) -> None:
        if progress:
            progress(label, done, total)

    started = time.perf_counter()
    tz = settings.timezone
    now = now or datetime.now(UTC)
    runtime = settings.runtime_dir.resolve()
    work = runtime / "demo"
    work.mkdir(parents=True, exist_ok=True)
    say("starting the local Mosquitto and InfluxDB")
    services = LocalServices(runtime)
    services.up()

    # -- the fleet and the live plan ---------------------------------------------------------
    year = now.astimezone(ZoneInfo(tz)).year
    say(f"building a fleet of {opts.enterprises} Nantong enterprises (seed {opts.seed})")
    fleet_dir = work / "fleet"
    fleet = fleet_for_demo(fleet_dir, opts.enterprises, opts.seed, year)
    registry = load_registry(fleet_dir)
    cast = cast_of(fleet)
    window = live_window(now, opts.days, tz)
    spec = RunSpec(
        start_ms=window.start_ms,
        days=window.days,
        step_s=900,
        seed=opts.seed,
        faults=parse_faults(opts.faults),
    )
    plan = plan_run(fleet, spec).plan
    truth = truth_frame(fleet, plan)
    messages = plan.messages
    outage = None
    if cast.outage_gateway and cast.outage_enterprise:
        messages, outage = cut_outage(
            messages, truth, cast.outage_gateway, cast.outage_enterprise,
            outage_start(window, tz),
        )  # fmt: skip
    write_truth(truth, malformed_frame(plan), work / "truth.parquet")
    expected_written = int(plan.readings.get_column("publishes").sum()) - (
        outage.readings_removed if outage else 0
    )

    # -- a clean slate: database, alert state, broker ----------------------------------------
    client = InfluxClient(services.influx_url, opts.database, policies=policies_of(settings))
    client.drop_database()
    db_settings = settings.model_copy(update={"database": opts.database})
    ensure_retention(client, db_settings, alter=False)
    with contextlib.suppress(FileNotFoundError):
        default_path(runtime, opts.database).unlink()
    prefix = settings.mqtt_topic_prefix.rstrip("/")
    retained = clear_retained(services.mqtt_url, f"{prefix}/alerts/#")
    client_id = f"greenmon-demo-{opts.database}"
    clean_session(services.mqtt_url, client_id)
    raw_rp = settings.retention.raw_policy or None

    # -- the year to date, and the year before it --------------------------------------------
    history: dict[str, Any] = {"readings": 0}
    hist_truth = None
    zone = ZoneInfo(tz)
    hist_lo = datetime(year - 1, 1, 1, tzinfo=zone).astimezone(UTC)
    if opts.history == "full" and hist_lo < window.start:
        say(
            f"writing the history: hourly readings of the counted meters from "
            f"{hist_lo.astimezone(zone):%Y-%m-%d} to {window.start.astimezone(zone):%Y-%m-%d}"
        )
        anchors = dict(
            plan.readings.filter((pl.col("k") == 0) & pl.col("register").is_not_null())
            .join(
                fleet.meters.with_row_index("row").select(pl.col("row").cast(pl.Int32), "meter_id"),
                on="row",
            )
            .select("meter_id", "register")
            .iter_rows()
        )
        hist = history_readings(
            fleet,
            int(hist_lo.timestamp() * 1000),
            window.start_ms,
            opts.seed,
            anchors,
            lambda d, t: bar("simulating the history", d, t),
        )
        hist_truth = hist.truth
        # The breaching enterprises' quotas: 80% of what they truly used last year.
        jan1_ms = int(datetime(year, 1, 1, tzinfo=zone).timestamp() * 1000)
        used = double_control_tce(fleet, hist.truth.filter(pl.col("end_ms") <= jan1_ms))
        fleet = with_breach_quotas(fleet, used)
        write_fleet(fleet, fleet_dir, overwrite=True)
        registry = load_registry(fleet_dir)
        bodies = list(history_lines(hist.readings))
        done = [0]

        def write(body: tuple[bytes, int]) -> None:
            client.write_body(body[0], body[1], precision="ns", rp=raw_rp)
            done[0] += body[1]
            bar("writing the history", done[0], hist.readings.height)

        with ThreadPoolExecutor(3) as pool:
            list(pool.map(write, bodies))
        # InfluxDB 1.6 can lose the first points of a shard group that concurrent writes
        # create together (seen here, at a week's start): count, and send again if short.
        stored = _count_readings(client, hist_lo, window.start)
        if stored < hist.readings.height:
            say(f"InfluxDB holds {stored:,} of {hist.readings.height:,}: writing them again")
            done[0] = 0
            for body in bodies:
                write(body)
            stored = _count_readings(client, hist_lo, window.start)
        if stored < hist.readings.height:
            raise DemoError(
                f"InfluxDB holds {stored:,} of the {hist.readings.height:,} history readings"
            )
        history["readings"] = hist.readings.height
        aopts = default_options(tz=tz, windows=("1d", "1mo"), meter_windows=("1d", "1mo"))
        months = _month_starts(hist_lo, window.start, tz)
        t0 = time.perf_counter()
        for i, (a, b) in enumerate(months):
            run_range(client, registry, a, b, aopts, keep=())
            bar("aggregating the history (days, months)", i + 1, len(months))
        history.update(
            {
                "from": hist_lo.isoformat(),
                "to": window.start.isoformat(),
                "interval": "1h",
                "meters": hist.readings["meter_id"].n_unique(),
                "aggregate_seconds": round(time.perf_counter() - t0, 1),
            }
        )

    # -- the live days: ingest, aggregate --follow, alerts watch -----------------------------
    procs = _Processes(work)
    connection = [
        "--influx-url", services.influx_url, "--database", opts.database,
        "--registry", str(fleet_dir), "--runtime-dir", str(runtime),
    ]  # fmt: skip
    ingestor = IngestorProcess(services, fleet_dir, opts.database, client_id, work)
    follow_summary: dict[str, Any] = {}
    watch_lines: list[dict[str, Any]] = []
    try:
        ingestor.wait_connected()
        time.sleep(0.5)  # SUBSCRIBE follows CONNACK
        for name in ("aggregate", "alerts"):
            with contextlib.suppress(FileNotFoundError):
                heartbeat_path(runtime, name).unlink()
        procs.start(
            "aggregate-follow",
            ["aggregate", "--follow", *connection, "--poll-seconds", str(opts.poll_s),
             "--lateness", opts.lateness, "--json"],
        )  # fmt: skip
        procs.start(
            "alerts-watch",
            ["alerts", "watch", *connection, "--mqtt-url", services.mqtt_url,
             "--interval", str(opts.watch_interval_s), "--json"],
        )  # fmt: skip
        say(
            f"streaming {window.days:.2f} live days through MQTT (QoS 1) while ingest, "
            "aggregate --follow and alerts watch run"
        )
        total = messages.height
        sent = [0]

        def advance(n: int) -> None:
            sent[0] += n
            bar("publishing", sent[0], total)

        result = publish(messages, PublishOptions(mqtt_url=services.mqtt_url), advance)
        deadline = time.monotonic() + 300
        while (written := ingestor.written()) < expected_written:
            bar("ingesting", written, expected_written)
            procs.check()
            if time.monotonic() > deadline:
                raise DemoError(
                    f"the ingestor wrote {written:,} of {expected_written:,} readings in 5 "
                    f"minutes; see {ingestor.log_path}"
                )
            time.sleep(0.2)
        bar("ingesting", expected_written, expected_written)
        # A round that starts after the last write sees all of it; alerts watch then judges
        # what it wrote.
        agg_beat, alert_beat = (
            heartbeat_path(runtime, "aggregate"),
            heartbeat_path(runtime, "alerts"),
        )
        _wait_rounds(procs, agg_beat, _rounds(agg_beat) + 2, 300, "aggregate --follow")
        _wait_rounds(procs, alert_beat, _rounds(alert_beat) + 1, 120, "alerts watch")
    finally:
        texts = {name: "" for name in ("aggregate-follow", "alerts-watch")}
        for name in list(procs.procs):
            texts[name] = procs.stop(name)
        ingest_summary = ingestor.stop()
        clean_session(services.mqtt_url, client_id)
    follow_text = texts["aggregate-follow"]
    with contextlib.suppress(ValueError):
        follow_summary = json.loads(follow_text[follow_text.find("{") :])
    for line in texts["alerts-watch"].splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict) and "levels" in doc:
                watch_lines.append(doc)

    lo = window.start
    hi = next_day(window.end, tz) if window.end > lo else lo
    say("closing batch pass over the live days (and the months to date)")
    refs = load_references()
    aopts = default_options(tz=tz, references=refs)
    final = run_range(client, registry, lo, hi, aopts)
    month = run_range(
        client, registry, local_month_start(lo, tz), hi, aopts, partial=True, windows=("1mo",)
    )

    # -- the judgements, as a user would ask for them ----------------------------------------
    reports = work / "reports"
    reports.mkdir(exist_ok=True)
    provisioning = work / "grafana-provisioning"
    commands = {
        "alerts-check": ["alerts", "check", *connection, "--mqtt-url", services.mqtt_url],
        "screen": ["screen", *connection, "--year", str(year), "--top", "0",
                   "--report", str(reports / f"screening-{year}.html")],
        "classify": ["classify", *connection, "--year", str(year), "--top", "0",
                     "--report", str(reports / f"classes-{year}.html")],
        "dashboards-build": ["dashboards", "build", *connection, "--out", str(provisioning),
                             "--datasource-url", services.influx_url],
    }  # fmt: skip
    say("alerts check, screen, classify (HTML reports), dashboards build")
    out: dict[str, Any] = {}
    bar("judging", 0, len(commands))
    # two at a time: they read different things and write different measurements
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(_command, args, work, name) for name, args in commands.items()}
        for name, future in futures.items():
            out[name] = future.result()
            bar("judging", len(out), len(commands))
    alerts, screening = out["alerts-check"], out["screen"]
    classes, dashboards = out["classify"], out["dashboards-build"]

    try:
        stored = _count_readings(client, datetime(2000, 1, 1, tzinfo=UTC), hi)
        summary = summarize(
            client=client, registry=registry, fleet=fleet, cast=cast, truth=truth,
            plan=plan, final=final, month=month, refs=refs, choice=aopts.choice, opts=opts,
            ingest=ingest_summary, follow=follow_summary, watch=watch_lines,
            published=result.published, lo=lo, hi=hi, tz=tz, outage=outage,
            history=history, history_truth=hist_truth, alerts=alerts, screening=screening,
            classes=classes, dashboards=dashboards, year=year,
        )  # fmt: skip
    except InfluxError as exc:
        raise DemoError(f"reading the results back failed: {exc}") from exc
    finally:
        client.close()
    summary["reports"] = {
        "screening": str(reports / f"screening-{year}.html"),
        "classes": str(reports / f"classes-{year}.html"),
    }
    summary["provisioning"] = str(provisioning)
    summary["retained_cleared"] = retained
    summary["stored_readings"] = stored
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["work_dir"] = str(work)
    summary["database"] = opts.database
    summary["services"] = {
        "mqtt_url": services.mqtt_url,
        "influx_url": services.influx_url,
        "stop": f"greenmon services down --runtime-dir {runtime}"
        if runtime != Path(".greenmon/run").resolve()
        else "greenmon services down",
    }
    return summary


def _count_readings(client: InfluxClient, lo: datetime, hi: datetime) -> int:
    df = client.query(
        f'SELECT count("value") FROM {client.source("meter_reading")} WHERE '
        f"time >= {int(lo.timestamp() * 1000)}ms AND time <= {int(hi.timestamp() * 1000)}ms"
    )
    return int(df.get_column("count")[0]) if df.height else 0


def _rounds(path: Path) -> int:
    """Rounds a command's heartbeat file reports (0 before its first)."""
    try:
        return int(json.loads(path.read_text()).get("rounds", 0))
    except (OSError, ValueError):
        return 0


def _wait_rounds(procs: _Processes, path: Path, rounds: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while _rounds(path) < rounds:
        procs.check()
        if time.monotonic() > deadline:
            raise DemoError(f"`greenmon {what}` did not finish round {rounds} in {timeout:.0f} s")
        time.sleep(0.25)


def _month_starts(lo: datetime, hi: datetime, tz: str) -> list[tuple[datetime, datetime]]:
    """[lo, hi) cut at local month starts."""
    zone = ZoneInfo(tz)
    out: list[tuple[datetime, datetime]] = []
    a = lo
    while a < hi:
        local = a.astimezone(zone)
        y, m = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        b = min(hi, datetime(y, m, 1, tzinfo=zone).astimezone(UTC))
        out.append((a, b))
        a = b
    return out
