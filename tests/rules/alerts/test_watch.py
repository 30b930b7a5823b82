"""`alerts watch`: evaluation keeps its pace while a webhook is down; the webhook gets what it
missed once it is back, once."""

from __future__ import annotations

import threading
import time
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from greenmon.config import AlertsSettings, Settings, WebhookSettings
from greenmon.deploy.local import LocalServices
from greenmon.influx import InfluxClient
from greenmon.rules.alerts.rulefile import load_alert_rules
from greenmon.rules.alerts.service import Outcome, make_sinks, watch
from greenmon.rules.alerts.store import AlertStore
from tests.rules.alerts.conftest import daily, enterprise, write_registry
from tests.rules.alerts.support import free_port, hook_server, write_daily

pytestmark = pytest.mark.integration


def _wait(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_watch_goes_on_while_a_webhook_is_down_and_delivers_once_it_is_up(
    services: LocalServices, database: str, tmp_path: Path, topic_prefix: str
) -> None:
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    if today.timetuple().tm_yday < 3:
        pytest.skip("no complete day of this year yet to judge")
    reg = write_registry(tmp_path / "registry", [enterprise("A", "X", quota=1)])
    write_daily(
        services.influx_url, database, reg,
        daily({"A": 10}, date(today.year, 1, 1), today),
    )  # fmt: skip
    rules_file = tmp_path / "fast.toml"
    rules_file.write_text('[total]\npending_for = "0s"\n', encoding="utf-8")
    rules = load_alert_rules(rules_file)
    port = free_port()
    settings = Settings(
        influx_url=services.influx_url, mqtt_url=services.mqtt_url, database=database,
        registry=tmp_path / "registry", runtime_dir=tmp_path / "rt",
        alerts=AlertsSettings(webhooks=(
            WebhookSettings(url=SecretStr(f"http://127.0.0.1:{port}/hook"), name="w"),
        )),
    )  # fmt: skip
    sinks, notes = make_sinks(settings)
    assert notes == [] and [s.name for s in sinks] == ["influx", "mqtt", "webhook:w"]
    outcomes: list[Outcome] = []
    stop = threading.Event()
    with AlertStore(tmp_path / "rt" / "alerts.sqlite") as store:
        thread = threading.Thread(
            target=watch,
            args=(lambda: InfluxClient(services.influx_url, database), lambda: reg, rules, store,
                  settings, stop),
            kwargs={"interval_s": 0.3, "sinks": sinks, "on_outcome": outcomes.append,
                    "poll_s": 0.1},
        )  # fmt: skip
        thread.start()
        try:
            # the webhook is down: evaluations keep coming, the event waits in the outbox
            assert _wait(lambda: store.backlog().get("webhook:w", {}).get("attempts", 0) >= 1)
            seen = len(outcomes)
            assert _wait(lambda: len(outcomes) >= seen + 3)
            assert "influx" not in store.backlog() and "mqtt" not in store.backlog()
            with hook_server(port) as hook:
                assert _wait(lambda: "webhook:w" not in store.backlog())
                events = [e for _p, body in hook.posts for e in body["events"]]
                more = len(outcomes)
                assert _wait(lambda: len(outcomes) >= more + 3)  # and it goes on
                assert [e for _p, body in hook.posts for e in body["events"]] == events
        finally:
            stop.set()
            thread.join(30)
    assert not thread.is_alive()
    fired = [(e["subject"], e["rule"], e["state"]) for e in events]
    assert len(fired) == len(set(fired))  # each once
    for subject in ("A", "X", "city"):  # the firm, its county, the city: all over quota
        assert (subject, "double_control_total", "firing") in fired
    firsts = [t for o in outcomes for t in o.transitions]
    assert len(firsts) == len({t.key for t in firsts})  # no key moved twice: no flapping
