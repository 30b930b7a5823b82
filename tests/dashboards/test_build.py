"""`greenmon dashboards build`: every dashboard and alert rule validates against Grafana's own
JSON schemas, the provisioning tree is complete, byte-stable and free of secrets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from typer.testing import CliRunner

from greenmon.cli import app
from greenmon.dashboards.common import INFLUX_UID, REGISTRY_UID
from greenmon.dashboards.generate import (
    Bundle,
    DatasourceSpec,
    build_bundle,
    enterprise_dashboard_json,
)
from greenmon.dashboards.influxql import InfluxQLQuery
from greenmon.dashboards.provisioning import env_ref, tree, write_tree
from greenmon.dashboards.site import Site
from greenmon.registry import load_registry
from tests.dashboards.conftest import load_schema, make_fleet

SPEC = DatasourceSpec(
    url=env_ref("GREENMON_INFLUX_URL"),
    database="greenmon",
    auth="basic",
    username="greenmon",
    secret=env_ref("GREENMON_INFLUX_PASSWORD"),
)


def panels(model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in model.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def _errors(validator: Draft7Validator, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
        for e in validator.iter_errors(instance)
    ]


def _panel_validators(schemas: Path) -> dict[str, dict[str, Draft7Validator]]:
    out: dict[str, dict[str, Draft7Validator]] = {}
    for kind in ("timeseries", "stat", "table", "bargauge", "geomap"):
        schema = load_schema(schemas, f"{kind}.jsonschema.json")
        out[kind] = {
            part: Draft7Validator({**schema, "$ref": f"#/definitions/{part}"})
            for part in ("Options", "FieldConfig")
            if part in schema["definitions"]
        }
    return out


def _all_dashboards(site: Site) -> list[dict[str, Any]]:
    bundle = build_bundle(site)
    own = [enterprise_dashboard_json(site, e) for e in site.enterprises[:2]]
    return [*bundle.dashboards.values(), *own]


@pytest.fixture(scope="module")
def bundle(site: Site) -> Bundle:
    return build_bundle(site)


def test_every_dashboard_validates_against_grafanas_schema(schemas: Path, site: Site) -> None:
    validator = Draft7Validator(load_schema(schemas, "dashboard.jsonschema.json"))
    for model in [*_all_dashboards(site), *_all_dashboards(Site())]:
        assert _errors(validator, model) == [], model["uid"]


def test_every_panel_validates_against_its_panel_type_schema(schemas: Path, site: Site) -> None:
    validators = _panel_validators(schemas)
    seen: set[str] = set()
    for model in [*_all_dashboards(site), *_all_dashboards(Site())]:
        for panel in panels(model):
            kind = panel["type"]
            if kind == "row":
                continue
            # A panel type without a schema here would escape validation: refuse it.
            assert kind in validators, f"{model['uid']}: no schema for panel type {kind}"
            seen.add(kind)
            where = f"{model['uid']} panel {panel['id']} {panel.get('title')!r}"
            assert _errors(validators[kind]["Options"], panel["options"]) == [], where
            custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
            if "FieldConfig" in validators[kind] and custom is not None:
                assert _errors(validators[kind]["FieldConfig"], custom) == [], where
    assert seen == {"timeseries", "stat", "table", "bargauge", "geomap"}


def test_the_schema_check_can_fail(schemas: Path, bundle: Bundle) -> None:
    """The validators used above do reject a broken dashboard and a broken panel."""
    validator = Draft7Validator(load_schema(schemas, "dashboard.jsonschema.json"))
    broken = json.loads(json.dumps(bundle.dashboards["greenmon-city"]))
    del broken["templating"]
    broken["panels"][1]["gridPos"]["w"] = "wide"
    assert len(_errors(validator, broken)) >= 2
    stat = next(p for p in panels(bundle.dashboards["greenmon-city"]) if p["type"] == "stat")
    options = {**stat["options"], "colorMode": "rainbow"}
    assert _errors(_panel_validators(schemas)["stat"]["Options"], options)


def test_alert_rules_validate_against_the_alerting_schema(schemas: Path, bundle: Bundle) -> None:
    schema = load_schema(schemas, "alerting.jsonschema.json")
    rule = Draft7Validator({**schema, "$ref": "#/definitions/Rule"})
    group = Draft7Validator({**schema, "$ref": "#/definitions/RuleGroup"})
    assert [r["uid"] for r in bundle.rules.rules] == ["greenmon-silent", "greenmon-cap-E0002"]
    for r in bundle.rules.rules:
        assert _errors(rule, r) == [], r["uid"]
        assert r["folderUID"] == "greenmon" and r["ruleGroup"] == "greenmon"
        assert r["labels"]["greenmon"] == "grafana" and r["labels"]["rule"]
    assert _errors(group, bundle.rules.api_group()) == []
    # the file-provisioning rules are the same rules, keys Grafana's file format knows
    provisioned = bundle.rules.provisioning()["groups"][0]["rules"]
    for file_rule, api_rule in zip(provisioned, bundle.rules.rules, strict=True):
        assert file_rule == {k: api_rule[k] for k in file_rule}
        assert {"uid", "title", "condition", "data", "for"} <= set(file_rule)


def test_capacity_rule_sums_the_boundary_electricity_meters(site: Site, bundle: Bundle) -> None:
    rule = bundle.rules.rules[1]
    query = rule["data"][0]["model"]["query"]
    wanted = [
        m
        for m in site.meters
        if m.enterprise_id == "E0002" and m.role == "boundary" and m.carrier == "electricity"
    ]
    assert wanted
    for m in wanted:
        assert f"\"meter\" = '{m.meter_id}'" in query
    others = [m for m in site.meters if m not in wanted]
    assert not any(f"'{m.meter_id}'" in query for m in others)
    threshold = rule["data"][2]["model"]["conditions"][0]["evaluator"]
    assert threshold == {"params": [500.0], "type": "gt"}


def test_panels_use_the_two_greenmon_data_sources(site: Site) -> None:
    for model in _all_dashboards(site):
        for panel in panels(model):
            for target in panel.get("targets", []):
                uid = target.get("datasource", panel.get("datasource", {})).get("uid")
                assert uid in (INFLUX_UID, REGISTRY_UID), (model["uid"], panel["title"])
                if uid == INFLUX_UID:
                    assert target["rawQuery"] is True and target["query"].strip()
                    assert InfluxQLQuery.from_json(target).to_json() == target


def test_uids_and_panel_ids_are_stable_and_unique(site: Site) -> None:
    first, second = build_bundle(site), build_bundle(site)
    assert first.dashboards == second.dashboards
    assert list(first.dashboards) == [
        "greenmon-city",
        "greenmon-enterprise",
        "greenmon-screening",
        "greenmon-alerts",
        "greenmon-ingest",
    ]
    for model in _all_dashboards(site):
        ids = [p["id"] for p in panels(model)]
        assert len(ids) == len(set(ids)) and all(i >= 1 for i in ids)
        assert len(model["uid"]) <= 40


def test_map_only_with_coordinates_and_registry_panels_only_with_a_registry(
    site: Site, tmp_path: Path
) -> None:
    def types(s: Site, uid: str) -> list[str]:
        return [p["type"] for p in panels(build_bundle(s).dashboards[uid])]

    assert "geomap" in types(site, "greenmon-city")
    unlocated = Site.from_registry(load_registry(make_fleet(tmp_path / "f", located=False)))
    assert "geomap" not in types(unlocated, "greenmon-city")
    assert any("latitude" in n for n in build_bundle(unlocated).notes)
    bare = build_bundle(Site())
    assert "geomap" not in types(Site(), "greenmon-city")
    assert any("no registry" in n for n in bare.notes)
    registry_targets = [
        t
        for m in bare.dashboards.values()
        for p in panels(m)
        for t in p.get("targets", [])
        if t.get("datasource", {}).get("uid") == REGISTRY_UID
    ]
    assert registry_targets == []
    assert [r["uid"] for r in bare.rules.rules] == ["greenmon-silent"]


def test_own_dashboard_fixes_the_enterprise_and_draws_its_target(site: Site) -> None:
    ent = site.enterprises[0]
    model = enterprise_dashboard_json(site, ent)
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["enterprise"]["type"] == "constant"
    assert variables["enterprise"]["query"] == ent.enterprise_id
    assert "county" not in variables
    history = next(p for p in panels(model) if "Monthly intensity" in p.get("title", ""))
    steps = history["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == ent.intensity_target
    csv = next(
        t["csvContent"] for p in panels(model) for t in p.get("targets", []) if "csvContent" in t
    )
    assert csv.count("\n") == 2 and ent.enterprise_id in csv  # header + its own row only


def test_tree_is_complete_byte_stable_and_prunes_stale_files(
    bundle: Bundle, tmp_path: Path
) -> None:
    out = tmp_path / "grafana"
    first = write_tree(out, bundle, SPEC)
    snapshot = {p: p.read_bytes() for p in first.files}
    stale = out / "dashboards" / "greenmon" / "old.json"
    stale.write_text("{}")
    second = write_tree(out, bundle, SPEC)
    assert {p: p.read_bytes() for p in second.files} == snapshot
    assert second.removed == (stale,) and not stale.exists()
    rel = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert rel == sorted(
        ["datasources/greenmon.yaml", "dashboards/greenmon.yaml", "alerting/greenmon.yaml"]
        + [f"dashboards/greenmon/{uid}.json" for uid in bundle.dashboards]
    )
    provider = yaml.safe_load((out / "dashboards/greenmon.yaml").read_text())["providers"][0]
    assert provider["type"] == "file" and provider["folderUid"] == "greenmon"
    assert provider["options"]["path"] == "/etc/grafana/provisioning/dashboards/greenmon"
    alerting = yaml.safe_load((out / "alerting/greenmon.yaml").read_text())
    assert alerting["groups"][0]["folder"] == "greenmon"
    assert (
        json.loads((out / "dashboards/greenmon/greenmon-city.json").read_text())
        == (bundle.dashboards["greenmon-city"])
    )


@pytest.mark.parametrize(
    ("auth", "secret_key", "secret_value"),
    [
        ("basic", "password", "$__env{GREENMON_INFLUX_PASSWORD}"),
        ("token", "httpHeaderValue1", "Token $__env{GREENMON_INFLUX_TOKEN}"),
        ("none", None, None),
    ],
)
def test_datasource_variants_keep_secrets_out_of_the_files(
    fleet_dir: Path,
    tmp_path: Path,
    auth: str,
    secret_key: str | None,
    secret_value: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the command line, with real secrets configured: only $__env references land."""
    monkeypatch.setenv("GREENMON_INFLUX_PASSWORD", "s3cret-pw")
    monkeypatch.setenv("GREENMON_INFLUX_TOKEN", "s3cret-token")
    monkeypatch.setenv("GREENMON_INFLUX_USERNAME", "greenmon")
    out = tmp_path / "tree"
    result = CliRunner().invoke(
        app,
        [
            "dashboards",
            "build",
            "--registry",
            str(fleet_dir),
            "--out",
            str(out),
            "--influx-auth",
            auth,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["influx_auth"] == auth and summary["alert_rules"]
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "s3cret" not in text, path
    sources = yaml.safe_load((out / "datasources/greenmon.yaml").read_text())["datasources"]
    influx = next(d for d in sources if d["uid"] == INFLUX_UID)
    assert influx["type"] == "influxdb" and influx["jsonData"]["version"] == "InfluxQL"
    assert influx["url"] == "$__env{GREENMON_INFLUX_URL}"
    if secret_key is None:
        assert "secureJsonData" not in influx
    else:
        assert influx["secureJsonData"] == {secret_key: secret_value}
    if auth == "token":
        assert influx["jsonData"]["httpHeaderName1"] == "Authorization"
    assert any(d["uid"] == REGISTRY_UID for d in sources)


def test_build_twice_gives_identical_bytes_from_the_command_line(
    fleet_dir: Path, tmp_path: Path
) -> None:
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        result = CliRunner().invoke(
            app, ["dashboards", "build", "--registry", str(fleet_dir), "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert len(files) == 8
    for rel in files:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel
    assert tree(build_bundle(Site.from_registry(load_registry(fleet_dir))), SPEC)
