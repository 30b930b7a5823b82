"""Reading the production files the way their tools do: Compose (with its variable
interpolation and `.env`), systemd unit files, env files, and greenmon's own command tree."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import BaseModel

from greenmon.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PROD = ROOT / "deploy" / "production"
COMPOSE = PROD / "compose.yaml"
ENV_EXAMPLE = PROD / ".env.example"
UNITS = sorted((PROD / "systemd").glob("*.service"))
GREENMON_BIN = "/opt/greenmon/bin/greenmon"

# Compose's interpolation: $$ (a literal $), ${VAR}, ${VAR:-default}, ${VAR-default},
# ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, $VAR.
_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])"
    r"(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    pass


def variables(node: Any) -> set[str]:
    """Every variable the values of a parsed Compose file refer to (comments aside)."""
    if isinstance(node, str):
        return {m.group("braced") or m.group("bare") for m in _VAR.finditer(node)} - {None}
    if isinstance(node, list):
        return set().union(*map(variables, node)) if node else set()
    if isinstance(node, dict):
        return set().union(*map(variables, node.values())) if node else set()
    return set()


def interpolate(value: str, env: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        val = env.get(name)
        unset_or_empty = val is None or (val == "" and (op or "").startswith(":"))
        if op in (":-", "-"):
            return arg if unset_or_empty else str(val)
        if op in (":?", "?"):
            if unset_or_empty:
                raise InterpolationError(f"{name}: {arg}")
            return str(val)
        if op in (":+", "+"):
            return "" if unset_or_empty else arg
        return "" if val is None else val

    return _VAR.sub(sub, value)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(x, env) for x in node]
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    return node


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (comments and blank lines skipped), as Compose and systemd read them."""
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{path.name}:{n}: not KEY=VALUE: {line!r}")
        out[key] = value
    return out


def raw_compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def example_env(fill_secrets: bool = True) -> dict[str, str]:
    """.env.example as an operator would fill it in (secrets get placeholder values)."""
    env = read_env_file(ENV_EXAMPLE)
    return {k: (v or f"test-{k.lower()}") if fill_secrets else v for k, v in env.items()}


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file as Compose sees it: YAML merge keys resolved, variables interpolated
    (from .env.example with the secrets filled in, unless `env` is given)."""
    return dict(interpolate_tree(raw_compose(), example_env() if env is None else env))


# -- greenmon's settings and command tree ------------------------------------------------------
def settings_env_names() -> set[str]:
    """Every GREENMON_* variable name that configures a setting (nested with __)."""
    names: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            ann = info.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name.upper()}__")
            else:
                names.add(f"{prefix}{name.upper()}")

    walk(Settings, "GREENMON_")
    return names


def greenmon_command() -> Any:
    from greenmon.cli import app

    return typer.main.get_command(app)


def usage_error() -> type[Exception]:
    """The exception the command line raises for a bad command or option (recent Typer
    releases carry their own copy of Click)."""
    try:
        from typer._click.exceptions import UsageError
    except ImportError:
        from click.exceptions import UsageError
    return UsageError  # type: ignore[no-any-return]


def parse_greenmon(args: list[str]) -> list[Any]:
    """Parse `greenmon ARGS` with the real command tree, down to the last subcommand, as the
    command line would (unknown commands, options and bad values raise `usage_error()`);
    nothing is run. Returns the Click contexts, outermost first."""
    root = greenmon_command()
    ctx = root.make_context("greenmon", list(args), resilient_parsing=False)
    contexts = [ctx]
    cmd = root
    while hasattr(cmd, "resolve_command"):  # a group
        protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
        rest = [*protected, *ctx.args]
        if not rest:
            break
        name, sub, remaining = cmd.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        ctx = sub.make_context(name, remaining, parent=ctx)
        contexts.append(ctx)
        cmd = sub
    return contexts


# -- systemd unit files ------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    path: Path
    entries: tuple[tuple[str, str, str], ...]  # (section, key, value), in file order

    def values(self, section: str, key: str) -> list[str]:
        return [v for s, k, v in self.entries if s == section and k == key]

    def value(self, section: str, key: str) -> str | None:
        vals = self.values(section, key)
        return vals[-1] if vals else None

    def exec_start(self, instance: str = "1") -> list[str]:
        line = self.value("Service", "ExecStart")
        assert line is not None, f"{self.path.name}: no ExecStart"
        return shlex.split(line.replace("%i", instance))

    def environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for value in self.values("Service", "Environment"):
            for item in shlex.split(value):
                key, _, val = item.partition("=")
                env[key] = val
        return env


def parse_unit(path: Path) -> Unit:
    """systemd's unit syntax: [Section] headers, Key=Value lines, # and ; comments, keys that
    repeat (each occurrence kept), backslash continuation."""
    entries: list[tuple[str, str, str]] = []
    section = ""
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path.name}: not Key=Value: {line!r}")
        entries.append((section, key.strip(), value.strip()))
    return Unit(path, tuple(entries))


def units() -> Iterator[Unit]:
    for path in UNITS:
        yield parse_unit(path)
