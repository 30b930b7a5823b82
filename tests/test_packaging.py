"""A regular `pip install` of the built wheel gives a working `greenmon` in a fresh venv.

Builds the wheel from the source tree, checks that everything lands under `greenmon/`
(never a bare `ingest` or `rules`), installs it into a throwaway venv and runs
`greenmon --help` there. Dependencies come from the package index (pip's cache makes the
second run quick).
"""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("ingest", "rules", "aggregator", "dashboards", "simulators", "deploy")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    if not (ROOT / "pyproject.toml").is_file():
        pytest.fail("tests must run from a source checkout")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("greenmon-*.whl")
    return whl


def test_wheel_has_one_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"greenmon"}
    for stage in STAGES:
        assert f"greenmon/{stage}/__init__.py" in names
    assert "greenmon/deploy/templates/mosquitto.conf" in names
    assert "greenmon/data/energy_coefficients.csv" in names


def test_fresh_venv_gets_a_working_console_script(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True
    )
    res = subprocess.run(
        [str(env_dir / "bin" / "greenmon"), "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert "services" in res.stdout
    # Stages import as subpackages and nothing bare is importable.
    probe = subprocess.run(
        [
            str(py),
            "-c",
            "import importlib.util as u, greenmon.ingest, greenmon.deploy.local;"
            "print([m for m in ('ingest','rules','aggregator','deploy') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"
