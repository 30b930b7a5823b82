"""Every example in a command's `--help`, and the README's quick start, runs without error.

The examples are found, not listed: every command registered in `greenmon.cli.app` (groups
included, so commands added later are covered) is walked, and in its help text every
paragraph that starts with "Example" is read for backticked command lines starting with
``greenmon `` (a line may wrap inside its backticks). Other backticked text, in those
paragraphs or elsewhere, is prose.

A command's examples run in order, as child processes, in one fresh copy of a prepared
directory: a clone's ``tests/data/registry``, the ``fleet/`` that
``greenmon simulate fleet -n 50 --seed 7 --out fleet/`` writes, and its ``gateways.csv``.
The copy's ``.greenmon/run`` is this module's private Mosquitto + influxd, so an example finds
them as it would after ``greenmon services up``. Each example must:

- parse (Click: unknown options, bad values and missing input files fail here);
- exit 0, or, for a command that runs until stopped (`RUNS_UNTIL_STOPPED`), still run after
  a few seconds and exit 0 on SIGTERM;
- print no ``error:``.

Benchmarks and the demo (`SLOW`: minutes each; their own tests run them at a smaller size)
are parsed only, unless ``GREENMON_SLOW_EXAMPLES=1``. Services an example starts in its copy
are stopped afterwards; the private pair is restarted if an example stopped it.

The README's quick start runs as the bash script it is (``set -e``), all but its ``make``
lines, in a directory holding ``tests/data/registry`` and ``.venv``, with its own services.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer._click.core import Command, Context
from typer._click.exceptions import ClickException

from greenmon.cli import app
from greenmon.deploy.local import LocalServices
from greenmon.ingest.process import IngestorProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "tests" / "data" / "registry"

# Command paths (and, when it matters, an option) of examples that run until stopped (the
# path exactly: `ingest` runs until stopped, `ingest replay` does not).
RUNS_UNTIL_STOPPED: tuple[tuple[str, ...], ...] = (
    ("ingest",),
    ("aggregate", "--follow"),
    ("alerts", "watch"),
)
SLOW: tuple[tuple[str, ...], ...] = (("bench",), ("demo",))  # and everything under them
RUN_SLOW = os.environ.get("GREENMON_SLOW_EXAMPLES") == "1"
STARTUP_S = 6.0  # a command that runs until stopped must still run after this long
BATCH_TIMEOUT_S = 240.0

_COMMAND_LINE = re.compile(r"`(greenmon\s[^`]+)`")


def examples_in(help_text: str) -> list[str]:
    """The backticked `greenmon ...` lines of the paragraphs that start with "Example"."""
    found: list[str] = []
    for para in re.split(r"\n\s*\n", inspect.cleandoc(help_text)):
        if para.lstrip().startswith("Example"):
            found += [" ".join(m.split()) for m in _COMMAND_LINE.findall(para)]
    return found


def _walk(cmd: Command, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Command]]:
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _walk(sub, (*path, name))


ROOT_COMMAND = typer.main.get_command(app)
EXAMPLES = {
    " ".join(path) or "greenmon": examples_in(cmd.help or "")
    for path, cmd in _walk(ROOT_COMMAND, ())
}


def parse(argv: list[str]) -> tuple[str, ...]:
    """Parse an example's arguments as Click will (raising on any error); its command path."""
    cmd: Command = ROOT_COMMAND
    ctx: Context = cmd.make_context("greenmon", list(argv))
    path: list[str] = []
    while hasattr(cmd, "commands"):
        # A group keeps the subcommand's name apart from the rest (Click's protected args).
        rest = [*getattr(ctx, "_protected_args", ()), *ctx.args]
        if not rest:
            break
        name, sub, rest = cmd.resolve_command(ctx, rest)  # type: ignore[attr-defined]
        assert name is not None and sub is not None
        path.append(name)
        ctx = sub.make_context(name, rest, parent=ctx)
        cmd = sub
    return tuple(path)


def _matches(
    argv: list[str], path: tuple[str, ...], table: tuple[tuple[str, ...], ...], *, prefix: bool
) -> bool:
    """Whether the example is in `table`: its command path is an entry's (or, with `prefix`,
    starts with it) and it has the entry's options."""
    for entry in table:
        names = tuple(e for e in entry if not e.startswith("-"))
        options = [e for e in entry if e.startswith("-")]
        same = path[: len(names)] == names if prefix else path == names
        if same and all(o in argv for o in options):
            return True
    return False


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "120"
    # The default metrics port (9108) may be taken by anything else on this machine.
    env["GREENMON_INGEST__METRICS_PORT"] = "0"
    return {k: v for k, v in env.items() if not k.startswith("GREENMON_") or k in _OWN_ENV}


_OWN_ENV = {"GREENMON_INGEST__METRICS_PORT", "GREENMON_RETENTION__RAW_DAYS"}  # see conftest


