"""A simulated run through the real ingestor into the real InfluxDB: what the truth says was
sent is stored, and the dead letters count exactly the malformed extras, per reason."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from greenmon.deploy.local import LocalServices
from greenmon.simulators.faults import parse_faults
from greenmon.simulators.gateways import PublishOptions, publish
from tests.ingest.support import IngestProc, wait_stored
from tests.ingest.support import client as support_client
from tests.simulators.conftest import make_run

pytestmark = pytest.mark.integration


def test_ingested_points_and_dead_letters_match_the_truth(
    services: LocalServices, database: str, tmp_path: Path
) -> None:
    faults = parse_faults("demo,duplicate=0.03,malformed=0.03,gap_lost=0.02")
    run = make_run(tmp_path / "fleet", 15, 23, faults, days=0.25)
    runtime = tmp_path / "rt"
    args = [
        "--mqtt-url",
        services.mqtt_url,
        "--influx-url",
        services.influx_url,
        "--database",
        database,
        "--registry",
        str(run.root),
        "--runtime-dir",
        str(runtime),
        "--metrics-port",
        "0",
        "--client-id",
        database,
    ]
    ingest = IngestProc(args, runtime).start()
    try:
        ingest.wait_subscribed()
        result = publish(run.planned.plan.messages, PublishOptions(mqtt_url=services.mqtt_url))
        assert result.published == run.planned.plan.messages.height
        sent = run.truth.filter(pl.col("sent"))
        distinct = sent.select("meter_id", "sent_ts").unique().height
        assert wait_stored(services.influx_url, database, distinct) == distinct
    finally:
        summary = ingest.stop()
    assert summary["written"] == int(run.truth["publishes"].sum())
    assert summary["rejected_by_reason"] == dict(Counter(run.malformed["reason"].to_list()))
    with support_client(services.influx_url, database) as client:
        stored = client.query(
            f'SELECT "value" FROM {client.source("meter_reading")} GROUP BY "meter"'
        )
    got = set(zip(stored["meter"].to_list(), (stored["time"] // 1_000_000).to_list(), strict=True))
    want = set(
        zip(sent["meter_id"].to_list(), sent["sent_ts"].dt.epoch("ms").to_list(), strict=True)
    )
    assert got == want
