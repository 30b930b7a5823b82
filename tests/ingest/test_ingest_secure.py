"""The secured path end to end, through the command line only: broker files, dev TLS, a
broker that refuses anonymous clients, the ingestor over mqtts:// with its password from the
environment, a gateway with its own credentials; and no secret in any output."""

from __future__ import annotations

import csv
import json
import os
import ssl
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from greenmon.ingest.codec import encode_batch, topic_for
from tests.ingest.support import GREENMON, REGISTRY, stored, wait_stored

pytestmark = pytest.mark.integration


def gm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GREENMON, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            out[key] = value.strip("'")
    return out


def test_ingest_over_tls_with_passwords(tmp_path: Path, database: str) -> None:
    gateways = tmp_path / "gateways.csv"
    gateways.write_text("enterprise_id,gateway_id\nE0001,gw-01\nE0002,gw-01\n")
    auth, tls, rt = tmp_path / "auth", tmp_path / "tls", tmp_path / "rt"

    r = gm("services", "broker-auth", str(gateways), "--out", str(auth), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["gateways"] == 2
    with (auth / "credentials.csv").open() as fh:
        creds = {row["username"]: row["password"] for row in csv.DictReader(fh)}
    assert set(creds) == {"E0001.gw-01", "E0002.gw-01"}
    secrets = [*creds.values(), _env_file(auth / "ingestor.env")["GREENMON_MQTT_PASSWORD"]]
    # Running it again keeps every password (adding a gateway must not rotate everyone).
    assert gm("services", "broker-auth", str(gateways), "--out", str(auth)).returncode == 0
    with (auth / "credentials.csv").open() as fh:
        assert {row["username"]: row["password"] for row in csv.DictReader(fh)} == creds

    assert gm("services", "dev-tls", "--out", str(tls)).returncode == 0
    up = gm("services", "up", "--runtime-dir", str(rt), "--broker-auth", str(auth),
            "--tls", str(tls), "--json")  # fmt: skip
    assert up.returncode == 0, up.stderr
    state = json.loads(up.stdout)
    assert state["mqtt_url"].startswith("mqtts://127.0.0.1:")
    log = tmp_path / "ingest.log"
    ingest = None
    try:
        env = {
            **os.environ,
            **_env_file(auth / "ingestor.env"),
            "GREENMON_MQTT_CA_FILE": str(tls / "ca.crt"),
        }
        with log.open("w") as out:
            ingest = subprocess.Popen(
                [
                    GREENMON,
                    "ingest",
                    "--runtime-dir",
                    str(rt),
                    "--registry",
                    str(REGISTRY),
                    "--database",
                    database,
                    "--metrics-port",
                    "0",
                    "--log-level",
                    "INFO",
                    "--client-id",
                    database,
                    "--json",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        # until the broker confirmed the subscription: a fixed sleep loses the message
        # on a loaded machine, where starting the ingestor alone can take seconds
        deadline = time.monotonic() + 60
        while b"subscribed to" not in log.read_bytes():
            assert ingest.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)

        port = int(state["mqtt_url"].rsplit(":", 1)[1])
        gw = paho.Client(CallbackAPIVersion.VERSION2, client_id="E0001.gw-01", protocol=paho.MQTTv5)
        gw.username_pw_set("E0001.gw-01", creds["E0001.gw-01"])
        gw.tls_set(ca_certs=str(tls / "ca.crt"), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        gw.connect("127.0.0.1", port)
        gw.loop_start()
        try:
            t0 = 1_748_736_000_000
            readings = [
                {"meter": "E0001-EL-MAIN", "value": 1000.0 + i, "ts": t0 + i * 900_000}
                for i in range(20)
            ]
            payload = encode_batch("gw-01", 1_748_736_000_000, readings)
            gw.publish(topic_for("E0001", "gw-01"), payload, qos=1).wait_for_publish(10)
        finally:
            gw.loop_stop()
            gw.disconnect()

        influx_url = state["influx_url"]
        assert wait_stored(influx_url, database, 20, timeout=30) == 20
        assert stored(influx_url, database) == {
            ("E0001-EL-MAIN", r["ts"] * 1_000_000, r["value"]) for r in readings
        }
    finally:
        if ingest is not None:
            ingest.terminate()
            assert ingest.wait(60) == 0
        gm("services", "down", "--runtime-dir", str(rt))
    output = log.read_text()
    assert '"written": 20' in output
    for secret in secrets:
        assert secret not in output
        assert secret not in up.stdout + up.stderr
    # Secrets are never flags (a flag would show in `ps`): the ingestor read it from the env.
    assert "--mqtt-password" not in gm("ingest", "--help").stdout
