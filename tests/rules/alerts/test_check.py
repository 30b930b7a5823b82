"""`greenmon alerts check|list` on the real InfluxDB and Mosquitto, with a real HTTP server as
the webhook: levels known by construction, a spike day, the lifecycle across restarts, sinks
that are down, MQTT retained state against `alerts list`, clear errors for bad files.

The daily ``energy`` points are written straight into InfluxDB (that is what the rules read);
the gateway-outage case goes through the whole chain in test_chain.py.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from greenmon.deploy.local import LocalServices
from greenmon.influx import InfluxClient
from greenmon.rules.alerts.store import AlertStore, default_path
from tests.rules.alerts.conftest import daily, enterprise, write_registry
from tests.rules.alerts.support import (
    check_json,
    cli_args,
    free_port,
    hook_server,
    retained,
    run_child,
    run_cli,
    write_daily,
    write_monthly,
)

pytestmark = pytest.mark.integration

JAN1, JUL1 = date(2025, 1, 1), date(2025, 7, 1)
FIRE_AT_ONCE = '[total]\npending_for = "0s"\n'


def _spike(day: date) -> float:
    return 30.0 if day == date(2025, 6, 30) else (9.5 if day.day % 2 else 10.5)


@pytest.fixture
def city(tmp_path: Path, services: LocalServices, database: str, topic_prefix: str) -> Path:
    """Four firms in two counties plus a spiking one, 1 Jan - 30 Jun 2025 in InfluxDB."""
    root = tmp_path / "registry"
    reg = write_registry(
        root,
        [
            enterprise("A", "X", quota=1000),  # impossible quota: red
            enterprise("B", "X", quota=100_000),  # far under: green
            enterprise("C", "Y", quota=3000),  # Y's firms both overrun: Y is red
            enterprise("D", "Y", quota=3000),
            enterprise("S", "X", quota=100_000),  # a spike on 30 June
        ],
    )
    rows = daily({"A": 10, "B": 10, "C": 10, "D": 10, "S": _spike}, JAN1, JUL1)
    assert write_daily(services.influx_url, database, reg, rows) == rows.height
    return root


def _by_subject(objects: list[dict]) -> dict[str, dict]:
    return {o["subject"]: o for o in objects}


def test_levels_known_by_construction(
    city: Path, services: LocalServices, database: str, tmp_path: Path
) -> None:
    args = cli_args(services, database, city, tmp_path / "rt", "--as-of", "2025-07-01")
    objects = check_json(args)
    got = _by_subject(objects)
    assert {k: got[k]["level"] for k in ("A", "B", "C", "D", "S")} == {
        "A": "red", "B": "green", "C": "red", "D": "red", "S": "green",
    }  # fmt: skip
    assert got["Y"]["scope"] == "county" and got["Y"]["county"] == "Y"
    assert got["Y"]["level"] == "red"
    assert got["X"]["level"] == "green"  # A's overrun is within B's and S's room
    assert got["city"]["scope"] == "city"
    # red first, and every object has what scripts rely on
    assert [o["level"] for o in objects] == sorted(
        (o["level"] for o in objects), key=("red", "yellow", "green").index
    )
    for o in objects:
        assert {"scope", "level", "alerts"} <= set(o)
        assert ("enterprise" in o) == (o["scope"] == "enterprise")
        assert ("county" in o) == (o["scope"] in ("enterprise", "county"))
        for a in o["alerts"]:
            assert {"rule", "level", "state", "value", "threshold", "message"} <= set(a)
    # the default rules wait an hour before a total alert fires: pending now
    a_alerts = {a["rule"]: a for a in got["A"]["alerts"]}
    assert a_alerts["double_control_total"]["state"] == "pending"
    assert a_alerts["double_control_total"]["value"] == pytest.approx(3650)
    assert a_alerts["double_control_total"]["threshold"] == 1000
    # the spike day fires the sudden-change rule at once
    s_alerts = {a["rule"]: a for a in got["S"]["alerts"]}
    assert s_alerts["sudden_change"]["state"] == "firing"
    assert (
        s_alerts["sudden_change"]["level"] == "yellow" and s_alerts["sudden_change"]["value"] == 30
    )
    # an hour later the total alert fires
    later = _by_subject(check_json([*args[:-2], "--as-of", "2025-07-01T01:30:00+08:00"]))
    assert {a["rule"]: a["state"] for a in later["A"]["alerts"]}["double_control_total"] == "firing"
    # the text form: a table, red first, with the way back to green
    text = run_cli(["alerts", "check", *args[:-2], "--as-of", "2025-07-01T01:30:00+08:00",
                    "--dry-run"])  # fmt: skip
    assert text.exit_code == 0, text.output
    cells = [line.split("│")[1].strip() for line in text.stdout.splitlines() if "│" in line]
    shown = [c for c in cells if c in ("red", "yellow", "green")]
    assert shown[0] == "red" and shown == sorted(shown, key=("red", "yellow", "green").index)
    flat = " ".join(text.stdout.replace("│", " ").split())
    assert "the quota is used up" in flat or "used up" in text.stdout  # A's quota


def test_firing_survives_a_restart_is_sent_once_and_mqtt_matches_list(
    city: Path, services: LocalServices, database: str, tmp_path: Path
) -> None:
    rules = tmp_path / "fast.toml"
    rules.write_text(FIRE_AT_ONCE, encoding="utf-8")
    config = tmp_path / "greenmon.toml"
    with hook_server() as hook:
        config.write_text(
            "[alerts]\n[[alerts.webhooks]]\n"
            f'url = "http://127.0.0.1:{hook.port}/robot/send?access_token=TOKEN0123456789abc"\n'
            'format = "dingtalk"\nsecret = "SECsigning"\n',
            encoding="utf-8",
        )
        runtime = tmp_path / "rt"
        base = ["--config", str(config), *cli_args(services, database, city, runtime),
                "--rules", str(rules)]  # fmt: skip
        first = run_child(["alerts", "check", *base, "--as-of", "2025-07-01"])
        assert first.returncode == 0, first.stderr
        assert "TOKEN0123456789abc" not in first.stdout + first.stderr  # masked everywhere
        assert "webhook:dingtalk1 (dingtalk, http://127.0.0.1" in first.stdout
        fired = [t for t in hook.texts() if "能耗总量" in t]
        assert fired and "enterprise A" in "".join(fired)
        path, _body = hook.posts[0]
        assert "sign=" in path and "timestamp=" in path  # DingTalk signing
        sent = len(hook.posts)
        # a restart: a new process, the same runtime directory, a later moment
        second = run_child(["alerts", "check", *base, "--as-of", "2025-07-01T06:00:00+08:00"])
        assert second.returncode == 0, second.stderr
        assert len(hook.posts) == sent  # nothing new to say: nothing sent again
        listed = run_cli(
            ["alerts", "list", "--json", "--runtime-dir", str(runtime), "--database", database]
        )
        assert listed.exit_code == 0, listed.output
    import json

    rows = json.loads(listed.stdout)
    firing = {(r["subject"], r["rule"]) for r in rows if r["state"] == "firing"}
    assert ("A", "double_control_total") in firing and ("Y", "double_control_total") in firing
    # MQTT retained state, as a client connecting now sees it, equals `alerts list`
    prefix = f"{database}/v1/alerts"
    state = retained(services.mqtt_url, f"{prefix}/#")
    assert f"{prefix}/enterprise/A" in state
    assert f"{prefix}/county/Y" in state and f"{prefix}/city/city" in state
    from_mqtt = {
        (p["scope"], p["subject"], a["rule"], a["state"], a["level"])
        for p in state.values()
        for a in p["alerts"]
    }
    from_list = {
        (r["scope"], r["subject"], r["rule"], r["state"], r["level"])
        for r in rows
        if r["state"] in ("pending", "firing")
    }
    assert from_mqtt == from_list and from_list
    assert state[f"{prefix}/enterprise/A"]["level"] == "red"
    # one InfluxDB `alert` point per transition
    with InfluxClient(services.influx_url, database) as client:
        points = client.query(
            'SELECT "state", "level", "value" FROM "alert" WHERE "subject" = \'A\' '
            'GROUP BY "scope", "rule"'
        )
    total = points.filter(pl.col("rule") == "double_control_total")
    assert total.get_column("state").to_list() == ["firing"]
    assert total.get_column("value")[0] == pytest.approx(3650)


def test_a_webhook_that_is_down_is_retried_and_evaluation_goes_on(
    city: Path, services: LocalServices, database: str, tmp_path: Path
) -> None:
    rules = tmp_path / "fast.toml"
    rules.write_text(FIRE_AT_ONCE, encoding="utf-8")
    port = free_port()  # nothing listens there yet
    config = tmp_path / "greenmon.toml"
    config.write_text(
        f'[alerts]\n[[alerts.webhooks]]\nurl = "http://127.0.0.1:{port}/hook"\nname = "bureau"\n',
        encoding="utf-8",
    )
    runtime = tmp_path / "rt"
    base = ["--config", str(config), *cli_args(services, database, city, runtime),
            "--rules", str(rules)]  # fmt: skip
    started = time.monotonic()
    down = run_cli(["alerts", "check", *base, "--as-of", "2025-07-01"])
    assert down.exit_code == 0, down.output
    assert time.monotonic() - started < 30
    assert "webhook:bureau" in down.stdout and "waiting for the next try" in down.stdout
    assert "error:" not in down.stdout.lower()
    # the evaluation went on: states recorded, InfluxDB and MQTT delivered
    assert "mqtt (127.0.0.1" in down.stdout and "influx (" in down.stdout
    with AlertStore(default_path(runtime, database)) as store:
        waiting = store.backlog()["webhook:bureau"]["pending"]
        assert waiting > 0 and "influx" not in store.backlog()
        due = store.next_try("webhook:bureau")
    assert due is not None
    time.sleep(max(0.0, due - time.time()) + 0.1)  # the backoff the failure set
    with hook_server(port) as hook:
        up = run_cli(["alerts", "check", *base, "--as-of", "2025-07-01T06:00:00+08:00"])
        assert up.exit_code == 0, up.output
        events = [e for _p, body in hook.posts for e in body["events"]]
    # what the first run could not deliver arrives, in order, stamped with its own moment
    assert len(events) == waiting
    a = [e for e in events if e["subject"] == "A" and e["rule"] == "double_control_total"]
    assert a and a[0]["state"] == "firing" and a[0]["at"].startswith("2025-07-01T00:00")
    with AlertStore(default_path(runtime, database)) as store:
        assert store.backlog() == {}


def test_evaluating_the_same_moment_twice_changes_nothing(
    city: Path, services: LocalServices, database: str, tmp_path: Path
) -> None:
    runtime = tmp_path / "rt"
    args = cli_args(services, database, city, runtime, "--as-of", "2025-07-01")
    check_json(args)
    with AlertStore(default_path(runtime, database)) as store:
        before = (store.states(), store.transitions(), store.backlog())
    again = run_cli(["alerts", "check", *args])
    assert again.exit_code == 0
    assert "alert states not changed" in again.stdout
    with AlertStore(default_path(runtime, database)) as store:
        assert (store.states(), store.transitions(), store.backlog()) == before


def test_bad_rules_file_and_bad_targets_csv_are_named_without_traceback(
    city: Path, services: LocalServices, database: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[total]\nred_above = -1\n\n[gateway_silent]\nsilent_after = 'soon'\n")
    args = cli_args(services, database, city, tmp_path / "rt")
    res = run_child(["alerts", "check", *args, "--rules", str(bad)])
    assert res.returncode == 2
    assert f"{bad}:2: total.red_above: Input should be greater than or equal to 0" in res.stderr
    assert f"{bad}:5: gateway_silent.silent_after: expected a duration" in res.stderr
    assert "Traceback" not in res.stderr
    (city / "targets.csv").write_text(
        "scope,subject,year,energy_quota_tce,intensity_target_tce_per_10k_yuan\n"
        "county,X,2025,5000,\nprovince,Jiangsu,2025,1,\ncounty,X,2025,abc,\n",
        encoding="utf-8",
    )
    res = run_child(["alerts", "check", *args])
    assert res.returncode == 1  # as for any invalid registry file
    assert "targets.csv:3: scope: must be county or city, got 'province'" in res.stderr
    assert "targets.csv:4: energy_quota_tce: not a number: 'abc'" in res.stderr
    assert "Traceback" not in res.stderr


def test_monthly_windows_give_the_judgement_of_the_days_they_sum(
    tmp_path: Path, services: LocalServices, database: str, topic_prefix: str
) -> None:
    """Complete months are read from the aggregator's monthly windows (a thirtieth of the
    rows); without them they are summed from the days. Both give the same figures."""
    reg = write_registry(
        tmp_path / "registry",
        [enterprise("A", "X", quota=1000), enterprise("L", "X", quota=2000)],
    )
    days = pl.concat(
        [
            daily({"A": 10}, date(2024, 1, 1), JUL1),  # last year too: a monthly profile
            daily({"L": lambda d: 12 if d.month % 2 else 8}, date(2025, 3, 17), JUL1),
        ]
    )
    write_daily(services.influx_url, database, reg, days)
    args = cli_args(services, database, tmp_path / "registry", tmp_path / "rt1", "--dry-run",
                    "--as-of", "2025-07-01")  # fmt: skip
    from_days = _by_subject(check_json(args))
    write_monthly(services.influx_url, database, reg, days.filter(pl.col("day") < date(2025, 6, 1)))
    from_months = _by_subject(check_json(args))
    for subject in ("A", "L", "X", "city"):
        a, b = from_days[subject], from_months[subject]
        assert a["level"] == b["level"]
        for key in ("ytd_tce", "projected_tce", "ratio", "basis", "completeness"):
            assert a["total"][key] == pytest.approx(b["total"][key]), (subject, key)
    assert from_months["A"]["total"]["basis"] == "2024 monthly profile"
    # L began on 17 March: its first month counts for the 15 days it has
    assert from_months["L"]["total"]["completeness"] == pytest.approx(106 / 181)
