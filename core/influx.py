"""The one InfluxDB client every greenmon stage uses.

Speaks only the API that InfluxDB 1.x, 2.x (v1 compatibility) and 3.x (v1 compatibility) all
serve: line protocol POSTed to ``/write`` and InfluxQL POSTed to ``/query`` (answers read as CSV,
``Accept: application/csv``, straight into Polars). Owns batching, gzip, retries with capped
exponential backoff and full jitter, the mapping of every failure onto `InfluxError` subclasses,
and keeping credentials out of URLs, messages, logs and reprs.

Authentication (choose one):

- none;
- `username` + `password`: sent as an HTTP Basic ``Authorization`` header, never as ``u``/``p``
  URL parameters. InfluxDB 1.x accepts both, 2.x's and 3.x's v1 APIs accept Basic auth (3.x:
  the token as the password), and a header cannot leak through a URL in an error message or an
  access log;
- `token`: ``Authorization: Token <token>`` (2.x, 3.x).

Retries: connection errors, timeouts, 429 and 5xx (except 501) are retried up to `max_retries`
times (None: forever), waiting ``uniform(0, min(cap, base * 2**(n-1)))`` before retry n, or what
``Retry-After`` asks (at most `RETRY_AFTER_MAX` seconds). Everything else fails at once: 400 ->
`InfluxWriteError` naming the failing lines / `InfluxQueryError`, 401/403 -> `InfluxAuthError`,
404 -> `InfluxDatabaseNotFoundError`. Re-sending a batch is harmless when its points carry
timestamps (a point with the same series and time is overwritten, not duplicated).
"""

from __future__ import annotations

import csv
import email.utils
import gzip as gziplib
import io
import ipaddress
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import polars as pl
from pydantic import SecretStr

from greenmon.errors import ConfigError, GreenmonError
from greenmon.lineprotocol import PRECISIONS, iter_lines, split_lines

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

    from greenmon.config import Settings

__all__ = [
    "EPOCHS",
    "RETRY_AFTER_MAX",
    "InfluxAuthError",
    "InfluxClient",
    "InfluxConnectionError",
    "InfluxDatabaseNotFoundError",
    "InfluxError",
    "InfluxQueryError",
    "InfluxServerError",
    "InfluxStats",
    "InfluxUnavailableError",
    "InfluxWriteError",
    "LineError",
    "RetryCallback",
    "backoff_delay",
    "parse_retry_after",
    "quote_ident",
    "quote_literal",
]

log = logging.getLogger(__name__)

#: ``on_retry(retry_number, delay_seconds, reason)``; raising from it aborts the retries.
RetryCallback = Callable[[int, float, str], None]

#: Units `query` can return times in (``epoch``).
EPOCHS = ("ns", "u", "ms", "s", "m", "h")
#: The longest ``Retry-After`` honoured, in seconds (a bogus header must not park a writer).
RETRY_AFTER_MAX = 300.0

_GZIP_LEVEL = 5
_MAX_MESSAGE = 2000
_EMPTY_FRAME_SCHEMA: dict[str, PolarsDataType] = {"name": pl.String, "time": pl.Int64}


# -- errors ---------------------------------------------------------------------------------------
class InfluxError(GreenmonError):
    """Root of everything this module raises.

    `written` is the number of lines a `InfluxClient.write` call had written before it failed
    (0 for other calls).
    """

    written: int = 0


class InfluxConnectionError(InfluxError):
    """InfluxDB could not be reached (connection refused, timeout, broken connection)."""


class InfluxUnavailableError(InfluxConnectionError):
    """InfluxDB stayed unreachable or overloaded through every retry; ``__cause__`` is the last."""


class InfluxServerError(InfluxError):
    """InfluxDB answered 429 or 5xx (retried; seen as the cause of `InfluxUnavailableError`)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class InfluxAuthError(InfluxError):
    """InfluxDB refused the credentials or the permission (401/403); never retried."""


class InfluxDatabaseNotFoundError(InfluxError):
    """The database (2.x: bucket / DBRP mapping) does not exist."""


class InfluxQueryError(InfluxError):
    """InfluxDB rejected an InfluxQL statement; the message is the server's."""


