"""Fixtures for the real services, in one place.

`services` is one Mosquitto + influxd pair for the whole session, started with the same
code as `greenmon services up` on free loopback ports in a temporary runtime directory.
Tests that stop, kill or restart a service take `own_services` instead: a private pair
(started on demand, one service or both) that nobody else shares.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from greenmon.deploy.local import LocalServices

# The suite's data is dated 2025 (fixed, so results are reproducible): keep raw readings for
# good, or they would be "beyond retention" once 2025 is older than `retention.raw_days`.
# Commands started by tests inherit this; tests of retention itself set their own.
os.environ.setdefault("GREENMON_RETENTION__RAW_DAYS", "0")


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServices]:
    svc = LocalServices(tmp_path_factory.mktemp("services"))
    svc.up()
    try:
        yield svc
    finally:
        svc.down()


@pytest.fixture(scope="session")
def influx_url(services: LocalServices) -> str:
    return services.influx_url


@pytest.fixture(scope="session")
def mqtt_url(services: LocalServices) -> str:
    return services.mqtt_url


@pytest.fixture
def database() -> str:
    """A fresh database name per test, so tests never see each other's points."""
    return "t_" + uuid.uuid4().hex[:12]


@pytest.fixture
def own_services(tmp_path: Path) -> Iterator[Callable[..., LocalServices]]:
    """Factory: `own_services("influxd")` starts a private influxd (or both when no name)."""
    started: list[LocalServices] = []

    def make(*names: str) -> LocalServices:
        svc = LocalServices(tmp_path / f"own{len(started)}")
        svc.runtime_dir.mkdir(parents=True, exist_ok=True)
        started.append(svc)
        for name in names or ("mosquitto", "influxd"):
            svc.start(name)
        return svc

    try:
        yield make
    finally:
        for svc in started:
            for name in ("mosquitto", "influxd"):
                svc.stop(name)
