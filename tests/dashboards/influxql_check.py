"""A small InfluxQL reader for the dashboard tests: which measurements, tags and fields a query
refers to, checked against the DESIGN §3 contract.

It reads the subset of InfluxQL greenmon writes (SELECT with functions, arithmetic, AS, nested
subqueries in FROM, WHERE with tag/field comparisons and regexes, GROUP BY time()/tags, fill,
ORDER BY, LIMIT, tz; SHOW TAG VALUES ... WITH KEY ... WHERE) and insists on one house rule
that makes the check exact: every measurement, tag and field name is double-quoted. A bare
word that is not a keyword or function is an error, so nothing can slip past unchecked.

`check(query, contract)` returns a list of problems (empty = the query only touches the
contract). Grafana's macros and template variables must be substituted first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: measurement -> (tags, fields)
Contract = dict[str, tuple[frozenset[str], frozenset[str]]]

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<ident>"(?:[^"\\]|\\.)*")
  | (?P<duration>\d+(?:\.\d+)?(?:ns|u|µ|ms|s|m|h|d|w)\b)
  | (?P<number>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>=~|!~|!=|<>|<=|>=|[=<>*/+\-(),;.])
    """,
    re.VERBOSE,
)
_REGEX = re.compile(r"/(?:[^/\\]|\\.)*/")
_KEYWORDS = {
    "select",
    "from",
    "where",
    "group",
    "by",
    "and",
    "or",
    "as",
    "fill",
    "none",
    "null",
    "previous",
    "linear",
    "order",
    "desc",
    "asc",
    "limit",
    "slimit",
    "offset",
    "soffset",
    "tz",
    "show",
    "tag",
    "values",
    "with",
    "key",
    "measurements",
    "field",
    "keys",
    "time",
    "true",
    "false",
    "not",
    "in",
}
_FUNCTIONS = {
    "sum",
    "count",
    "last",
    "first",
    "mean",
    "max",
    "min",
    "spread",
    "median",
    "mode",
    "stddev",
    "distinct",
    "integral",
    "non_negative_derivative",
    "non_negative_difference",
    "derivative",
    "difference",
    "moving_average",
    "cumulative_sum",
    "elapsed",
    "percentile",
}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str

    @property
    def lower(self) -> str:
        return self.text.lower()