@dataclass(frozen=True)
class LineError:
    """One line InfluxDB refused: where (1-based within the write call, when found), what, why."""

    line_number: int | None
    line: str | None
    reason: str


class InfluxWriteError(InfluxError):
    """InfluxDB refused some lines (400); not retried. Other lines of the call were written.

    `errors` lists each refused line; `dropped` is the server's own count of dropped points
    (1.x does not count unparsable lines in it); `written` is the lines that got in.
    """

    def __init__(
        self,
        message: str,
        errors: Iterable[LineError] = (),
        *,
        dropped: int | None = None,
        written: int = 0,
    ) -> None:
        super().__init__(message)
        self.errors: tuple[LineError, ...] = tuple(errors)
        self.dropped = dropped
        self.written = written

    @property
    def line_number(self) -> int | None:
        return self.errors[0].line_number if self.errors else None

    @property
    def line(self) -> str | None:
        return self.errors[0].line if self.errors else None

    @property
    def reason(self) -> str | None:
        return self.errors[0].reason if self.errors else None


# -- pure helpers ---------------------------------------------------------------------------------
def backoff_delay(
    retry: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number `retry` (1-based).

    ``Retry-After`` wins when the server sent one (clamped to 0..`RETRY_AFTER_MAX`); otherwise
    full jitter: uniform in ``[0, min(cap, base * 2**(retry-1)))``.
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), RETRY_AFTER_MAX)
    ceiling = min(cap, base * 2.0 ** min(max(retry - 1, 0), 64))
    return max(0.0, rand() * ceiling)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """A ``Retry-After`` header as seconds: delta-seconds or an HTTP date; None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 7231 dates are GMT
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes (database, measurement, tag or field key)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_literal(value: str) -> str:
    """An InfluxQL string literal in single quotes (prefer `params` where possible)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _batched(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _release_stream(resp: httpx.Response) -> None:
    """Drop a read, closed response's stream. httpx 0.28 keeps a response and its stream in a
    reference cycle (encode/httpx#3733), so the request body and the response content (megabytes
    per write or query here) live until the cyclic collector runs; an aggregation's peak memory
    then grew with the number of chunks. Without the cycle they are freed when the response is."""
    resp.stream = httpx.ByteStream(b"")


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_single_statement(influxql: str) -> None:
    """Refuse several statements: 1.x's CSV answer silently leaves out a failed statement."""
    quote: str | None = None
    escaped = False
    for i, ch in enumerate(influxql):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif quote is not None:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == ";" and influxql[i + 1 :].strip(" \t\r\n;"):
            raise InfluxQueryError(
                "query() runs one InfluxQL statement per call (InfluxDB 1.x leaves a failed "
                "statement out of a CSV answer); split the statements, or write a ';' inside "
                "a regular expression as '\\;'"
            )


# -- CSV -> Polars --------------------------------------------------------------------------------
# 1.x writes the `tags` column of a GROUP BY answer as line-protocol-escaped k=v pairs, and (like
# its line protocol parser) treats a comma or equals sign right after a backslash as escaped.
_TAG_PAIR = r"(?:[^,\\]|\\,|\\)+"
_TAG_KEY_VALUE = r"(?s)^((?:[^=\\]|\\=|\\)*)=(.*)$"
_TAG_UNESCAPE = r"\\([,= ])"


def _split_tables(body: bytes) -> list[bytes]:
    """Statements' tables are separated by a blank line (outside quoted values)."""
    if b"\n\n" not in body:
        return [body]
    tables: list[bytes] = []
    start = 0
    quotes = 0
    counted_to = 0
    pos = body.find(b"\n\n")
    while pos != -1:
        quotes += body.count(b'"', counted_to, pos)
        counted_to = pos
        if quotes % 2 == 0:
            tables.append(body[start : pos + 1])
            start = pos + 2
        pos = body.find(b"\n\n", pos + 1)
    tables.append(body[start:])
    return [t for t in tables if t.strip()]


def _table_to_frame(
    table: bytes, schema_overrides: Mapping[str, PolarsDataType] | None
) -> pl.DataFrame:
    end = table.find(b"\n")
    header_bytes = table if end == -1 else table[:end]
    header = next(csv.reader([header_bytes.decode("utf-8")]))
    if header and header[0] == "error":
        lines = list(csv.reader(io.StringIO(table.decode("utf-8"))))
        message = lines[1][0] if len(lines) > 1 and lines[1] else "unknown error"
        raise InfluxQueryError(message)
    has_meta = header[:2] == ["name", "tags"]
    columns = list(header)
    drop: list[str] = []
    if has_meta:
        # SHOW MEASUREMENTS answers "name,tags,name": the value column wins over the series name.
        for i, meta in enumerate(("name", "tags")):
            if meta in header[2:]:
                columns[i] = f"\x00{meta}"
                drop.append(columns[i])
    overrides: dict[str, PolarsDataType] = {}
    if "time" in columns:
        overrides["time"] = pl.Int64
    if has_meta:
        # series name and tags repeat on every row: parsed as categories (one string each),
        # the tags expanded once per distinct series
        overrides[columns[0]] = pl.Categorical
        overrides[columns[1]] = pl.Categorical
    if schema_overrides:
        overrides.update({k: v for k, v in schema_overrides.items() if k in columns})
    df = pl.read_csv(
        io.BytesIO(table),
        new_columns=columns,
        # inferring reads every row: only when some column's type is not known
        infer_schema_length=0 if all(c in overrides for c in columns) else None,
        schema_overrides=overrides,
    )
    if drop:
        df = df.drop(drop)
    if has_meta and "tags" in df.columns:
        df = _expand_tags(df)
    if has_meta and "name" in df.columns and not (schema_overrides or {}).get("name"):
        df = df.with_columns(pl.col("name").cast(pl.String))
    return df


def _expand_tags(df: pl.DataFrame) -> pl.DataFrame:
    """Replace the `tags` column (``k=v,k2=v2``) by one String column per tag key, vectorised."""
    series = df.select(pl.col("tags").unique()).filter(pl.col("tags").is_not_null())
    if series.height == 0:
        return df.drop("tags")
    text = pl.col("tags").cast(pl.String)
    pairs = (
        series.with_columns(text.str.extract_all(_TAG_PAIR).alias("_pair"))
        .explode("_pair")
        .filter(pl.col("_pair").is_not_null())
        .with_columns(pl.col("_pair").str.extract_groups(_TAG_KEY_VALUE).alias("_kv"))
        .select(
            "tags",
            pl.col("_kv").struct.field("1").str.replace_all(_TAG_UNESCAPE, "$1").alias("key"),
            pl.col("_kv").struct.field("2").str.replace_all(_TAG_UNESCAPE, "$1").alias("value"),
        )
        .filter(pl.col("key").is_not_null() & (pl.col("key") != ""))
        .with_columns(pl.when(pl.col("value") != "").then(pl.col("value")).alias("value"))
    )
    if pairs.height == 0:
        return df.drop("tags")
    wide = pairs.pivot(on="key", index="tags", values="value", aggregate_function="first")
    keep = [c for c in wide.columns if c == "tags" or c not in df.columns]
    wide = wide.select(keep).with_columns(pl.exclude("tags").cast(pl.String))
    return df.join(wide, on="tags", how="left", maintain_order="left").drop("tags")


def _frame_from_csv(
    body: bytes, schema_overrides: Mapping[str, PolarsDataType] | None
) -> pl.DataFrame:
    frames = [_table_to_frame(t, schema_overrides) for t in _split_tables(body)]
    if not frames:
        return pl.DataFrame(schema=_EMPTY_FRAME_SCHEMA)
    df = frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
    first = [c for c in ("name", "time") if c in df.columns]
    return df.select(first + [c for c in df.columns if c not in first])


# -- the client -----------------------------------------------------------------------------------
@dataclass
class InfluxStats:
    """Counters since the client was created (for self-monitoring and tests)."""

    requests: int = 0
    write_requests: int = 0
    lines_written: int = 0
    bytes_sent: int = 0
    bytes_uncompressed: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def _add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


_RETRYABLE_TRANSPORT = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class InfluxClient:
    """Writes line protocol and runs InfluxQL against one database; thread-safe.

    One `httpx.Client` (connection pool) per instance; use as a context manager or `close()`.
    """

    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: SecretStr | None = None,
        token: SecretStr | None = None,
        timeout: float = 10.0,
        max_retries: int | None = 8,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
        batch_lines: int = 5000,
        gzip: bool | None = None,
        on_retry: RetryCallback | None = None,
        transport: httpx.BaseTransport | None = None,
        policies: Mapping[str, str] | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"influx_url must be http(s)://host:port, got {parts.scheme}://...")
        if parts.username or parts.password:
            raise ConfigError("influx_url must not carry credentials; pass username/password")
        if not database:
            raise ConfigError("database must not be empty")
        if batch_lines < 1:
            raise ConfigError(f"batch_lines must be at least 1, got {batch_lines}")
        if max_retries is not None and max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0 or None, got {max_retries}")
        if token is not None and (username is not None or password is not None):
            raise ConfigError("give either a token or a username/password for InfluxDB, not both")
        if password is not None and username is None:
            raise ConfigError("an InfluxDB password needs a username")
        self.url = url.rstrip("/")
        self.database = database
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.batch_lines = batch_lines
        # gzip pays off across a network; to a server on this machine it only spends CPU on
        # both sides (measured with `greenmon bench ingest`), so "auto" leaves it off there.
        self.gzip = gzip if gzip is not None else not _is_loopback(parts.hostname)
        self.on_retry = on_retry
        # Measurement -> retention policy it lives in (`greenmon.retention`); any other
        # measurement lives in the database's default policy.
        self.policies: Mapping[str, str] = MappingProxyType(dict(policies or {}))
        self.stats = InfluxStats()
        self._closed = threading.Event()
        auth: httpx.Auth | None = None
        headers = {"User-Agent": "greenmon"}
        if token is not None:
            headers["Authorization"] = f"Token {token.get_secret_value()}"
            self._auth_kind = "token"
        elif username is not None:
            secret = password.get_secret_value() if password is not None else ""
            auth = httpx.BasicAuth(username, secret)
            self._auth_kind = f"basic user={username!r}"
        else:
            self._auth_kind = "none"
        self._http = httpx.Client(
            base_url=self.url + "/",
            auth=auth,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> InfluxClient:
        """A client for `settings` (URL, database, credentials); `options` as for the class.

        Without an ``influx_url`` the local services' state file supplies it.
        """
        if settings.influx_url is None:
            from greenmon.config import resolve_local_services

            settings = resolve_local_services(settings, need_mqtt=False, need_influx=True)
        if settings.influx_url is None:  # resolve_local_services raises first; for type checkers
            raise ConfigError("no influx_url configured")
        from greenmon.retention import policies_of

        return cls(
            settings.influx_url,
            settings.database,
            username=settings.influx_username,
            password=settings.influx_password,
            token=settings.influx_token,
            **{"gzip": settings.influx_gzip, "policies": policies_of(settings), **options},
        )

    def __repr__(self) -> str:
        return f"InfluxClient(url={self.url!r}, database={self.database!r}, auth={self._auth_kind})"

    def policy(self, measurement: str) -> str | None:
        """The retention policy `measurement` lives in; None: the database's default one."""
        return self.policies.get(measurement)

    def source(self, measurement: str) -> str:
        """`measurement` for an InfluxQL FROM clause, qualified by its retention policy."""
        rp = self.policies.get(measurement)
        return f"{quote_ident(rp)}.{quote_ident(measurement)}" if rp else quote_ident(measurement)

    def __enter__(self) -> InfluxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections; a retry waiting in another thread gives up at once."""
        self._closed.set()
        self._http.close()

    # -- writing ------------------------------------------------------------------------------
    def write(
        self, lines: Iterable[str] | str, precision: str = "ns", *, rp: str | None = None
    ) -> int:
        """Write line protocol in batches of `batch_lines`; returns the number of lines written.

        `lines` is a whole body (str) or an iterable of lines (an item holding several lines is
        split, quote-aware). A batch InfluxDB refuses lines of does not stop the rest: at the
        end `InfluxWriteError` lists every refused line, numbered within this call. `rp`: the
        retention policy to write into (None: the database's default).
        """
        self._check_precision(precision)
        source = split_lines(lines) if isinstance(lines, str) else iter_lines(lines)
        written = 0
        offset = 0
        errors: list[LineError] = []
        dropped: int | None = None
        failures: list[InfluxWriteError] = []
        for batch in _batched(source, self.batch_lines):
            try:
                written += self._write_batch(batch, precision, offset, rp)
            except InfluxWriteError as exc:
                failures.append(exc)
                errors.extend(exc.errors)
                if exc.dropped is not None:
                    dropped = (dropped or 0) + exc.dropped
                written += exc.written
            except InfluxError as exc:
                exc.written = written
                raise
            offset += len(batch)
        if failures:
            if len(failures) == 1:
                failures[0].written = written
                raise failures[0]
            raise InfluxWriteError(
                self._write_error_message(errors, len(failures)),
                errors,
                dropped=dropped,
                written=written,
            ) from failures[0]
        return written

    def write_batch(
        self, body_lines: list[str], precision: str = "ns", *, rp: str | None = None
    ) -> int:
        """Write `body_lines` (one line each) in exactly one request; returns the line count."""
        self._check_precision(precision)
        if not body_lines:
            return 0
        return self._write_batch(body_lines, precision, 0, rp)

    def write_body(
        self, body: bytes, lines: int, precision: str = "ns", *, rp: str | None = None
    ) -> int:
        """Write `lines` lines of line protocol, already encoded as UTF-8 and separated (or
        each ended) by newlines, in exactly one request; returns `lines`. For callers that
        build the body without a Python string per line."""
        self._check_precision(precision)
        if not body:
            return 0
        return self._post_lines(
            body, lines, precision, 0, lambda: body.decode("utf-8", "replace").splitlines(), rp
        )

    def _write_batch(
        self, batch: list[str], precision: str, offset: int, rp: str | None = None
    ) -> int:
        text = "\n".join(batch)
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:
            bad = next(i for i, line in enumerate(batch) if not _encodable(line))
            raise InfluxWriteError(
                f"line {offset + bad + 1} is not valid UTF-8 text",
                [LineError(offset + bad + 1, batch[bad], "not valid UTF-8 text")],
            ) from None
        return self._post_lines(raw, len(batch), precision, offset, lambda: batch, rp)

    def _post_lines(
        self,
        raw: bytes,
        count: int,
        precision: str,
        offset: int,
        batch: Callable[[], list[str]],
        rp: str | None = None,
    ) -> int:
        """POST one body of `count` lines; `batch` gives them back as text for error reports."""
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        content = raw
        if self.gzip:
            content = gziplib.compress(raw, compresslevel=_GZIP_LEVEL, mtime=0)
            headers["Content-Encoding"] = "gzip"
        resp = self._send(
            "POST",
            "write",
            params={"db": self.database, "precision": precision, **({"rp": rp} if rp else {})},
            content=content,
            headers=headers,
        )
        self.stats._add(write_requests=1, bytes_sent=len(content), bytes_uncompressed=len(raw))
        if resp.status_code in (200, 204):
            self.stats._add(lines_written=count)
            return count
        if resp.status_code == 400:
            raise self._write_error(resp, batch(), offset)
        if resp.status_code == 413:
            raise InfluxWriteError(
                f"InfluxDB refused a {len(raw)}-byte write as too large (413); "
                f"lower batch_lines (now {self.batch_lines})"
            )
        raise self._status_error(resp, "/write")

    def _write_error(self, resp: httpx.Response, batch: list[str], offset: int) -> InfluxWriteError:
        message, data = _error_message(resp)
        errors: list[LineError] = []
        partial = message.startswith("partial write")
        dropped: int | None = None
        m = re.search(r"\s*dropped=(\d+)\s*$", message)
        if m:
            dropped = int(m.group(1))
            message = message[: m.start()]
        if isinstance(data, list | dict):  # InfluxDB 3: {"error": ..., "data": [{line_number,...}]}
            for item in data if isinstance(data, list) else [data]:
                if isinstance(item, dict) and "line_number" in item:
                    no = item.get("line_number")
                    number = offset + no if isinstance(no, int) else None
                    line = item.get("original_line")
                    errors.append(
                        LineError(
                            number,
                            line if isinstance(line, str) else None,
                            str(item.get("error_message", message)),
                        )
                    )
                    partial = True
        if not errors:
            errors = _parse_unable_to_parse(message, batch, offset)
        if not errors:
            errors = [LineError(None, None, message.removeprefix("partial write: ").strip())]
        refused = sum(1 for e in errors if e.line is not None) + (dropped or 0)
        written = max(0, len(batch) - refused) if partial else 0
        self.stats._add(lines_written=written)
        return InfluxWriteError(
            self._write_error_message(errors, 1), errors, dropped=dropped, written=written
        )

    def _write_error_message(self, errors: list[LineError], batches: int) -> str:
        first = errors[0] if errors else LineError(None, None, "unknown error")
        where = f"line {first.line_number}" if first.line_number is not None else "a line"
        text = f"InfluxDB refused {where} written to database {self.database!r}: {first.reason}"
        if first.line is not None:
            text += f": {_shorten(first.line)!r}"
        if len(errors) > 1:
            text += f" (and {len(errors) - 1} more refused line(s)"
            text += f" in {batches} batches)" if batches > 1 else ")"
        return text

    # -- querying -----------------------------------------------------------------------------
    def query(
        self,
        influxql: str,
        *,
        epoch: str = "ns",
        params: Mapping[str, Any] | None = None,
        schema_overrides: Mapping[str, PolarsDataType] | None = None,
    ) -> pl.DataFrame:
        """Run one InfluxQL statement; the answer as a Polars frame.

        Columns: ``name`` (measurement), ``time`` (Int64, in `epoch` units), the value columns,
        then one String column per tag key when the statement groups by tags. Numeric columns
        are Int64 when every value is integral, else Float64; a tag selected as a plain column
        (not grouped by) is typed by its values, so pin it with `schema_overrides`
        (``{"county": pl.String}``) or GROUP BY it. `params` fill ``$name`` placeholders.
        An empty answer is an empty frame (with ``name`` and ``time``).
        """
        self._check_epoch(epoch)
        _check_single_statement(influxql)
        resp = self._query_request(influxql, epoch, params, "application/csv")
        if resp.status_code != 200:
            raise self._query_status_error(resp)
        body = resp.content
        if not body.strip():
            # 1.x answers a failed statement in CSV with an empty body: ask again in JSON to
            # tell "no rows" from an error (cheap: either way there is nothing to send back).
            self.query_json(influxql, epoch=epoch, params=params)
            return pl.DataFrame(schema=_EMPTY_FRAME_SCHEMA)
        return _frame_from_csv(body, schema_overrides)

    def query_json(
        self,
        influxql: str,
        *,
        epoch: str = "ns",
        params: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Run InfluxQL, return the JSON ``results`` list; a failed statement raises."""
        self._check_epoch(epoch)
        resp = self._query_request(influxql, epoch, params, "application/json")
        if resp.status_code != 200:
            raise self._query_status_error(resp)
        try:
            payload = resp.json()
        except ValueError as exc:
            raise InfluxQueryError(
                f"InfluxDB sent an unreadable answer: {_shorten(resp.text)!r}"
            ) from exc
        if isinstance(payload, dict) and "error" in payload and "results" not in payload:
            raise _statement_error(str(payload["error"]))
        results = payload.get("results", []) if isinstance(payload, dict) else []
        for result in results:
            if isinstance(result, dict) and result.get("error"):
                raise _statement_error(str(result["error"]))
        return [r for r in results if isinstance(r, dict)]

    def _query_request(
        self,
        influxql: str,
        epoch: str,
        params: Mapping[str, Any] | None,
        accept: str,
    ) -> httpx.Response:
        form = {"q": influxql}
        if params:
            form["params"] = json.dumps(dict(params))
        return self._send(
            "POST",
            "query",
            params={"db": self.database, "epoch": epoch},
            data=form,
            headers={"Accept": accept},
        )

    def _query_status_error(self, resp: httpx.Response) -> InfluxError:
        if resp.status_code == 400:
            message, _ = _error_message(resp)
            return _statement_error(_shorten(message, _MAX_MESSAGE))
        return self._status_error(resp, "/query")

    # -- administration -----------------------------------------------------------------------
    def ensure_database(self, name: str | None = None) -> bool:
        """``CREATE DATABASE`` (idempotent on 1.x). False when the server has no such statement.

        InfluxDB 2.x needs the bucket created beforehand (it maps a database to the bucket of
        the same name); 3.x creates a database on its first write.
        """
        try:
            self.query_json(f"CREATE DATABASE {quote_ident(name or self.database)}")
        except InfluxQueryError as exc:
            log.info("CREATE DATABASE not supported by this InfluxDB (%s); skipped", exc)
            return False
        return True

    def drop_database(self, name: str | None = None) -> None:
        """``DROP DATABASE`` (1.x; for tests and ``services down``)."""
        self.query_json(f"DROP DATABASE {quote_ident(name or self.database)}")

    def ping(self) -> str:
        """The server's version (``X-Influxdb-Version``); one attempt, no retries."""
        resp = self._send("GET", "ping", retry=False)
        if resp.status_code not in (200, 204):
            raise self._status_error(resp, "/ping")
        version = resp.headers.get("X-Influxdb-Version")
        if not version and resp.content:
            try:
                version = str(resp.json().get("version") or "")
            except (ValueError, AttributeError):
                version = ""
        return version or "unknown"

    # -- transport ----------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> httpx.Response:
        """One request with retries; returns any response that is not retryable."""
        retries = 0
        where = f"{self.url}/{path}"
        while True:
            if self._closed.is_set():
                raise InfluxConnectionError(f"InfluxDB client for {self.url} is closed")
            retry_after: float | None = None
            cause: Exception
            try:
                self.stats._add(requests=1)
                resp = self._http.request(
                    method, path, params=params, content=content, data=data, headers=headers
                )
            except _RETRYABLE_TRANSPORT as exc:
                cause = exc
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except httpx.HTTPError as exc:
                if self._closed.is_set():
                    raise InfluxConnectionError(
                        f"InfluxDB client for {self.url} is closed"
                    ) from exc
                raise InfluxConnectionError(
                    f"request to {where} failed: {type(exc).__name__}: {exc}"
                ) from exc
            except (
                RuntimeError
            ) as exc:  # httpx: "Cannot send a request, as the client has been closed"
                if self._closed.is_set():
                    raise InfluxConnectionError(
                        f"InfluxDB client for {self.url} is closed"
                    ) from exc
                raise
            else:
                _release_stream(resp)
                status = resp.status_code
                if status != 429 and (status < 500 or status == 501):
                    return resp
                message, _ = _error_message(resp)
                cause = InfluxServerError(f"{where} answered {status}: {message}", status)
                reason = f"HTTP {status}: {_shorten(message, 120)}"
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            if not retry:
                if isinstance(cause, InfluxServerError):
                    raise cause
                raise InfluxConnectionError(f"InfluxDB at {where} unreachable: {reason}") from cause
            if self.max_retries is not None and retries >= self.max_retries:
                raise InfluxUnavailableError(
                    f"InfluxDB at {where} still failing after {retries + 1} attempts: {reason}"
                ) from cause
            retries += 1
            delay = backoff_delay(
                retries, base=self.backoff_base, cap=self.backoff_cap, retry_after=retry_after
            )
            self.stats._add(retries=1)
            log.warning(
                "InfluxDB %s %s failed (%s); retry %d in %.2fs",
                method,
                where,
                reason,
                retries,
                delay,
            )
            if self.on_retry is not None:
                self.on_retry(retries, delay, reason)
            if self._closed.wait(delay):
                raise InfluxUnavailableError(
                    f"InfluxDB client for {self.url} closed while waiting to retry: {reason}"
                ) from cause

    def _status_error(self, resp: httpx.Response, path: str) -> InfluxError:
        message, _ = _error_message(resp)
        status = resp.status_code
        where = f"{self.url}{path}"
        if status in (401, 403):
            return InfluxAuthError(
                f"InfluxDB at {where} refused the request ({status}, credentials: "
                f"{self._auth_kind}): {message}"
            )
        if status == 404:
            if "not found" in message and ("database" in message or "bucket" in message):
                return InfluxDatabaseNotFoundError(f"{message} (at {self.url})")
            return InfluxError(
                f"{where} not found (404): is this an InfluxDB serving the v1 API? {message}"
            )
        return InfluxError(
            f"InfluxDB at {where} answered {status}: {_shorten(message, _MAX_MESSAGE)}"
        )

    @staticmethod
    def _check_precision(precision: str) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")

    @staticmethod
    def _check_epoch(epoch: str) -> None:
        if epoch not in EPOCHS:
            raise ConfigError(f"epoch must be one of {EPOCHS}, got {epoch!r}")


def _encodable(line: str) -> bool:
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _error_message(resp: httpx.Response) -> tuple[str, Any]:
    """The server's error text (JSON ``error``/``message``, CSV, or header) and any ``data``."""
    text = resp.text
    data: Any = None
    message = ""
    if text.lstrip().startswith("{"):
        try:
            payload = resp.json()
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            message = str(payload.get("error") or payload.get("message") or "")
            data = payload.get("data")
    if not message:
        message = resp.headers.get("X-Influxdb-Error", "")
    if not message and text.startswith("error\n"):
        rows = list(csv.reader(io.StringIO(text)))
        message = rows[1][0] if len(rows) > 1 and rows[1] else ""
    if not message:
        message = text.strip() or resp.reason_phrase or f"HTTP {resp.status_code}"
    return message.strip(), data


def _statement_error(message: str) -> InfluxError:
    if message.startswith("database not found"):
        return InfluxDatabaseNotFoundError(message)
    if "not authorized" in message or "authorization failed" in message:
        return InfluxAuthError(message)
    return InfluxQueryError(message)


_UNABLE = "unable to parse '"


def _parse_unable_to_parse(message: str, batch: list[str], offset: int) -> list[LineError]:
    """Pick ``unable to parse '<line>': <reason>`` entries out of a 1.x/2.x error message.

    The quoted line may itself hold ``': ``, so each candidate end is tried against the lines
    of the batch; the line number is the batch position (1-based, plus `offset`).
    """
    starts = [m.start() for m in re.finditer(re.escape(_UNABLE), message)]
    if not starts:
        return []
    index: dict[str, int] = {}
    for i, line in enumerate(batch):
        index.setdefault(line.strip(), i)
    errors: list[LineError] = []
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(message)
        segment = message[start + len(_UNABLE) : end].rstrip("\n")
        found: LineError | None = None
        first: LineError | None = None
        pos = segment.find("': ")
        while pos != -1:
            line, reason = segment[:pos], segment[pos + 3 :].strip()
            if first is None:
                first = LineError(None, line, reason)
            if line.strip() in index:
                found = LineError(offset + index[line.strip()] + 1, line, reason)
                break
            pos = segment.find("': ", pos + 1)
        if found is None and first is None and segment.endswith("'"):
            line = segment[:-1]
            found = LineError(
                offset + index[line.strip()] + 1 if line.strip() in index else None, line, ""
            )
        chosen = found or first
        if chosen is not None:
            errors.append(chosen)
    return errors
