"""`greenmon simulate ...` and `greenmon bench simulate`: the simulators' command line.

- ``simulate fleet``: generate a seeded fleet into a registry directory;
- ``simulate run``: simulate a window for a fleet, write the truth, and publish to the broker
  (or write the messages to an out-file instead);
- ``simulate replay``: publish an out-file;
- ``bench simulate`` (`register_bench`): generation and publish rates for a 1,000-enterprise
  fleet over one simulated day.

`register` and `register_bench` are what `greenmon.cli` calls to add these commands.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from greenmon.cli_common import JsonOption, console, err_console, print_json, service_options
from greenmon.config import Settings, resolve_local_services
from greenmon.errors import ConfigError
from greenmon.simulators.errors import SimulatorError

_HELP = (
    "Simulated Nantong factories: generate a fleet, stream its meters over MQTT with faults "
    "on demand, and record the ground truth."
)

_RUN = "Run"
_OUT = "Output"
_PUB = "Publishing"


def _bad(param: str, exc: SimulatorError) -> typer.BadParameter:
    return typer.BadParameter(str(exc), param_hint=param)


@contextlib.contextmanager
def _progress(total: int, label: str, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    if not enabled or total == 0:
        yield None
        return
    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    with bar:
        task = bar.add_task(label, total=total)

        def advance(n: int) -> None:
            bar.advance(task, n)

        yield advance


def _table(title: str, data: dict[str, Any]) -> None:
    table = Table("", "", title=title, show_header=False)
    for key, value in data.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        table.add_row(key, str(value))
    console.print(table)


# --------------------------------------------------------------------------- fleet


def fleet_cmd(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the registry into.")],
    enterprises: Annotated[
        int, typer.Option("--enterprises", "-n", min=1, help="How many enterprises.")
    ] = 20,
    seed: Annotated[int, typer.Option(min=0, help="Random seed: same seed, same fleet.")] = 0,
    year: Annotated[
        int, typer.Option(min=2000, max=2100, help="Year of the monthly statistics and quotas.")
    ] = 2025,
    green_leaders: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.5,
            help="Share of clearly green-factory enterprises (known answers for "
            "`greenmon screen`), e.g. 0.03.",
        ),
    ] = 0.0,
    history_years: Annotated[
        int,
        typer.Option(
            min=0,
            max=5,
            help="Earlier years of monthly statistics (1 gives `greenmon classify` its "
            "previous-year benchmark).",
        ),
    ] = 0,
    force: Annotated[bool, typer.Option(help="Replace a fleet already in --out.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Generate a seeded fleet of Nantong factories as a greenmon registry directory.

    Writes enterprises.csv, meters.csv, monthly.csv (the registry `greenmon ingest --registry`
    reads), gateways.csv (for broker ACLs), simulation_*.csv and fleet.json (for
    `greenmon simulate run`). Same --enterprises, --seed and --year: same bytes.

    Example: `greenmon simulate fleet -n 50 --seed 7 --out fleet/`;
    `greenmon simulate fleet -n 1000 --green-leaders 0.03 --history-years 1 --out city/`
    """
    from greenmon.registry import load_registry
    from greenmon.simulators.fleet import generate_fleet, write_fleet

    fleet = generate_fleet(
        enterprises, seed, year=year, leader_share=green_leaders, history_years=history_years
    )
    files = write_fleet(fleet, out, overwrite=force)
    registry = load_registry(out)  # the registry must load with zero problems
    sim_e = fleet.sim_enterprises
    summary: dict[str, Any] = {
        "out": str(out),
        "files": [p.name for p in files],
        "enterprises": registry.enterprises.height,
        "meters": registry.meters.height,
        "gateways": fleet.gateways.height,
        "monthly_rows": registry.monthly.height,
        "by_county": dict(fleet.enterprises["county"].value_counts(sort=True).iter_rows()),
        "by_cluster": dict(sim_e["cluster"].value_counts(sort=True).iter_rows()),
        "by_role": dict(fleet.meters["role"].value_counts(sort=True).iter_rows()),
        "by_carrier": dict(fleet.meters["carrier"].value_counts(sort=True).iter_rows()),
        "with_pv": int((sim_e["pv_kwp"] > 0).sum()),
        "key_energy_users": int((fleet.enterprises["key_energy_user"] == "true").sum()),
        "green_candidates": int((sim_e["design"] == "green_candidate").sum()),
        "green_leaders": int((sim_e["design"] == "green_leader").sum()),
        "quota_breaches": int((sim_e["design"] == "quota_breach").sum()),
        "designed_tce": round(float(sim_e["designed_tce"].sum()), 1),
        "seed": seed,
        "year": year,
    }
    if json_out:
        print_json(summary)
        return
    _table(f"fleet written to {out}", summary)