def tokenize(query: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(query):
        prev = tokens[-1].text if tokens else ""
        if prev in ("=~", "!~"):
            m = _REGEX.match(query, pos)
            if m is None:
                while pos < len(query) and query[pos].isspace():
                    pos += 1
                m = _REGEX.match(query, pos)
            if m is None:
                raise ValueError(f"expected a /regex/ at {pos}: {query[pos : pos + 30]!r}")
            tokens.append(Token("regex", m.group()))
            pos = m.end()
            continue
        m = _TOKEN.match(query, pos)
        if m is None:
            raise ValueError(f"cannot read InfluxQL at {pos}: {query[pos : pos + 30]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            tokens.append(Token(m.lastgroup or "", m.group()))
    return tokens


def _name(token: Token) -> str:
    return token.text[1:-1].replace('\\"', '"')


@dataclass
class _Select:
    """One SELECT level: its sources and the names it uses, by clause."""

    measurements: list[str] = field(default_factory=list)
    subqueries: list[_Select] = field(default_factory=list)
    selected: list[str] = field(default_factory=list)  # names inside the SELECT list
    aliases: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    regex_tags: list[str] = field(default_factory=list)  # compared with =~ / !~
    group_by: list[str] = field(default_factory=list)
    bare: list[str] = field(default_factory=list)

    def outputs(self) -> set[str]:
        """What an outer query can name: aliases, selected names and grouped tags."""
        return {*self.aliases, *self.selected, *self.group_by}


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.t = tokens
        self.i = 0

    def peek(self, offset: int = 0) -> Token | None:
        j = self.i + offset
        return self.t[j] if j < len(self.t) else None

    def take(self) -> Token:
        tok = self.t[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok.lower != text:
            raise ValueError(f"expected {text!r}, got {tok.text!r}")

    def select(self) -> _Select:
        sel = _Select()
        self.expect("select")
        clause = "select"
        depth = 0
        while self.peek() is not None:
            tok = self.peek()
            assert tok is not None
            if tok.text == ")" and depth == 0:
                break  # end of this subquery
            if tok.lower == "from" and depth == 0:
                self.take()
                self._sources(sel)
                clause = "after_from"
                continue
            if tok.lower == "where" and depth == 0:
                clause = "where"
            elif tok.lower == "group" and depth == 0:
                clause = "group"
            elif tok.lower in ("order", "limit", "slimit", "tz", "fill") and depth == 0:
                clause = "tail"
            self.take()
            if tok.text == "(":
                depth += 1
            elif tok.text == ")":
                depth -= 1
            elif tok.kind == "ident":
                name = _name(tok)
                prev = self.t[self.i - 2] if self.i >= 2 else None
                nxt = self.peek()
                if clause == "select":
                    if prev is not None and prev.lower == "as":
                        sel.aliases.append(name)
                    else:
                        sel.selected.append(name)
                elif clause == "where":
                    sel.where.append(name)
                    if nxt is not None and nxt.text in ("=~", "!~"):
                        sel.regex_tags.append(name)
                elif clause == "group":
                    sel.group_by.append(name)
            elif tok.kind == "word" and tok.lower not in _KEYWORDS | _FUNCTIONS:
                sel.bare.append(tok.text)
        return sel

    def _sources(self, sel: _Select) -> None:
        while True:
            tok = self.take()
            if tok.text == "(":
                sel.subqueries.append(self.select())
                self.expect(")")
            elif tok.kind == "ident":
                nxt = self.peek()
                if nxt is not None and nxt.text == ".":  # "retention policy"."measurement"
                    self.take()
                    tok = self.take()
                    if tok.kind != "ident":
                        raise ValueError(
                            f"expected a quoted measurement after '.', got {tok.text!r}"
                        )
                sel.measurements.append(_name(tok))
            else:
                raise ValueError(
                    f"FROM expects a quoted measurement or a subquery, got {tok.text!r}"
                )
            nxt = self.peek()
            if nxt is None or nxt.text != ",":
                return
            self.take()


def _check_select(sel: _Select, contract: Contract, problems: list[str]) -> None:
    for sub in sel.subqueries:
        _check_select(sub, contract, problems)
    for word in sel.bare:
        problems.append(f"unquoted name {word!r} (quote every measurement, tag and field)")
    available_tags: set[str] = set()
    available_fields: set[str] = set()
    for m in sel.measurements:
        if m not in contract:
            problems.append(f"measurement {m!r} is not in DESIGN §3")
            continue
        tags, fields = contract[m]
        available_tags |= tags
        available_fields |= fields
    from_subqueries: set[str] = set()
    for sub in sel.subqueries:
        from_subqueries |= sub.outputs()
    for name in sel.selected:
        if name not in available_fields | available_tags | from_subqueries:
            problems.append(f"selects {name!r}: not a field or tag of {sel.measurements}")
        elif name in available_tags and name not in available_fields and sel.measurements:
            pass  # selecting a tag value as a column is fine
    for name in sel.where:
        if name not in available_fields | available_tags | from_subqueries:
            problems.append(f"filters on {name!r}: not a field or tag of {sel.measurements}")
    for name in sel.regex_tags:
        if sel.measurements and name not in available_tags:
            problems.append(f"regex on {name!r}: not a tag of {sel.measurements}")
    for name in sel.group_by:
        if sel.measurements and name not in available_tags:
            problems.append(f"groups by {name!r}: not a tag of {sel.measurements}")
        if sel.subqueries and not sel.measurements and name not in from_subqueries:
            problems.append(f"groups by {name!r}: the subquery does not group by it")


def check(query: str, contract: Contract) -> list[str]:
    """Problems with `query` against `contract` (empty list: it only uses the contract)."""
    try:
        tokens = tokenize(query)
        if not tokens:
            return ["empty query"]
        head = tokens[0].lower
        if head == "show":
            return _check_show(tokens, contract)
        if head != "select":
            return [f"not a SELECT or SHOW statement: {tokens[0].text!r}"]
        parser = _Parser(tokens)
        sel = parser.select()
        if parser.peek() is not None:
            return [f"unexpected {parser.peek().text!r} after the statement"]  # type: ignore[union-attr]
    except (ValueError, IndexError) as exc:
        return [f"cannot parse: {exc}"]
    problems: list[str] = []
    _check_select(sel, contract, problems)
    return problems


def _check_show(tokens: list[Token], contract: Contract) -> list[str]:
    words = [t.lower for t in tokens[:3]]
    if words != ["show", "tag", "values"]:
        return [f"only SHOW TAG VALUES is expected, got {' '.join(words)}"]
    problems: list[str] = []
    idents = [(i, t) for i, t in enumerate(tokens) if t.kind == "ident"]
    if not idents or tokens[idents[0][0] - 1].lower != "from":
        return ['SHOW TAG VALUES without FROM "measurement"']
    measurement = _name(idents[0][1])
    if measurement not in contract:
        return [f"measurement {measurement!r} is not in DESIGN §3"]
    tags, _ = contract[measurement]
    for _, tok in idents[1:]:
        if _name(tok) not in tags:
            problems.append(f"{_name(tok)!r} is not a tag of {measurement!r}")
    for tok in tokens:
        if tok.kind == "word" and tok.lower not in _KEYWORDS:
            problems.append(f"unquoted name {tok.text!r}")
    return problems
