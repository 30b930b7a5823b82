"""What every command shares: the connection options, settings loading, output and errors.

`service_options` adds ``--config --mqtt-url --influx-url --database --registry --runtime-dir``
to a command (they go after the command's own name) and hands the command one validated
`Settings`. `run_guarded` turns greenmon's own errors into a one-line message and an exit
code instead of a traceback.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from greenmon.config import load_settings
from greenmon.errors import ConfigError, GreenmonError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

_COMMON_PARAMS = [
    inspect.Parameter(
        "config",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "--config",
                help="TOML settings file (lowest precedence: GREENMON_* env vars and flags "
                "override it).",
                rich_help_panel="Connection",
            ),
        ],
    ),
    inspect.Parameter(
        "mqtt_url",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--mqtt-url",
                help="Broker, mqtt://host:port or mqtts://host:port.",
                show_default="the broker `greenmon services up` started",
                rich_help_panel="Connection",
            ),
        ],
    ),
    inspect.Parameter(
        "influx_url",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--influx-url",
                help="InfluxDB, http(s)://host:port.",
                show_default="the influxd `greenmon services up` started",
                rich_help_panel="Connection",
            ),
        ],
    ),
    inspect.Parameter(
        "database",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--database",
                help="InfluxDB database (2.x/3.x: bucket).",
                show_default="greenmon",
                rich_help_panel="Connection",
            ),
        ],
    ),
    inspect.Parameter(
        "registry",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "--registry",
                help="Registry directory (enterprises.csv, meters.csv, monthly.csv).",
                rich_help_panel="Connection",
            ),
        ],
    ),
    inspect.Parameter(
        "runtime_dir",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "--runtime-dir",
                help="Where local services keep data, logs and their URLs.",
                show_default=".greenmon/run",
                rich_help_panel="Connection",
            ),
        ],
    ),
]
_COMMON_NAMES = [p.name for p in _COMMON_PARAMS]


def service_options(fn: F) -> F:
    """Add the shared connection options; the command receives `settings: Settings`."""
    sig = inspect.signature(fn)
    # Resolve string annotations (PEP 563) here: Typer reads the signature we hand it.
    hints = typing.get_type_hints(fn, include_extras=True)
    own = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in sig.parameters.values()
        if p.name != "settings"
    ]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        common = {name: kwargs.pop(name, None) for name in _COMMON_NAMES}
        config_file = common.pop("config")
        settings = load_settings(config_file, **common)
        return fn(*args, settings=settings, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=own + _COMMON_PARAMS)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in own + _COMMON_PARAMS}
    return wrapper  # type: ignore[return-value]


JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def progress_bars() -> tuple[Any, Callable[[str, int, int], None]]:
    """A transient Rich progress display on stderr (use it as a context manager) and the
    ``update(label, done, total)`` callback that adds one bar per label."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   console=err_console, transient=True)  # fmt: skip
    tasks: dict[str, Any] = {}

    def update(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=total)
        bar.update(tasks[label], completed=done, total=total)

    return bar, update


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def fail(message: str, code: int = 1) -> None:
    _print_error("error", message)
    raise typer.Exit(code)


def _print_error(label: str, message: object) -> None:
    # Text, not markup: a message may contain [brackets] from user input.
    err_console.print(Text.assemble((f"{label}: ", "bold red"), str(message)), highlight=False)


def run_guarded(app: Callable[[], Any]) -> None:
    """Run the Typer app; greenmon's own errors become a message and an exit code."""
    try:
        app()
    except ConfigError as exc:
        _print_error("configuration error", exc)
        sys.exit(2)
    except GreenmonError as exc:
        _print_error("error", exc)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
