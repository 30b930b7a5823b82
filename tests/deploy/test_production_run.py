"""The production files run for real where their parts exist here: the broker's config on
the Debian Mosquitto (gateways over TLS with generated logins, the ingestor on the internal
listener, compose's broker health check), `install-files.sh`, the health probes compose and
systemd use against a running `ingest` and `aggregate --follow` (under the W^X memory rule
of `MemoryDenyWriteExecute=yes`), and `influxdb/setup.sh` against a stand-in `influx` CLI."""

from __future__ import annotations

import ctypes
import getpass
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from greenmon.config import load_settings
from greenmon.deploy.broker_auth import Gateway, write_broker_auth
from greenmon.deploy.local import LocalServices, find_binary, free_port
from greenmon.deploy.tls import create_dev_tls
from greenmon.influx import InfluxClient
from greenmon.retention import ensure_retention
from tests.deploy.production import PROD, compose, example_env
from tests.ingest.support import BASE_MS, GREENMON, REGISTRY

pytestmark = pytest.mark.integration

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def _unit_env() -> dict[str, str]:
    """This environment plus what the units set besides greenmon's settings."""
    from tests.deploy.production import units

    extra = {k: v for u in units() for k, v in u.environment().items()}
    return {**os.environ, **{k: v for k, v in extra.items() if not k.startswith("GREENMON_")}}


def _mdwe() -> None:  # runs in the child, between fork and exec
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0):
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


def _mdwe_supported() -> bool:
    res = subprocess.run(
        [sys.executable, "-c", "pass"], preexec_fn=_mdwe, capture_output=True, check=False
    )
    return res.returncode == 0


MDWE = _mdwe_supported()


def test_mdwe_really_refuses_writable_executable_memory() -> None:
    """The rule the units' MemoryDenyWriteExecute=yes enforces, checked to bite, so that
    greenmon running under it below means something."""
    if not MDWE:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    probe = (
        "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | "
        "mmap.PROT_EXEC); print('mapped')"
    )
    free = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    held = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, preexec_fn=_mdwe
    )
    assert free.returncode == 0 and "mapped" in free.stdout
    assert held.returncode != 0 and "mapped" not in held.stdout


def _probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenmon.health", *args], capture_output=True, text=True
    )


def _compose_probe(service: str) -> list[str]:
    test = compose()["services"][service]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    return list(test[4:])


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# -- aggregate --follow: the heartbeat ---------------------------------------------------------
def _seed_readings(influx_url: str, database: str) -> None:
    """Four hours of one meter, where the ingestor would have put them."""
    settings = load_settings(influx_url=influx_url, database=database)
    with InfluxClient.from_settings(settings) as client:
        ensure_retention(client, settings, alter=False)
        lines = [
            f"meter_reading,carrier=electricity,enterprise=E0001,meter=E0001-EL-MAIN "
            f"value={1000 + 10 * k} {BASE_MS + k * 900_000}"
            for k in range(16)
        ]
        client.write(lines, precision="ms", rp=client.policy("meter_reading"))


@pytest.fixture
def follower(
    own_services: Callable[..., LocalServices], tmp_path: Path
) -> Iterator[tuple[LocalServices, subprocess.Popen[str], Path]]:
    svc = own_services("influxd")
    _seed_readings(svc.influx_url, "hb")
    rt = tmp_path / "rt"
    log = (tmp_path / "follow.log").open("w")
    proc = subprocess.Popen(
        [GREENMON, "aggregate", "--follow", "--registry", str(REGISTRY),
         "--influx-url", svc.influx_url, "--database", "hb", "--runtime-dir", str(rt),
         "--poll-seconds", "0.5", "--lateness", "1m"],
        stdout=log, stderr=subprocess.STDOUT, text=True, env=_unit_env(),
        preexec_fn=_mdwe if MDWE else None,
    )  # fmt: skip
    try:
        yield svc, proc, rt
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def test_aggregate_follow_heartbeat_is_what_the_health_check_reads(
    follower: tuple[LocalServices, subprocess.Popen[str], Path], tmp_path: Path
) -> None:
    svc, proc, rt = follower
    args = _compose_probe("aggregate")
    container_file = args[1]
    local_file = rt / Path(container_file).relative_to("/var/lib/greenmon/run")
    args[1] = str(local_file)
    _wait(local_file.exists, 60, f"the heartbeat (log: {tmp_path / 'follow.log'})")
    ok = _probe(*args)
    assert ok.returncode == 0, ok.stderr
    assert "healthy: last successful round" in ok.stdout
    beat = json.loads(local_file.read_text())
    assert beat["ok"] is True and beat["pid"] == proc.pid
    # The rounds did real work: the seeded hours were aggregated (energy written).
    with InfluxClient(svc.influx_url, "hb") as client:
        _wait(lambda: client.query('SELECT count("kgce") FROM "energy"').height > 0, 60, "energy")
    _wait(lambda: json.loads(local_file.read_text())["rounds"] > beat["rounds"], 30, "rounds")

    # InfluxDB goes away: rounds fail, the heartbeat says so, and once the last successful
    # round is older than the limit the probe reports it, with the reason.
    svc.stop("influxd")
    _wait(lambda: json.loads(local_file.read_text())["ok"] is False, 90, "a failed round")
    time.sleep(1.5)
    bad = _probe("heartbeat", str(local_file), "--max-age", "1")
    assert bad.returncode == 1
    assert "InfluxDB unavailable" in bad.stderr, bad.stderr
    assert proc.poll() is None, "follow mode outlives InfluxDB"
    svc.start("influxd")
    _wait(lambda: json.loads(local_file.read_text())["ok"] is True, 90, "recovery")
    assert _probe(*args).returncode == 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0


