"""What a dashboard build knows about the place it is built for: time zone and registry facts.

Most panels query InfluxDB only, but a few facts live in the registry and nowhere else: where
each plant is (``latitude``/``longitude``, for the map), its annual quota and intensity target
(for quota progress and the target line), its contracted capacity (for the power alert rule),
and each meter's unit (so a meter's rate reads in kW or m³/h). `Site` carries them into the
build as plain immutable rows; without a registry the build still works and leaves out the
panels and rules that need it (and says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import polars as pl

from greenmon.registry import Registry

__all__ = ["EnterpriseInfo", "MeterRow", "Site"]

DEFAULT_TZ = "Asia/Shanghai"


def _num(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


@dataclass(frozen=True, slots=True)
class EnterpriseInfo:
    enterprise_id: str
    name: str
    county: str
    industry: str
    latitude: float | None = None
    longitude: float | None = None
    annual_quota_tce: float | None = None
    intensity_target: float | None = None
    contracted_capacity_kw: float | None = None

    @property
    def located(self) -> bool:
        return self.latitude is not None and self.longitude is not None


@dataclass(frozen=True, slots=True)
class MeterRow:
    meter_id: str
    enterprise_id: str
    carrier: str
    unit: str
    kind: str
    role: str
    multiplier: float
    interval_s: int


@dataclass(frozen=True)
class Site:
    """Time zone and (optionally) the registry rows a build uses, in registry order."""

    tz: str = DEFAULT_TZ
    enterprises: tuple[EnterpriseInfo, ...] = ()
    meters: tuple[MeterRow, ...] = ()
    registry: str | None = None  # where the rows came from, for messages
    # Raw readings in InfluxQL, in their retention policy (`greenmon.retention.source_of`).
    readings: str = '"raw"."meter_reading"'

    @classmethod
    def from_registry(
        cls, registry: Registry, tz: str = DEFAULT_TZ, readings: str = '"raw"."meter_reading"'
    ) -> Site:
        ent = registry.enterprises
        optional = ("latitude", "longitude", "contracted_capacity_kw")
        ent = ent.with_columns(
            pl.lit(None, dtype=pl.Float64).alias(c) for c in optional if c not in ent.columns
        )
        enterprises = tuple(
            EnterpriseInfo(
                enterprise_id=row[0],
                name=row[1],
                county=row[2],
                industry=row[3],
                latitude=_num(row[4]),
                longitude=_num(row[5]),
                annual_quota_tce=_num(row[6]),
                intensity_target=_num(row[7]),
                contracted_capacity_kw=_num(row[8]),
            )
            for row in ent.select(
                "enterprise_id",
                "name",
                "county",
                "industry",
                *optional[:2],
                "annual_quota_tce",
                "intensity_target_tce_per_10k_yuan",
                optional[2],
            ).iter_rows()
        )
        meters = tuple(
            MeterRow(*row)
            for row in registry.meters.select(
                "meter_id",
                "enterprise_id",
                "carrier",
                "unit",
                "kind",
                "role",
                "multiplier",
                "interval_s",
            ).iter_rows()
        )
        return cls(
            tz=tz,
            enterprises=enterprises,
            meters=meters,
            registry=str(registry.root),
            readings=readings,
        )

    @property
    def has_registry(self) -> bool:
        return bool(self.enterprises)

    def utc_offset(self) -> str:
        """The zone's offset on 1 January as ``+08:00`` (for local-midnight time literals; in
        zones with summer time, month starts in summer are an hour off — none in China)."""
        offset = datetime(2025, 1, 1, tzinfo=ZoneInfo(self.tz)).strftime("%z")
        return f"{offset[:3]}:{offset[3:]}"

    def enterprise(self, enterprise_id: str) -> EnterpriseInfo | None:
        return next((e for e in self.enterprises if e.enterprise_id == enterprise_id), None)

    def only(self, enterprise_id: str) -> Site:
        """This site restricted to one enterprise (for its own dashboard)."""
        return Site(
            tz=self.tz,
            enterprises=tuple(e for e in self.enterprises if e.enterprise_id == enterprise_id),
            meters=tuple(m for m in self.meters if m.enterprise_id == enterprise_id),
            registry=self.registry,
            readings=self.readings,
        )

    def registry_csv(self) -> str:
        """The registry facts the panels join on ``enterprise``, as CSV (Grafana's TestData
        data source serves it to the panels; the dashboards embed it)."""
        frame = pl.DataFrame(
            [
                (
                    e.enterprise_id,
                    e.name,
                    e.county,
                    e.industry,
                    e.latitude,
                    e.longitude,
                    e.annual_quota_tce,
                    e.intensity_target,
                )
                for e in self.enterprises
            ],
            schema={
                "enterprise": pl.String,
                "name": pl.String,
                "county": pl.String,
                "industry": pl.String,
                "latitude": pl.Float64,
                "longitude": pl.Float64,
                "annual_quota_tce": pl.Float64,
                "intensity_target_tce_per_10k_yuan": pl.Float64,
            },
            orient="row",
        )
        return frame.write_csv(line_terminator="\n")