def run_example(line: str, cwd: Path, log: Path) -> None:
    argv = shlex.split(line)
    assert argv[0] == "greenmon", line
    old = Path.cwd()
    os.chdir(cwd)  # relative paths of the example (exists=True checks) resolve in its copy
    try:
        path = parse(argv[1:])
    except ClickException as exc:
        pytest.fail(f"`{line}` does not parse: {exc.format_message()}")
    finally:
        os.chdir(old)
    if _matches(argv, path, SLOW, prefix=True) and not RUN_SLOW:
        return
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "greenmon.cli", *argv[1:]],
            cwd=cwd,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            if _matches(argv, path, RUNS_UNTIL_STOPPED, prefix=False):
                try:
                    proc.wait(timeout=STARTUP_S)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=60)
                else:
                    pytest.fail(f"`{line}` exited at once ({proc.returncode}):\n{_tail(log)}")
            else:
                try:
                    proc.wait(timeout=BATCH_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    pytest.fail(
                        f"`{line}` still runs after {BATCH_TIMEOUT_S:.0f} s; if it runs until "
                        f"stopped, add it to RUNS_UNTIL_STOPPED:\n{_tail(log)}"
                    )
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, f"`{line}` exited {proc.returncode}:\n{_tail(log)}"
    assert "error:" not in text.lower(), f"`{line}` printed an error:\n{_tail(log)}"


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _stop_services_under(directory: Path, keep: Path) -> None:
    """`services down` for every runtime directory an example started services in."""
    for state in directory.rglob("services.json"):
        if state.parent.resolve() != keep.resolve():
            LocalServices(state.parent).down()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, LocalServices]]:
    base = tmp_path_factory.mktemp("examples")
    svc = LocalServices(base / "run")
    svc.up()
    template = base / "template"
    shutil.copytree(REGISTRY, template / "tests" / "data" / "registry")
    res = subprocess.run(
        [sys.executable, "-m", "greenmon.cli", "simulate", "fleet", "-n", "50", "--seed", "7",
         "--out", "fleet/", "--json"],
        cwd=template, env=_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    shutil.copy(template / "fleet" / "gateways.csv", template / "gateways.csv")
    # One simulated day of the fleet ingested into `greenmon`, for the examples that read it.
    ingestor = IngestorProcess(svc, template / "fleet", "greenmon", "examples-prep", base / "prep")
    try:
        ingestor.wait_connected()
        res = subprocess.run(
            [sys.executable, "-m", "greenmon.cli", "simulate", "run", "--registry", "fleet/",
             "--start", "2025-06-02", "--days", "1", "--json",
             "--runtime-dir", str(svc.runtime_dir)],
            cwd=template, env=_env(), capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        ingestor.wait_written(json.loads(res.stdout)["readings"], timeout=120, poll_s=0.2)
    finally:
        ingestor.stop()
    try:
        yield template, svc
    finally:
        svc.down()


def test_examples_are_found() -> None:
    """The walk sees the commands and their examples (guards the discovery itself)."""
    assert examples_in("Run it.\n\nExample: `greenmon a --b` then\n`greenmon c\n  d`.") == [
        "greenmon a --b",
        "greenmon c d",
    ]
    assert examples_in("See `greenmon x`.\n\nNot an example: `greenmon y`.") == []
    assert "greenmon ingest --registry tests/data/registry" in EXAMPLES["ingest"]
    assert sum(map(len, EXAMPLES.values())) >= 10


@pytest.mark.parametrize(
    "command", [c for c, ex in EXAMPLES.items() if ex], ids=lambda c: c.replace(" ", "-")
)
def test_help_examples_run(
    command: str, prepared: tuple[Path, LocalServices], tmp_path: Path
) -> None:
    template, svc = prepared
    work = tmp_path / "work"
    shutil.copytree(template, work, symlinks=True)
    (work / ".greenmon").mkdir()
    (work / ".greenmon" / "run").symlink_to(svc.runtime_dir, target_is_directory=True)
    try:
        for i, line in enumerate(EXAMPLES[command]):
            run_example(line, work, tmp_path / f"example-{i}.log")
    finally:
        _stop_services_under(work, keep=svc.runtime_dir)
        svc.up()  # in case an example stopped the shared pair


def quick_start_script(readme: str) -> str:
    """The first ``sh`` block of the README's "Quick start" section, less its `make` lines."""
    section = readme.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [ln for ln in block.splitlines() if not ln.lstrip().startswith("make ")]
    return "\n".join(lines) + "\n"


def test_readme_quick_start_runs(tmp_path: Path) -> None:
    script = quick_start_script((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "greenmon ingest" in script and "mosquitto_pub" in script
    shutil.copytree(REGISTRY, tmp_path / "tests" / "data" / "registry")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    if not (tmp_path / ".venv" / "bin" / "activate").is_file():
        pytest.skip("not running inside a virtual environment (no .venv/bin/activate)")
    log = tmp_path / "quick-start.log"
    try:
        with log.open("wb") as out:
            res = subprocess.run(
                ["bash", "-e", "-c", script],
                cwd=tmp_path,
                env=_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=300,
                check=False,
            )
    finally:
        _stop_services_under(tmp_path, keep=tmp_path / "none")
    text = log.read_text(errors="replace")
    assert res.returncode == 0, f"quick start failed ({res.returncode}):\n{text[-4000:]}"
    assert "error:" not in text.lower(), text[-4000:]
    # The two readings were stored and aggregated: E0001's row shows the 43.72 kWh in tce.
    assert re.search(r"E0001\s.*\b0\.005\b", text), text[-4000:]
    assert re.search(r"\bwritten\s*│\s*2\s*│", text), text[-4000:]  # ingest's summary