def test_alerts_watch_heartbeat_is_what_the_health_check_reads(
    own_services: Callable[..., LocalServices], tmp_path: Path
) -> None:
    svc = own_services("influxd")
    _seed_readings(svc.influx_url, "alerts_hb")
    rt = tmp_path / "rt"
    log = (tmp_path / "alerts.log").open("w")
    proc = subprocess.Popen(
        [GREENMON, "alerts", "watch", "--registry", str(REGISTRY), "--interval", "1",
         "--influx-url", svc.influx_url, "--database", "alerts_hb", "--runtime-dir", str(rt)],
        stdout=log, stderr=subprocess.STDOUT, text=True,
        env={**_unit_env(), "GREENMON_ALERTS__MQTT": "false"},
        preexec_fn=_mdwe if MDWE else None,
    )  # fmt: skip
    try:
        args = _compose_probe("alerts")
        local_file = rt / Path(args[1]).relative_to("/var/lib/greenmon/run")
        args[1] = str(local_file)
        _wait(local_file.exists, 90, f"the heartbeat (log: {tmp_path / 'alerts.log'})")
        ok = _probe(*args)
        assert ok.returncode == 0, ok.stderr
        first = json.loads(local_file.read_text())
        assert first["ok"] is True and first["pid"] == proc.pid
        _wait(lambda: json.loads(local_file.read_text())["rounds"] > first["rounds"], 60, "2nd")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        log.close()
    assert code == 0, (tmp_path / "alerts.log").read_text()[-2000:]


