"""`greenmon bench screen` runs and reports its figures (a smoke test: no timing asserted)."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from greenmon.rules.screening.bench import GOAL_S, run_bench

pytestmark = pytest.mark.integration


def test_bench_screen_reports_read_and_judge(influx_url: str, tmp_path: Path) -> None:
    bench = run_bench(20, 2025, 7, 2, influx_url=influx_url, scratch=tmp_path)
    result = bench.to_dict()
    assert result["daily_rows"] == 20 * 365
    assert result["rows_read"] >= 20 * 365
    assert result["rounds"] == 2 and len(result["rounds_s"]["judge"]) == 2
    assert result["read_s"] > 0 and result["judge_s"] > 0
    ratio = statistics.median(bench.judge_s) / statistics.median(bench.read_s)
    assert result["judge_over_read"] == pytest.approx(ratio, abs=0.0005)
    assert result["goal_s"] == GOAL_S
    assert set(result["judge_steps_s"]) == {"facts", "screen", "classify", "plan"}
    assert sum(result["classes"].values()) == 20
