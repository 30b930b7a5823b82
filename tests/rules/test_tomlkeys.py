"""`key_lines`: every key path of a TOML document mapped to its line, one table of cases."""

from __future__ import annotations

import tomllib

import pytest

from greenmon.rules.tomlkeys import key_lines, line_of

DOC = '''\
# comment = 1
title = "x"          # line 2
[meta]
kind = "alerts"
"quoted key" = 'v'   # line 5
a.b.c = 1            # dotted: line 6

[total]
red_tolerance = 0.05
note = """
fake = 1
"""
list = [
  1,
  [2, 3],
]
after = true         # line 17

[[rules]]
name = "one"
[rules.params]
k = 1                # line 22

[[rules]]
name = "two"         # line 25
[[rules.steps]]
x = 1                # line 27
[[rules.steps]]
x = 2                # line 29
inline = { y = 1 }   # line 30
'literal.key' = 3    # line 31
'''

CASES = [
    (("title",), 2),
    (("meta",), 3),
    (("meta", "kind"), 4),
    (("meta", "quoted key"), 5),
    (("meta", "a", "b", "c"), 6),
    (("meta", "a"), 6),
    (("total", "red_tolerance"), 9),
    (("total", "note"), 10),
    (("total", "list"), 13),
    (("total", "after"), 17),
    (("rules",), 19),
    (("rules", 0), 19),
    (("rules", 0, "name"), 20),
    (("rules", 0, "params", "k"), 22),
    (("rules", 1, "name"), 25),
    (("rules", 1, "steps", 0, "x"), 27),
    (("rules", 1, "steps", 1, "x"), 29),
    (("rules", 1, "steps", 1, "inline"), 30),
    (("rules", 1, "steps", 1, "literal.key"), 31),
]


def test_document_is_valid_toml() -> None:
    data = tomllib.loads(DOC)
    assert data["rules"][1]["steps"][1]["x"] == 2


@pytest.mark.parametrize(("path", "line"), CASES, ids=[".".join(map(str, c[0])) for c in CASES])
def test_key_line(path: tuple[str | int, ...], line: int) -> None:
    assert key_lines(DOC)[path] == line


def test_content_of_multiline_values_is_not_a_key() -> None:
    lines = key_lines(DOC)
    assert ("total", "fake") not in lines
    assert ("comment",) not in lines


def test_line_of_falls_back_to_enclosing_path() -> None:
    lines = key_lines(DOC)
    assert line_of(lines, ("rules", 1, "steps", 1, "inline", "y")) == 30
    assert line_of(lines, ("total", "list", 1)) == 13
    assert line_of(lines, ("nowhere",)) is None


def test_a_table_header_locates_its_parent_tables() -> None:
    lines = key_lines("[meta]\nkind = 'x'\n\n[groups.land]\nweight = 1\n[groups.air]\nweight = 2\n")
    assert lines[("groups",)] == 4  # the first header that names it
    assert lines[("groups", "air")] == 6
    # a parent with a header of its own keeps it
    assert key_lines("[a]\nx = 1\n[a.b]\ny = 2\n")[("a",)] == 1
