"""InfluxDB line protocol: the one place greenmon turns points into text for ``/write``.

Pure functions, no I/O. Owns escaping (measurement; tag keys and values; field keys; string field
values), field value formatting (float, int, bool, str) and the rule of what cannot be written at
all. A name that could be misread by some InfluxDB version is refused with `LineProtocolError`
rather than written ambiguously, so that a tag value can never inject a tag, a field or a line.

Escaping, as the InfluxDB line protocol reference defines it:

- measurement: ``,`` and space;
- tag keys, tag values, field keys: ``,``, ``=`` and space;
- string field values (inside double quotes): ``"`` and ``\\``.

What the parsers actually do with backslashes, verified against influxd 1.6.7 (the Go parser that
1.x and 2.x share) and read from the InfluxDB 3 parser (Rust ``influxdb_line_protocol``):

- A name can never end in a backslash: the backslash escapes the separator after it and the line
  fails with "invalid tag format" (1.x, also when written as ``\\\\``); 3.x refuses it outright.
- In names, 1.x/2.x keep ``\\\\`` as two backslashes, but 3.x reads it as one; and ``\\\\,`` is a
  literal ``\\,`` on 1.x but a backslash followed by a *separator* on 3.x. So a backslash
  followed by a backslash, comma, equals sign or space has no portable spelling: refused. Any
  other backslash (``C:\\temp``) is kept literally by every version and is written as is.
- Newlines, carriage returns, tabs (a separator for 3.x) and other control characters cannot
  appear in names: refused. A measurement starting with ``#`` would make the line a comment:
  refused. Empty names and the reserved keys ``time``, ``_field``, ``_measurement``: refused.
- String *field* values may hold any text, newlines included: the parsers track quotes, and
  influxd 1.6 returns a value with ``\\n`` and ``\\r`` intact. (`split_lines` splits a body the
  same quote-aware way.) String values are limited to 64 KiB of UTF-8.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
from collections.abc import Iterable, Mapping

from greenmon.errors import GreenmonError

__all__ = [
    "MAX_STRING_BYTES",
    "PRECISIONS",
    "FieldValue",
    "LineProtocolError",
    "escape_field_key",
    "escape_measurement",
    "escape_string_field",
    "escape_tag",
    "format_field_value",
    "format_fields",
    "format_line",
    "iter_lines",
    "split_lines",
]

FieldValue = float | int | bool | str

#: Longest string field value InfluxDB stores, in bytes of UTF-8.
MAX_STRING_BYTES = 65536
#: Timestamp precisions every supported InfluxDB version accepts on ``/write``.
PRECISIONS = ("ns", "u", "ms", "s")

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_RESERVED_KEYS = frozenset({"time", "_field", "_measurement"})

# Control characters (a newline or tab would end or split the element) and lone surrogates
# (not encodable as UTF-8).
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
# A backslash that some parser would read as an escape of its own: before \ , = space, or last.
_AMBIGUOUS_BACKSLASH = re.compile(r"\\(?=[\\,= ]|\Z)")
_SURROGATES = re.compile(r"[\ud800-\udfff]")

_MEASUREMENT_ESCAPES = str.maketrans({",": "\\,", " ": "\\ "})
_KEY_ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})


class LineProtocolError(GreenmonError, ValueError):
    """A point cannot be written as line protocol exactly; the message says which part and why."""


def _problem(s: object) -> str | None:
    """Why `s` cannot be a measurement, tag key, tag value or field key (None if it can)."""
    if not isinstance(s, str):
        return f"must be a string, not {type(s).__name__}"
    if not s:
        return "must not be empty"
    bad = _FORBIDDEN_CHARS.search(s)
    if bad is not None:
        ch = bad.group()
        if "\ud800" <= ch <= "\udfff":
            return "contains a lone surrogate (not valid Unicode text)"
        return f"contains the control character {ch!r}, which line protocol cannot carry"
    if s.endswith("\\"):
        return "ends with a backslash, which InfluxDB cannot store in a name"
    if _AMBIGUOUS_BACKSLASH.search(s):
        return (
            "has a backslash before a backslash, comma, equals sign or space, which "
            "InfluxDB 1.x/2.x and 3.x read differently"
        )
    return None


@functools.lru_cache(maxsize=4096)
def escape_measurement(name: str) -> str:
    """Escape a measurement name (commas, spaces); raise `LineProtocolError` if impossible."""
    problem = _problem(name)
    if problem is None and name.startswith("#"):
        problem = "starts with '#', which makes the line a comment"
    if problem is not None:
        raise LineProtocolError(f"measurement {name!r} {problem}")
    return name.translate(_MEASUREMENT_ESCAPES)


@functools.lru_cache(maxsize=65536)
def escape_tag(s: str) -> str:
    """Escape a tag key or tag value (commas, equals signs, spaces); cached, since tags repeat.

    Raises `LineProtocolError` for what cannot be written exactly (see the module docstring).
    """
    problem = _problem(s)
    if problem is not None:
        raise LineProtocolError(f"tag key/value {s!r} {problem}")
    return s.translate(_KEY_ESCAPES)


@functools.lru_cache(maxsize=4096)
def escape_field_key(key: str) -> str:
    """Escape a field key (commas, equals signs, spaces)."""
    problem = _problem(key)
    if problem is None and key in _RESERVED_KEYS:
        problem = "is reserved by InfluxDB"
    if problem is not None:
        raise LineProtocolError(f"field key {key!r} {problem}")
    return key.translate(_KEY_ESCAPES)


def escape_string_field(value: str) -> str:
    """Quote a string field value: ``"`` and ``\\`` escaped, any other character kept."""
    if len(value) * 4 > MAX_STRING_BYTES and len(value.encode("utf-8", "surrogatepass")) > (
        MAX_STRING_BYTES
    ):
        raise LineProtocolError(
            f"string field value of {len(value)} characters is longer than 64 KiB of UTF-8"
        )
    if _SURROGATES.search(value):
        raise LineProtocolError(f"string field value {value[:40]!r} contains a lone surrogate")
    return '"' + value.translate(_STRING_ESCAPES) + '"'


