"""`greenmon dashboards push` against a local stand-in for Grafana held to Grafana's own OpenAPI
description (`fake_grafana`): every request's path, method, query and body are valid; the first
push creates everything, the second writes nothing and says so; ``--per-enterprise`` gives each
enterprise a folder only its team (and the bureau) can see."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from greenmon.cli import app
from greenmon.dashboards.common import enterprise_uid
from greenmon.dashboards.errors import GrafanaAuthError, GrafanaError
from greenmon.dashboards.generate import DatasourceSpec, build_bundle
from greenmon.dashboards.push import PushOptions, connect, push, same
from greenmon.dashboards.site import Site
from tests.dashboards.fake_grafana import TOKEN, FakeGrafana

SPEC = DatasourceSpec(
    url="http://influx.example:8086",
    database="greenmon",
    auth="basic",
    username="grafana",
    secret="influx-pw",
)
INFLUX = "http://127.0.0.1:1"  # never contacted: push only hands the URL to Grafana


@pytest.fixture
def grafana(schemas: Path) -> Iterator[FakeGrafana]:
    with FakeGrafana(schemas / "grafana-http-api.subset.json") as g:
        yield g


def _push(grafana: FakeGrafana, site: Site, options: PushOptions = PushOptions()) -> dict:
    api = connect(grafana.url, token=TOKEN, timeout=5)
    return push(api, build_bundle(site), SPEC, site, options).to_dict()


def _cli(grafana: FakeGrafana, fleet_dir: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        [
            "dashboards",
            "push",
            "--grafana-url",
            grafana.url,
            "--registry",
            str(fleet_dir),
            "--influx-url",
            INFLUX,
            *extra,
        ],
        env={
            "GREENMON_GRAFANA__TOKEN": TOKEN,
            "GREENMON_INFLUX_USERNAME": "grafana",
            "GREENMON_INFLUX_PASSWORD": "influx-pw-from-env",
        },
    )
    return result.exit_code, result.output


def test_first_push_creates_everything_and_every_request_is_valid(
    grafana: FakeGrafana, site: Site
) -> None:
    report = _push(grafana, site)
    assert grafana.violations == []
    assert report["created"] == 1 + 2 + 5 + 1 and report["updated"] == 0
    assert report["version"] == "11.6.0"
    s = grafana.state
    assert set(s.folders) == {"greenmon"}
    assert set(s.datasources) == {"greenmon-influxdb", "greenmon-registry"}
    assert s.datasources["greenmon-influxdb"]["secureJsonData"] == {"password": "influx-pw"}
    assert {uid: d["meta"]["folderUid"] for uid, d in s.dashboards.items()} == dict.fromkeys(
        [
            "greenmon-city",
            "greenmon-enterprise",
            "greenmon-screening",
            "greenmon-alerts",
            "greenmon-ingest",
        ],
        "greenmon",
    )
    group = s.rule_groups[("greenmon", "greenmon")]
    assert [r["uid"] for r in group["rules"]] == ["greenmon-silent", "greenmon-cap-E0002"]
    operations = {r.operation for r in grafana.requests}
    assert {
        "getHealth",
        "createFolder",
        "addDataSource",
        "postDashboard",
        "RoutePutAlertRuleGroup",
    } <= operations


def test_second_push_changes_nothing_and_says_so(
    grafana: FakeGrafana, site: Site, fleet_dir: Path
) -> None:
    code, output = _cli(grafana, fleet_dir)
    assert code == 0, output
    assert "created" in output
    first = len(grafana.requests)
    code, output = _cli(grafana, fleet_dir)
    assert code == 0, output
    assert "Nothing changed" in output
    assert grafana.writes(since=first) == []
    assert grafana.violations == []
    assert "influx-pw-from-env" not in output
    code, output = _cli(grafana, fleet_dir, "--json")
    report = json.loads(output)
    assert report["changed"] is False and report["created"] == report["updated"] == 0
    assert any("secret" in n for n in report["notes"])


def test_a_changed_dashboard_is_the_only_thing_written_back(
    grafana: FakeGrafana, site: Site
) -> None:
    _push(grafana, site)
    stored = grafana.state.dashboards["greenmon-alerts"]["dashboard"]
    stored["title"] = "edited by hand"
    grafana.state.folders["greenmon"]["title"] = "renamed"
    mark = len(grafana.requests)
    report = _push(grafana, site)
    assert [(a["kind"], a["name"]) for a in report["actions"] if a["outcome"] != "unchanged"] == [
        ("folder", "greenmon"),
        ("dashboard", "greenmon-alerts"),
    ]
    assert [r.operation for r in grafana.writes(since=mark)] == ["updateFolder", "postDashboard"]
    assert grafana.state.dashboards["greenmon-alerts"]["dashboard"]["title"] == "预警 · Alerts"
    assert grafana.state.dashboards["greenmon-alerts"]["dashboard"]["version"] == 2
    assert grafana.violations == []


def test_per_enterprise_folders_teams_and_permissions(
    grafana: FakeGrafana, site: Site, fleet_dir: Path
) -> None:
    code, output = _cli(grafana, fleet_dir, "--per-enterprise")
    assert code == 0, output
    assert grafana.violations == []
    s = grafana.state
    teams = {t["name"]: t["id"] for t in s.teams.values()}
    assert set(teams) == {"greenmon-bureau"} | {
        f"greenmon-{e.enterprise_id}" for e in site.enterprises
    }
    bureau = teams["greenmon-bureau"]
    # the city folder: the bureau only (Grafana's Viewer/Editor defaults are gone)
    assert [
        (p.get("teamId"), p.get("role"), p["permission"]) for p in s.permissions["greenmon"]
    ] == [(bureau, None, 1)]
    for ent in site.enterprises:
        folder = enterprise_uid("greenmon-f", ent.enterprise_id)
        assert s.folders[folder]["title"] == f"{ent.enterprise_id} {ent.name}"
        grants = sorted((p["teamId"], p["permission"]) for p in s.permissions[folder])
        assert grants == sorted([(teams[f"greenmon-{ent.enterprise_id}"], 1), (bureau, 1)])
        assert not any("role" in p for p in s.permissions[folder])
        own = s.dashboards[enterprise_uid("greenmon-e", ent.enterprise_id)]
        assert own["meta"]["folderUid"] == folder
        fixed = {v["name"]: v for v in own["dashboard"]["templating"]["list"]}["enterprise"]
        assert fixed["type"] == "constant" and fixed["query"] == ent.enterprise_id
    # and again: nothing to do
    mark = len(grafana.requests)
    code, output = _cli(grafana, fleet_dir, "--per-enterprise")
    assert code == 0 and "Nothing changed" in output, output
    assert grafana.writes(since=mark) == []
    # someone widened one enterprise's folder: the next push narrows it again
    folder = enterprise_uid("greenmon-f", "E0003")
    s.permissions[folder].append({"role": "Viewer", "permission": 1, "inherited": False})
    mark = len(grafana.requests)
    code, output = _cli(grafana, fleet_dir, "--per-enterprise")
    assert code == 0, output
    assert [(r.operation, r.path) for r in grafana.writes(since=mark)] == [
        ("updateFolderPermissions", f"/folders/{folder}/permissions")
    ]
    assert not any("role" in p for p in s.permissions[folder])


def test_bad_credentials_and_no_grafana_are_clear_errors(
    grafana: FakeGrafana, site: Site, fleet_dir: Path
) -> None:
    with pytest.raises(GrafanaAuthError, match="credentials"):
        push(connect(grafana.url, token="wrong"), build_bundle(site), SPEC, site)
    with pytest.raises(GrafanaError, match="cannot reach Grafana"):
        push(connect("http://127.0.0.1:9", token=TOKEN, timeout=2), build_bundle(site), SPEC, site)
    result = CliRunner().invoke(
        app,
        ["dashboards", "push", "--grafana-url", grafana.url, "--influx-url", INFLUX],
        env={"GREENMON_GRAFANA__TOKEN": "wrong"},
    )
    assert result.exit_code == 1
    assert isinstance(result.exception, GrafanaAuthError)  # the entry point prints it, no traceback


def test_the_fake_refuses_what_grafana_would_not_take(grafana: FakeGrafana) -> None:
    """The request check can fail: unknown path, misspelt key, wrong type."""
    api = connect(grafana.url, token=TOKEN)
    with pytest.raises(Exception):  # noqa: B017 - any refusal
        api.folder.create_folder("x", uid="x", parent_uid=None)  # valid
        api.client.POST("/folders", json={"title": "y", "folderUID": "y"})
    with pytest.raises(Exception):  # noqa: B017
        api.client.POST("/dashboards/db", json={"dashboard": {}, "overwrite": "yes"})
    with pytest.raises(Exception):  # noqa: B017
        api.client.GET("/not/an/api")
    assert len(grafana.violations) == 3, grafana.violations


@pytest.mark.parametrize(
    ("wanted", "actual", "equal"),
    [
        ({"a": 1}, {"a": 1.0, "id": 7}, True),
        ({"a": [1, {"b": "x"}]}, {"a": [1, {"b": "x", "c": 0}]}, True),
        ({"a": [1, 2]}, {"a": [1]}, False),
        ({"a": True}, {"a": 1}, False),
        ({"a": "x"}, {}, False),
    ],
)
def test_same_compares_what_was_sent(wanted: object, actual: object, equal: bool) -> None:
    assert same(wanted, actual) is equal
