"""The command line: --help everywhere, --version, readable errors, no secrets in output."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import typer
from typer.testing import CliRunner

from greenmon import __version__
from greenmon.cli import app

runner = CliRunner()


def _command_paths() -> Iterator[list[str]]:
    root = typer.main.get_command(app)

    def walk(cmd: object, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])

    yield from walk(root, [])


ALL_COMMANDS = list(_command_paths())


def test_there_are_commands() -> None:
    assert ["services", "up"] in ALL_COMMANDS


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "greenmon")
def test_help_everywhere(path: list[str]) -> None:
    res = runner.invoke(app, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_version() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.output.strip() == f"greenmon {__version__}"


# Commands that never talk to a configured broker or database: they write files, or (the
# benchmarks) start private services of their own.
OFFLINE = [
    ["services", "broker-auth"],
    ["services", "dev-tls"],
    ["simulate", "fleet"],
    ["bench", "ingest"],
    ["bench", "aggregate"],
    ["bench", "alerts"],
    ["bench", "screen"],
]


def test_offline_commands_exist() -> None:
    assert all(p in ALL_COMMANDS for p in OFFLINE)


@pytest.mark.parametrize(
    "path",
    [p for p in ALL_COMMANDS if len(p) == 2 and p not in OFFLINE],
    ids=lambda p: " ".join(p),
)
def test_leaf_commands_take_the_shared_options(path: list[str]) -> None:
    res = runner.invoke(app, [*path, "--help"])
    for opt in ("--config", "--mqtt-url", "--influx-url", "--database", "--registry"):
        assert opt in res.output, f"{' '.join(path)} lacks {opt}"


def test_bad_flag_is_a_readable_error(tmp_path: object) -> None:
    import sys
    from subprocess import run

    res = run(
        [sys.executable, "-m", "greenmon.cli", "services", "status", "--mqtt-url", "http://x"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2
    assert "mqtt_url" in res.stderr
    assert "Traceback" not in res.stderr


def test_secrets_never_in_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENMON_MQTT_PASSWORD", "hunter2-secret")
    for path in ALL_COMMANDS:
        res = runner.invoke(app, [*path, "--help"])
        assert "hunter2-secret" not in res.output
