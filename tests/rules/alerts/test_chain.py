"""A gateway outage through the whole chain: simulated gateways -> MQTT -> `greenmon ingest`
-> InfluxDB -> `greenmon aggregate` -> `greenmon alerts check`.

Three simulated factories stream one fault-free day at 15 minutes, except that E0001's
boundary gateway (E0001-GW01: its main meter and its export meter) sends nothing from 08:00 to
11:00: its readings of 08:15 .. 11:00 never leave it. By construction, [08:00, 11:00) of those
meters is uncovered: 3 of 24 hours, so their day - and E0001's - is 0.875 complete; during
the outage the gateway is silent.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from greenmon.deploy.local import LocalServices
from greenmon.influx import InfluxClient
from greenmon.ingest.codec import decode
from greenmon.simulators.faults import FaultSpec
from greenmon.simulators.gateways import PublishOptions, publish
from tests.ingest.support import IngestProc, wait_stored
from tests.rules.alerts.support import check_json, cli_args, run_child
from tests.simulators.conftest import make_run

pytestmark = pytest.mark.integration

LOCAL = ZoneInfo("Asia/Shanghai")
OUTAGE = (datetime(2025, 6, 2, 8, tzinfo=LOCAL), datetime(2025, 6, 2, 11, tzinfo=LOCAL))
GATEWAY = "E0001-GW01"
NOW_MS = 1_900_000_000_000


def _by_subject(objects: list[dict]) -> dict[str, dict]:
    return {o["subject"]: o for o in objects}


def test_a_gateway_outage_is_a_data_quality_alert_of_its_share(
    services: LocalServices, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = make_run(tmp_path / "fleet", 3, 11, FaultSpec(), days=1)
    lo, hi = (int(t.timestamp() * 1000) for t in OUTAGE)
    keep: list[bool] = []
    sent: set[tuple[str, int]] = set()
    for client, topic, payload in run.planned.plan.messages.select(
        "client", "topic", "payload"
    ).iter_rows():
        stamps = [
            (r.meter, r.ts_ns // 1_000_000)
            for r in decode(topic, payload.encode(), run.registry, NOW_MS).readings
        ]
        dropped = client == GATEWAY and any(lo < ts <= hi for _m, ts in stamps)
        keep.append(not dropped)
        if not dropped:
            sent.update(stamps)
    messages = run.planned.plan.messages.filter(pl.Series(keep))
    assert messages.height == len(keep) - 12  # one batch message per reading time
    runtime = tmp_path / "rt"
    args = cli_args(services, database, run.root, runtime, "--metrics-port", "0")
    ingest = IngestProc([*args, "--client-id", database], runtime).start()
    try:
        ingest.wait_subscribed()
        result = publish(messages, PublishOptions(mqtt_url=services.mqtt_url))
        assert result.published == messages.height
        assert wait_stored(services.influx_url, database, len(sent)) == len(sent)
    finally:
        ingest.stop()

    # the alert states on a topic prefix of this test's own (the broker is shared)
    monkeypatch.setenv("GREENMON_MQTT_TOPIC_PREFIX", f"{database}/v1")
    base = cli_args(services, database, run.root, runtime)
    agg = run_child(["aggregate", *base, "--from", "2025-06-02", "--to", "2025-06-03", "--json"])
    assert agg.returncode == 0, agg.stderr
    summary = {e["enterprise"]: e for e in json.loads(agg.stdout)["enterprises"]}
    assert summary["E0001"]["completeness"] == pytest.approx(0.875)
    assert summary["E0002"]["completeness"] == 1.0 and summary["E0003"]["completeness"] == 1.0
    with InfluxClient(services.influx_url, database) as client:
        day = client.query(
            'SELECT "completeness" FROM "energy" WHERE "window" = \'1d\' AND '
            '"carrier" = \'total\' GROUP BY "enterprise"'
        )
    assert dict(day.select("enterprise", "completeness").iter_rows()) == {
        "E0001": pytest.approx(0.875), "E0002": 1.0, "E0003": 1.0,
    }  # fmt: skip

    # during the outage: the gateway is silent (its meters' last reading was at 08:00)
    during = _by_subject(check_json([*base, "--as-of", "2025-06-02T10:30:00+08:00"]))
    silent = {a["rule"]: a for a in during["E0001"]["alerts"]}["gateway_silent"]
    assert silent["state"] == "firing" and silent["value"] == pytest.approx(2.5)
    assert "E0001-EL-MAIN" in silent["message"] and "E0001-EL-EXP" in silent["message"]
    assert not any(a["rule"] == "gateway_silent" for a in during["E0002"]["alerts"])
    assert not any(a["rule"] == "gateway_silent" for a in during["E0003"]["alerts"])

    # the day after: the day is 0.875 complete, below the 90% of the online-monitoring rule
    after = _by_subject(check_json([*base, "--as-of", "2025-06-03"]))
    alerts = {a["rule"]: a for a in after["E0001"]["alerts"]}
    quality = alerts["data_completeness"]
    assert quality["state"] == "firing" and quality["value"] == pytest.approx(0.875)
    assert quality["threshold"] == 0.9
    assert "E0001-EL-MAIN 0.875" in quality["message"]
    assert alerts["gateway_silent"]["state"] == "resolved"  # the gateway is back
    for other in ("E0002", "E0003"):
        assert not any(a["rule"] == "data_completeness" for a in after[other]["alerts"])

    # `alerts watch --aggregate` runs follow-mode rounds and evaluates after those that wrote
    from greenmon.config import Settings
    from greenmon.registry_watch import RegistryWatcher
    from greenmon.rules.alerts.cli import _follower

    settings = Settings(influx_url=services.influx_url, database=database, registry=run.root,
                        runtime_dir=runtime)  # fmt: skip
    round_ = _follower(settings, RegistryWatcher(run.root))
    assert round_() is True  # the first round writes the windows of the data so far
