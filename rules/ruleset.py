"""Rule files: versioned TOML shipped in the package, overridable by the user, validated once.

Every rule, criterion, weight, cut-off and tolerance the rules stage uses lives in a TOML file
under ``greenmon/rules/data/``. Each file starts with a ``[meta]`` table (`RuleMeta`): which
kind of file it is, its version, the status of its values and their source. A stage describes
a file's shape as a pydantic model derived from `RuleDocument` and calls `load_rules`:

- the packaged file is read; a user file (``--rules FILE``, ``--criteria FILE``) is merged
  over it: tables merge key by key, any other value (numbers, strings, arrays) replaces the
  packaged one, so a user file holds only what it changes — or a whole file of its own;
- the merged document is validated once; every problem is reported at once, each naming the
  file that holds the key (the user's, else the packaged one), the line and the dotted key
  (``my-alerts.toml:7: total.red_tolerance: Input should be greater than or equal to 0``),
  and raised as one `RuleFileError` (a `ConfigError`: the command exits with code 2);
- checks that span several keys (an indicator naming a group that does not exist) live in
  the model's `RuleDocument.cross_check`, run after validation; their problems are named the
  same way;
- the result carries `RuleFileInfo` — the files, versions, statuses and a digest — whose
  `label` every output prints, so a report always says which rules judged it.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from greenmon.rules.errors import RuleFileError, RuleFileProblem
from greenmon.rules.tomlkeys import KeyPath, key_lines, line_of

__all__ = [
    "PACKAGE_DATA",
    "LoadedRules",
    "RuleDocument",
    "RuleFileInfo",
    "RuleMeta",
    "Status",
    "load_rules",
    "packaged_path",
]

PACKAGE_DATA = "greenmon.rules"  # files live in greenmon/rules/data/

#: How far a value can be trusted (the same words as the reference data):
#: ``verified`` — read in the official text (or a verbatim repost of it);
#: ``third-party`` — only in secondary material; ``unverified`` — not found, a stand-in;
#: ``assumption`` — greenmon's own documented choice where no official number exists;
#: ``placeholder`` — a value to be replaced by the user before decisions rest on it.
Status = Literal["verified", "third-party", "unverified", "assumption", "placeholder"]


class RuleMeta(BaseModel):
    """The ``[meta]`` table every rule file starts with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(min_length=1, description="which kind of file this is, e.g. 'alerts'")
    version: str = Field(min_length=1)
    status: Status
    source: str = Field(min_length=1, description="where the values come from")
    description: str = ""


class RuleDocument(BaseModel):
    """Base of every rule-file model: frozen, unknown keys refused, a ``[meta]`` table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    meta: RuleMeta

    def cross_check(self) -> Iterable[tuple[KeyPath, str]]:
        """Problems that involve several keys, as (key path, reason); none by default.

        Called once the document has validated; `load_rules` names each problem's file and
        line from its key path (``(("indicators", 2, "group"), "unknown group 'x'")``).
        """
        return ()


D = TypeVar("D", bound=RuleDocument)


@dataclass(frozen=True, slots=True)
class RuleFileInfo:
    """Which files made a rule set: shown in every output that used it."""

    kind: str
    files: tuple[str, ...]  # packaged first, then the user's override, if any
    versions: tuple[str, ...]
    statuses: tuple[str, ...]
    digest: str  # sha256 of the files' bytes, first 12 hex digits

    @property
    def label(self) -> str:
        parts = [
            f"{file} {'v' + version if version[0].isalnum() else version} ({status})"
            for file, version, status in zip(self.files, self.versions, self.statuses, strict=True)
        ]
        return " + ".join(parts) + f" [sha256 {self.digest}]"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "files": list(self.files),
            "versions": list(self.versions),
            "statuses": list(self.statuses),
            "digest": self.digest,
            "label": self.label,
        }


@dataclass(frozen=True, slots=True)
class LoadedRules(Generic[D]):
    """A validated rule document and where it came from."""

    rules: D
    info: RuleFileInfo


@dataclass(frozen=True, slots=True)
class _Doc:
    name: str  # as shown in messages
    data: dict[str, Any]
    lines: dict[KeyPath, int]
    raw: bytes


def packaged_path(name: str) -> str:
    """How a packaged file is named in messages and labels."""
    return f"greenmon/rules/data/{name}"


def _parse(name: str, raw: bytes) -> _Doc:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RuleFileError(
            [RuleFileProblem(name, line, None, "not UTF-8 text (save the file as UTF-8)")]
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)"; keep it whole.
        raise RuleFileError([RuleFileProblem(name, None, None, f"not valid TOML: {exc}")]) from exc
    return _Doc(name, data, key_lines(text), raw)


def _read_packaged(name: str | Path) -> _Doc:
    if isinstance(name, Path):  # a base file outside the package (tests, tools)
        return _read_user(name)
    raw = resources.files(PACKAGE_DATA).joinpath("data", name).read_bytes()
    return _parse(packaged_path(name), raw)


def _read_user(path: Path) -> _Doc:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise RuleFileError([RuleFileProblem(str(path), None, None, "file not found")]) from exc
    except OSError as exc:
        raise RuleFileError(
            [RuleFileProblem(str(path), None, None, f"cannot read: {exc.strerror or exc}")]
        ) from exc
    return _parse(str(path), raw)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; anything else in `over` replaces what `base` has."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _depth(lines: dict[KeyPath, int], loc: KeyPath) -> int:
    """How many leading parts of `loc` the document has a line for."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return n
    return 0