# --------------------------------------------------------------------------- run


def run_cmd(
    settings: Settings,
    start: Annotated[
        str,
        typer.Option(
            help="Simulated start: RFC 3339, a China-time date/time, or 'now'.",
            rich_help_panel=_RUN,
        ),
    ] = "2025-06-02T00:00:00+08:00",
    days: Annotated[float, typer.Option(help="Simulated days.", min=0, rich_help_panel=_RUN)] = 1.0,
    interval: Annotated[
        str, typer.Option(help="Register reading interval (15m, 1h, 900s).", rich_help_panel=_RUN)
    ] = "15m",
    seed: Annotated[
        int | None,
        typer.Option(
            min=0, help="Run seed.", show_default="the fleet's seed", rich_help_panel=_RUN
        ),
    ] = None,
    faults: Annotated[
        str,
        typer.Option(
            help="Faults and rates: name=rate,... (rollover reset spike gap_catchup gap_lost "
            "duplicate out_of_order clock_skew disconnect malformed bad_json unknown_meter "
            "wrong_enterprise nan wrong_unit), all=R, 'demo' or 'none'.",
            rich_help_panel=_RUN,
        ),
    ] = "none",
    truth: Annotated[
        Path | None,
        typer.Option(
            help="Write the ground truth here (Parquet; malformed extras to "
            "NAME.malformed.parquet).",
            rich_help_panel=_OUT,
        ),
    ] = None,
    out_file: Annotated[
        Path | None,
        typer.Option(
            help="Write the exact messages as JSON lines instead of publishing.",
            rich_help_panel=_OUT,
        ),
    ] = None,
    speed: Annotated[
        str,
        typer.Option(
            help="Simulated seconds per real second (43200: a month in a minute), or 'max'.",
            rich_help_panel=_PUB,
        ),
    ] = "max",
    rate: Annotated[
        float | None,
        typer.Option(min=0.001, help="Cap on messages per second.", rich_help_panel=_PUB),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(min=1, help="Gateways connected at once.", rich_help_panel=_PUB),
    ] = 256,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Publisher processes, each with its share of the gateways.",
            show_default="the CPU count, at most 4",
            rich_help_panel=_PUB,
        ),
    ] = None,
    credentials: Annotated[
        Path | None,
        typer.Option(
            help="credentials.csv from broker_auth: each gateway logs in as itself.",
            rich_help_panel=_PUB,
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Simulate a fleet's meters over a window and publish them (or write them to a file).

    Gateways publish QoS 1 to greenmon/v1/{enterprise}/{gateway}/readings with device time
    stamps in simulated time. --truth records every meter's true consumption per interval and
    what was actually sent. Same fleet, options and seed: same messages and truth, byte for
    byte.

    Example: `greenmon simulate fleet -n 50 --seed 7 --out fleet/` then
    `greenmon simulate run --registry fleet/ --days 1 --faults demo --truth t.parquet`
    """
    from greenmon.simulators.faults import parse_faults
    from greenmon.simulators.fleet import load_fleet
    from greenmon.simulators.outfile import write_out_file
    from greenmon.simulators.runner import (
        RunSpec,
        parse_interval,
        parse_speed,
        parse_start,
        plan_run,
        summarize,
    )
    from greenmon.simulators.truth import malformed_frame, truth_frame, write_truth

    registry = settings.registry
    if registry is None:
        raise ConfigError("registry: no fleet directory given (--registry DIR)")
    try:
        step_s = parse_interval(interval)
    except SimulatorError as exc:
        raise _bad("--interval", exc) from exc
    try:
        start_ms = parse_start(start, step_s)
    except SimulatorError as exc:
        raise _bad("--start", exc) from exc
    try:
        fault_spec = parse_faults(faults)
    except SimulatorError as exc:
        raise _bad("--faults", exc) from exc
    try:
        speed_value = parse_speed(speed)
    except SimulatorError as exc:
        raise _bad("--speed", exc) from exc
    if out_file is None:
        settings = resolve_local_services(settings, need_mqtt=True, need_influx=False)
    fleet = load_fleet(registry)
    spec = RunSpec(
        start_ms=start_ms,
        days=days,
        step_s=step_s,
        seed=int(fleet.meta["seed"]) if seed is None else seed,
        faults=fault_spec,
        prefix=settings.mqtt_topic_prefix,
    )
    with err_console.status("planning the run", spinner="dots") if not json_out else _nullctx():
        planned = plan_run(fleet, spec)
    extra: dict[str, Any] = {}
    if truth is not None:
        t_path, m_path = write_truth(
            truth_frame(fleet, planned.plan), malformed_frame(planned.plan), truth
        )
        extra.update(truth=str(t_path), malformed=str(m_path))
    published = None
    if out_file is not None:
        write_out_file(planned.plan.messages, out_file)
        extra["out_file"] = str(out_file)
    else:
        published = _publish(
            settings, planned.plan.messages, spec.start_ms, speed_value, rate, concurrency,
            credentials, not json_out, processes,
        )  # fmt: skip
        extra["mqtt_url"] = settings.mqtt_url
    summary = summarize(fleet, spec, planned, published=published, extra=extra)
    if json_out:
        print_json(summary)
        return
    _table("simulation run", summary)


@contextlib.contextmanager
def _nullctx() -> Iterator[None]:
    yield


def _publish(
    settings: Settings,
    messages: Any,
    origin_ms: int,
    speed: float | None,
    rate: float | None,
    concurrency: int,
    credentials: Path | None,
    show_progress: bool,
    processes: int | None = None,
) -> Any:
    from greenmon.simulators.gateways import (
        PublishOptions,
        default_processes,
        load_credentials,
        publish,
    )

    assert settings.mqtt_url is not None
    opts = PublishOptions(
        mqtt_url=settings.mqtt_url,
        origin_ms=origin_ms,
        speed=speed,
        rate=rate,
        concurrency=concurrency,
        username=settings.mqtt_username,
        password=settings.mqtt_password.get_secret_value() if settings.mqtt_password else None,
        credentials=load_credentials(credentials) if credentials else {},
        ca_file=settings.mqtt_ca_file,
        cert_file=settings.mqtt_cert_file,
        key_file=settings.mqtt_key_file,
        processes=processes or default_processes(),
    )
    with _progress(messages.height, "publishing", show_progress) as advance:
        return publish(messages, opts, advance)


# --------------------------------------------------------------------------- replay


def replay_cmd(
    settings: Settings,
    file: Annotated[Path, typer.Argument(help="An out-file written by `simulate run --out-file`.")],
    speed: Annotated[
        str, typer.Option(help="Simulated seconds per real second, or 'max'.")
    ] = "max",
    rate: Annotated[
        float | None, typer.Option(min=0.001, help="Cap on messages per second.")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Gateways connected at once.")] = 256,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Publisher processes, each with its share of the gateways.",
            show_default="the CPU count, at most 4",
        ),
    ] = None,
    credentials: Annotated[
        Path | None, typer.Option(help="credentials.csv: each gateway logs in as itself.")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Publish the messages of an out-file, in its order, as its gateways.

    Example: `greenmon simulate run --registry fleet/ --days 0.5 --out-file run.jsonl` then
    `greenmon simulate replay run.jsonl --speed 43200` (a fleet/ from `simulate fleet`)
    """
    import polars as pl

    from greenmon.simulators.outfile import read_out_file
    from greenmon.simulators.runner import parse_speed

    try:
        speed_value = parse_speed(speed)
    except SimulatorError as exc:
        raise _bad("--speed", exc) from exc
    settings = resolve_local_services(settings, need_mqtt=True, need_influx=False)
    messages = read_out_file(file)
    origin = int(messages.select(pl.col("at_ms").min()).item() or 0)
    result = _publish(
        settings, messages, origin, speed_value, rate, concurrency, credentials, not json_out,
        processes,
    )  # fmt: skip
    summary = {
        "file": str(file),
        "published": result.published,
        "seconds": round(result.seconds, 3),
        "rate": round(result.rate, 1),
        "connects": result.connects,
        "reconnects": result.reconnects,
        "mqtt_url": settings.mqtt_url,
    }
    if json_out:
        print_json(summary)
        return
    _table("replay", summary)


# --------------------------------------------------------------------------- bench


def bench_cmd(
    settings: Settings,
    enterprises: Annotated[int, typer.Option("--enterprises", "-n", min=1)] = 1000,
    days: Annotated[float, typer.Option(min=0)] = 1.0,
    interval: Annotated[str, typer.Option(help="Reading interval.")] = "15m",
    seed: Annotated[int, typer.Option(min=0)] = 0,
    faults: Annotated[str, typer.Option(help="Fault spec (see `simulate run`).")] = "none",
    publish_: Annotated[
        bool,
        typer.Option(
            "--publish/--no-publish",
            help="Also publish: to --mqtt-url, or to a private Mosquitto it starts.",
        ),
    ] = True,
    concurrency: Annotated[int, typer.Option(min=1, help="Gateways connected at once.")] = 256,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Publisher processes (1 = the single-process rate, for comparison).",
            show_default="the CPU count, at most 4",
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Simulator rates: generate a 1,000-enterprise fleet, plan one simulated day at 15 min,
    write the out-file and the truth, and publish everything at QoS 1; print messages/s and
    readings/s of each step.

    Publishes to --mqtt-url when given, otherwise to its own Mosquitto on a free loopback
    port, started and stopped in a scratch directory; there it also times the broker's own C
    clients moving the same payloads (mosquitto_pub -l to mosquitto_sub, QoS 1) in the same
    run, and prints the publish time beside that limit and beside the goal (a 1,000-enterprise
    day in 10 s).
    """
    from greenmon.simulators.bench import run_bench
    from greenmon.simulators.faults import parse_faults
    from greenmon.simulators.runner import parse_interval

    try:
        step_s = parse_interval(interval)
        spec = parse_faults(faults)
    except SimulatorError as exc:
        raise _bad("--interval/--faults", exc) from exc
    figures = run_bench(
        enterprises=enterprises,
        days=days,
        step_s=step_s,
        seed=seed,
        faults=spec,
        publish_to_broker=publish_,
        mqtt_url=settings.mqtt_url,
        concurrency=concurrency,
        processes=processes,
        say=None if json_out else lambda text: err_console.print(text),
    )
    if json_out:
        print_json(figures)
        return
    _table("greenmon bench simulate", figures)


def register(app: typer.Typer) -> None:
    """Add the `simulate` command group (fleet, run, replay) to the greenmon app."""
    simulate_app = typer.Typer(help=_HELP, no_args_is_help=True)
    simulate_app.command("fleet")(fleet_cmd)
    simulate_app.command("run")(service_options(run_cmd))
    simulate_app.command("replay")(service_options(replay_cmd))
    app.add_typer(simulate_app, name="simulate")


def register_bench(bench: typer.Typer) -> None:
    """Add `simulate` to the `greenmon bench` group."""
    bench.command("simulate")(service_options(bench_cmd))