# -- ingest: /metrics --------------------------------------------------------------------------
def test_ingest_metrics_probe_says_connected(
    services: LocalServices, tmp_path: Path, database: str
) -> None:
    port = free_port()
    log = (tmp_path / "ingest.log").open("w")
    proc = subprocess.Popen(
        [GREENMON, "ingest", "--registry", str(REGISTRY), "--mqtt-url", services.mqtt_url,
         "--influx-url", services.influx_url, "--database", database,
         "--runtime-dir", str(tmp_path / "rt"), "--client-id", f"probe-{database}",
         "--metrics-port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=_unit_env(),
        preexec_fn=_mdwe if MDWE else None,
    )  # fmt: skip
    try:
        args = _compose_probe("ingest")
        args[1] = args[1].replace(":9108/", f":{port}/")
        _wait(lambda: _probe(*args).returncode == 0, 60, "ingest connected")
        ok = _probe(*args)
        assert "greenmon_ingest_mqtt_connected=1" in ok.stdout
        wrong = _probe("metrics", args[1], "--expect", "greenmon_ingest_mqtt_connected=0")
        assert wrong.returncode == 1 and "is 1, expected 0" in wrong.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        log.close()
    assert code == 0, (tmp_path / "ingest.log").read_text()[-2000:]
    gone = _probe(*args)
    assert gone.returncode == 1 and "unhealthy" in gone.stderr


# -- the broker: production mosquitto.conf on the Debian Mosquitto -----------------------------
def _production_broker_conf(secrets: Path, data: Path, tls_port: int, plain_port: int) -> str:
    text = (PROD / "mosquitto" / "mosquitto.conf").read_text()
    text = text.replace("/mosquitto/secrets/", f"{secrets}/").replace(
        "/mosquitto/data/", f"{data}/"
    )
    # Loopback only here, on free ports; and run as whoever runs the tests.
    text = re.sub(r"^listener 8883$", f"listener {tls_port} 127.0.0.1", text, flags=re.M)
    text = re.sub(r"^listener 1883$", f"listener {plain_port} 127.0.0.1", text, flags=re.M)
    assert f"listener {tls_port}" in text and f"listener {plain_port}" in text
    return text + f"\nuser {getpass.getuser()}\n"


def _install_files(auth: Path, certs: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(PROD / "mosquitto" / "install-files.sh")],
        env={**os.environ, "SRC_AUTH": str(auth), "SRC_CERTS": str(certs), "DEST": str(dest),
             "BROKER_USER": getpass.getuser()},
        capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.fixture
def production_broker(tmp_path: Path) -> Iterator[dict[str, Any]]:
    auth = write_broker_auth(tmp_path / "broker-auth", [Gateway("E0001", "gw-01")])
    tls = create_dev_tls(tmp_path / "tls")
    certs = tmp_path / "certs"
    certs.mkdir()
    for src, name in ((tls.ca_cert, "ca.crt"), (tls.server_cert, "broker.crt"),
                      (tls.server_key, "broker.key")):  # fmt: skip
        shutil.copy(src, certs / name)
    secrets = tmp_path / "secrets"
    res = _install_files(auth.directory, certs, secrets)
    assert res.returncode == 0, res.stderr
    data = tmp_path / "data"
    data.mkdir()
    tls_port, plain_port = free_port(), free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(_production_broker_conf(secrets, data, tls_port, plain_port))
    log = (tmp_path / "mosquitto.log").open("w")
    proc = subprocess.Popen(
        [find_binary("mosquitto"), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        import socket

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", plain_port)) == 0

        _wait(listening, 15, f"mosquitto (log {tmp_path / 'mosquitto.log'})")
        yield {
            "auth": auth, "ca": certs / "ca.crt", "tls_port": tls_port,
            "plain_port": plain_port, "proc": proc, "secrets": secrets,
        }  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def test_install_files_copies_with_the_brokers_ownership_and_refuses_gaps(
    production_broker: dict[str, Any], tmp_path: Path
) -> None:
    secrets: Path = production_broker["secrets"]
    modes = {p.name: p.stat().st_mode & 0o777 for p in secrets.iterdir()}
    assert modes == {"passwd": 0o600, "acl": 0o600, "ca.crt": 0o644, "broker.crt": 0o644,
                     "broker.key": 0o600}  # fmt: skip
    assert secrets.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_uid for p in secrets.iterdir()} == {os.getuid()}
    empty = tmp_path / "empty"
    empty.mkdir()
    res = _install_files(empty, empty, tmp_path / "nowhere")
    assert res.returncode == 1 and "missing or empty" in res.stderr
    assert not (tmp_path / "nowhere").exists()


def test_production_broker_config_gateways_over_tls_ingestor_inside(
    production_broker: dict[str, Any],
) -> None:
    b = production_broker
    auth = b["auth"]
    gw = auth.gateway("E0001", "gw-01")
    topic = Gateway("E0001", "gw-01").readings_topic()
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(b["plain_port"]), "-V", "mqttv5",
         "-u", auth.ingestor.username, "-P", auth.ingestor.password.get_secret_value(),
         "-t", "$share/ingest/greenmon/v1/#", "-q", "1", "-C", "1", "-W", "20", "-v"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1.0)
    payload = '{"meter":"E0001-EL-MAIN","value":1,"ts":1748736000000}'
    pub = subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(b["tls_port"]), "--cafile", str(b["ca"]),
         "-V", "mqttv5", "-u", gw.username, "-P", gw.password.get_secret_value(),
         "-q", "1", "-t", topic, "-m", payload],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert pub.returncode == 0, pub.stderr
    out, err = sub.communicate(timeout=30)
    assert out.strip() == f"{topic} {payload}", err
    # Plain TCP is not for gateways: anonymous and unknown users are refused on both.
    for port in (b["plain_port"],):
        anon = subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-m", "x"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert anon.returncode != 0 and "not authori" in anon.stderr
    no_tls = subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(b["tls_port"]), "-u", gw.username,
         "-P", gw.password.get_secret_value(), "-t", topic, "-m", "x"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert no_tls.returncode != 0, "the gateways' listener must refuse plain TCP"


