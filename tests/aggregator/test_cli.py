"""`greenmon aggregate` argument parsing: days are local, instants need an offset, and bad
input is a readable error (exit code 2), never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from greenmon.aggregator.cli import parse_duration, parse_moment
from greenmon.errors import ConfigError
from greenmon.lineprotocol import format_line
from tests.ingest.support import GREENMON
from tests.ingest.support import client as support_client


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


@pytest.mark.integration
@pytest.mark.parametrize(
    ("extra", "meter_windows"),
    [([], {"1h", "1d"}), (["--meter-windows", "15m,1d"], {"15m", "1d"})],
)
def test_points_carry_reference_ids_and_per_meter_windows_follow_the_setting(
    influx_url: str, database: str, extra: list[str], meter_windows: set[str]
) -> None:
    day = datetime(2025, 6, 1, 16, 0, tzinfo=UTC)  # 2025-06-02 local midnight
    lines = [
        format_line(
            "meter_reading",
            {"enterprise": "E0001", "meter": meter, "carrier": carrier},
            {"value": 1000.0 + 10.0 * i},
            int((day + i * timedelta(minutes=15)).timestamp() * 1e9),
        )
        for meter, carrier in (("E0001-EL-MAIN", "electricity"), ("E0001-NG-MAIN", "natural_gas"))
        for i in range(97)
    ]
    # Raw readings where `greenmon ingest` puts them: the retention layout's policy.
    with support_client(influx_url, database) as client:
        client.write(lines, rp=client.policy("meter_reading"))
        try:
            res = subprocess.run(
                [
                    GREENMON, "aggregate", "--registry", "tests/data/registry", "--influx-url",
                    influx_url, "--database", database, "--from", "2025-06-02", "--to",
                    "2025-06-03", "--windows", "15m,1h,1d", "--json", *extra,
                ],
                capture_output=True, text=True, timeout=120, check=True,
            )  # fmt: skip
            out = json.loads(res.stdout)
            stored = client.query('SELECT "kgce", "reference_id" FROM "meter_energy" GROUP BY *')
            energy = client.query('SELECT * FROM "energy" WHERE "window" = \'15m\'')
            texts = client.query('SELECT "text" FROM "reference" GROUP BY "id"')
        finally:
            client.drop_database()
    assert set(stored.get_column("window")) == meter_windows
    assert energy.height == 96 * 3  # electricity, natural gas and the total, every quarter
    # every point names its reference rows by id; the report and the reference measurement
    # give each id's full text
    ids = set(stored.get_column("reference_id")) | set(energy.get_column("reference_id"))
    assert ids == set(out["reference_ids"]) == set(texts.get_column("id"))
    assert all("energy_coefficients.csv" in text for text in out["reference_ids"].values())
    assert "reference" not in stored.columns and "reference" not in energy.columns
    assert out["written"]["reference"] == len(ids)
    assert out["chunks"] == 1


def test_aggregate_returns_freed_memory_at_once_and_other_commands_keep_the_default() -> None:
    """`greenmon aggregate` sets Polars' jemalloc to give freed pages back at once (its peak RSS
    must not grow with the range); other commands keep jemalloc's default; a user's wins."""
    probe = "import sys; sys.argv[1:] = {!r}; import greenmon, os; print(os.environ.get({!r}))"
    key = "_RJEM_MALLOC_CONF"
    env = {k: v for k, v in os.environ.items() if k != key}

    def conf(argv: list[str], extra: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-c", probe.format(argv, key)],
            env=env | (extra or {}),
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    assert "dirty_decay_ms:0" in conf(["aggregate", "--from", "2025-06-02"])
    assert conf(["bench", "aggregate"]) == "None"
    assert conf(["ingest"]) == "None"
    assert conf(["aggregate"], {key: "narenas:2"}) == "narenas:2"
