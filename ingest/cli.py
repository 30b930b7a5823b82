"""`greenmon ingest`: run the MQTT -> InfluxDB ingestor until SIGTERM/SIGINT; its dead-letter
commands (`ingest replay`, `ingest dead-letters`) live in `greenmon.ingest.deadletter_cli`."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.logging import RichHandler
from rich.table import Table

from greenmon.cli_common import JsonOption, console, print_json, service_options
from greenmon.config import IngestSettings, Settings, resolve_local_services
from greenmon.errors import ConfigError
from greenmon.registry_watch import RegistryWatcher


def _override_ingest(settings: Settings, flags: dict[str, Any]) -> Settings:
    given = {k: v for k, v in flags.items() if v is not None}
    if not given:
        return settings
    try:
        ingest = IngestSettings.model_validate({**settings.ingest.model_dump(), **given})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"ingest.{'.'.join(map(str, err['loc']))}: {err['msg']}") from exc
    return settings.model_copy(update={"ingest": ingest})


def ingest(
    ctx: typer.Context,
    settings: Settings,
    shared_group: Annotated[
        str | None,
        typer.Option(
            help="Join an MQTT 5 shared subscription ($share/NAME/...): several ingestors "
            "with the same group split one stream. Give each its own --client-id."
        ),
    ] = None,
    client_id: Annotated[
        str | None,
        typer.Option(help="Fixed MQTT client id: the broker keeps its session while down."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Prometheus /metrics on 127.0.0.1:PORT (ingest.metrics_host to listen "
            "elsewhere); 0 disables.",
            show_default="9108",
        ),
    ] = None,
    batch_lines: Annotated[int | None, typer.Option(help="Lines per InfluxDB write.")] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "WARNING",
    json_out: JsonOption = False,
) -> None:
    """Subscribe to gateway readings and write them to InfluxDB `meter_reading`, at least once.

    A message is acknowledged only after its readings are written to InfluxDB or fsynced to
    the local spool; rejected input goes to the dead-letter file with a reason. Runs until
    SIGTERM or Ctrl-C, then finishes in-flight batches and exits 0.

    The registry is reloaded without a restart when its CSV files change, or on SIGHUP
    (`kill -HUP PID`): validated first, a bad edit is refused with every problem logged and
    the registry in use stays. Each message is decoded against one registry or the other.

    Dead letters: `greenmon ingest dead-letters` summarises them, `greenmon ingest replay`
    writes those that pass against today's registry (see their --help).

    Example, in a clone of the repository: `greenmon services up`, then
    `greenmon ingest --registry tests/data/registry`. With a simulated fleet:
    `greenmon simulate fleet -n 50 --seed 7 --out fleet/`, then
    `greenmon ingest --registry fleet/`.
    """
    if ctx.invoked_subcommand is not None:
        return  # `ingest replay` / `ingest dead-letters`: the subcommand does the work
    from greenmon.ingest.service import Ingestor, ingest_paths

    # On a terminal, Rich; into a file or a journal, one plain line per record (greppable).
    handler: logging.Handler = (
        RichHandler(console=console, show_path=False)
        if console.is_terminal
        else logging.StreamHandler(sys.stdout)
    )
    logging.basicConfig(
        level=log_level.upper(),
        format="%(message)s" if console.is_terminal else "%(asctime)s %(levelname)s %(message)s",
        handlers=[handler],
    )
    settings = _override_ingest(
        resolve_local_services(settings, need_mqtt=True, need_influx=True),
        {
            "shared_group": shared_group,
            "client_id": client_id,
            "metrics_port": metrics_port,
            "batch_lines": batch_lines,
        },
    )
    if settings.registry is None:
        raise ConfigError("registry: no registry directory given (--registry DIR)")
    watcher = RegistryWatcher(settings.registry)
    ingestor = Ingestor(settings, watcher)
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    watcher.install_sighup()
    spool_dir, dead_file = ingest_paths(settings)
    if not json_out:
        console.print(
            f"ingesting {settings.mqtt_url} -> {settings.influx_url} db={settings.database} "
            f"(spool {spool_dir}, dead letters {dead_file}); Ctrl-C to stop"
        )
    ingestor.run(stop)
    snap = ingestor.metrics.snapshot()
    summary = {
        **{k: int(v) for k, v in snap.items() if k != "lag_s"},
        "rejected_by_reason": ingestor.metrics.rejected_by_reason(),
        "registry_reloads": dict(watcher.reloads),
        "dead_letters": str(dead_file),
    }
    if json_out:
        print_json(summary)
        return
    table = Table("metric", "value", title="ingest summary")
    for k, v in summary.items():
        table.add_row(k, str(v))
    console.print(table)


def bench_ingest(
    readings: Annotated[
        int, typer.Option(min=1_000, help="Readings per measurement (each message form).")
    ] = 1_000_000,
    meters: Annotated[int, typer.Option(min=50, help="Meters in the bench registry.")] = 1_000,
    latency_seconds: Annotated[
        float, typer.Option(min=1, help="Length of the half-load latency run.")
    ] = 10.0,
    naive_readings: Annotated[
        int, typer.Option(min=100, help="Readings for the (slow) naive bridge baseline.")
    ] = 20_000,
    rounds: Annotated[
        int,
        typer.Option(
            min=1,
            help="Throughput rounds (limits and end to end); medians are printed, every "
            "round is in --json.",
        ),
    ] = 3,
    keep: Annotated[
        Path | None,
        typer.Option(help="Keep the scratch directory (services, logs, payloads) here."),
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Exit 1 when a target of the issue is missed.")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Measure ingest against this machine's limits, all in one run.

    Starts its own Mosquitto and influxd on free loopback ports in a scratch directory, then
    measures: InfluxDB's bulk line-protocol rate; the broker's pass-through rate between the C
    clients mosquitto_pub/mosquitto_sub (QoS 1); greenmon end to end (publish -> acked ->
    queryable) for 50-reading and 1-reading messages; p50/p99 latency at half that load;
    the ingestor's peak RSS and CPU per reading; and a naive bridge (one HTTP write per
    message). Throughput is the median of --rounds rounds; in each round of the gateway-style
    form the InfluxDB limit is measured just before greenmon, and the share of the limit is
    the median of those paired ratios. Prints each figure beside the issue's target. Takes a
    few minutes.

    Example: `greenmon bench ingest --readings 200000 --json`
    """
    from greenmon.ingest.bench import BenchConfig, run_bench

    cfg = BenchConfig(
        readings=readings,
        meters=meters - meters % 50,
        latency_s=latency_seconds,
        naive_readings=naive_readings,
        rounds=rounds,
        keep_dir=keep,
    )
    with console.status("starting", spinner="dots") as status:

        def progress(msg: str) -> None:
            status.update(msg)
            if not json_out:
                console.log(msg)

        report = run_bench(cfg, progress)
    summary = report.summary()
    if json_out:
        print_json(summary)
    else:
        console.print(
            f"InfluxDB limit (bulk line protocol, {cfg.writers} writers, batches of "
            f"{cfg.batch_lines:,}): {summary['influx_limit_readings_per_s']:,} readings/s "
            f"(median of {cfg.rounds}: "
            f"{', '.join(f'{x:,}' for x in summary['influx_limit_rounds'])})"
        )
        table = Table("readings/msg", title="greenmon bench ingest")
        rows = summary["modes"]
        keys = [k for k in rows[0] if k not in ("readings_per_message", "rounds")] if rows else []
        for row in rows:
            table.add_column(str(row["readings_per_message"]), justify="right")
        for key in keys:
            table.add_row(key, *(_fmt(row[key]) for row in rows))
        console.print(table)
        checks = Table("check", "measured", "target", "met", title="targets (issue 3)")
        for c in summary["checks"]:
            checks.add_row(
                c["check"], _fmt(c["measured"]), c["target"], "yes" if c["met"] else "NO"
            )
        console.print(checks)
    if strict and not all(c["met"] for c in summary["checks"]):
        raise typer.Exit(1)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def register(app: typer.Typer) -> None:
    from greenmon.ingest.deadletter_cli import dead_letters_cmd, replay_cmd

    ingest_app = typer.Typer(invoke_without_command=True, rich_markup_mode="markdown")
    ingest_app.callback()(service_options(ingest))
    ingest_app.command("replay")(service_options(replay_cmd))
    ingest_app.command("dead-letters")(service_options(dead_letters_cmd))
    app.add_typer(ingest_app, name="ingest")


def register_bench(bench: typer.Typer) -> None:
    bench.command("ingest")(bench_ingest)
