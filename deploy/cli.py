"""`greenmon services up|down|status`: the local Mosquitto + InfluxDB for dev and demos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from greenmon.cli_common import JsonOption, console, print_json, service_options
from greenmon.config import Settings
from greenmon.deploy.local import LocalServices
from greenmon.errors import ConfigError
from greenmon.retention import RetentionReport

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
def up(
    settings: Settings,
    broker_auth: Annotated[
        Path | None,
        typer.Option(
            help="Directory made by `greenmon services broker-auth`: the broker refuses "
            "anonymous clients and applies its password file and ACL.",
            file_okay=False,
            exists=True,
        ),
    ] = None,
    tls: Annotated[
        Path | None,
        typer.Option(
            help="Directory made by `greenmon services dev-tls`: the broker speaks "
            "mqtts:// with its server certificate.",
            file_okay=False,
            exists=True,
        ),
    ] = None,
    require_client_cert: Annotated[
        bool, typer.Option(help="With --tls: clients must present a certificate of the CA.")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Start Mosquitto and influxd (if not already running) and wait until both answer.

    Also creates the database (`--database`, default greenmon) with its retention policies,
    as `greenmon db init` does.

    Example: `greenmon services up --runtime-dir .greenmon/dev` then
    `greenmon services status --runtime-dir .greenmon/dev`.

    Example, a secured broker (as in production), with gateways.csv listing
    enterprise_id,gateway_id: `greenmon services broker-auth gateways.csv --out .greenmon/auth`,
    `greenmon services dev-tls --out .greenmon/tls`, then
    `greenmon services up --runtime-dir .greenmon/secure --broker-auth .greenmon/auth
    --tls .greenmon/tls`;
    the ingestor then needs `set -a; . .greenmon/auth/ingestor.env; set +a` and
    `GREENMON_MQTT_CA_FILE=.greenmon/tls/ca.crt`.
    """
    from greenmon.deploy.broker_auth import read_broker_auth
    from greenmon.deploy.tls import TlsFiles

    svc = LocalServices(
        settings.runtime_dir,
        broker_auth=read_broker_auth(broker_auth) if broker_auth else None,
        tls=TlsFiles.in_directory(tls) if tls else None,
        require_client_certificate=require_client_cert,
    )
    state = svc.up()
    # The configured database with its retention policies, as `greenmon db init` makes them.
    retention = _init_db(settings.model_copy(update={"influx_url": state.influx_url}), False)
    if json_out:
        print_json({**state.model_dump(), "retention": retention.as_dict()})
        return
    console.print(_status_table(svc.status()))
    console.print(f"MQTT:   {state.mqtt_url}\nInflux: {state.influx_url}")
    _print_retention(retention)


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


@services_app.command("broker-auth")
def broker_auth_files(
    gateways_csv: Annotated[
        Path,
        typer.Argument(
            help="CSV with the columns enterprise_id,gateway_id (one row per gateway).",
            exists=True,
            dir_okay=False,
        ),
    ],
    out: Annotated[Path, typer.Option(help="Directory to write the files into.")],
    prefix: Annotated[str, typer.Option(help="Topic prefix of the deployment.")] = "greenmon/v1",
    ingestor_user: Annotated[
        str, typer.Option(help="Broker user name of the ingestor(s).")
    ] = "greenmon-ingestor",
    json_out: JsonOption = False,
) -> None:
    """Write a Mosquitto password file and ACL: each gateway may only publish under
    `{prefix}/{enterprise}/{gateway}/#`, the ingestor may only subscribe.

    Writes `passwd` (hashed with `mosquitto_passwd`), `acl`, `credentials.csv` (one
    username,password,topic row per gateway, for the gateway vendors) and `ingestor.env`
    (`GREENMON_MQTT_USERNAME/PASSWORD`), all mode 0600. Run again after adding gateways:
    passwords already in `credentials.csv` and `ingestor.env` are kept, new users get new
    ones. Passwords are never printed.

    Example: `greenmon services broker-auth gateways.csv --out .greenmon/auth`
    (in production, a directory only the broker's user can read, e.g. /etc/mosquitto/greenmon)
    """
    from greenmon.deploy.broker_auth import (
        load_gateways_csv,
        read_credentials_csv,
        write_broker_auth,
    )

    keep = {}
    if (out / "credentials.csv").is_file():
        keep.update(read_credentials_csv(out / "credentials.csv"))
    if (out / "ingestor.env").is_file():
        from greenmon.deploy.broker_auth import read_broker_auth

        previous = read_broker_auth(out)
        if previous.ingestor.username == ingestor_user:
            keep[ingestor_user] = previous.ingestor.password
    files = write_broker_auth(
        out,
        load_gateways_csv(gateways_csv),
        prefix=prefix,
        ingestor_user=ingestor_user,
        passwords=keep,
    )
    written = [files.passwd, files.acl, files.credentials_csv, files.ingestor_env]
    result = {
        "directory": str(files.directory),
        "files": [str(f) for f in written],
        "gateways": len(files.gateways),
        "kept_passwords": sum(1 for c in (files.ingestor, *files.gateways) if c.username in keep),
        "ingestor_user": files.ingestor.username,
        "prefix": files.prefix,
    }
    if json_out:
        print_json(result)
        return
    console.print(
        f"wrote {', '.join(f.name for f in written)} to {files.directory} "
        f"({result['gateways']} gateways, {result['kept_passwords']} passwords kept)"
    )


