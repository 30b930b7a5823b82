"""The aggregator's InfluxDB side: vectorised line protocol equals `greenmon.lineprotocol`,
values survive the round trip through a real influxd, chunked reads lose nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenmon.aggregator.reference import reference_id, with_reference_ids
from greenmon.aggregator.store import (
    StoreError,
    day_counts,
    read_readings,
    read_references,
    reading_bounds,
    reference_points,
    to_lines,
    write_frame,
    write_references,
)
from greenmon.influx import InfluxClient
from greenmon.lineprotocol import LineProtocolError, format_line

T0 = datetime(2025, 6, 1, 16, 0, tzinfo=UTC)  # 2025-06-02 00:00 in Asia/Shanghai


@pytest.mark.parametrize(
    "tag",
    ["E0001", "a b", "x,y", "k=v", "南通 崇川区", "C:\\temp", "a=b, c", "trailing "],
)
@pytest.mark.parametrize("value", [1.5, 0.1, 1e-7, 1e20, 123456789.125, -3.0, 0.0])
def test_lines_match_the_kernel_line_protocol(tag: str, value: float) -> None:
    frame = pl.DataFrame({"time": [T0], "enterprise": [tag], "kgce": [value]})
    [line] = to_lines(frame, "energy", ["enterprise"], ["kgce"]).to_list()
    expected = format_line("energy", {"enterprise": tag}, {"kgce": value}, 0)
    # Same measurement, tags and field text (numbers may be spelled differently: compare
    # them as numbers); timestamps are in ms here.
    head, fields, ts = line.rsplit(" ", 2)
    e_head, e_fields, _ = expected.rsplit(" ", 2)
    assert head == e_head
    assert fields.split("=")[0] == e_fields.split("=")[0]
    assert float(fields.split("=")[1]) == value
    assert int(ts) == int(T0.timestamp() * 1000)


@pytest.mark.parametrize("tag", ["bad\\", "new\nline", "tab\tbed", "a\\,b"])
def test_unwritable_tags_are_refused_like_the_kernel(tag: str) -> None:
    with pytest.raises(LineProtocolError):
        format_line("energy", {"enterprise": tag}, {"kgce": 1.0}, 0)
    frame = pl.DataFrame({"time": [T0], "enterprise": [tag], "kgce": [1.0]})
    with pytest.raises(StoreError, match="enterprise"):
        to_lines(frame, "energy", ["enterprise"], ["kgce"])


def test_nulls_and_non_finite_fields_are_left_out() -> None:
    frame = pl.DataFrame(
        {
            "time": [T0] * 4,
            "enterprise": ["E1", None, "E3", "E4"],
            "kgce": [1.0, 2.0, float("nan"), None],
            "kgco2": [None, 5.0, float("inf"), None],
        }
    )
    lines = to_lines(frame, "energy", ["enterprise"], ["kgce", "kgco2"]).to_list()
    ms = int(T0.timestamp() * 1000)
    assert lines == [
        f"energy,enterprise=E1 kgce=1.0 {ms}",
        f"energy kgce=2.0,kgco2=5.0 {ms}",
    ]  # E3 and E4 have no writable field left: dropped


@pytest.fixture
def client(influx_url: str, database: str) -> Iterator[InfluxClient]:
    with InfluxClient(influx_url, database) as c:
        c.ensure_database()
        yield c
        c.drop_database()


@pytest.mark.integration
def test_round_trip_through_influxd(client: InfluxClient) -> None:
    values = [1.5, 0.1, 1e-7, 1e20, 123456789.125, -3.0, 0.0, 2.0 / 3.0]
    frame = pl.DataFrame(
        {
            "time": [T0 + timedelta(minutes=15 * i) for i in range(len(values))],
            "enterprise": ["E 1,x"] * len(values),
            "meter": [f"M{i}" for i in range(len(values))],
            "carrier": ["electricity"] * len(values),
            "role": ["boundary"] * len(values),
            "window": ["15m"] * len(values),
            "quantity": values,
            "kgce": values,
            "kgco2": values,
            "completeness": [1.0] * len(values),
        }
    )
    assert write_frame(client, "meter_energy", frame) == len(values)
    back = client.query(
        'SELECT "kgce" FROM "meter_energy" GROUP BY "meter", "enterprise"', epoch="ms"
    )
    got = back.sort("time").select("enterprise", pl.col("kgce").cast(pl.Float64))
    assert got.get_column("enterprise").unique().to_list() == ["E 1,x"]
    assert got.get_column("kgce").to_list() == values
    # Idempotent: the same rows again overwrite, nothing is added.
    write_frame(client, "meter_energy", frame)
    assert client.query('SELECT count("kgce") FROM "meter_energy"')["count"][0] == len(values)


@pytest.mark.integration
def test_chunked_reads_get_every_reading_once(client: InfluxClient) -> None:
    lines = [
        format_line(
            "meter_reading",
            {"meter": f"M{m}", "enterprise": "E1", "carrier": "x"},
            {"value": float(i * 10 + m)},
            int((T0 + timedelta(minutes=7 * i)).timestamp() * 1e9),
        )
        for i in range(600)
        for m in range(3)
    ]
    client.write(lines)
    start, end = T0 - timedelta(hours=1), T0 + timedelta(days=4)
    got = read_readings(client, start, end, chunk=timedelta(hours=5))
    whole = read_readings(client, start, end, chunk=timedelta(days=30))
    assert got.height == 1800
    key = ["meter", "time"]
    assert_frame_equal(got.sort(key), whole.sort(key))
    assert got.schema == {
        "meter": pl.String,
        "time": pl.Datetime("ms", "UTC"),
        "value": pl.Float64,
    }
    assert got.filter(pl.col("meter") == "M2").sort("time")["value"][:3].to_list() == [
        2.0,
        12.0,
        22.0,
    ]
    # [start, end) is half open
    edge = read_readings(client, T0, T0 + timedelta(minutes=7), chunk=timedelta(hours=1))
    assert edge.height == 3
    first, last = reading_bounds(client)  # type: ignore[misc]
    assert first == T0 and last == T0 + timedelta(minutes=7 * 599)
    counts = day_counts(client, T0 - timedelta(days=1), "Asia/Shanghai")
    assert sum(counts.values()) == 1800
    assert min(counts) == T0  # local midnight of 2025-06-02


@pytest.mark.integration
def test_points_carry_a_reference_id_and_the_label_is_stored_once(client: InfluxClient) -> None:
    ref = (
        'energy_coefficients.csv:2 electricity 0.1229 "当量值" C:\\refs\\x (2020, verified)\nline 2'
    )
    frame = with_reference_ids(
        pl.DataFrame(
            {
                "time": [T0, T0 + timedelta(days=1)], "enterprise": ["E1", "E1"],
                "carrier": ["total"] * 2, "county": ["崇川区"] * 2, "industry": ["C3731"] * 2,
                "window": ["1d"] * 2, "kgce": [12.5, 13.5], "reference": [ref] * 2,
            }
        )
    )  # fmt: skip
    # a string field is escaped exactly as the kernel's line protocol does it
    line = to_lines(frame.head(1), "energy", ["enterprise"], ["kgce"], ["reference"])[0]
    expected = format_line("energy", {"enterprise": "E1"}, {"kgce": 12.5, "reference": ref}, 0)
    assert line.rsplit(" ", 1)[0] == expected.rsplit(" ", 1)[0]
    # the points carry the id (a few bytes), not the label
    assert write_frame(client, "energy", frame) == 2
    back = client.query('SELECT * FROM "energy"')
    assert back["reference_id"].to_list() == [reference_id(ref)] * 2
    assert "reference" not in back.columns
    assert back["kgce"].to_list() == [12.5, 13.5]
    # the label once per id and year, retrievable by id
    points = reference_points(frame, "Asia/Shanghai")
    assert points.height == 1 and points["time"][0] == datetime(2024, 12, 31, 16, tzinfo=UTC)
    assert write_references(client, points) == 1
    assert read_references(client, [reference_id(ref)]) == {reference_id(ref): ref}
    assert read_references(client) == {reference_id(ref): ref}
    assert read_references(client, []) == {}
