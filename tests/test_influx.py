"""The InfluxDB client against a real influxd (1.6, started by the fixtures), plus its pure parts.

What cannot be made to happen on a real server (429 with Retry-After) is covered by testing the
backoff computation as a pure function.
"""

from __future__ import annotations

import email.utils
import gc
import gzip
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import polars as pl
import pytest
from pydantic import SecretStr

from greenmon.config import Settings
from greenmon.deploy.local import LocalServices, free_port
from greenmon.errors import ConfigError, GreenmonError
from greenmon.influx import (
    RETRY_AFTER_MAX,
    InfluxAuthError,
    InfluxClient,
    InfluxConnectionError,
    InfluxDatabaseNotFoundError,
    InfluxError,
    InfluxQueryError,
    InfluxUnavailableError,
    InfluxWriteError,
    backoff_delay,
    parse_retry_after,
    quote_ident,
    quote_literal,
)
from greenmon.lineprotocol import LineProtocolError, format_line


class RecordingTransport(httpx.HTTPTransport):
    """The real HTTP transport, noting each request on its way to the real server."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return super().handle_request(request)

    def writes(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.endswith("/write")]


@pytest.fixture
def client(influx_url: str, database: str) -> Iterator[InfluxClient]:
    with InfluxClient(influx_url, database, max_retries=2, backoff_cap=0.2) as c:
        c.ensure_database()
        try:
            yield c
        finally:
            c.drop_database()


def count(client: InfluxClient, measurement: str, field: str = "value") -> int:
    df = client.query(f"SELECT COUNT({quote_ident(field)}) FROM {quote_ident(measurement)}")
    return int(df["count"][0]) if df.height else 0


# -- pure parts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "rand", "retry_after", "expected"),
    [
        (1, 1.0, None, 0.1),  # ceiling of retry 1 is base
        (2, 1.0, None, 0.2),
        (3, 1.0, None, 0.4),
        (3, 0.5, None, 0.2),  # full jitter: uniform below the ceiling
        (3, 0.0, None, 0.0),
        (6, 1.0, None, 3.2),
        (7, 1.0, None, 5.0),  # capped
        (10_000, 1.0, None, 5.0),  # no overflow, still capped
        (0, 1.0, None, 0.1),
        (1, 1.0, 2.5, 2.5),  # Retry-After wins, even above the cap
        (9, 0.3, 7.0, 7.0),
        (1, 1.0, 0.0, 0.0),
        (1, 1.0, -3.0, 0.0),
        (1, 1.0, 1e9, RETRY_AFTER_MAX),
    ],
)
def test_backoff_delay(retry: int, rand: float, retry_after: float | None, expected: float) -> None:
    got = backoff_delay(retry, base=0.1, cap=5.0, retry_after=retry_after, rand=lambda: rand)
    assert got == pytest.approx(expected)


def test_backoff_delay_default_jitter_stays_in_range() -> None:
    delays = [backoff_delay(4, base=0.1, cap=5.0) for _ in range(200)]
    assert all(0.0 <= d < 0.8 for d in delays)
    assert len(set(delays)) > 100


NOW = 1_750_000_000.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-5", 0.0),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        (email.utils.formatdate(NOW + 10, usegmt=True), 10.0),
        (email.utils.formatdate(NOW - 60, usegmt=True), 0.0),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    got = parse_retry_after(header, now=NOW)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_quoting() -> None:
    assert quote_ident('my "db"') == '"my \\"db\\""'
    assert quote_literal("it's") == "'it\\'s'"
    assert quote_literal("a\\b") == "'a\\\\b'"


def test_error_tree() -> None:
    for cls in (
        InfluxConnectionError,
        InfluxAuthError,
        InfluxDatabaseNotFoundError,
        InfluxQueryError,
        InfluxWriteError,
    ):
        assert issubclass(cls, InfluxError)
    assert issubclass(InfluxUnavailableError, InfluxConnectionError)
    assert issubclass(InfluxError, GreenmonError)


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"url": "ftp://x"}, "http"),
        ({"url": "http://admin:pw@127.0.0.1:1"}, "credentials"),
        ({"database": ""}, "database"),
        ({"batch_lines": 0}, "batch_lines"),
        ({"max_retries": -1}, "max_retries"),
        ({"token": SecretStr("t"), "username": "u"}, "not both"),
        ({"password": SecretStr("p")}, "username"),
    ],
)
def test_constructor_refuses(kwargs: dict, why: str) -> None:
    args = {"url": "http://127.0.0.1:1", "database": "db", **kwargs}
    with pytest.raises(ConfigError, match=why):
        InfluxClient(args.pop("url"), args.pop("database"), **args)


def test_secrets_stay_out_of_repr_requests_and_errors() -> None:
    transport = RecordingTransport()
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: every attempt fails fast
    c = InfluxClient(
        closed,
        "db",
        username="admin",
        password=SecretStr("s3cret-pw"),
        max_retries=1,
        backoff_base=0.01,
        transport=transport,
    )
    with c, pytest.raises(InfluxUnavailableError) as info:
        c.write(["m v=1 1"])
    assert "s3cret-pw" not in repr(c)
    assert "s3cret-pw" not in str(info.value)
    assert "s3cret-pw" not in repr(info.value.__cause__)
    request = transport.requests[0]
    assert "s3cret" not in str(request.url) and "p=" not in str(request.url.query)
    assert request.headers["Authorization"].startswith("Basic ")
    assert "user='admin'" in repr(c)

    t = InfluxClient(closed, "db", token=SecretStr("tok-123"), transport=transport)
    assert "tok-123" not in repr(t)
    with t, pytest.raises(InfluxConnectionError):
        t.ping()
    assert transport.requests[-1].headers["Authorization"] == "Token tok-123"


def test_from_settings(influx_url: str) -> None:
    settings = Settings(influx_url=influx_url, database="abc", influx_username="u")
    with InfluxClient.from_settings(settings, batch_lines=10) as c:
        assert (c.url, c.database, c.batch_lines) == (influx_url, "abc", 10)
        assert "basic user='u'" in repr(c)


def test_bad_precision_and_epoch() -> None:
    with InfluxClient("http://127.0.0.1:9", "db") as c:
        with pytest.raises(ConfigError):
            c.write(["m v=1 1"], precision="us")
        with pytest.raises(ConfigError):
            c.query("SELECT * FROM m", epoch="d")


def test_several_statements_refused_before_sending() -> None:
    with InfluxClient(f"http://127.0.0.1:{free_port()}", "db", max_retries=0) as c:
        with pytest.raises(InfluxQueryError, match="one InfluxQL statement"):
            c.query("SELECT * FROM a; SELECT * FROM b")
        # ...but a ';' inside a string or identifier is fine, as is a trailing one:
        # (these reach the closed port, so they fail with a connection error instead)
        for ok in ("SELECT * FROM m WHERE t = 'a;b'", 'SELECT "x;y" FROM m', "SHOW DATABASES;"):
            with pytest.raises(InfluxConnectionError):
                c.query(ok)


# -- real influxd --------------------------------------------------------------------------------

TRICKY_TAG_VALUES = [
    "a,b",
    "a=b",
    'say "hi"',
    "two  spaces",
    " leading",
    "trailing ",
    r"C:\temp\new",  # backslashes before ordinary characters
    "\\x",
    "南通",
    "崇川区",
    "x,evil=1 value=666",
    '=," ,=',
    "emoji ⚡ kWh",
]


@pytest.mark.integration
def test_ping(client: InfluxClient) -> None:
    assert client.ping().startswith("1.")


@pytest.mark.integration
def test_tricky_tag_values_round_trip(client: InfluxClient) -> None:
    lines = [
        format_line("meter_reading", {"meter": v, "enterprise": f"E{i:04d}"}, {"value": i}, i)
        for i, v in enumerate(TRICKY_TAG_VALUES)
    ]
    assert client.write(lines) == len(lines)
    df = client.query("SELECT value FROM meter_reading GROUP BY meter, enterprise").sort("time")
    assert df["meter"].to_list() == TRICKY_TAG_VALUES
    assert df["enterprise"].to_list() == [f"E{i:04d}" for i in range(len(TRICKY_TAG_VALUES))]
    # the same values come back as plain columns, and through SHOW TAG VALUES
    plain = client.query(
        "SELECT value, meter FROM meter_reading", schema_overrides={"meter": pl.String}
    ).sort("time")
    assert plain["meter"].to_list() == TRICKY_TAG_VALUES
    shown = client.query('SHOW TAG VALUES FROM meter_reading WITH KEY = "meter"')
    assert sorted(shown["value"].to_list()) == sorted(TRICKY_TAG_VALUES)


@pytest.mark.integration
def test_trailing_backslash_is_refused_and_really_unwritable(client: InfluxClient) -> None:
    with pytest.raises(LineProtocolError, match="backslash"):
        format_line("m", {"path": "C:\\"}, {"value": 1.0}, 1)
    # The reason: influxd cannot take it, escaped or not.
    for raw in ("m,path=C:\\ value=1 1", "m,path=C:\\\\ value=1 1"):
        with pytest.raises(InfluxWriteError, match="invalid tag format") as info:
            client.write([raw])
        assert info.value.line_number == 1
    # And a doubled backslash before a separator means something else to influxd 1.x ("\,"
    # literally) than to InfluxDB 3 (a backslash, then a separator): also refused.
    client.write(["m,path=lit\\\\,x value=1 2"])
    assert client.query("SHOW TAG VALUES FROM m WITH KEY = path")["value"].to_list() == ["lit\\,x"]
    with pytest.raises(LineProtocolError):
        format_line("m", {"path": "lit\\,x"}, {"value": 1.0}, 2)


@pytest.mark.integration
def test_names_with_spaces_and_commas(client: InfluxClient) -> None:
    measurement = "meter reading, raw"
    field = "kWh total, net=x"
    line = format_line(measurement, {"tag key, =": "v"}, {field: 1.25, "n": 2}, 10)
    client.write([line])
    assert client.query("SHOW MEASUREMENTS")["name"].to_list() == [measurement]
    df = client.query(f"SELECT * FROM {quote_ident(measurement)}")
    assert df["name"].to_list() == [measurement]
    assert df[field].to_list() == [1.25]
    assert df["n"].to_list() == [2]
    assert df["tag key, ="].to_list() == ["v"]
    keys = client.query(f"SHOW FIELD KEYS FROM {quote_ident(measurement)}")
    assert sorted(keys["fieldKey"].to_list()) == sorted([field, "n"])


@pytest.mark.integration
def test_string_fields_keep_newlines_quotes_and_backslashes(client: InfluxClient) -> None:
    texts = ["two\nlines", "cr\rlf\r\n", 'quote " and \\ slash', "ends with \\", "tab\there", ""]
    lines = [
        format_line("alert", {"rule": f"r{i}"}, {"message": t}, i) for i, t in enumerate(texts)
    ]
    assert client.write("\n".join(lines)) == len(texts)  # one body, split quote-aware
    df = client.query("SELECT message FROM alert", schema_overrides={"message": pl.String}).sort(
        "time"
    )
    assert df["message"].to_list() == [*texts[:-1], None]  # CSV cannot tell "" from no value
    js = client.query_json("SELECT message FROM alert")
    assert [row[1] for row in js[0]["series"][0]["values"]] == texts


@pytest.mark.integration
def test_floats_round_trip_exactly(client: InfluxClient) -> None:
    values = [0.1, 1 / 3, 1e16, 123456.78, 5e-324, 1.7976931348623157e308, -2.5e-10, 1.0]
    client.write([format_line("f", {}, {"value": v}, i) for i, v in enumerate(values)])
    df = client.query("SELECT value FROM f", schema_overrides={"value": pl.Float64}).sort("time")
    assert df["value"].to_list() == values


@pytest.mark.integration
def test_injection_with_newline_is_refused(client: InfluxClient) -> None:
    with pytest.raises(LineProtocolError, match="control character"):
        format_line(
            "meter_reading",
            {"meter": "x,evil=1 value=666 1\nmeter_reading value=1"},
            {"value": 1.0},
            1,
        )


@pytest.mark.integration
def test_injection_without_newline_is_one_literal_tag(client: InfluxClient) -> None:
    evil = "x,evil=1 value=666"
    assert client.write([format_line("meter_reading", {"meter": evil}, {"value": 1.0}, 7)]) == 1
    df = client.query("SELECT * FROM meter_reading")
    assert df.height == 1
    assert df["meter"].to_list() == [evil]
    assert df["value"].to_list() == [1]
    assert "evil" not in df.columns
    tag_keys = client.query("SHOW TAG KEYS FROM meter_reading")["tagKey"].to_list()
    assert tag_keys == ["meter"]
    assert client.query("SHOW FIELD KEYS FROM meter_reading")["fieldKey"].to_list() == ["value"]


@pytest.mark.integration
def test_batching_and_gzip(influx_url: str, database: str) -> None:
    transport = RecordingTransport()
    with InfluxClient(influx_url, database, gzip=True, transport=transport) as c:
        c.ensure_database()
        try:
            lines = (
                format_line("meter_reading", {"meter": f"M{i % 50:03d}"}, {"value": i * 0.5}, i)
                for i in range(12_001)
            )
            assert c.write(lines) == 12_001
            writes = transport.writes()
            assert len(writes) == 3
            assert c.stats.write_requests == 3 and c.stats.lines_written == 12_001
            sizes = []
            for request in writes:
                assert request.headers["Content-Encoding"] == "gzip"
                assert request.url.params["db"] == database
                assert request.url.params["precision"] == "ns"
                sizes.append(gzip.decompress(request.content).count(b"\n") + 1)
            assert sizes == [5000, 5000, 2001]
            assert c.stats.bytes_sent < c.stats.bytes_uncompressed / 3
            assert count(c, "meter_reading") == 12_001
            df = c.query("SELECT COUNT(*) FROM meter_reading")
            assert df["count_value"].to_list() == [12_001]
        finally:
            c.drop_database()


@pytest.mark.integration
def test_request_bodies_and_answers_are_freed_without_the_cyclic_collector(
    influx_url: str, database: str
) -> None:
    """httpx 0.28 keeps a response and its stream in a reference cycle, which held every write
    body and query answer (megabytes each in the aggregator) until the cyclic collector ran:
    an aggregation's peak memory grew with its number of chunks. The client breaks the cycle."""

    def alive() -> int:
        return sum(isinstance(o, httpx.Response) for o in gc.get_objects())

    with InfluxClient(influx_url, database) as c:
        c.ensure_database()
        try:
            gc.collect()
            gc.disable()  # only reference counting frees what follows
            before = alive()
            c.write_body(b"\n".join(b"m value=%d %d" % (i, i) for i in range(2_000)), 2_000)
            assert c.query("SELECT count(value) FROM m")["count"].to_list() == [2_000]
            c.ping()
            assert alive() == before
        finally:
            gc.enable()
            c.drop_database()


