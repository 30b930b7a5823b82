"""Where each key of a TOML document sits: key path -> physical line (first line = 1).

`tomllib` parses TOML but forgets positions, and a validation error found after parsing must
still name the line a user has to edit. `key_lines` scans the text once, the way a TOML
parser reads its structure — table headers ``[a.b]``, arrays of tables ``[[rules]]`` (each one
an index), ``key = value`` lines with bare, quoted or dotted keys — and skips over values that
span several lines (multi-line strings and arrays), so their content is never mistaken for a
key. It only locates; correctness of the document is `tomllib`'s job (call it first), and a
key path it cannot place (a key inside an inline table or a multi-line array) falls back to
the nearest enclosing path it knows (`line_of`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["KeyPath", "key_lines", "line_of"]

KeyPath = tuple[str | int, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _read_key(text: str, pos: int) -> tuple[list[str], int] | None:
    """Parse a (possibly dotted, possibly quoted) key starting at `pos`; return its parts and
    the position after it, or None if there is no key there."""
    parts: list[str] = []
    n = len(text)
    while True:
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos >= n:
            return None
        ch = text[pos]
        if ch == '"':
            end = pos + 1
            buf = []
            while end < n and text[end] != '"':
                if text[end] == "\\" and end + 1 < n:
                    buf.append(_unescape(text[end : end + 2]))
                    end += 2
                    continue
                buf.append(text[end])
                end += 1
            if end >= n:
                return None
            parts.append("".join(buf))
            pos = end + 1
        elif ch == "'":
            end = text.find("'", pos + 1)
            if end < 0:
                return None
            parts.append(text[pos + 1 : end])
            pos = end + 1
        else:
            m = _BARE.match(text, pos)
            if not m:
                return None
            parts.append(m.group())
            pos = m.end()
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos < n and text[pos] == ".":
            pos += 1
            continue
        return parts, pos


def _unescape(pair: str) -> str:
    return {'\\"': '"', "\\\\": "\\", "\\n": "\n", "\\t": "\t"}.get(pair, pair[1])


def _scan_value(text: str, pos: int, state: list[int]) -> str | None:
    """Advance over a value from `pos` to the end of the line. Returns the multi-line string
    delimiter still open at the end of the line, if any; `state[0]` holds the bracket depth
    (arrays and inline tables) still open."""
    n = len(text)
    while pos < n:
        ch = text[pos]
        if ch == "#":
            return None
        if text.startswith('"""', pos) or text.startswith("'''", pos):
            delim = text[pos : pos + 3]
            end = text.find(delim, pos + 3)
            if end < 0:
                return delim
            pos = end + 3
            continue
        if ch == '"':
            pos += 1
            while pos < n and text[pos] != '"':
                pos += 2 if text[pos] == "\\" else 1
            pos += 1
            continue
        if ch == "'":
            end = text.find("'", pos + 1)
            pos = n if end < 0 else end + 1
            continue
        if ch in "[{":
            state[0] += 1
        elif ch in "]}":
            state[0] -= 1
        pos += 1
    return None


def key_lines(text: str) -> dict[KeyPath, int]:
    """Map every table header and key of the document to its line (first line = 1)."""
    lines: dict[KeyPath, int] = {}
    table: KeyPath = ()
    array_counts: dict[KeyPath, int] = {}
    open_string: str | None = None
    depth = [0]
    for number, raw in enumerate(text.splitlines(), start=1):
        if open_string is not None:
            end = raw.find(open_string)
            if end < 0:
                continue
            rest_at = end + 3
            open_string = _scan_value(raw, rest_at, depth)
            continue
        if depth[0] > 0:
            open_string = _scan_value(raw, 0, depth)
            continue
        stripped = raw.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(raw) - len(stripped)
        if stripped.startswith("[["):
            parsed = _read_key(raw, indent + 2)
            if parsed is None:
                continue
            head = _resolve(tuple(parsed[0][:-1]), array_counts)
            base: KeyPath = (*head, parsed[0][-1])
            index = array_counts.get(base, -1) + 1
            array_counts[base] = index
            # Tables nested below an earlier element restart with the new element.
            for key in [k for k in array_counts if len(k) > len(base) and k[: len(base)] == base]:
                del array_counts[key]
            table = (*base, index)
            lines.setdefault(base, number)
            lines[table] = number
            continue
        if stripped.startswith("["):
            parsed = _read_key(raw, indent + 1)
            if parsed is None:
                continue
            table = _resolve(tuple(parsed[0]), array_counts)
            lines[table] = number
            for i in range(1, len(table)):  # [a.b] defines a (unless a has its own line)
                lines.setdefault(table[:i], number)
            continue
        parsed = _read_key(raw, indent)
        if parsed is None:
            continue
        parts, pos = parsed
        if pos >= len(raw) or raw[pos] != "=":
            continue
        path: KeyPath = (*table, *parts)
        lines[path] = number
        for i in range(len(table) + 1, len(path)):  # dotted keys define their parents
            lines.setdefault(path[:i], number)
        open_string = _scan_value(raw, pos + 1, depth)
    return lines


def _resolve(path: tuple[str, ...], array_counts: dict[KeyPath, int]) -> KeyPath:
    """``[a.b]`` below ``[[a]]`` means the last element of ``a``: insert the indices."""
    out: list[str | int] = []
    for part in path:
        out.append(part)
        index = array_counts.get(tuple(out))
        if index is not None:
            out.append(index)
    return tuple(out)


def line_of(lines: dict[KeyPath, int], path: Sequence[str | int]) -> int | None:
    """The line of `path`, else of its nearest enclosing path that has one."""
    key = tuple(path)
    while key:
        if key in lines:
            return lines[key]
        key = key[:-1]
    return None
