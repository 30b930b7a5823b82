"""`greenmon demo`, shortened: the whole chain on real services, checked against the truth."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.ingest.support import GREENMON

pytestmark = pytest.mark.integration


def test_demo_end_to_end(tmp_path: Path) -> None:
    rt = tmp_path / "rt"
    try:
        res = subprocess.run(
            [
                GREENMON,
                "demo",
                "--runtime-dir",
                str(rt),
                "--enterprises",
                "6",
                "--days",
                "1",
                "--seed",
                "3",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        subprocess.run([GREENMON, "services", "down", "--runtime-dir", str(rt)], check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads(res.stdout)
    ingest = s["ingest"]
    assert ingest["readings_written"] > 0
    # Every injected malformed message was rejected, none of the good ones.
    assert sum(ingest["rejected_by_reason"].values()) >= ingest["malformed_injected"] > 0
    assert s["aggregate_follow"]["rounds"] >= 1
    assert s["aggregate_follow"]["days_recomputed"] >= 1
    assert s["energy_by_county"] and s["energy_by_industry"]
    assert sum(r["enterprises"] for r in s["energy_by_county"]) == s["enterprises"] == 6
    assert s["most_intensive"] and s["least_intensive"]
    assert "placeholder" in s["intensity_reference"]  # the output names its reference
    city = s["city_total"]
    assert city["truth_tce"] > 0
    # Equal to the truth except what meter replacements hide (the old meter's last minutes).
    assert abs(city["difference_pct"]) < 0.5, city