@services_app.command("dev-tls")
def dev_tls(
    out: Annotated[Path, typer.Option(help="Directory to write the files into.")],
    host: Annotated[
        list[str] | None,
        typer.Option(
            help="Name or IP the broker certificate is valid for (repeatable).",
            show_default="127.0.0.1, ::1, localhost",
        ),
    ] = None,
    client: Annotated[
        str | None, typer.Option(help="Also issue a client certificate with this name.")
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=3650, help="Validity in days.")] = 365,
    json_out: JsonOption = False,
) -> None:
    """Create a throwaway CA and a broker certificate for development and tests.

    Files: ca.crt, ca.key, server.crt, server.key (and client-NAME.crt/.key). The CA key
    lies next to the certificates: never use these in production (see deploy/README.md).

    Example: `greenmon services dev-tls --out .greenmon/tls --client E0001.gw-01`
    """
    from greenmon.deploy.tls import DEFAULT_HOSTS, create_dev_tls

    files = create_dev_tls(
        out, hosts=tuple(host) if host else DEFAULT_HOSTS, client_name=client, days=days
    )
    result = {
        "directory": str(files.directory),
        "ca_cert": str(files.ca_cert),
        "server_cert": str(files.server_cert),
        "client_cert": str(files.client_cert) if files.client_cert else None,
    }
    if json_out:
        print_json(result)
    else:
        console.print(f"CA {files.ca_cert}\nbroker certificate {files.server_cert}")


# --------------------------------------------------------------------------- db

db_app = typer.Typer(
    help="The InfluxDB database: its retention policies (how long raw readings and results "
    "are kept).",
    no_args_is_help=True,
)


def _init_db(settings: Settings, allow_shorten: bool) -> RetentionReport:
    from greenmon.influx import InfluxClient
    from greenmon.retention import ensure_retention

    with InfluxClient.from_settings(settings) as client:
        return ensure_retention(client, settings, alter=True, allow_shorten=allow_shorten)


def _print_retention(r: RetentionReport) -> None:
    if not r.supported:
        console.print(
            f"database {r.database}: this InfluxDB has no retention-policy statements "
            "(2.x/3.x): create the buckets (2.x) or databases (3.x) "
            f"{r.database} and {r.database}/raw yourself, see docs/operations.md"
        )
        return
    table = Table("policy", "keeps", "default", "holds", title=f"database {r.database}")
    held: dict[str, list[str]] = {}
    for measurement, policy in r.holds.items():
        held.setdefault(policy, []).append(measurement)
    for p in r.policies:
        holds = held.get(p.name, [])
        if p.default:
            holds = [*holds, "everything else (results, alerts, ...)"]
        table.add_row(p.name, p.as_dict()["duration"], "yes" if p.default else "",
                      ", ".join(holds))  # fmt: skip
    console.print(table)
    for action in r.actions:
        console.print(f"[green]{action}[/]")
    for note in r.pending:
        console.print(f"[yellow]{note}[/]")


@db_app.command("init")
@service_options
def db_init(
    settings: Settings,
    raw_days: Annotated[
        int | None,
        typer.Option(
            help="Keep raw meter_reading this many days (0: forever).",
            show_default="retention.raw_days, 1096",
        ),
    ] = None,
    allow_shorten: Annotated[
        bool,
        typer.Option(
            "--allow-shorten",
            help="Apply a shorter duration than a policy has now (InfluxDB then deletes what "
            "is older at its next retention check).",
        ),
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Create the database and its retention policies (InfluxDB 1.x), or bring them to the
    settings.

    Raw `meter_reading` goes to the policy `raw`, kept `retention.raw_days` (default 1096
    days, at least 92); the aggregator's windows, alerts and screening stay in the default
    policy, kept forever (`retention.results_days`). Idempotent; a policy is never shortened
    without --allow-shorten. `greenmon services up`, `ingest` and `aggregate` create what is
    missing by themselves. On InfluxDB 2.x/3.x create buckets/databases instead (see
    docs/operations.md).

    Example: `greenmon db init` (after `greenmon services up`); to keep raw readings for
    good, `greenmon db init --raw-days 0 --json`.
    """
    from pydantic import ValidationError

    from greenmon.config import RetentionSettings, resolve_local_services

    if raw_days is not None:
        try:
            ret = RetentionSettings.model_validate(
                {**settings.retention.model_dump(), "raw_days": raw_days}
            )
        except ValidationError as exc:
            msg = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"--raw-days: {msg}") from exc
        settings = settings.model_copy(update={"retention": ret})
    settings = resolve_local_services(settings, need_mqtt=False, need_influx=True)
    report = _init_db(settings, allow_shorten)
    if json_out:
        print_json(report.as_dict())
    else:
        _print_retention(report)
    if report.pending:
        raise typer.Exit(1)