def test_compose_broker_health_check_against_the_production_config(
    production_broker: dict[str, Any],
) -> None:
    test = compose()["services"]["mosquitto"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    script = test[1].replace("-p 1883", f"-p {production_broker['plain_port']}")
    assert "-p 1883" not in script and shlex.split(script)[0] == "mosquitto_sub"
    up = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert up.returncode == 0, up.stdout + up.stderr
    production_broker["proc"].terminate()
    production_broker["proc"].wait(20)
    down = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert down.returncode != 0


# -- InfluxDB 2.x set-up script, against the stand-in CLI ---------------------------------------
@pytest.fixture
def fake_influx(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "influx"
    wrapper.write_text(
        f'#!/bin/sh\nexec {sys.executable} {Path(__file__).parent / "fake_influx.py"} "$@"\n'
    )
    wrapper.chmod(0o755)
    state = tmp_path / "influx-state.json"
    # What the influxdb service's first start made (DOCKER_INFLUXDB_INIT_*): the bucket.
    state.write_text(json.dumps({
        "buckets": [{"id": "00000000000000a1", "name": "greenmon", "retention": "0"}],
        "dbrps": [], "auths": [], "calls": [],
    }))  # fmt: skip
    svc_env = compose()["services"]["influxdb-setup"]["environment"]
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "FAKE_INFLUX_STATE": str(state),
        **{k: str(v) for k, v in svc_env.items()},
    }
    return state, env


def _setup(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(PROD / "influxdb" / "setup.sh")],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_influxdb_setup_creates_buckets_mappings_and_logins_once(
    fake_influx: tuple[Path, dict[str, str]],
) -> None:
    state_path, env = fake_influx
    first = _setup(env)
    assert first.returncode == 0, first.stderr
    state = json.loads(state_path.read_text())
    buckets = {b["name"]: b for b in state["buckets"]}
    assert set(buckets) == {"greenmon", "greenmon/raw"}
    assert buckets["greenmon/raw"]["retention"] == "1096d"
    results, raw = buckets["greenmon"]["id"], buckets["greenmon/raw"]["id"]
    dbrps = {(d["db"], d["rp"]): (d["bucket_id"], d["default"]) for d in state["dbrps"]}
    assert dbrps == {("greenmon", "autogen"): (results, True), ("greenmon", "raw"): (raw, False)}
    auths = {a["username"]: a for a in state["auths"]}
    assert auths["greenmon"]["permissions"] == sorted(
        [f"read:{results}", f"write:{results}", f"read:{raw}", f"write:{raw}"]
    )
    assert auths["grafana"]["permissions"] == sorted([f"read:{results}", f"read:{raw}"])
    assert auths["greenmon"]["password"] == env["GREENMON_INFLUX_PASSWORD"]
    assert auths["grafana"]["password"] == env["GRAFANA_INFLUX_PASSWORD"]
    assert "InfluxDB ready for greenmon" in first.stdout

    # Again, with a rotated password: nothing new, the passwords set.
    env2 = {**env, "GRAFANA_INFLUX_PASSWORD": "rotated"}
    second = _setup(env2)
    assert second.returncode == 0, second.stderr
    after = json.loads(state_path.read_text())
    assert after["buckets"] == state["buckets"] and after["dbrps"] == state["dbrps"]
    assert {a["username"]: a["password"] for a in after["auths"]}["grafana"] == "rotated"
    assert "password set" in second.stdout and "created" not in second.stdout


def test_influxdb_setup_refuses_to_run_without_its_secrets(
    fake_influx: tuple[Path, dict[str, str]],
) -> None:
    state_path, env = fake_influx
    del env["GRAFANA_INFLUX_PASSWORD"]
    res = _setup(env)
    assert res.returncode != 0 and "GRAFANA_INFLUX_PASSWORD" in res.stderr
    assert json.loads(state_path.read_text())["calls"] == []


def test_example_env_fills_every_setup_variable() -> None:
    """The stand-in test above runs with what .env.example gives: no variable left empty."""
    env = compose(example_env())["services"]["influxdb-setup"]["environment"]
    assert all(str(v) for v in env.values())
