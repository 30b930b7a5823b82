"""`greenmon aggregate` argument parsing: days are local, instants need an offset, and bad
input is a readable error (exit code 2), never a traceback."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from greenmon.aggregator.cli import parse_duration, parse_moment
from greenmon.errors import ConfigError
from tests.ingest.support import GREENMON


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-06-01", datetime(2025, 5, 31, 16, 0, tzinfo=UTC)),  # local midnight, +08:00
        ("2025-06-01T08:00:00+08:00", datetime(2025, 6, 1, 0, 0, tzinfo=UTC)),
        ("2025-06-01T00:00:00Z", datetime(2025, 6, 1, 0, 0, tzinfo=UTC)),
    ],
)
def test_moments(text: str, expected: datetime) -> None:
    assert parse_moment(text, "Asia/Shanghai", "--from") == expected


@pytest.mark.parametrize("text", ["2025-13-01", "yesterday", "2025-06-01T08:00:00"])
def test_bad_moments_name_the_flag(text: str) -> None:
    with pytest.raises(ConfigError, match="--from"):
        parse_moment(text, "Asia/Shanghai", "--from")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text, "--lateness") == expected


@pytest.mark.parametrize("text", ["15", "m", "1.5h", "-1m", "1w"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigError, match="--lateness"):
        parse_duration(text, "--lateness")


def test_a_bad_range_is_a_message_not_a_traceback() -> None:
    res = subprocess.run(
        [
            GREENMON,
            "aggregate",
            "--registry",
            "tests/data/registry",
            "--influx-url",
            "http://127.0.0.1:9",
            "--from",
            "2025-06-09",
            "--to",
            "2025-06-02",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Refused before any connection is tried (nothing listens on port 9).
    assert res.returncode == 2, res.stderr
    assert "--to must be after --from" in res.stderr
    assert "Traceback" not in res.stderr
