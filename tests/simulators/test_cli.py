"""`greenmon simulate ...` and `greenmon bench simulate` through Typer, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from greenmon.errors import ConfigError
from greenmon.simulators.cli import register, register_bench
from greenmon.simulators.errors import FleetError, SimulatorError

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    bench = typer.Typer()
    register_bench(bench)
    app.add_typer(bench, name="bench")
    return app


@pytest.fixture(scope="module")
def fleet_dir(app: typer.Typer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "fleet"
    result = runner.invoke(
        app, ["simulate", "fleet", "-n", "12", "--seed", "4", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["enterprises"] == 12 and summary["monthly_rows"] == 144
    return out


def _run(app: typer.Typer, fleet: Path, tmp: Path, name: str, *extra: str) -> dict[str, object]:
    result = runner.invoke(
        app,
        [
            "simulate",
            "run",
            "--registry",
            str(fleet),
            "--faults",
            "demo,malformed=0.02",
            "--truth",
            str(tmp / f"{name}.parquet"),
            "--out-file",
            str(tmp / f"{name}.jsonl"),
            "--runtime-dir",
            str(tmp / "rt"),
            "--json",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    summary: dict[str, object] = json.loads(result.stdout)
    return summary


def test_same_seed_same_bytes_other_seed_differs(
    app: typer.Typer, fleet_dir: Path, tmp_path: Path
) -> None:
    a = _run(app, fleet_dir, tmp_path, "a")
    _run(app, fleet_dir, tmp_path, "b")
    c = _run(app, fleet_dir, tmp_path, "c", "--seed", "5")
    assert a["seed"] == 4 and c["seed"] == 5  # the run seed defaults to the fleet's
    for suffix in (".parquet", ".malformed.parquet", ".jsonl"):
        same = (tmp_path / f"a{suffix}").read_bytes(), (tmp_path / f"b{suffix}").read_bytes()
        assert same[0] == same[1], suffix
        assert same[0] != (tmp_path / f"c{suffix}").read_bytes(), suffix
    assert a["messages"] == len((tmp_path / "a.jsonl").read_text().splitlines())
    assert a["out_file"] == str(tmp_path / "a.jsonl") and "published" not in a


def test_usage_errors(app: typer.Typer, fleet_dir: Path, tmp_path: Path) -> None:
    base = ["simulate", "run", "--registry", str(fleet_dir), "--out-file", str(tmp_path / "x")]
    for option, value, text in (
        ("--faults", "spike=2", "between 0 and 1"),
        ("--interval", "7s", "divide a day"),
        ("--start", "yesterday", "ISO 8601"),
        ("--speed", "fast-ish", "a number"),
    ):
        result = runner.invoke(app, [*base, option, value])
        assert result.exit_code == 2, (option, result.output)
        assert text in result.output
    result = runner.invoke(app, [*base, "--days", "0.3"])
    assert isinstance(result.exception, SimulatorError)
    assert "whole number" in str(result.exception)
    result = runner.invoke(app, ["simulate", "run", "--out-file", str(tmp_path / "x")])
    assert isinstance(result.exception, ConfigError)
    result = runner.invoke(
        app,
        ["simulate", "run", "--registry", str(fleet_dir), "--runtime-dir", str(tmp_path / "none")],
    )
    assert isinstance(result.exception, ConfigError)
    assert "greenmon services up" in str(result.exception)
    result = runner.invoke(app, ["simulate", "fleet", "-n", "3", "--out", str(fleet_dir)])
    assert isinstance(result.exception, FleetError)
    result = runner.invoke(
        app, ["simulate", "run", "--registry", str(tmp_path), "--out-file", str(tmp_path / "x")]
    )
    assert isinstance(result.exception, FleetError)


def test_help_on_every_command(app: typer.Typer) -> None:
    for args in (
        ["simulate"],
        ["simulate", "fleet"],
        ["simulate", "run"],
        ["simulate", "replay"],
        ["bench", "simulate"],
    ):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, args
        assert "Usage" in result.output


def test_bench_offline(app: typer.Typer) -> None:
    result = runner.invoke(app, ["bench", "simulate", "-n", "15", "--no-publish", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["enterprises"] == 15 and figures["messages"] > 1000
    assert figures["plan_messages_per_s"] > 0 and "publish_messages_per_s" not in figures


@pytest.mark.integration
def test_bench_publishes_beside_its_goal(mqtt_url: str) -> None:
    from greenmon.simulators.bench import PUBLISH_GOAL_S, run_bench

    figures = run_bench(enterprises=5, days=0.5, mqtt_url=mqtt_url, processes=2)
    assert figures["published"] == figures["messages"] > 100
    # the goal scales with the fleet and the days: 5 enterprises x half a day
    assert figures["publish_goal_s"] == pytest.approx(PUBLISH_GOAL_S * 0.5 * 5 / 1000)
    assert figures["publish_within_goal"] is (figures["publish_s"] <= figures["publish_goal_s"])
    assert "c_limit_s" not in figures  # the C clients' limit only on its own broker


@pytest.mark.integration
def test_bench_measures_the_brokers_limit_in_the_same_run() -> None:
    from greenmon.simulators.bench import run_bench

    figures = run_bench(enterprises=5, days=0.25, processes=2)  # a private Mosquitto
    assert figures["published"] == figures["messages"] > 50
    assert figures["mqtt_url"].startswith("private Mosquitto")
    assert figures["c_limit_s"] > 0
    # rate and ratio come from the unrounded seconds; a tiny run's seconds, printed with 3
    # decimals, are only known to +-0.0005 s, so check them within what that rounding allows
    half = 0.0005
    c_lo, c_hi = max(figures["c_limit_s"] - half, 1e-9), figures["c_limit_s"] + half
    rate = figures["c_limit_messages_per_s"]
    assert figures["messages"] / c_hi * 0.999 <= rate <= figures["messages"] / c_lo * 1.001
    ratio = figures["publish_vs_c_limit"]
    p_lo, p_hi = max(figures["publish_s"] - half, 0.0), figures["publish_s"] + half
    assert p_lo / c_hi - 0.01 <= ratio <= p_hi / c_lo + 0.01  # the ratio has 2 decimals
    assert figures["load_average_1m"] >= 0
