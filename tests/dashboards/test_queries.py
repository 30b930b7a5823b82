"""Every InfluxQL query of the dashboards and alert rules: only DESIGN §3 measurements, tags and
fields (parsed), and it runs without error against a real influxd holding a simulated day.

The day: a seeded fleet of 6 enterprises streams one day of 15-minute readings (the
simulators' messages, decoded by the ingestor's codec and written as the ingestor's own
line protocol), one enterprise falls silent for its last 70 minutes, `greenmon aggregate`'s
`run_range` computes and writes ``meter_energy``, ``energy`` and ``intensity``, and an
`IngestMetrics` writes ``greenmon_ingest`` points. Queries on ``alert``, ``screening`` and
``efficiency_class`` must first run on nothing (the panels' "no data"), then on points
written per DESIGN §3 whose answers are known.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from greenmon.aggregator.service import RangeResult, default_options, run_range
from greenmon.config import load_settings
from greenmon.dashboards.common import INFLUX_UID
from greenmon.dashboards.generate import build_bundle, enterprise_dashboard_json
from greenmon.dashboards.site import Site
from greenmon.influx import InfluxClient
from greenmon.ingest.codec import decode
from greenmon.ingest.fastpath import SeriesTable, format_lines
from greenmon.ingest.metrics import IngestMetrics
from greenmon.registry import Registry, load_registry
from greenmon.retention import ensure_retention
from greenmon.simulators.faults import parse_faults
from greenmon.simulators.fleet import generate_fleet
from greenmon.simulators.runner import RunSpec, parse_start, plan_run
from tests.dashboards.conftest import CONTRACT
from tests.dashboards.influxql_check import check

pytestmark = pytest.mark.integration

DAY_START = datetime(2025, 5, 31, 16, tzinfo=UTC)  # 2025-06-01 00:00 in Asia/Shanghai
SILENT = "E0006"
NOW_MS = 1_900_000_000_000


# --------------------------------------------------------------------------- the queries


@dataclass(frozen=True)
class Query:
    where: str  # dashboard uid / panel title, or rule uid
    text: str  # as Grafana stores it, macros and variables not yet filled in


def _panels(model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in model.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def collect(site: Site) -> list[Query]:
    """Every InfluxQL query greenmon gives Grafana: panel targets, template variables,
    annotations (all dashboards, and one enterprise's own) and alert-rule queries."""
    bundle = build_bundle(site)
    models = [*bundle.dashboards.values(), enterprise_dashboard_json(site, site.enterprises[0])]
    out: list[Query] = []
    for model in models:
        uid = model["uid"]
        for panel in _panels(model):
            for t in panel.get("targets", []):
                if "query" in t:
                    out.append(Query(f"{uid} / {panel['title']} / {t['refId']}", t["query"]))
        for var in model["templating"]["list"]:
            if var["type"] == "query":
                out.append(Query(f"{uid} / variable {var['name']}", var["query"]))
        for ann in model["annotations"].get("list", []):
            if "query" in ann.get("target", {}):
                out.append(Query(f"{uid} / annotation {ann['name']}", ann["target"]["query"]))
    for rule in bundle.rules.rules:
        for q in rule["data"]:
            if q["datasourceUid"] == INFLUX_UID:
                out.append(Query(f"rule {rule['uid']} / {q['refId']}", q["model"]["query"]))
    return out


def fill(text: str, start: datetime, end: datetime, **values: str) -> str:
    """What Grafana sends InfluxDB: macros and variables filled in (`values`; ``.*`` = All)."""
    lo, hi = int(start.timestamp() * 1000), int(end.timestamp() * 1000) - 1
    text = text.replace("$timeFilter", f"time >= {lo}ms and time <= {hi}ms")
    text = text.replace("${__from}", str(lo)).replace("${__to}", str(hi))
    text = text.replace("$__interval", "1h")
    defaults = {
        "county": ".*",
        "industry": ".*",
        "carrier": ".*",
        "rule": ".*",
        "scope": ".*",
        "client_id": ".*",
        "period": "month",
        "year": "2025",
        "enterprise": "E0001",
    }
    defaults.update(values)

    def var(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in defaults:
            raise AssertionError(f"unknown variable ${name} in {text!r}")
        return defaults[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", var, text)


def measurements(text: str) -> set[str]:
    return set(re.findall(r'FROM (?:"\w+"\.)?"(\w+)"', text))  # "policy"."name" too


# --------------------------------------------------------------------------- the day


@dataclass(frozen=True)
class Day:
    client: InfluxClient
    registry: Registry
    site: Site
    result: RangeResult
    end: datetime  # just after the last reading


@pytest.fixture(scope="module")
def day(influx_url: str, fleet_dir: Path, site: Site) -> Iterator[Day]:
    registry = load_registry(fleet_dir)
    fleet = generate_fleet(6, 11)  # the fleet `fleet_dir` holds (same size and seed)
    planned = plan_run(
        fleet, RunSpec(parse_start("2025-06-01", 900), 1, 900, 11, parse_faults("none"))
    )
    table = SeriesTable(registry.meter_infos())
    readings = [
        r
        for topic, payload in planned.plan.messages.select("topic", "payload").iter_rows()
        for r in decode(topic, payload.encode(), registry, NOW_MS).readings
    ]
    last_ns = max(r.ts_ns for r in readings)
    cut = last_ns - 70 * 60 * 10**9
    readings = [r for r in readings if not (r.enterprise == SILENT and r.ts_ns > cut)]
    end = datetime.fromtimestamp(last_ns / 1e9, UTC) + timedelta(minutes=1)
    database = "dash_day"
    # Raw readings where the ingestor puts them: the default retention layout (`site`'s).
    settings = load_settings(influx_url=influx_url, database=database)
    client = InfluxClient.from_settings(settings)
    ensure_retention(client, settings, alter=False)
    assert client.source("meter_reading") == site.readings
    body = format_lines(table.columns(readings))
    client.write_body(body, body.count(b"\n"), precision="ns", rp=client.policy("meter_reading"))
    # 15-minute meter windows too (not a default), to compare the capacity rule with them.
    opts = default_options(meter_windows=("15m", "1h", "1d", "1mo"))
    result = run_range(
        client,
        registry,
        DAY_START,
        DAY_START + timedelta(days=1),
        opts,
        partial=True,
        keep=("meter_energy", "energy", "intensity"),
    )
    metrics = IngestMetrics()
    stats = []
    for hour in range(24):
        metrics.messages.inc(100)
        metrics.readings.inc(1000)
        metrics.written.inc(990)
        metrics.rejected.labels("unknown_meter").inc(10)
        at = DAY_START + timedelta(hours=hour, minutes=30)
        stats.append(metrics.stats_line("ingest-a", int(at.timestamp() * 1e9)))
    client.write(stats)
    try:
        yield Day(client, registry, site, result, end)
    finally:
        client.drop_database()
        client.close()


def run(day: Day, text: str) -> list[dict[str, Any]]:
    """Run one filled-in query; an error raises (InfluxQueryError) and fails the test."""
    results = day.client.query_json(text, epoch="ms")
    assert len(results) == 1, text
    assert "error" not in results[0], (results[0], text)
    return list(results[0].get("series", []))


# --------------------------------------------------------------------------- contract


def test_every_query_uses_only_the_design_contract(site: Site) -> None:
    queries = collect(site)
    assert len(queries) > 60
    problems = {
        q.where: check(fill(q.text, DAY_START, DAY_START + timedelta(days=1)), CONTRACT)
        for q in queries
    }
    assert {k: v for k, v in problems.items() if v} == {}
    seen = set().union(*(measurements(q.text) for q in queries))
    assert seen == {
        "energy",
        "meter_energy",
        "intensity",
        "meter_reading",
        "alert",
        "screening",
        "efficiency_class",
        "greenmon_ingest",
    }


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ('SELECT "kgce" FROM "energy" WHERE "windw" = \'1d\'', "filters on 'windw'"),
        ('SELECT "kWh" FROM "energy"', "selects 'kWh'"),
        ('SELECT "kgce" FROM "energie"', "measurement 'energie'"),
        ('SELECT "kgce" FROM "energy" GROUP BY "kgco2"', "groups by 'kgco2'"),
        ('SELECT "kgce" FROM "energy" WHERE "kgce" =~ /1/', "regex on 'kgce'"),
        ('SELECT kgce FROM "energy"', "unquoted name 'kgce'"),
        ('SELECT "x" FROM (SELECT last("level") AS "level" FROM "alert")', "selects 'x'"),
        ('SHOW TAG VALUES FROM "energy" WITH KEY = "kgce"', "'kgce' is not a tag"),
        ('SELECT "passed" FROM "efficiency_class"', "selects 'passed'"),
    ],
)
def test_the_contract_check_can_fail(query: str, problem: str) -> None:
    problems = check(query, CONTRACT)
    assert any(problem in p for p in problems), problems


# --------------------------------------------------------------------------- on the day


def _filled(day: Day, q: Query, **values: str) -> str:
    return fill(q.text, DAY_START, day.end, **values)


def test_every_query_runs_on_the_simulated_day(day: Day) -> None:
    """No query errors; every query on a measurement the day holds returns data (for at
    least one enterprise, where it names one), the others none yet (their "no data")."""
    produced = {"energy", "meter_energy", "intensity", "meter_reading", "greenmon_ingest"}
    enterprises = [e.enterprise_id for e in day.site.enterprises]
    empty: list[str] = []
    for q in collect(day.site):
        used = measurements(q.text)
        choices = enterprises if "$enterprise" in q.text else ["E0001"]
        answers = [run(day, _filled(day, q, enterprise=e)) for e in choices]
        if used <= produced and not any(answers):
            empty.append(q.where)
        if not used & produced:
            assert not any(answers), q.where
    # Only the per-carrier power panels of carriers no enterprise of the fleet has at its
    # boundary could be empty; the fleet has them all.
    assert empty == []


def test_filtered_variables_narrow_the_answer(day: Day) -> None:
    county = day.site.enterprises[0].county
    query = next(
        q
        for q in collect(day.site)
        if q.where.startswith("greenmon-city / ")
        and 'GROUP BY "county"' in q.text
        and "tco2" in q.text
    )
    everything = run(day, _filled(day, query))
    one = run(day, _filled(day, query, county=county))
    assert len(everything) > 1
    assert [s["tags"]["county"] for s in one] == [county]


def test_city_totals_are_the_aggregators_totals(day: Day) -> None:
    totals = day.result.totals()
    text = next(
        q.text
        for q in collect(day.site)
        if q.where.startswith("greenmon-city / 今日能耗") and q.where.endswith("/ A")
    )
    series = run(day, _filled(day, Query("", text)))
    assert series[0]["values"][0][1] == pytest.approx(totals["tce"].sum(), rel=1e-9)
    by_county = next(
        q.text for q in collect(day.site) if "按区县" in q.where and "GROUP BY time(1d)" in q.text
    )
    per_county = {
        s["tags"]["county"]: sum(v[1] for v in s["values"] if v[1] is not None)
        for s in run(day, _filled(day, Query("", by_county)))
    }
    want = totals.group_by("county").agg(pl.col("tce").sum())
    assert per_county == pytest.approx(dict(want.iter_rows()), rel=1e-9)


def test_silent_rule_finds_the_silent_enterprise(day: Day) -> None:
    text = next(q.text for q in collect(day.site) if q.where == "rule greenmon-silent / A")
    start = day.end - timedelta(days=1)
    last = {
        s["tags"]["enterprise"]: s["values"][-1][1] for s in run(day, fill(text, start, day.end))
    }
    assert set(last) == {e.enterprise_id for e in day.site.enterprises}
    assert last[SILENT] == 0
    assert all(v >= 3 for e, v in last.items() if e != SILENT), last


def test_capacity_rule_measures_the_boundary_power(day: Day) -> None:
    """The rule's 15-minute power from raw registers equals, at its peak, the aggregator's
    15-minute boundary electricity windows x 4 for the same enterprise."""
    text = next(q.text for q in collect(day.site) if q.where == "rule greenmon-cap-E0002 / A")
    raw = [v[1] for s in run(day, fill(text, DAY_START, day.end)) for v in s["values"]]
    windows = (
        day.result.frames["meter_energy"]
        .filter(
            (pl.col("enterprise") == "E0002")
            & (pl.col("window") == "15m")
            & (pl.col("role") == "boundary")
            & (pl.col("carrier") == "electricity")
        )
        .group_by("time")
        .agg((pl.col("quantity").sum() * 4).alias("kw"))
    )
    assert len(raw) > 80
    assert max(raw) == pytest.approx(windows["kw"].max(), rel=1e-9)


# --------------------------------------------------------------------------- rules' outputs


def _write_rules_outputs(client: InfluxClient) -> None:
    t = int((DAY_START + timedelta(hours=10)).timestamp() * 1e9)
    year = int(datetime(2024, 12, 31, 16, tzinfo=UTC).timestamp() * 1e9)
    lines = [
        # E0001: pending then firing red; E0002: yellow firing; E0003: red, then resolved
        f'alert,rule=dc_total,scope=enterprise,subject=E0001 level="yellow",state="pending",'
        f'value=1.0,threshold=2.0,message="behind schedule" {t}',
        f'alert,rule=dc_total,scope=enterprise,subject=E0001 level="red",state="firing",'
        f'value=3.0,threshold=2.0,message="over quota" {t + 3_600 * 10**9}',
        f'alert,rule=dc_total,scope=enterprise,subject=E0002 level="yellow",state="firing",'
        f'value=1.5,threshold=1.0,message="behind" {t}',
        f'alert,rule=dc_total,scope=enterprise,subject=E0003 level="red",state="firing",'
        f'value=3.0,threshold=2.0,message="over" {t}',
        f'alert,rule=dc_total,scope=enterprise,subject=E0003 level="green",state="resolved",'
        f'value=1.0,threshold=2.0,message="back on track" {t + 7_200 * 10**9}',
        f'alert,rule=dc_total,scope=county,subject=海安市 level="yellow",state="firing",'
        f'value=1.2,threshold=1.0,message="county behind" {t}',
    ]
    for i, e in enumerate(("E0001", "E0002", "E0003", "E0004", "E0005", "E0006")):
        passed = "true" if i < 2 else "false"
        lines.append(
            f"screening,county=X,enterprise={e},industry=C1,year=2025 "
            f"score={90.0 - 10 * i},passed={passed},rank={i + 1}.0"
            + (f',gaps="unit energy: +{i}.0% -> baseline"' if i else "")
            + f" {year}"
        )
        cls = "ABCDTA"[i]
        lines.append(
            f"efficiency_class,county=X,enterprise={e},industry=C1,year=2025 "
            f'score={80.0 - i},class="{cls}",rank={i + 1}.0 {year}'
        )
    client.write(lines)


def test_rules_measurements_answer_as_written(day: Day) -> None:
    _write_rules_outputs(day.client)
    queries = collect(day.site)
    for q in queries:
        for e in ("E0001",):
            run(day, _filled(day, q, enterprise=e))  # still no error, now with data
    counts = {}
    for q in queries:
        if q.where.startswith("greenmon-city / ") and 'count("level")' in q.text:
            series = run(day, _filled(day, q))
            name = q.where.split(" / ")[1]
            counts[name] = series[0]["values"][0][1] if series else 0
    assert counts == {"红色预警 · Red alerts": 1, "黄色预警 · Yellow alerts": 1, "绿色 · Green": 1}
    firing = next(q for q in queries if q.where.startswith("greenmon-alerts / 正在触发"))
    subjects = sorted(s["tags"]["subject"] for s in run(day, _filled(day, firing)))
    assert subjects == ["E0001", "E0002", "海安市"]
    passing = next(q for q in queries if "通过筛选" in q.where and q.where.endswith("/ A"))
    assert run(day, _filled(day, passing))[0]["values"][0][1] == 2
    per_class = {
        q.where.rsplit(" / ", 1)[1]: run(day, _filled(day, q))
        for q in queries
        if "亩均效益分类 · Resource-efficiency classes A/B/C/D" in q.where
    }
    got = {ref: s[0]["values"][0][1] for ref, s in per_class.items()}
    assert got == {"A": 2, "B": 1, "C": 1, "D": 1, "E": 1}  # refIds A..E = classes A, B, C, D, T
    ranked = next(q for q in queries if "候选企业排名" in q.where)
    rows = {s["tags"]["enterprise"]: s["values"][0] for s in run(day, _filled(day, ranked))}
    assert rows["E0001"][1:] == [1.0, 90.0, True, None]  # no gap: none written
    assert rows["E0002"][1:] == [2.0, 80.0, True, "unit energy: +1.0% -> baseline"]