def _reason(err: Mapping[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _locate(loc: KeyPath, reason: str, docs: list[_Doc]) -> RuleFileProblem:
    # The key lives in the file that names most of its path; the user's file wins ties.
    best = max(reversed(docs), key=lambda d: _depth(d.lines, loc))
    key = ".".join(str(p) for p in loc) or None
    return RuleFileProblem(best.name, line_of(best.lines, loc), key, reason)


def _problems(exc: ValidationError, docs: list[_Doc]) -> list[RuleFileProblem]:
    return [_locate(tuple(err["loc"]), _reason(err), docs) for err in exc.errors()]


def load_rules(
    model: type[D], packaged: str | Path, override: Path | None = None, *, kind: str | None = None
) -> LoadedRules[D]:
    """Load the packaged rule file `packaged` (a name under ``greenmon/rules/data/``, or a
    path), merge
    the user's `override` over it, validate the result against `model`.

    `kind` (default: the packaged file's ``meta.kind``) is what ``meta.kind`` must say in a
    user file that names one, so that a criteria file is not taken for an alert-rules file.
    Raises `RuleFileError` naming file, line and key for every problem.
    """
    docs = [_read_packaged(packaged)]
    expected = kind or str(docs[0].data.get("meta", {}).get("kind", ""))
    if override is not None:
        user = _read_user(override)
        user_kind = user.data.get("meta", {}).get("kind")
        if user_kind is not None and user_kind != expected:
            raise RuleFileError(
                [
                    RuleFileProblem(
                        user.name,
                        line_of(user.lines, ("meta", "kind")),
                        "meta.kind",
                        f"this is a '{user_kind}' file; expected '{expected}'",
                    )
                ]
            )
        docs.append(user)
    merged: dict[str, Any] = {}
    for doc in docs:
        merged = _merge(merged, doc.data)
    try:
        rules = model.model_validate(merged)
    except ValidationError as exc:
        raise RuleFileError(_problems(exc, docs)) from exc
    crossed = [_locate(tuple(loc), reason, docs) for loc, reason in rules.cross_check()]
    if crossed:
        raise RuleFileError(crossed)
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(doc.raw)
    metas = [doc.data.get("meta", {}) for doc in docs]
    info = RuleFileInfo(
        kind=rules.meta.kind,
        files=tuple(doc.name for doc in docs),
        versions=tuple(str(m.get("version", "(no version)")) for m in metas),
        statuses=tuple(str(m.get("status", "status not stated")) for m in metas),
        digest=digest.hexdigest()[:12],
    )
    return LoadedRules(rules, info)
