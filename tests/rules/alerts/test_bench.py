"""`greenmon bench alerts` runs end to end at a small size and reports its figures (the
timing itself is the benchmark's business, not a test's)."""

from __future__ import annotations

import pytest

from greenmon.rules.alerts.bench import run_bench

pytestmark = pytest.mark.integration


def test_bench_alerts_small() -> None:
    result = run_bench(enterprises=12, days=60, rounds=1)
    assert result["daily_rows_read"] == 12 * 60
    assert result["subjects"] == result["command"]["subjects"] > 12
    for key in ("read", "inputs", "judge", "record", "evaluate"):
        assert result["seconds"][key] > 0
    assert result["command"]["peak_rss_mb"] > 50
    assert set(result["checks"]) == {"evaluate_le_5s", "command_peak_rss_le_500mb"}