@pytest.mark.integration
def test_gzip_off_and_write_batch(influx_url: str, database: str) -> None:
    transport = RecordingTransport()
    with InfluxClient(influx_url, database, gzip=False, batch_lines=2, transport=transport) as c:
        c.ensure_database()
        try:
            lines = [f"m value={i} {i}" for i in range(5)]
            assert c.write_batch(lines) == 5  # one request, whatever batch_lines says
            assert len(transport.writes()) == 1
            assert "Content-Encoding" not in transport.writes()[0].headers
            assert c.write_batch([]) == 0
            assert count(c, "m") == 5
        finally:
            c.drop_database()


@pytest.mark.integration
def test_write_body_is_one_request_and_names_a_refused_line(influx_url: str, database: str) -> None:
    transport = RecordingTransport()
    with InfluxClient(influx_url, database, batch_lines=2, transport=transport) as c:
        c.ensure_database()
        try:
            assert c.write_body(b"m value=1 1\nm value=2 2\nm value=3 3\n", 3) == 3
            assert len(transport.writes()) == 1
            assert c.write_body(b"", 0) == 0
            with pytest.raises(InfluxWriteError) as info:
                c.write_body(b"m value=4 4\nm,x= value=5 5\nm value=6 6", 3)
            assert (info.value.line_number, info.value.line) == (2, "m,x= value=5 5")
            assert info.value.written == 2
            assert count(c, "m") == 5
        finally:
            c.drop_database()


