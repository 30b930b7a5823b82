"""`greenmon dashboards build` and `greenmon dashboards push`: the dashboards stage's commands.

`register` is what `greenmon.cli` calls to add them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from greenmon.cli_common import JsonOption, console, err_console, print_json, service_options
from greenmon.config import Settings
from greenmon.errors import ConfigError

__all__ = ["register"]

_HELP = (
    "Grafana dashboards, data sources and alert rules generated from code: write them as a "
    "provisioning tree (`build`) or upsert them into a running Grafana (`push`)."
)
_AUTH_HELP = (
    "How Grafana authenticates to InfluxDB: none, basic (1.x user/password; 3.x token as "
    "password), token (2.x/3.x `Authorization: Token`), or auto (token if influx_token is "
    "configured, basic if influx_username is, else none)."
)


def _site(settings: Settings) -> Any:
    from greenmon.dashboards.site import Site
    from greenmon.registry import load_registry
    from greenmon.retention import source_of

    readings = source_of(settings, "meter_reading")
    if settings.registry is None:
        return Site(tz=settings.timezone, readings=readings)
    return Site.from_registry(
        load_registry(settings.registry), tz=settings.timezone, readings=readings
    )


def _auth(settings: Settings, choice: str) -> str:
    if choice not in ("auto", "none", "basic", "token"):
        raise ConfigError(f"--influx-auth: use auto, none, basic or token, not {choice!r}")
    if choice != "auto":
        return choice
    if settings.influx_token is not None:
        return "token"
    return "basic" if settings.influx_username is not None else "none"


def build_cmd(
    settings: Settings,
    out: Annotated[
        Path, typer.Option("--out", help="Directory to write the provisioning tree into.")
    ] = Path("grafana-provisioning"),
    datasource_url: Annotated[
        str,
        typer.Option(
            "--datasource-url",
            help="InfluxDB URL as Grafana reaches it (a literal, or a $__env{VAR} reference "
            "Grafana expands at start).",
        ),
    ] = "$__env{GREENMON_INFLUX_URL}",
    influx_auth: Annotated[str, typer.Option("--influx-auth", help=_AUTH_HELP)] = "auto",
    container_path: Annotated[
        str,
        typer.Option(
            "--container-path",
            help="Where Grafana sees the tree (the file provider's path is below it).",
        ),
    ] = "/etc/grafana/provisioning",
    json_out: JsonOption = False,
) -> None:
    """Write Grafana's provisioning tree: data sources, dashboards, alert rules.

    Writes `OUT/datasources/greenmon.yaml` (InfluxDB with InfluxQL, plus the registry facts
    source), `OUT/dashboards/greenmon.yaml` (a file provider for the folder "greenmon") with
    the dashboards' JSON in `OUT/dashboards/greenmon/`, and `OUT/alerting/greenmon.yaml`.
    Secrets are never written: the InfluxDB password or token is `$__env{GREENMON_INFLUX_
    PASSWORD}` / `$__env{GREENMON_INFLUX_TOKEN}`, read by Grafana from its environment.
    With `--registry` the map, quota and target panels and the capacity alert rules are
    included. Building twice gives identical bytes.

    Example: `greenmon dashboards build --registry fleet --out grafana`
    """
    from greenmon.dashboards.generate import DatasourceSpec, build_bundle
    from greenmon.dashboards.provisioning import env_ref, write_tree

    auth = _auth(settings, influx_auth)
    spec = DatasourceSpec(
        url=datasource_url,
        database=settings.database,
        auth=auth,  # type: ignore[arg-type]
        username=settings.influx_username or env_ref("GREENMON_INFLUX_USERNAME"),
        secret=env_ref("GREENMON_INFLUX_TOKEN" if auth == "token" else "GREENMON_INFLUX_PASSWORD")
        if auth != "none"
        else None,
    )
    site = _site(settings)
    bundle = build_bundle(site)
    written = write_tree(out, bundle, spec, container_path)
    summary = {
        "out": str(out),
        "files": [str(p.relative_to(out)) for p in written.files],
        "removed": [str(p.relative_to(out)) for p in written.removed],
        "dashboards": list(bundle.dashboards),
        "alert_rules": [r["uid"] for r in bundle.rules.rules],
        "influx_auth": auth,
        "registry": site.registry,
        "notes": list(bundle.notes),
    }
    if json_out:
        print_json(summary)
        return
    table = Table("file", "what", title=f"Grafana provisioning tree in {out}")
    for rel in summary["files"]:
        table.add_row(rel, _describe(rel, bundle))
    console.print(table)
    console.print(
        f"{len(bundle.rules.rules)} alert rule(s); InfluxDB auth: {auth}; "
        f"registry: {site.registry or 'none'}"
    )
    for note in bundle.notes:
        console.print(f"note: {note}")
    console.print(f"Point Grafana at it: mount {out} as {container_path} (see README, Dashboards).")


def _describe(rel: str, bundle: Any) -> str:
    if rel.startswith("dashboards/greenmon/"):
        uid = rel.rsplit("/", 1)[1].removesuffix(".json")
        return str(bundle.dashboards[uid].get("title", uid))
    return {
        "datasources/greenmon.yaml": "data sources: InfluxDB (InfluxQL), registry (TestData)",
        "dashboards/greenmon.yaml": "dashboard file provider, folder greenmon",
        "alerting/greenmon.yaml": "alert rule group greenmon",
    }.get(rel, "")


def push_cmd(
    settings: Settings,
    grafana_url: Annotated[
        str | None,
        typer.Option(
            "--grafana-url",
            help="Grafana, http(s)://host:port[/path]; credentials from [grafana] token or "
            "username/password (config file or GREENMON_GRAFANA__TOKEN ...).",
            show_default="[grafana] url",
        ),
    ] = None,
    per_enterprise: Annotated[
        bool,
        typer.Option(
            "--per-enterprise",
            help="Also one folder and one team per enterprise (needs --registry), its detail "
            "dashboard inside, View for that team only.",
        ),
    ] = False,
    bureau_team: Annotated[
        str,
        typer.Option(
            "--bureau-team",
            help="With --per-enterprise: the team that sees every greenmon folder ('' for none).",
        ),
    ] = "greenmon-bureau",
    datasource_url: Annotated[
        str | None,
        typer.Option(
            "--datasource-url",
            help="InfluxDB URL as Grafana reaches it.",
            show_default="--influx-url / the local services",
        ),
    ] = None,
    influx_auth: Annotated[str, typer.Option("--influx-auth", help=_AUTH_HELP)] = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="Write everything, even what looks unchanged.")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Upsert the greenmon folder, data sources, dashboards and alert rules into Grafana.

    Reads each object first and writes only what differs, so pushing again changes nothing
    and says so. The InfluxDB password or token pushed to Grafana comes from the settings
    (`influx_password` / `influx_token`). With `--per-enterprise` every enterprise of the
    registry gets a folder with its own detail dashboard and a team `greenmon-<id>` with View
    on it alone; add an energy manager to their team in Grafana and they see only their plant.

    It needs a running Grafana (there is none in the test environment, so this line is not
    a runnable example): `greenmon dashboards push --grafana-url http://localhost:3000
    --registry fleet --per-enterprise`
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from greenmon.config import resolve_local_services
    from greenmon.dashboards.generate import DatasourceSpec, build_bundle
    from greenmon.dashboards.push import PushOptions, connect, push

    url = grafana_url or settings.grafana.url
    if url is None:
        raise ConfigError("no Grafana: pass --grafana-url or set [grafana] url")
    if datasource_url is None:
        settings = resolve_local_services(settings, need_mqtt=False, need_influx=True)
        datasource_url = settings.influx_url
    assert datasource_url is not None
    auth = _auth(settings, influx_auth)
    secret_value = settings.influx_token if auth == "token" else settings.influx_password
    spec = DatasourceSpec(
        url=datasource_url,
        database=settings.database,
        auth=auth,  # type: ignore[arg-type]
        username=settings.influx_username,
        secret=secret_value.get_secret_value() if secret_value is not None else None,
    )
    if per_enterprise and settings.registry is None:
        raise ConfigError("--per-enterprise needs the registry: pass --registry DIR")
    site = _site(settings)
    bundle = build_bundle(site)
    g = settings.grafana
    api = connect(
        url,
        token=g.token.get_secret_value() if g.token else None,
        username=g.username,
        password=g.password.get_secret_value() if g.password else None,
        timeout=g.timeout_s,
    )
    bar = Progress(TextColumn("pushing to Grafana"), BarColumn(), MofNCompleteColumn(),
                   console=err_console, transient=True, disable=json_out)  # fmt: skip
    with bar:
        task = bar.add_task("push", total=None)
        report = push(
            api,
            bundle,
            spec,
            site,
            PushOptions(
                per_enterprise=per_enterprise, bureau_team=bureau_team or None, force=force
            ),
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    report.notes[:0] = list(bundle.notes)
    if json_out:
        print_json(report.to_dict())
        return
    table = Table("what", "name", "result", title=f"Grafana {report.version or ''} at {url}")
    for a in report.actions:
        if a.outcome != "unchanged":
            table.add_row(a.kind, a.name, a.outcome)
    counts = report.counts()
    if report.changed:
        console.print(table)
        console.print(
            f"{counts['created']} created, {counts['updated']} updated, "
            f"{counts['unchanged']} unchanged"
        )
    else:
        console.print(
            f"Nothing changed: all {counts['unchanged']} objects in Grafana already match."
        )
    for note in report.notes:
        console.print(f"note: {note}")


def register(app: typer.Typer) -> None:
    """Add the `dashboards` command group (build, push) to the greenmon app."""
    dashboards_app = typer.Typer(help=_HELP, no_args_is_help=True, rich_markup_mode="markdown")
    dashboards_app.command("build")(service_options(build_cmd))
    dashboards_app.command("push")(service_options(push_cmd))
    app.add_typer(dashboards_app, name="dashboards")
