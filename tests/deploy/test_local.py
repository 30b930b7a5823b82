"""Local services: `greenmon services up/status/down` through the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from greenmon.deploy.local import LocalServices

pytestmark = pytest.mark.integration


def _greenmon(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("greenmon", path=str(Path(sys.executable).parent)) or "greenmon"
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=120, env={**os.environ}
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes; the CLI that started it has exited.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_up_status_down_leaves_nothing_behind(tmp_path: Path) -> None:
    run = tmp_path / "run"
    up = _greenmon("services", "up", "--runtime-dir", str(run), "--json")
    assert up.returncode == 0, up.stderr
    state = json.loads(up.stdout)
    pids = state["pids"]
    try:
        assert set(pids) == {"mosquitto", "influxd"}
        assert all(_alive(pid) for pid in pids.values())
        assert httpx.get(state["influx_url"] + "/ping").status_code == 204
        assert _listening(state["ports"]["mosquitto"])
        assert json.loads((run / "services.json").read_text())["pids"] == pids

        # `up` again is idempotent: same processes.
        again = _greenmon("services", "up", "--runtime-dir", str(run), "--json")
        assert json.loads(again.stdout)["pids"] == pids

        status = _greenmon("services", "status", "--runtime-dir", str(run), "--json")
        assert status.returncode == 0
        st = json.loads(status.stdout)
        assert st["mosquitto"]["answering"] and st["influxd"]["answering"]
    finally:
        down = _greenmon("services", "down", "--runtime-dir", str(run), "--json")
    assert down.returncode == 0, down.stderr
    assert sorted(json.loads(down.stdout)["stopped"]) == ["influxd", "mosquitto"]
    assert not any(_alive(pid) for pid in pids.values())
    assert not any(_listening(p) for p in state["ports"].values())
    assert not (run / "services.json").exists()
    after = _greenmon("services", "status", "--runtime-dir", str(run), "--json")
    assert after.returncode == 1
    assert not any(s["running"] for s in json.loads(after.stdout).values())


def test_mosquitto_persists_across_restart(tmp_path: Path) -> None:
    """Mosquitto must be able to write its persistence file (the root-owned-dir trap)."""
    svc = LocalServices(tmp_path)
    svc.up()
    try:
        svc.restart("mosquitto")
        db = tmp_path / "mosquitto" / "data" / "mosquitto.db"
        assert db.is_file(), (tmp_path / "mosquitto" / "mosquitto.log").read_text()
        log = (tmp_path / "mosquitto" / "mosquitto.log").read_text()
        assert "Error" not in log, log
    finally:
        svc.down()


def test_restart_keeps_port(tmp_path: Path) -> None:
    svc = LocalServices(tmp_path)
    svc.up()
    try:
        url = svc.influx_url
        svc.stop("influxd")
        assert not svc.running("influxd")
        svc.start("influxd")
        assert svc.influx_url == url
        assert httpx.get(url + "/ping").status_code == 204
    finally:
        svc.down()


def test_status_without_services_is_readable(tmp_path: Path) -> None:
    res = _greenmon("services", "status", "--runtime-dir", str(tmp_path))
    assert res.returncode == 1
    assert "stopped" in res.stdout
    assert "Traceback" not in res.stderr
