"""`greenmon screen` and `greenmon classify` on a simulated city whose answers are known.

The fleet (300 enterprises, seed 3) is built by the simulators: about 4% "green leaders"
(intensity 0.30-0.40 of their industry's typical value, twice the usual output per mu, PV for
about 30% of their electricity, every requirement declared), about 15% green candidates (0.45-0.7
of typical), the rest typical (0.75-2.0) — each declared attribute drawn so that green firms
declare what a green factory must. Two changes make two more known answers: the first leader
declares a major violation, and the first green candidate has no product output for March.

What the aggregator would have written for 2025 (and the months of 2024) is written straight
into InfluxDB as its output points (`greenmon.simulators.outputs`: the real `meter_energy` and
`enterprise_energy` functions over daily quantities drawn from the fleet's design), because
screening reads only those; `test_chain.py` runs the real aggregator instead. The commands
run as a user runs them (the `greenmon` executable, `--json`), against the test influxd.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from greenmon.influx import InfluxClient
from greenmon.registry import load_registry
from greenmon.simulators.fleet import Fleet, generate_fleet, write_fleet
from greenmon.simulators.outputs import synthesize_year, write_outputs
from tests.ingest.support import GREENMON
from tests.rules.screening.chromium import render

pytestmark = pytest.mark.integration

YEAR = 2025


@dataclasses.dataclass
class City:
    fleet: Fleet
    registry_dir: Path
    influx_url: str
    database: str
    work: Path
    violator: str  # the first leader: declares a major violation
    no_product: str  # the first green candidate: no product output in 2025-03

    def design(self) -> dict[str, str]:
        return dict(self.fleet.sim_enterprises.select("enterprise_id", "design").iter_rows())

    def run(self, *args: str) -> dict[str, Any]:
        return json.loads(self.text(*args, "--json"))  # type: ignore[no-any-return]

    def text(self, *args: str) -> str:
        out = subprocess.run(
            [GREENMON, *args, "--influx-url", self.influx_url, "--database", self.database,
             "--registry", str(self.registry_dir), "--year", str(YEAR)],
            capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "160"},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "error" not in out.stderr
        return out.stdout


@pytest.fixture(scope="module")
def city(influx_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    work = tmp_path_factory.mktemp("city")
    fleet = generate_fleet(300, 3, year=YEAR, leader_share=0.04, history_years=1)
    designs = fleet.sim_enterprises
    violator = designs.filter(pl.col("design") == "green_leader")["enterprise_id"][0]
    no_product = designs.filter(pl.col("design") == "green_candidate")["enterprise_id"][0]
    fleet = dataclasses.replace(
        fleet,
        enterprises=fleet.enterprises.with_columns(
            pl.when(pl.col("enterprise_id") == violator)
            .then(pl.lit("true"))
            .otherwise(pl.col("major_violation"))
            .alias("major_violation")
        ),
        monthly=fleet.monthly.with_columns(
            pl.when((pl.col("enterprise_id") == no_product) & (pl.col("month") == "2025-03"))
            .then(None)
            .otherwise(pl.col("product_output"))
            .alias("product_output")
        ),
    )
    write_fleet(fleet, work / "fleet")
    registry = load_registry(work / "fleet")
    frames = synthesize_year(fleet, registry.meters, registry.enterprises, YEAR, previous_years=1)
    database = "t_" + uuid.uuid4().hex[:12]
    client = InfluxClient(influx_url, database, timeout=120.0)
    client.ensure_database()
    try:
        write_outputs(
            client,
            {
                "energy": frames["energy"].filter(pl.col("carrier") == "total"),
                "meter_energy": frames["meter_energy"].filter(pl.col("role") == "generation"),
            },
        )
        yield City(fleet, work / "fleet", influx_url, database, work, violator, no_product)
    finally:
        client.drop_database()
        client.close()


@pytest.fixture(scope="module")
def screened(city: City) -> dict[str, Any]:
    return city.run("screen", "--report", str(city.work / "screen.html"))


@pytest.fixture(scope="module")
def classified(city: City) -> dict[str, Any]:
    return city.run("classify", "--report", str(city.work / "classify.html"))


def test_the_efficient_enterprises_are_the_top_candidates_and_pass(
    city: City, screened: dict[str, Any]
) -> None:
    design = city.design()
    cands = screened["candidates"]
    assert [c["rank"] for c in cands] == list(range(1, 301))
    leaders = [c for c in cands if design[c["enterprise"]] == "green_leader"]
    assert len(leaders) >= 8
    for c in leaders:
        if c["enterprise"] != city.violator:
            assert c["passed"], (c["enterprise"], c["fail_reasons"])
    assert sorted(c["rank"] for c in leaders)[len(leaders) // 2] <= 30  # median in the top 10%
    top = [design[c["enterprise"]] for c in cands[:15]]
    assert set(top) <= {"green_leader", "green_candidate"}, top
    by_design: dict[str, list[bool]] = {}
    for c in cands:
        by_design.setdefault(design[c["enterprise"]], []).append(c["passed"])
    rate = {d: sum(v) / len(v) for d, v in by_design.items()}
    assert rate["green_candidate"] >= 0.85
    assert rate["typical"] <= 0.10 and rate["quota_breach"] <= 0.10
    passing = [design[c["enterprise"]] for c in cands if c["passed"]]
    efficient = sum(d in ("green_leader", "green_candidate") for d in passing)
    assert efficient / len(passing) >= 0.75
    # ranked best first: every passing candidate before every failing one, scores descending
    flags = [c["passed"] for c in cands]
    assert flags == sorted(flags, reverse=True)
    passing_scores = [c["score"] for c in cands if c["passed"]]
    assert passing_scores == sorted(passing_scores, reverse=True)


def test_a_missing_basic_requirement_fails_whatever_the_score(
    city: City, screened: dict[str, Any]
) -> None:
    c = next(c for c in screened["candidates"] if c["enterprise"] == city.violator)
    assert c["score"] >= 60  # a leader's score: enough to pass ...
    assert not c["passed"]  # ... and yet it fails
    assert c["fail_reasons"] == ["requirement not met: legal_compliance"]
    req = {r["id"]: r for r in c["requirements"]}
    assert not req["legal_compliance"]["met"]
    assert req["legal_compliance"]["detail"] == "declared major_violation = true; false required"
    assert req["energy_management_system"]["met"] and req["online_monitoring"]["met"]


def test_no_product_output_leaves_unit_product_indicators_unscored(
    city: City, screened: dict[str, Any]
) -> None:
    c = next(c for c in screened["candidates"] if c["enterprise"] == city.no_product)
    ind = {i["id"]: i for i in c["indicators"]}
    for name in ("unit_product_energy", "unit_product_carbon"):
        assert ind[name]["value"] is None and ind[name]["score"] is None
        assert not ind[name]["scored"]
        assert ind[name]["reason"] == "no product output in monthly.csv for 2025-03"
    assert all(ind[n]["scored"] for n in ("energy_intensity", "output_per_mu", "renewable_share"))
    assert c["coverage"] < 1.0
    # every other candidate of the same industry has them scored (or says why not)
    for other in screened["candidates"]:
        for i in other["indicators"]:
            assert i["scored"] or i["reason"], (other["enterprise"], i["id"])


def test_json_shape_names_every_file_and_the_plan(screened: dict[str, Any]) -> None:
    c = screened["candidates"][0]
    assert set(c) >= {"enterprise", "score", "passed", "requirements", "indicators", "rank"}
    assert set(c["indicators"][0]) >= {"value", "baseline", "leading", "score", "gap"}
    files = {f["kind"]: f for f in screened["files"]}
    assert files["green-factory-criteria"]["statuses"] == ["placeholder"]
    assert files["efficiency-criteria"]["label"].startswith(
        "greenmon/rules/data/efficiency_huaian_2024.toml v2026.1 (third-party)"
    )
    plan = screened["plan"]
    assert plan["indicator_9"]["reference_status"] == "placeholder"
    assert plan["indicator_10"]["passing_screening"] == screened["summary"]["passed"]
    assert plan["indicator_10"]["new_target"] == 40
    counts = plan["safeguard_3"]["class_counts_by_county"]
    assert sum(r["enterprises"] for r in counts) == 300
    assert screened["period"]["whole_year"] and screened["period"]["days"] == 365
    assert screened["stored"] == {"screening": 300, "efficiency_class": 300}


def test_classes_follow_the_cut_offs(classified: dict[str, Any]) -> None:
    ents = classified["enterprises"]
    cuts = [(c["class"], c["upper"]) for c in classified["criteria"]["classes"]["cuts"]]
    for e in ents:
        if not e["evaluated"]:
            assert e["class"] == "T" and e["reason"]
            continue
        share = e["rank"] / e["ranked_among"]
        assert e["class"] == next(name for name, upper in cuts if share <= upper + 1e-9)
    # ranks within a county are 1..n with ties sharing the better rank
    for county in {e["county"] for e in ents}:
        ranked = sorted(
            (e for e in ents if e["county"] == county and e["ranked_in"] == county),
            key=lambda e: e["rank"],
        )
        for i, e in enumerate(ranked):
            assert e["rank"] <= i + 1
            if i:
                assert e["score"] <= ranked[i - 1]["score"]
    new_firms = [e for e in ents if e["reason"] and e["reason"].startswith("producing")]
    assert new_firms  # about 5% of typical firms started less than two years ago
    summary = {r["county"]: r for r in classified["counties"]}
    for county, row in summary.items():
        mine = [e for e in ents if e["county"] == county]
        assert row["enterprises"] == len(mine)
        assert row["T"] == sum(e["class"] == "T" for e in mine)
    assert {b["basis"] for b in classified["benchmarks"]} == {"2024 county average x 2"}


def test_decisions_are_stored_one_point_per_enterprise_and_year(
    city: City, screened: dict[str, Any], classified: dict[str, Any]
) -> None:
    with InfluxClient(city.influx_url, city.database) as client:
        s = client.query(
            'SELECT "score", "passed", "rank", "criteria" FROM "screening" GROUP BY "enterprise"'
        )
        e = client.query('SELECT "class", "class_code" FROM "efficiency_class" GROUP BY "year"')
    assert s.height == 300 and s["enterprise"].n_unique() == 300
    rank = {c["enterprise"]: c["rank"] for c in screened["candidates"]}
    assert dict(zip(s["enterprise"], s["rank"], strict=True)) == {
        k: float(v) for k, v in rank.items()
    }
    assert s["criteria"][0].startswith("greenmon/rules/data/green_factory_2025.toml")
    # gaps: per enterprise, each indicator's short gap as the JSON output gives it
    with InfluxClient(city.influx_url, city.database) as client:
        g = client.query('SELECT "gaps" FROM "screening" GROUP BY "enterprise"')
    stored = dict(zip(g["enterprise"], g["gaps"], strict=True))
    for c in screened["candidates"]:
        want = [
            f"{i['name']}: {i['gap']['short']}"
            for i in sorted(c["indicators"], key=lambda i: (-i["weight"], i["id"]))
            if i["gap"] is not None
        ]
        assert stored.get(c["enterprise"]) == ("; ".join(want) if want else None)
    assert sum(v is not None for v in stored.values()) > 100
    assert e.height == 300 and set(e["year"]) == {"2025"}
    got = e["class"].value_counts().sort("class")
    want = pl.Series("class", [en["class"] for en in classified["enterprises"]])
    assert got.equals(want.value_counts().sort("class"))
    # re-running overwrites: still one point per enterprise
    city.run("screen", "--criteria", str(_stricter(city.work)))
    with InfluxClient(city.influx_url, city.database) as client:
        again = client.query('SELECT "passed" FROM "screening" GROUP BY "enterprise"')
    assert again.height == 300
    assert again["passed"].sum() < s["passed"].sum()


def _stricter(work: Path) -> Path:
    path = work / "stricter.toml"
    path.write_text('[meta]\nversion = "strict"\n[scoring]\npass_score = 90.0\n', "utf-8")
    return path


def test_the_reports_render_in_chromium_with_their_charts(
    city: City, screened: dict[str, Any], classified: dict[str, Any]
) -> None:
    for name, charts in (("screen.html", {"intensity", "classes"}),
                         ("classify.html", {"intensity", "classes"})):  # fmt: skip
        page = city.work / name
        html = page.read_text("utf-8")
        assert "<script" not in html and "http://" not in html.replace(
            'xmlns="http://www.w3.org/2000/svg"', ""
        )
        shown = render(page)
        assert shown.requests == [page.resolve().as_uri()], shown.requests
        assert {c["name"] for c in shown.charts} == charts
        for chart in shown.charts:
            assert chart["width"] > 300 and chart["height"] > 100, chart
            assert chart["bars"] >= 10, chart
        assert "2025" in shown.title
    assert "green_factory_2025.toml" in (city.work / "screen.html").read_text("utf-8")
    assert "efficiency_huaian_2024.toml" in (city.work / "classify.html").read_text("utf-8")


def test_the_request_check_can_fail(tmp_path: Path) -> None:
    page = tmp_path / "leaky.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel="stylesheet" href="https://cdn.example.com/x.css">'
        '</head><body><svg data-chart="x" width="200" height="100"><rect width="50" '
        'height="50"/></svg><img src="http://example.invalid/a.png"></body></html>',
        "utf-8",
    )
    shown = render(page)
    assert "https://cdn.example.com/x.css" in shown.requests
    assert "http://example.invalid/a.png" in shown.requests
    assert shown.charts == [{"name": "x", "width": 200, "height": 100, "bars": 1}]


def test_the_text_forms_show_the_plan_the_ranking_and_the_files(
    city: City, screened: dict[str, Any]
) -> None:
    text = city.text("screen", "--top", "5", "--no-store")
    best = screened["candidates"][0]
    assert "green-factory screening GB/T 36132-2025 — year 2025 (whole year, 365 days)" in text
    assert "plan indicator 9" in text and "plan indicator 10" in text and "safeguard 3" in text
    assert f"candidates, best first ({screened['summary']['passed']} of 300 pass)" in text
    assert best["enterprise"] in text
    assert "295 more: --top 0 shows all" in text
    assert "green_factory_2025.toml v2026.1 (placeholder)" in text
    violator = next(c for c in screened["candidates"] if c["enterprise"] == city.violator)
    listed = city.text("screen", "--top", str(violator["rank"]), "--no-store")
    assert "✗ 合规 compliance" in listed
    classes = city.text("classify", "--top", "10", "--no-store")
    assert (
        "resource-use efficiency classes (亩均论英雄) Jiangsu city practice (Huai'an 2024)"
        in classes
    )
    assert "per county" in classes and "2024 county average x 2" in classes
    assert "efficiency_huaian_2024.toml v2026.1 (third-party)" in classes