@pytest.mark.integration
def test_precision(client: InfluxClient) -> None:
    client.write(["m value=1 1700000000"], precision="s")
    assert client.query("SELECT value FROM m", epoch="s")["time"].to_list() == [1700000000]
    assert client.query("SELECT value FROM m", epoch="ms")["time"].to_list() == [1700000000000]
    assert client.query("SELECT value FROM m")["time"].dtype == pl.Int64


@pytest.mark.integration
def test_400_names_the_line_and_is_not_retried(influx_url: str, database: str) -> None:
    retries: list[tuple[int, float, str]] = []
    transport = RecordingTransport()
    with InfluxClient(
        influx_url,
        database,
        batch_lines=3,
        on_retry=lambda *a: retries.append(a),
        transport=transport,
    ) as c:
        c.ensure_database()
        try:
            lines = ["m value=1 1", "m value=2 2", "m value=3 3", "m value=4 4", "m,x= value=5 5"]
            lines += ["m value=6 6", "this is not line protocol", "m value=8 8"]
            with pytest.raises(InfluxWriteError) as info:
                c.write(lines)
            err = info.value
            assert retries == []
            assert len(transport.writes()) == 3  # one request per batch, none repeated
            assert [(e.line_number, e.line) for e in err.errors] == [
                (5, "m,x= value=5 5"),
                (7, "this is not line protocol"),
            ]
            assert err.line_number == 5 and err.line == "m,x= value=5 5"
            assert "missing tag value" in (err.reason or "")
            assert "line 5" in str(err) and "m,x= value=5 5" in str(err)
            assert err.written == 6
            assert count(c, "m") == 6  # the good lines of every batch got in
        finally:
            c.drop_database()


