"""`greenmon bench ingest` at toy size: it runs, measures every figure and stores exactly.

Not a timed test: the figures depend on the machine; here only their presence and sanity
are checked (the benchmark itself prints them beside the targets)."""

from __future__ import annotations

import json
import subprocess
from statistics import median

import pytest

from tests.ingest.support import GREENMON

pytestmark = pytest.mark.integration


def test_bench_ingest_smoke() -> None:
    res = subprocess.run(
        [
            GREENMON,
            "bench",
            "ingest",
            "--readings",
            "5000",
            "--meters",
            "100",
            "--latency-seconds",
            "1",
            "--naive-readings",
            "500",
            "--rounds",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads(res.stdout)
    assert s["influx_limit_readings_per_s"] > 0
    modes = {m["readings_per_message"]: m for m in s["modes"]}
    assert set(modes) == {50, 1}
    for m in modes.values():
        assert m["stored_exact"] is True
        for key in ("broker_limit_readings_per_s", "greenmon_readings_per_s",
                    "naive_bridge_readings_per_s", "peak_rss_mb"):  # fmt: skip
            assert m[key] > 0, key
        assert 0 < m["latency_p50_s"] <= m["latency_p99_s"] <= m["latency_max_s"]
        rounds = m["rounds"]
        assert [len(v) for v in rounds.values()] == [2, 2, 2]
        assert m["greenmon_readings_per_s"] == pytest.approx(
            median(rounds["greenmon_readings_per_s"]), abs=1
        )
    assert len(s["influx_limit_rounds"]) == 2
    ratios = modes[50]["rounds"]["ratio_to_lower_limit"]
    assert modes[50]["ratio_to_lower_limit"] == pytest.approx(median(ratios), abs=1e-3)
    assert {c["check"] for c in s["checks"]} >= {"1/msg: readings/s", "50/msg: x naive bridge"}
