"""Fixtures of the dashboard tests: Grafana's schemas, the DESIGN §3 contract, a site.

Grafana's JSON schemas and OpenAPI subset are looked up in ``$GREENMON_GRAFANA_SCHEMAS``, then
``<repo>/../shared/grafana-schemas`` (the layout the team works in), then
``/work/shared/grafana-schemas``; tests that need them are skipped, saying so, only when none
of these exists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from greenmon.aggregator.store import MEASUREMENTS, STRING_FIELDS
from greenmon.dashboards.site import Site
from greenmon.ingest.metrics import REJECT_REASONS
from greenmon.registry import load_registry
from greenmon.simulators.fleet import generate_fleet, write_fleet

REPO = Path(__file__).resolve().parents[2]
SCHEMAS_ENV = "GREENMON_GRAFANA_SCHEMAS"


def schema_dirs() -> list[Path]:
    env = os.environ.get(SCHEMAS_ENV)
    candidates = [Path(env)] if env else []
    candidates += [REPO.parent / "shared" / "grafana-schemas", Path("/work/shared/grafana-schemas")]
    return candidates


@pytest.fixture(scope="session")
def schemas() -> Path:
    for path in schema_dirs():
        if (path / "dashboard.jsonschema.json").is_file():
            return path
    pytest.skip(
        "Grafana's schemas not found (looked in "
        + ", ".join(str(p) for p in schema_dirs())
        + f"; set {SCHEMAS_ENV})"
    )


def load_schema(schemas: Path, name: str) -> dict[str, Any]:
    return json.loads((schemas / name).read_text())


def _contract() -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """DESIGN §3: every measurement the dashboards may read, with its tags and fields. The
    aggregator's are taken from the aggregator itself (what it writes); the others are the
    contract as DESIGN §3 states it."""
    out = {
        name: (frozenset(tags), frozenset(fields) | frozenset(STRING_FIELDS.get(name, ())))
        for name, (tags, fields) in MEASUREMENTS.items()
    }
    out["meter_reading"] = (frozenset({"enterprise", "meter", "carrier"}), frozenset({"value"}))
    out["alert"] = (
        frozenset({"scope", "subject", "rule"}),
        frozenset({"level", "state", "value", "threshold", "message"}),
    )
    per_year = frozenset({"enterprise", "county", "industry", "year"})
    # DESIGN §3's fields, and the gaps string greenmon screen writes beside them
    out["screening"] = (per_year, frozenset({"score", "passed", "rank", "gaps"}))
    out["efficiency_class"] = (per_year, frozenset({"score", "class", "rank"}))
    out["greenmon_ingest"] = (
        frozenset({"client_id"}),
        frozenset(
            {
                "messages",
                "received",
                "written",
                "rejected",
                "spooled",
                "spool_depth",
                "lag_s",
                *(f"rejected_{r}" for r in REJECT_REASONS),
            }
        ),
    )
    return out


CONTRACT = _contract()


def make_fleet(
    root: Path,
    n: int = 6,
    seed: int = 11,
    capacity: dict[str, float] | None = None,
    located: bool = True,
) -> Path:
    """A simulated fleet as a registry; `capacity` adds contracted_capacity_kw per enterprise,
    `located=False` drops the coordinates."""
    write_fleet(generate_fleet(n, seed), root)
    path = root / "enterprises.csv"
    ent = pl.read_csv(path, infer_schema=False)
    if not located:
        ent = ent.drop("latitude", "longitude")
    if capacity is not None:
        ent = ent.with_columns(
            pl.col("enterprise_id")
            .replace_strict({k: str(v) for k, v in capacity.items()}, default=None)
            .alias("contracted_capacity_kw")
        )
    ent.write_csv(path)
    return root


@pytest.fixture(scope="session")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fleet(tmp_path_factory.mktemp("fleet"), capacity={"E0002": 500.0})


@pytest.fixture(scope="session")
def site(fleet_dir: Path) -> Site:
    return Site.from_registry(load_registry(fleet_dir))
