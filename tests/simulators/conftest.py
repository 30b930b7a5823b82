"""Simulator fixtures: a small fleet written as a registry, and a planned run with faults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from greenmon.registry import Registry, load_registry
from greenmon.simulators.faults import FaultSpec, parse_faults
from greenmon.simulators.fleet import Fleet, generate_fleet, write_fleet
from greenmon.simulators.runner import Planned, RunSpec, parse_start, plan_run
from greenmon.simulators.truth import malformed_frame, truth_frame

FAULTS = (
    "rollover=0.05,reset=0.03,spike=0.002,gap_catchup=0.02,gap_lost=0.02,duplicate=0.01,"
    "out_of_order=0.01,clock_skew=0.1,disconnect=0.005,malformed=0.01"
)


@dataclass(frozen=True)
class Run:
    fleet: Fleet
    registry: Registry
    root: Path
    spec: RunSpec
    planned: Planned
    truth: pl.DataFrame
    malformed: pl.DataFrame


def make_run(
    root: Path,
    n: int,
    seed: int,
    faults: FaultSpec,
    days: float = 1.0,
    start: str = "2025-06-02T00:00:00+08:00",
    step_s: int = 900,
) -> Run:
    fleet = generate_fleet(n, seed)
    write_fleet(fleet, root)
    spec = RunSpec(parse_start(start, step_s), days, step_s, seed, faults)
    planned = plan_run(fleet, spec)
    return Run(
        fleet,
        load_registry(root),
        root,
        spec,
        planned,
        truth_frame(fleet, planned.plan),
        malformed_frame(planned.plan),
    )


@pytest.fixture(scope="session")
def faulty_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """60 enterprises, one day at 15 min, every fault type at a measurable rate."""
    return make_run(tmp_path_factory.mktemp("fleet60"), 60, 11, parse_faults(FAULTS))


@pytest.fixture(scope="session")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """40 enterprises, a week around May Day 2025 (a make-up Sunday, 5 holidays), no faults."""
    return make_run(
        tmp_path_factory.mktemp("fleet40"),
        40,
        5,
        FaultSpec(),
        days=10,
        start="2025-04-25T00:00:00+08:00",
    )
