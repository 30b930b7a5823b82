"""Helpers for the alert tests: registries written to a temp dir, daily frames built by
construction (so every expected level can be worked out by hand)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from greenmon.registry import Registry, load_registry
from greenmon.rules.alerts.evaluate import DAILY_SCHEMA
from greenmon.rules.alerts.rulefile import AlertRules, load_alert_rules
from tests.support import write_csv

ENTERPRISE_HEADER = (
    "enterprise_id", "name", "county", "industry", "land_area_mu", "annual_quota_tce",
    "intensity_target_tce_per_10k_yuan",
)  # fmt: skip
METER_HEADER = (
    "meter_id", "enterprise_id", "carrier", "unit", "kind", "multiplier", "rollover", "role",
    "raw_material", "interval_s",
)  # fmt: skip
MONTHLY_HEADER = (
    "enterprise_id", "month", "output_value_10k_yuan", "value_added_10k_yuan", "sales_10k_yuan",
    "tax_10k_yuan", "product_output", "product_unit",
)  # fmt: skip


def enterprise(eid: str, county: str, quota: float | str = "", target: float | str = "") -> dict:
    return {
        "enterprise_id": eid, "name": f"{eid} 有限公司", "county": county, "industry": "C3731",
        "land_area_mu": 100, "annual_quota_tce": quota, "intensity_target_tce_per_10k_yuan": target,
    }  # fmt: skip


def write_registry(
    root: Path,
    enterprises: Sequence[dict[str, Any]],
    *,
    meters: Sequence[dict[str, Any]] | None = None,
    monthly: Sequence[dict[str, Any]] = (),
    targets: str | None = None,
) -> Registry:
    root.mkdir(parents=True, exist_ok=True)
    write_csv(root / "enterprises.csv", ENTERPRISE_HEADER, enterprises)
    if meters is None:
        meters = [
            {"meter_id": f"{e['enterprise_id']}-EL", "enterprise_id": e["enterprise_id"],
             "carrier": "electricity", "unit": "kWh", "kind": "register", "role": "boundary",
             "raw_material": "false"}
            for e in enterprises
        ]  # fmt: skip
    write_csv(root / "meters.csv", METER_HEADER, meters)
    write_csv(root / "monthly.csv", MONTHLY_HEADER, monthly)
    if targets is not None:
        (root / "targets.csv").write_text(targets, encoding="utf-8")
    return load_registry(root)


def daily(
    rows: dict[str, float | Callable[[date], float]],
    start: date,
    end: date,
    completeness: float = 1.0,
) -> pl.DataFrame:
    """Daily double-control consumption in tce per enterprise (a constant or a function of
    the day) for every local day in [start, end)."""
    out = []
    days = (end - start).days
    for eid, value in rows.items():
        for i in range(days):
            d = start + timedelta(days=i)
            tce = value(d) if callable(value) else value
            out.append((eid, d, tce * 1000, completeness))
    return pl.DataFrame(out, schema=DAILY_SCHEMA, orient="row")


@pytest.fixture
def registry_at(tmp_path: Path) -> Callable[..., Registry]:
    counter = iter(range(1000))

    def make(enterprises: Sequence[dict[str, Any]], **kwargs: Any) -> Registry:
        return write_registry(tmp_path / f"reg{next(counter)}", enterprises, **kwargs)

    return make


@pytest.fixture
def topic_prefix(monkeypatch: pytest.MonkeyPatch, database: str) -> str:
    """A topic prefix of the test's own (env GREENMON_MQTT_TOPIC_PREFIX, which in-process
    commands and `run_child` pass on): the broker is shared by the whole session, and retained
    alert states must not reach other tests' subscribers."""
    prefix = f"{database}/v1"
    monkeypatch.setenv("GREENMON_MQTT_TOPIC_PREFIX", prefix)
    return prefix


@pytest.fixture(scope="session")
def rules() -> AlertRules:
    return load_alert_rules().rules
