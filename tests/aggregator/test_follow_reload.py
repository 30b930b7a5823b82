"""`greenmon aggregate --follow` follows registry edits: each round uses the registry in use
at its start; a bad edit is refused (every problem logged) and following goes on."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from greenmon.aggregator.follow import Follower
from greenmon.aggregator.service import default_options
from greenmon.deploy.local import LocalServices
from greenmon.influx import InfluxClient
from greenmon.registry import Registry, load_registry
from tests.ingest.support import GREENMON, REGISTRY

pytestmark = pytest.mark.integration

NEW_ROW = "E0002-NG-NEW,E0002,natural_gas,m3,register,1,9999999,boundary,false,\n"


def test_each_round_takes_the_registry_in_use_at_its_start(
    services: LocalServices, database: str, tmp_path: Path
) -> None:
    shutil.copytree(REGISTRY, tmp_path / "r")
    first = load_registry(tmp_path / "r")
    with (tmp_path / "r" / "meters.csv").open("a") as fh:
        fh.write(NEW_ROW)
    second = load_registry(tmp_path / "r")
    current: list[Registry] = [first]
    client = InfluxClient(services.influx_url, database)
    client.ensure_database()
    client.write(
        "meter_reading,carrier=electricity,enterprise=E0001,meter=E0001-EL-MAIN value=1 "
        "1748736000000000000"
    )
    f = Follower(client, first, default_options(), registry_source=lambda: current[0])
    f.poll()
    assert f.registry is first
    current[0] = second
    f.poll()
    assert f.registry is second
    client.close()


def _wait(path: Path, text: str, since: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with path.open("rb") as fh:
            fh.seek(since)
            if text.encode() in b" ".join(fh.read().split()):
                return
        assert proc.poll() is None, path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged:\n{path.read_text()}")


def test_follow_reloads_refuses_bad_edits_and_survives_sighup(
    services: LocalServices, database: str, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(REGISTRY, registry)
    InfluxClient(services.influx_url, database).ensure_database()
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [GREENMON, "aggregate", "--follow", "--poll-seconds", "0.5",
             "--influx-url", services.influx_url, "--database", database,
             "--registry", str(registry)],
            stdout=o, stderr=e,
        )  # fmt: skip
    meters = registry / "meters.csv"
    good = meters.read_text()
    try:
        _wait(out, "following", 0, proc)  # printed once the registry is loaded and watched
        mark = err.stat().st_size
        meters.write_text(good + "E0002-BAD,E0002,gass,m3,register,1,,boundary,false,\n")
        _wait(err, "previous registry stays in use", mark, proc)
        _wait(err, "meters.csv:13: carrier: unknown carrier 'gass'", mark, proc)
        mark = err.stat().st_size
        meters.write_text(good + NEW_ROW)
        _wait(err, "meters added 1 (E0002-NG-NEW)", mark, proc)
        mark = err.stat().st_size
        os.kill(proc.pid, signal.SIGHUP)
        _wait(err, "reload requested, files unchanged", mark, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert rc == 0, err.read_text()
    summary = " ".join(out.read_text().split())
    assert "'registry_reloads': {'applied': 1, 'refused': 1, 'unchanged': 1}" in summary, summary
