"""Line protocol formatting: the escaping table, refusals, and property tests.

The property tests parse what `format_line` produced with two small reference readers written
here, one with the 1.x/2.x (Go) reading of backslashes and one with the 3.x (Rust) reading, and
require both to give back exactly the tags and fields that went in.
"""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenmon.errors import GreenmonError
from greenmon.lineprotocol import (
    LineProtocolError,
    escape_field_key,
    escape_measurement,
    escape_string_field,
    escape_tag,
    format_field_value,
    format_line,
    iter_lines,
    split_lines,
)

# -- reference readers ----------------------------------------------------------------------


def _split_unescaped(s: str, sep: str, *, go: bool) -> list[str]:
    """Split on `sep` unless escaped. Go: any char right after a backslash is escaped (the
    scanner looks one byte back); Rust: a backslash escapes the next char, ``\\\\`` included."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            if go:
                cur.append(ch)
                i += 1
                cur.append(s[i])  # whatever follows a backslash cannot be a separator
            else:
                cur.append(s[i : i + 2])
                i += 1
        elif ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(s: str, chars: str, *, go: bool) -> str:
    if go:  # strings.Replace of each escape pair; a doubled backslash stays doubled
        for c in chars:
            s = s.replace("\\" + c, c)
        return s
    # Rust escape_or_fallback: \\ -> \, \c -> c for escapable c, other backslashes kept
    return re.sub(r"\\([\\" + re.escape(chars) + "])", r"\1", s)


def _parse_string(raw: str) -> str:
    assert raw.startswith('"') and raw.endswith('"'), raw
    return re.sub(r'\\([\\"])', r"\1", raw[1:-1])


def reference_parse(line: str, *, go: bool) -> tuple[str, dict[str, str], dict[str, str], str]:
    """(measurement, tags, raw fields, timestamp) of one line; string values stay quoted."""
    # The series key ends at the first unescaped space; fields end at the next unescaped space
    # outside quotes.
    i, escaped = 0, False
    while i < len(line):
        if escaped:
            escaped = False
        elif line[i] == "\\":
            escaped = True
        elif line[i] == " ":
            break
        i += 1
    series, rest = line[:i], line[i + 1 :]
    measurement_raw, *tag_parts = _split_unescaped(series, ",", go=go)
    measurement = _unescape(measurement_raw, ", ", go=go)
    tags: dict[str, str] = {}
    for part in tag_parts:
        kv = _split_unescaped(part, "=", go=go)
        assert len(kv) == 2, f"tag {part!r} is not exactly one key=value"
        key, value = (_unescape(x, ",= ", go=go) for x in kv)
        assert key not in tags
        tags[key] = value
    # field set: split on commas outside quotes
    fields: dict[str, str] = {}
    j, quoted, escaped, in_value, start = 0, False, False, False, 0
    while j <= len(rest):
        ch = rest[j] if j < len(rest) else " "
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"' and in_value:  # a quote in a field key is just a character
            quoted = not quoted
        elif not quoted and ch == "=":
            in_value = True
        elif not quoted and ch in ", ":
            in_value = False
            key_raw, value = re.split(r"(?<!\\)=", rest[start:j], maxsplit=1)
            fields[_unescape(key_raw, ",= ", go=go)] = value
            start = j + 1
            if ch == " ":
                break
        j += 1
    timestamp = rest[j + 1 :] if j < len(rest) else ""
    return measurement, tags, fields, timestamp


def refused(s: str) -> bool:
    """What lineprotocol must refuse as a name (module docstring)."""
    return (
        s == ""
        or any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in s)
        or s.endswith("\\")
        or re.search(r"\\[\\,= ]", s) is not None
    )


# -- the escaping table ---------------------------------------------------------------------

ESCAPES = [
    # (function, input, expected output)
    (escape_measurement, "meter_reading", "meter_reading"),
    (escape_measurement, "meter reading", r"meter\ reading"),
    (escape_measurement, "a,b", r"a\,b"),
    (escape_measurement, "a=b", "a=b"),  # '=' is not special in a measurement
    (escape_measurement, 'a"b', 'a"b'),
    (escape_measurement, "南通能耗", "南通能耗"),
    (escape_measurement, r"C:\temp", r"C:\temp"),
    (escape_tag, "plain", "plain"),
    (escape_tag, "a b", r"a\ b"),
    (escape_tag, "a,b", r"a\,b"),
    (escape_tag, "a=b", r"a\=b"),
    (escape_tag, 'say "hi"', r"say\ \"hi\"".replace('\\"', '"')),
    (escape_tag, "x,evil=1 value=666", r"x\,evil\=1\ value\=666"),
    (escape_tag, "崇川区", "崇川区"),
    (escape_tag, r"C:\temp", r"C:\temp"),  # a backslash before an ordinary char stays as is
    (escape_tag, " lead", r"\ lead"),
    (escape_tag, "trail ", r"trail\ "),
    (escape_field_key, "value", "value"),
    (escape_field_key, "kWh total, net=x", r"kWh\ total\,\ net\=x"),
    (escape_string_field, "plain", '"plain"'),
    (escape_string_field, 'say "hi"', r'"say \"hi\""'),
    (escape_string_field, "back\\slash", r'"back\\slash"'),
    (escape_string_field, "ends\\", r'"ends\\"'),
    (escape_string_field, "two\nlines\r", '"two\nlines\r"'),
    (escape_string_field, "a,b=c d", '"a,b=c d"'),
    (escape_string_field, "", '""'),
]


@pytest.mark.parametrize(("fn", "raw", "expected"), ESCAPES)
def test_escaping_table(fn: object, raw: str, expected: str) -> None:
    assert fn(raw) == expected  # type: ignore[operator]


REFUSED = [
    (escape_tag, "", "empty"),
    (escape_tag, "ends\\", "ends with a backslash"),
    (escape_tag, "ends\\\\", "ends with a backslash"),
    (escape_tag, "lit\\,comma", "backslash before"),
    (escape_tag, "lit\\=eq", "backslash before"),
    (escape_tag, "lit\\ space", "backslash before"),
    (escape_tag, "two\\\\slashes", "backslash before"),
    (escape_tag, "new\nline", "control character"),
    (escape_tag, "carriage\rreturn", "control character"),
    (escape_tag, "tab\there", "control character"),
    (escape_tag, "nul\x00", "control character"),
    (escape_tag, "lone \ud800", "surrogate"),
    (escape_measurement, "#comment", "comment"),
    (escape_measurement, "", "empty"),
    (escape_measurement, "m\n", "control character"),
    (escape_field_key, "time", "reserved"),
    (escape_field_key, "", "empty"),
    (escape_field_key, "f\n", "control character"),
]


@pytest.mark.parametrize(("fn", "raw", "why"), REFUSED)
def test_refused_names(fn: object, raw: str, why: str) -> None:
    with pytest.raises(LineProtocolError, match=why):
        fn(raw)  # type: ignore[operator]


def test_error_is_a_greenmon_error() -> None:
    assert issubclass(LineProtocolError, GreenmonError)


# -- field values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.5, "1.5"),
        (0.1, "0.1"),
        (1.0, "1.0"),
        (-0.0, "-0.0"),
        (1e16, "1e+16"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (0, "0i"),
        (-42, "-42i"),
        (2**63 - 1, "9223372036854775807i"),
        (-(2**63), "-9223372036854775808i"),
        (True, "true"),
        (False, "false"),
        ("x", '"x"'),
    ],
)
def test_field_values(value: object, expected: str) -> None:
    assert format_field_value(value) == expected


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, 2**63, -(2**63) - 1, None, b"bytes", [1], "x" * 70000]
)
def test_field_values_refused(value: object) -> None:
    with pytest.raises(LineProtocolError):
        format_field_value(value)


def test_int_subclass_formats_as_number() -> None:
    import enum

    class Level(enum.IntEnum):
        HIGH = 3

    assert format_field_value(Level.HIGH) == "3i"


# -- whole lines -----------------------------------------------------------------------------


def test_format_line_sorts_tags_and_keeps_field_order() -> None:
    line = format_line(
        "meter_reading",
        {"meter": "E0001-EL-MAIN", "enterprise": "E0001", "carrier": "electricity"},
        {"value": 123456.78, "quality": 1, "ok": True},
        1748736900000000000,
    )
    assert line == (
        "meter_reading,carrier=electricity,enterprise=E0001,meter=E0001-EL-MAIN "
        "value=123456.78,quality=1i,ok=true 1748736900000000000"
    )


def test_format_line_without_tags_or_timestamp() -> None:
    assert format_line("m", {}, {"v": 1.0}) == "m v=1.0"


@pytest.mark.parametrize(
    ("tags", "fields", "ts", "why"),
    [
        ({}, {}, None, "at least one field"),
        ({"t": ""}, {"v": 1.0}, None, "empty"),
        ({"": "x"}, {"v": 1.0}, None, "empty"),
        ({"t": 1}, {"v": 1.0}, None, "must be a string"),
        ({"t": "x"}, {"t": 1.0}, None, "both tag and field"),
        ({"time": "x"}, {"v": 1.0}, None, "reserved"),
        ({"t": "x"}, {"v": math.nan}, None, "not finite"),
        ({"t": "x"}, {"v": 1.0}, 1.5, "integer"),
        ({"t": "x"}, {"v": 1.0}, True, "integer"),
        ({"t": "x"}, {"v": 1.0}, 2**63, "64 bits"),
        ({"t": "x,evil=1 value=666 1\nmeter_reading value=1"}, {"v": 1.0}, None, "control"),
    ],
)
def test_format_line_refuses(tags: dict, fields: dict, ts: object, why: str) -> None:
    with pytest.raises(LineProtocolError, match=why):
        format_line("m", tags, fields, ts)  # type: ignore[arg-type]


def test_format_line_error_names_the_tag() -> None:
    with pytest.raises(LineProtocolError) as info:
        format_line("meter_reading", {"meter": "C:\\"}, {"value": 1.0})
    assert "meter_reading" in str(info.value) and "'meter'" in str(info.value)


def test_injection_attempt_stays_one_tag() -> None:
    line = format_line("meter_reading", {"meter": "x,evil=1 value=666"}, {"value": 1.0}, 5)
    for go in (True, False):
        m, tags, fields, ts = reference_parse(line, go=go)
        assert (m, tags, fields, ts) == (
            "meter_reading",
            {"meter": "x,evil=1 value=666"},
            {"value": "1.0"},
            "5",
        )


def test_escape_tag_is_cached() -> None:
    escape_tag.cache_clear()
    escape_tag("enterprise-0001")
    escape_tag("enterprise-0001")
    assert escape_tag.cache_info().hits >= 1


# -- splitting bodies ------------------------------------------------------------------------


def test_split_lines_is_quote_aware() -> None:
    one = format_line("m", {"t": "a"}, {"s": "line1\nline2", "v": 1.0}, 1)
    two = format_line("m", {"t": "b"}, {"s": 'q"uote\n', "w": "x=1,y"}, 2)
    body = "\n".join([one, "", "# a comment", two]) + "\n"
    assert split_lines(body) == [one, two]
    assert list(iter_lines([one, "", two, body])) == [one, two, one, two]


def test_split_lines_plain() -> None:
    assert split_lines("a v=1 1\nb v=2 2\n\n") == ["a v=1 1", "b v=2 2"]


# -- properties ------------------------------------------------------------------------------

names = st.text(min_size=0, max_size=12)


@settings(max_examples=400)
@given(value=st.text(max_size=30).filter(lambda s: "\n" not in s))
def test_any_tag_value_is_one_line_with_one_tag_or_refused(value: str) -> None:
    try:
        line = format_line("meter_reading", {"meter": value}, {"value": 1.0}, 1)
    except LineProtocolError:
        assert refused(value)
        return
    assert not refused(value)
    assert "\n" not in line and "\r" not in line
    assert split_lines(line) == [line]
    for go in (True, False):
        m, tags, fields, ts = reference_parse(line, go=go)
        assert m == "meter_reading"
        assert tags == {"meter": value}  # exactly one tag, exactly the value
        assert fields == {"value": "1.0"}
        assert ts == "1"


@settings(max_examples=300)
@given(
    measurement=names,
    tags=st.dictionaries(names, names, max_size=4),
    fields=st.dictionaries(
        names,
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False),
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.booleans(),
            st.text(max_size=20),
        ),
        min_size=1,
        max_size=4,
    ),
    ts=st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
)
def test_any_point_round_trips_or_is_refused(
    measurement: str, tags: dict[str, str], fields: dict[str, object], ts: int | None
) -> None:
    try:
        line = format_line(measurement, tags, fields, ts)  # type: ignore[arg-type]
    except LineProtocolError:
        names_used = [measurement, *tags, *tags.values(), *fields]
        assert (
            any(refused(n) for n in names_used)
            or measurement.startswith("#")
            or not set(tags).isdisjoint(fields)
            or {"time", "_field", "_measurement"} & (set(tags) | set(fields))
            or any(isinstance(v, str) and re.search("[\ud800-\udfff]", v) for v in fields.values())
        )
        return
    assert split_lines(line + "\n" + line) == [line, line]
    for go in (True, False):
        m, got_tags, got_fields, got_ts = reference_parse(line, go=go)
        assert m == measurement
        assert got_tags == tags
        assert list(got_fields) == list(fields)
        for key, value in fields.items():
            raw = got_fields[key]
            if isinstance(value, bool):
                assert raw == ("true" if value else "false")
            elif isinstance(value, int):
                assert raw == f"{value}i"
            elif isinstance(value, float):
                assert float(raw) == value
            else:
                assert _parse_string(raw) == value
        assert got_ts == ("" if ts is None else str(ts))