@pytest.mark.integration
def test_400_type_conflict(client: InfluxClient) -> None:
    client.write(["m value=1.5 1"])
    with pytest.raises(InfluxWriteError, match="field type conflict") as info:
        client.write(["m value=2i 2", "m value=3.5 3"])
    assert info.value.dropped == 1
    assert count(client, "m") == 2


@pytest.mark.integration
def test_missing_database(influx_url: str, database: str) -> None:
    with InfluxClient(influx_url, database, max_retries=0) as c:
        with pytest.raises(InfluxDatabaseNotFoundError):
            c.write(["m value=1 1"])
        with pytest.raises(InfluxDatabaseNotFoundError):
            c.query("SELECT * FROM m")


@pytest.mark.integration
def test_ensure_database_is_idempotent(influx_url: str, database: str) -> None:
    with InfluxClient(influx_url, database) as c:
        assert c.ensure_database() is True
        assert c.ensure_database() is True
        names = c.query("SHOW DATABASES")["name"].to_list()
        assert database in names
        c.drop_database()
        assert database not in c.query("SHOW DATABASES")["name"].to_list()


@pytest.mark.integration
def test_query_of_empty_measurement(client: InfluxClient) -> None:
    df = client.query("SELECT * FROM nothing_here")
    assert df.height == 0
    assert df.schema == {"name": pl.String, "time": pl.Int64}
    client.write(["m value=1 1"])
    assert client.query("SELECT * FROM m WHERE value > 100").height == 0


