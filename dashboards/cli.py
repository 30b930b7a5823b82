"""`greenmon dashboards build` and `greenmon dashboards push`: the dashboards stage's commands.

`register` is what `greenmon.cli` calls to add them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from greenmon.cli_common import JsonOption, console, print_json, service_options
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

    if settings.registry is None:
        return Site(tz=settings.timezone)
    return Site.from_registry(load_registry(settings.registry), tz=settings.timezone)


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


def register(app: typer.Typer) -> None:
    """Add the `dashboards` command group (build, push) to the greenmon app."""
    dashboards_app = typer.Typer(help=_HELP, no_args_is_help=True, rich_markup_mode="markdown")
    dashboards_app.command("build")(service_options(build_cmd))
    app.add_typer(dashboards_app, name="dashboards")
