"""`greenmon services up|down|status`: the local Mosquitto + InfluxDB for dev and demos."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from greenmon.cli_common import JsonOption, console, print_json, service_options
from greenmon.config import Settings
from greenmon.deploy.local import LocalServices

services_app = typer.Typer(
    help="Start, inspect and stop the local Mosquitto and InfluxDB (Debian packages) that "
    "development, tests and `greenmon demo` use. They bind to free 127.0.0.1 ports; data, "
    "config and logs live under the runtime directory (default .greenmon/run).",
    no_args_is_help=True,
)


def _status_table(status: dict[str, dict[str, object]]) -> Table:
    table = Table("service", "state", "pid", "url", "log")
    for name, st in status.items():
        state = (
            "[green]answering[/]"
            if st["answering"]
            else ("[yellow]running, not answering[/]" if st["running"] else "[red]stopped[/]")
        )
        table.add_row(name, state, str(st["pid"] or "-"), str(st["url"] or "-"), str(st["log"]))
    return table


@services_app.command("up")
@service_options
def up(settings: Settings, json_out: JsonOption = False) -> None:
    """Start Mosquitto and influxd (if not already running) and wait until both answer.

    Example: `greenmon services up --runtime-dir /tmp/gm` then
    `greenmon services status --runtime-dir /tmp/gm`.
    """
    svc = LocalServices(settings.runtime_dir)
    state = svc.up()
    if json_out:
        print_json(state.model_dump())
        return
    console.print(_status_table(svc.status()))
    console.print(f"MQTT:   {state.mqtt_url}\nInflux: {state.influx_url}")


@services_app.command("status")
@service_options
def status(settings: Settings, json_out: JsonOption = False) -> None:
    """Show whether the local services run and answer. Exit code 1 if either does not."""
    svc = LocalServices(settings.runtime_dir)
    st = svc.status()
    if json_out:
        print_json(st)
    else:
        console.print(_status_table(st))
    if not all(s["answering"] for s in st.values()):
        raise typer.Exit(1)


@services_app.command("down")
@service_options
def down(
    settings: Settings,
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete their data, config and logs.")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Stop both services cleanly (SIGTERM, then SIGKILL after 20 s)."""
    svc = LocalServices(settings.runtime_dir)
    stopped = svc.down()
    if purge:
        svc.purge()
    if json_out:
        print_json({"stopped": stopped, "purged": purge})
    else:
        console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