@pytest.mark.integration
def test_group_by_tags_gives_tag_columns(client: InfluxClient) -> None:
    lines = []
    for e, county in (("E0001", "崇川区"), ("E0002", "通州区"), ("E0003", "崇川区")):
        for i in range(4):
            tags = {"enterprise": e, "county": county, "carrier": "electricity"}
            lines.append(format_line("energy", tags, {"kgce": 1.0 + i, "completeness": 1.0}, i))
    client.write(lines)
    df = client.query("SELECT sum(kgce) AS kgce FROM energy GROUP BY county, enterprise")
    assert {"name", "time", "kgce", "county", "enterprise"} == set(df.columns)
    assert "tags" not in df.columns
    assert df["time"].dtype == pl.Int64
    assert df["county"].dtype == pl.String
    got = {(r["enterprise"], r["county"], r["kgce"]) for r in df.iter_rows(named=True)}
    assert got == {("E0001", "崇川区", 10), ("E0002", "通州区", 10), ("E0003", "崇川区", 10)}
    # GROUP BY * with raw points: every tag key becomes a column, values stay strings
    raw = client.query("SELECT kgce FROM energy GROUP BY *")
    assert raw.height == 12
    assert set(raw.columns) == {"name", "time", "kgce", "enterprise", "county", "carrier"}


@pytest.mark.integration
def test_group_by_tag_missing_on_some_series(client: InfluxClient) -> None:
    client.write(["m,a=x value=1 1", "m value=2 2", "m,a=y\\,z value=3 3"])
    df = client.query("SELECT value FROM m GROUP BY a").sort("time")
    assert df["a"].to_list() == ["x", None, "y,z"]


@pytest.mark.integration
def test_all_empty_column_loads(client: InfluxClient) -> None:
    client.write(['m,t=a value=1,note="x" 1', "m,t=b value=2 2", "m,t=c value=3 3"])
    df = client.query("SELECT value, note FROM m WHERE t != 'a'")
    assert df.height == 2
    assert df["note"].null_count() == 2
    assert df["time"].dtype == pl.Int64


@pytest.mark.integration
def test_bound_parameters(client: InfluxClient) -> None:
    client.write(["m,t=a value=1 1", "m,t=b value=2 2", "m,t=o'k value=3 3"])
    df = client.query("SELECT value FROM m WHERE t = $t", params={"t": "o'k"})
    assert df["value"].to_list() == [3]
    df = client.query(f"SELECT value FROM m WHERE t = {quote_literal('b')}")
    assert df["value"].to_list() == [2]


