"""docs/gateways.md: its two example blocks run as the bash scripts they are, against local
services, in a directory laid out as `make demo` leaves it (the demo's registry in
`.greenmon/run/demo/fleet`), and do what the guide says they do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_examples import _env, _stop_services_under

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "gateways.md"


def blocks() -> list[str]:
    """The `sh` blocks of the guide's "Try it against the demo" section, in order."""
    section = GUIDE.read_text(encoding="utf-8").split("\n## Try it against the demo", 1)[1]
    section = section.split("\n## ", 1)[0]
    return [b.split("```", 1)[0] for b in section.split("```sh\n")[1:]]


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    if not (tmp_path / ".venv" / "bin" / "activate").is_file():
        pytest.skip("not running inside a virtual environment (no .venv/bin/activate)")
    # What the guide relies on from the demo: its fleet, written the way the demo writes it.
    from greenmon.demo.fleet import fleet_for_demo

    fleet_for_demo(tmp_path / ".greenmon" / "run" / "demo" / "fleet")
    return tmp_path


def _run(script: str, cwd: Path) -> tuple[int, str]:
    log = cwd / "guide.log"
    try:
        with log.open("wb") as out:
            res = subprocess.run(
                ["bash", "-e", "-c", script],
                cwd=cwd,
                env={**_env(), "COLUMNS": "200"},
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=300,
                check=False,
            )
    finally:
        _stop_services_under(cwd, keep=cwd / "none")
    return res.returncode, log.read_text(errors="replace")


def test_the_guide_has_its_two_examples() -> None:
    first, second = blocks()
    assert "mosquitto_pub" in first and "greenmon ingest" in first
    assert "--cafile" in second and "broker-auth" in second


def test_demo_example_stores_three_readings_and_refuses_five(demo_dir: Path) -> None:
    code, text = _run(blocks()[0], demo_dir)
    assert code == 0, text[-4000:]
    summary, letters = text.split("rejected readings or messages in", 1)
    assert re.search(r"\bwritten\s*│\s*3\s*│", summary), summary[-4000:]
    reasons = ("bad_value", "wrong_enterprise", "unit_mismatch", "bad_timestamp", "unknown_meter")
    for reason in reasons:
        assert f"'{reason}': 1" in summary, (reason, summary[-4000:])  # the ingestor's count
        assert re.search(rf"│ {reason}\s*│ 1\s*│", letters), (reason, letters)  # dead-letters
    assert letters.lstrip().startswith("5 dead letters")


def test_tls_example_accepts_own_topic_refuses_others(demo_dir: Path) -> None:
    code, text = _run(blocks()[1], demo_dir)
    assert code == 0, text[-4000:]
    assert text.count("Publish 1 failed: Not authorized.") == 1, text[-4000:]
    assert "not authorised" in text
    assert os.path.exists(demo_dir / ".greenmon" / "auth" / "credentials.csv")
