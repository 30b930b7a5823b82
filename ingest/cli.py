"""`greenmon ingest`: run the MQTT -> InfluxDB ingestor until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.logging import RichHandler
from rich.table import Table

from greenmon.cli_common import JsonOption, console, print_json, service_options
from greenmon.config import IngestSettings, Settings, resolve_local_services
from greenmon.errors import ConfigError
from greenmon.registry import load_registry


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
            help="Prometheus /metrics on 127.0.0.1:PORT; 0 disables.", show_default="9108"
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

    Example: `greenmon ingest --registry examples/registry` (with `greenmon services up`).
    """
    from greenmon.ingest.service import Ingestor, ingest_paths

    logging.basicConfig(
        level=log_level.upper(),
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
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
    registry = load_registry(settings.registry)
    ingestor = Ingestor(settings, registry)
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
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
        "dead_letters": str(dead_file),
    }
    if json_out:
        print_json(summary)
        return
    table = Table("metric", "value", title="ingest summary")
    for k, v in summary.items():
        table.add_row(k, str(v))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("ingest")(service_options(ingest))