@pytest.mark.integration
def test_influxql_errors(client: InfluxClient) -> None:
    with pytest.raises(InfluxQueryError, match="error parsing query"):
        client.query("SELEC * FROM m")
    client.write(['m value=1,s="x" 1'])
    with pytest.raises(InfluxQueryError, match="undefined function"):
        client.query("SELECT nosuchfunction(value) FROM m")  # 1.x CSV drops this error
    with pytest.raises(InfluxQueryError):
        client.query_json("SELEC 1")


# -- retries against a stopped / restarted influxd ------------------------------------------------


@pytest.mark.integration
def test_write_survives_a_restart(own_services: Callable[..., LocalServices]) -> None:
    svc = own_services("influxd")
    retries: list[tuple[int, float, str]] = []
    lines = [
        format_line("meter_reading", {"meter": "M1"}, {"value": float(i)}, i) for i in range(500)
    ]
    with InfluxClient(
        svc.influx_url,
        "restart",
        max_retries=None,
        backoff_base=0.05,
        backoff_cap=0.3,
        batch_lines=100,
        on_retry=lambda *a: retries.append(a),
    ) as c:
        c.ensure_database()
        c.write(lines[:100])
        svc.stop("influxd")
        result: dict[str, object] = {}

        def run() -> None:
            try:
                result["written"] = c.write(lines[100:])
            except Exception as exc:  # reported below
                result["error"] = exc

        writer = threading.Thread(target=run)
        writer.start()
        time.sleep(1.5)
        assert writer.is_alive(), result  # still retrying while the server is down
        svc.start("influxd")
        writer.join(timeout=60)
        assert not writer.is_alive()
        assert result.get("written") == 400, result
        assert len(retries) >= 1
        number, delay, reason = retries[0]
        assert number == 1 and 0.0 <= delay <= 0.3 and "Connect" in reason
        assert count(c, "meter_reading") == 500


@pytest.mark.integration
def test_retries_exhausted(own_services: Callable[..., LocalServices]) -> None:
    svc = own_services("influxd")
    url = svc.influx_url
    svc.stop("influxd")
    retries: list[tuple[int, float, str]] = []
    with InfluxClient(
        url, "gone", max_retries=2, backoff_base=0.01, on_retry=lambda *a: retries.append(a)
    ) as c:
        with pytest.raises(InfluxUnavailableError, match="after 3 attempts") as info:
            c.write(["m value=1 1"])
        assert isinstance(info.value.__cause__, httpx.ConnectError)
        assert [r[0] for r in retries] == [1, 2]
        with pytest.raises(InfluxUnavailableError):
            c.query("SHOW DATABASES")
        with pytest.raises(InfluxConnectionError):
            c.ping()


@pytest.mark.integration
def test_kill_during_retries_then_close_stops_waiting(
    own_services: Callable[..., LocalServices],
) -> None:
    svc = own_services("influxd")
    url = svc.influx_url
    svc.kill("influxd")
    c = InfluxClient(url, "gone", max_retries=None, backoff_base=5.0, backoff_cap=5.0)
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            c.write(["m value=1 1"])
        except InfluxError as exc:
            outcome["error"] = exc

    writer = threading.Thread(target=run)
    writer.start()
    time.sleep(0.5)
    started = time.monotonic()
    c.close()
    writer.join(timeout=10)
    assert time.monotonic() - started < 5
    assert isinstance(outcome.get("error"), InfluxConnectionError)


def test_gzip_defaults_off_only_for_loopback() -> None:
    from greenmon.config import Settings

    def gz(url: str, **kw: object) -> bool:
        with InfluxClient(url, "db", **kw) as c:  # type: ignore[arg-type]
            return c.gzip

    assert not gz("http://127.0.0.1:8086")
    assert not gz("http://localhost:8086")
    assert not gz("http://[::1]:8086")
    assert gz("http://10.0.0.5:8086")
    assert gz("https://influx.example:8086")
    assert gz("http://127.0.0.1:8086", gzip=True)
    assert not gz("https://influx.example:8086", gzip=False)
    on = Settings(influx_url="http://127.0.0.1:8086", influx_gzip=True)
    with InfluxClient.from_settings(on) as c:
        assert c.gzip
