"""greenmon.health: the heartbeat file and the probes' verdicts (pure tables), and the probe's
command line (exit status and message)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from greenmon.health import Heartbeat, heartbeat_path, judge_heartbeat, judge_metrics

NOW = 1_800_000_000.0


def _beat(ok: bool, last_ok: float | None, at: float = NOW, detail: str = "") -> str:
    return json.dumps({"time": at, "ok": ok, "last_ok": last_ok, "detail": detail})


@pytest.mark.parametrize(
    ("text", "max_age", "healthy", "reason"),
    [
        (None, 60, False, "no heartbeat yet"),
        ("not json", 60, False, "not a greenmon heartbeat"),
        ('{"ok": true}', 60, False, "not a greenmon heartbeat"),
        ("[1, 2]", 60, False, "not a greenmon heartbeat"),
        (_beat(True, NOW - 10), 60, True, "10 s ago"),
        (_beat(True, NOW - 60), 60, True, "60 s ago"),
        (_beat(True, NOW - 61), 60, False, "61 s ago (limit 60 s)"),
        # One failed round after a recent success: still healthy (no flapping).
        (_beat(False, NOW - 20, detail="InfluxDB unavailable: x"), 60, True, "20 s ago"),
        # Failing for longer than the limit: unhealthy, saying why.
        (_beat(False, NOW - 600, NOW - 5, "InfluxDB unavailable: refused"), 60, False,
         "5 s ago, failed: InfluxDB unavailable: refused"),
        (_beat(False, None, detail="boom"), 60, False, "no successful round yet; last round "
         "failed: boom"),
    ],
)  # fmt: skip
def test_judge_heartbeat(text: str | None, max_age: float, healthy: bool, reason: str) -> None:
    verdict = judge_heartbeat(text, max_age, NOW)
    assert verdict.healthy is healthy
    assert reason in verdict.reason


METRICS = """# HELP greenmon_ingest_mqtt_connected 1 while connected to the broker
# TYPE greenmon_ingest_mqtt_connected gauge
greenmon_ingest_mqtt_connected 1.0
greenmon_ingest_rejected_total{reason="bad_json"} 3.0
greenmon_ingest_spool_depth_records 0.0
"""


@pytest.mark.parametrize(
    ("expect", "healthy", "reason"),
    [
        ({"greenmon_ingest_mqtt_connected": 1}, True, "greenmon_ingest_mqtt_connected=1"),
        ({}, True, "answering"),
        ({"greenmon_ingest_mqtt_connected": 0}, False, "is 1, expected 0"),
        ({"greenmon_ingest_nothing": 1}, False, "greenmon_ingest_nothing missing"),
        ({"greenmon_ingest_mqtt_connected": 1, "greenmon_ingest_spool_depth_records": 5},
         False, "spool_depth_records is 0, expected 5"),
    ],
)  # fmt: skip
def test_judge_metrics(expect: dict[str, float], healthy: bool, reason: str) -> None:
    verdict = judge_metrics(METRICS, expect)
    assert verdict.healthy is healthy
    assert reason in verdict.reason


def test_heartbeat_file_is_replaced_whole_and_remembers_the_last_success(tmp_path: Path) -> None:
    path = heartbeat_path(tmp_path / "rt", "aggregate")
    assert path == tmp_path / "rt" / "health" / "aggregate.json"
    beat = Heartbeat(path)
    beat.beat(True, now=100.0)
    beat.beat(False, "InfluxDB unavailable", now=130.0)
    record = json.loads(path.read_text())
    assert record["ok"] is False and record["last_ok"] == 100.0 and record["time"] == 130.0
    assert record["rounds"] == 2 and record["detail"] == "InfluxDB unavailable"
    assert [p.name for p in path.parent.iterdir()] == ["aggregate.json"]  # no temp left
    assert judge_heartbeat(path.read_text(), 60, 150.0).healthy
    assert not judge_heartbeat(path.read_text(), 60, 170.0).healthy


def _probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenmon.health", *args], capture_output=True, text=True
    )


def test_probe_exit_status_and_messages(tmp_path: Path) -> None:
    path = heartbeat_path(tmp_path, "aggregate")
    missing = _probe("heartbeat", str(path))
    assert missing.returncode == 1 and "unhealthy: no heartbeat yet" in missing.stderr
    Heartbeat(path).beat(True)
    ok = _probe("heartbeat", str(path), "--max-age", "60")
    assert ok.returncode == 0 and ok.stdout.startswith("healthy:")
    bad = _probe("metrics", "http://127.0.0.1:9/metrics", "--timeout", "1")
    assert bad.returncode == 1 and "unhealthy" in bad.stderr
    usage = _probe("metrics", "http://x/metrics", "--expect", "no-equals-sign")
    assert usage.returncode == 2 and "NAME=VALUE" in usage.stderr