def format_field_value(value: object) -> str:
    """One field value: float (finite, ``repr`` so it round-trips), int (``i``), bool, str."""
    if isinstance(value, float):  # first: the ingestor's hot path is a plain float
        if math.isfinite(value):
            return float.__repr__(value)  # not repr(): numpy's float64 repr is np.float64(...)
        raise LineProtocolError(f"field value {value!r} is not finite")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return f"{int.__repr__(value)}i"
        raise LineProtocolError(f"integer field value {value} does not fit in 64 bits")
    if isinstance(value, str):
        return escape_string_field(value)
    if isinstance(value, numbers.Integral):
        return format_field_value(int(value))
    if isinstance(value, numbers.Real):
        return format_field_value(float(value))
    raise LineProtocolError(
        f"field value {value!r} has unsupported type {type(value).__name__} "
        "(use float, int, bool or str)"
    )


def format_fields(fields: Mapping[str, object]) -> str:
    """The field set ``k=v,k2=v2`` in the mapping's order; at least one field is required."""
    if not fields:
        raise LineProtocolError("a point needs at least one field")
    parts = []
    for key, value in fields.items():
        try:
            parts.append(f"{escape_field_key(key)}={format_field_value(value)}")
        except LineProtocolError as exc:
            if isinstance(key, str) and key in str(exc):
                raise
            raise LineProtocolError(f"field {key!r}: {exc}") from None
    return ",".join(parts)


def format_line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, FieldValue],
    ts: int | None = None,
) -> str:
    """One point as one line of line protocol (no trailing newline).

    Tags are sorted by key (what InfluxDB does itself, so it saves the server work); fields keep
    their order. `ts` is an integer in the precision the write will use, or None to let the
    server stamp the point. A tag key may not also be a field key (InfluxDB 3 rejects that).
    """
    parts = [escape_measurement(measurement)]
    if tags:
        for key in sorted(tags):
            k = _tag(measurement, key, key, "key")
            v = _tag(measurement, key, tags[key], "value")
            parts.append(f",{k}={v}")
        if fields and not tags.keys().isdisjoint(fields.keys()):
            both = sorted(set(tags) & set(fields))
            raise LineProtocolError(
                f"measurement {measurement!r}: {both} used as both tag and field key"
            )
    try:
        parts.append(" " + format_fields(fields))
    except LineProtocolError as exc:
        raise LineProtocolError(f"measurement {measurement!r}: {exc}") from None
    if ts is not None:
        if isinstance(ts, bool) or not isinstance(ts, numbers.Integral):
            raise LineProtocolError(f"timestamp {ts!r} must be an integer")
        if not _INT64_MIN <= ts <= _INT64_MAX:
            raise LineProtocolError(f"timestamp {ts} does not fit in 64 bits")
        parts.append(f" {int(ts)}")
    return "".join(parts)


def _tag(measurement: str, key: str, s: object, what: str) -> str:
    try:
        escaped = escape_tag(s)  # type-checked inside: _problem()
    except LineProtocolError:
        problem = _problem(s)
        raise LineProtocolError(
            f"measurement {measurement!r}: tag {what} {s!r}"
            + (f" (of tag {key!r})" if what == "value" else "")
            + f" {problem}"
        ) from None
    except TypeError:  # unhashable, so not a str either
        raise LineProtocolError(
            f"measurement {measurement!r}: tag {key!r} value must be a string, "
            f"not {type(s).__name__}"
        ) from None
    if what == "key" and s in _RESERVED_KEYS:
        raise LineProtocolError(f"measurement {measurement!r}: tag key {s!r} is reserved")
    return escaped


def split_lines(body: str) -> list[str]:
    """Split a line-protocol body into lines the way InfluxDB does.

    A newline inside a quoted string field value does not end the line; escaped characters are
    skipped; blank lines and ``#`` comment lines are dropped. Mirrors the scanner of the Go
    parser (1.x/2.x), which InfluxDB 3's parser ports.
    """
    if '"' not in body:
        return [line for line in body.split("\n") if line.strip() and not _is_comment(line)]
    lines: list[str] = []
    start = 0
    quoted = fields = escaped = False
    leading = True
    equals = commas = 0
    for i, ch in enumerate(body):
        if leading:
            if ch in " \t\r":
                continue
            leading = False
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == " ":
            fields = True
        elif fields and not quoted and ch == "=":
            equals += 1
        elif fields and not quoted and ch == ",":
            commas += 1
        elif fields and ch == '"' and equals > commas:
            quoted = not quoted
        elif ch == "\n" and not quoted:
            _keep(lines, body[start:i])
            start = i + 1
            quoted = fields = False
            leading = True
            equals = commas = 0
    _keep(lines, body[start:])
    return lines


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _keep(lines: list[str], line: str) -> None:
    if line.strip() and not _is_comment(line):
        lines.append(line)


def iter_lines(items: Iterable[str]) -> Iterable[str]:
    """Each item as one line; an item holding several lines (a whole body) is split."""
    for item in items:
        if "\n" in item:
            yield from split_lines(item)
        elif (item and item[0] not in " \t\r#") or (item.strip() and not _is_comment(item)):
            yield item
