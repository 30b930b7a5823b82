"""`greenmon demo`, shortened: the whole chain on real services, checked against the design
of its fleet and the simulators' ground truth, then run a second time on the same services."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from tests.dashboards.conftest import schema_dirs
from tests.ingest.support import GREENMON

pytestmark = pytest.mark.integration

# Seed 24's first 12 enterprises: four built to breach their quota, a green leader with
# enough peers in its industry for screening to score it, and an outage gateway.
ARGS = ("--enterprises", "12", "--seed", "24")


def _demo(rt: Path, *extra: str) -> dict[str, Any]:
    res = subprocess.run(
        [GREENMON, "demo", "--runtime-dir", str(rt), *ARGS, *extra, "--json"],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def test_demo_end_to_end_twice(tmp_path: Path) -> None:
    rt = tmp_path / "rt"
    try:
        s = _demo(rt, "--days", "1")
        again = _demo(rt, "--days", "0", "--history", "none")
    finally:
        subprocess.run([GREENMON, "services", "down", "--runtime-dir", str(rt)], check=False)
    designed = s["designed"]
    assert s["enterprises"] == 12
    assert designed["breach"] and designed["green_leaders"] and designed["outage_gateway"]

    # Ingest: every injected malformed message was rejected, and the stream was written.
    ingest = s["ingest"]
    assert ingest["readings_written"] > 0
    assert sum(ingest["rejected_by_reason"].values()) >= ingest["malformed_injected"] > 0
    assert s["aggregate_follow"]["rounds"] >= 2
    assert s["alerts_watch"]["evaluations"] >= 1
    assert sum(r["enterprises"] for r in s["energy_by_county"]) == 12
    assert "placeholder" in s["intensity_reference"]  # the output names its reference

    # The history: a year and more of hourly readings, aggregated.
    assert s["history"]["readings"] > 12 * 24 * 365

    # Alerts: every enterprise built to breach is red, for its total; the outage gateway's
    # enterprise is silent and its last complete day incomplete.
    red = {r["subject"]: r for r in s["alerts"]["red"] if r["scope"] == "enterprise"}
    for e in designed["breach"]:
        assert e in red, (e, s["alerts"])
        assert red[e]["why"][0].startswith("total red"), red[e]
    quality = {(q["subject"], q["rule"]) for q in s["alerts"]["data_quality"]}
    outage = designed["outage_enterprise"]
    assert (outage, "gateway_silent") in quality
    assert (outage, "data_completeness") in quality
    assert s["outage"]["readings_removed"] > 0

    # Screening: the green leaders are the top candidates, and they pass — unless, in a
    # fleet this small, too few peers share their industry for the energy indicators to be
    # scored (the full demo's 60 have enough: all its leaders pass).
    top = s["screening"]["top"]
    leaders = set(designed["green_leaders"])
    assert {c["enterprise"] for c in top[: len(leaders)]} == leaders, top
    for c in top[: len(leaders)]:
        assert c["passed"] or all(r.startswith("coverage ") for r in c["fail_reasons"]), c
    assert any(c["passed"] for c in top[: len(leaders)]), top
    # Classes: every enterprise has one.
    classes = s["classes"]
    assert sum(classes["counts"].values()) == classes["enterprises"] == 12
    assert set(classes["counts"]) <= {"A", "B", "C", "D", "T"}
    assert s["plan"]["indicator_9"]["tce"] > 0

    # Reports and the provisioning tree exist; the dashboards validate against Grafana's
    # schema.
    for path in s["reports"].values():
        text = Path(path).read_text(encoding="utf-8")
        assert text.lstrip().lower().startswith("<!doctype html")
        assert "E0001" in text
    tree = Path(s["provisioning"])
    assert yaml.safe_load((tree / "datasources" / "greenmon.yaml").read_text())
    boards = sorted((tree / "dashboards" / "greenmon").glob("*.json"))
    assert len(boards) == len(s["dashboards"]["dashboards"]) >= 4
    schema = next((p / "dashboard.jsonschema.json" for p in schema_dirs() if p.is_dir()), None)
    if schema is not None and schema.is_file():
        validator = Draft7Validator(json.loads(schema.read_text()))
        for board in boards:
            assert list(validator.iter_errors(json.loads(board.read_text()))) == [], board

    # Numbers: equal to the truth except what meter replacements hide (the old meter's last
    # minutes); the year to date likewise.
    city = s["city_total"]
    assert city["truth_tce"] > 0
    assert abs(city["difference_pct"]) < 0.5, city
    ytd = s["year_to_date"]
    assert ytd["truth_tce"] > city["truth_tce"]
    assert abs(ytd["difference_pct"]) < 0.5, ytd

    # The second run: a clean database (no history left), the first run's retained alert
    # states cleared, and its own stream agreeing with its truth.
    assert again["history"]["readings"] == 0
    assert again["year_to_date"] is None
    assert again["retained_cleared"] > 0
    assert again["stored_readings"] <= again["ingest"]["readings_written"]
    assert again["city_total"]["truth_tce"] > 0
    assert abs(again["city_total"]["difference_pct"]) < 0.5, again["city_total"]
