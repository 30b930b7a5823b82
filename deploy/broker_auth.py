"""Broker credentials and ACL for the MQTT ingest path (Mosquitto password file + ACL file).

Owns who may do what on the broker: every gateway gets its own user `{enterprise}.{gateway}`
that may only PUBLISH under `{prefix}/{enterprise}/{gateway}/#`; one ingestor user may only
SUBSCRIBE to (read) `{prefix}/#`; anonymous access is turned off in the broker config
(`LocalServices(..., broker_auth=...)` locally, deploy/README.md in production).

- `acl_text` is a pure function of the gateway list, the topic prefix and the ingestor name.
- `validate_gateways` / `load_gateways_csv` check the ids (the CSV has the columns
  `enterprise_id,gateway_id`) and name the offending row in a `BrokerAuthError`.
- `write_broker_auth` writes `passwd` (hashed by the real `mosquitto_passwd -U`, never by us),
  `acl`, `credentials.csv` (username,password,topic: one row per gateway, to hand to the
  gateway vendors) and `ingestor.env` (the ingestor's `GREENMON_MQTT_USERNAME/PASSWORD`).

Passwords are generated with `secrets` (or supplied), kept as `pydantic.SecretStr`, written
only to 0600 files and never put in logs, reprs or exception messages.
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
import shutil
import string
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from greenmon.errors import GreenmonError

DEFAULT_PREFIX = "greenmon/v1"
DEFAULT_INGESTOR_USER = "greenmon-ingestor"
GATEWAYS_CSV_COLUMNS = ("enterprise_id", "gateway_id")
CREDENTIALS_CSV_COLUMNS = ("username", "password", "topic")
PASSWORD_LENGTH = 32  # from 62 letters and digits: ~190 bits
_PASSWORD_ALPHABET = string.ascii_letters + string.digits
MIN_PASSWORD_LENGTH = 12

_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/bin", "/usr/sbin", "/usr/local/bin"]
)
_HASHED = re.compile(r"^\$[67]\$")


class BrokerAuthError(GreenmonError):
    """Broker credentials or ACL could not be built; the message names the bad row or file."""


@dataclass(frozen=True)
class Gateway:
    """One gateway allowed on the broker: an enterprise id and the gateway's own id."""

    enterprise_id: str
    gateway_id: str

    @property
    def username(self) -> str:
        return f"{self.enterprise_id}.{self.gateway_id}"

    def topic_filter(self, prefix: str = DEFAULT_PREFIX) -> str:
        """Everything this gateway may publish to."""
        return f"{prefix}/{self.enterprise_id}/{self.gateway_id}/#"

    def readings_topic(self, prefix: str = DEFAULT_PREFIX) -> str:
        """The topic DESIGN.md §3 fixes for its readings."""
        return f"{prefix}/{self.enterprise_id}/{self.gateway_id}/readings"


@dataclass(frozen=True)
class BrokerCredential:
    """A broker user; `topic` is the readings topic (gateway) or the read filter (ingestor)."""

    username: str
    password: SecretStr
    topic: str


@dataclass(frozen=True)
class BrokerAuthFiles:
    """What `write_broker_auth` wrote: paths for mosquitto.conf and the credentials."""

    directory: Path
    passwd: Path
    acl: Path
    credentials_csv: Path
    ingestor_env: Path
    prefix: str
    ingestor: BrokerCredential
    gateways: tuple[BrokerCredential, ...]

    def gateway(self, enterprise_id: str, gateway_id: str) -> BrokerCredential:
        """The credential of one gateway (KeyError naming the username if unknown)."""
        username = Gateway(enterprise_id, gateway_id).username
        for cred in self.gateways:
            if cred.username == username:
                return cred
        raise KeyError(username)


# -- validation ---------------------------------------------------------------------------------
def _id_problem(value: str) -> str | None:
    """Why `value` cannot be an enterprise or gateway id, or None if it can."""
    if value == "":
        return "is empty"
    if any(ch.isspace() for ch in value):
        return "contains whitespace"
    if any(not ch.isprintable() for ch in value):
        return "contains a control character"
    for ch, why in (
        ("/", "'/' (the MQTT topic level separator)"),
        ("+", "'+' (an MQTT wildcard)"),
        ("#", "'#' (an MQTT wildcard)"),
        (".", "'.' (it separates enterprise and gateway in the username)"),
        (":", "':' (the password file separator)"),
    ):
        if ch in value:
            return f"contains {why}"
    return None


def validate_prefix(prefix: str) -> str:
    """The topic prefix, checked: levels without wildcards, whitespace or a leading `$`."""
    if (
        prefix == ""
        or prefix.startswith(("/", "$"))
        or prefix.endswith("/")
        or "//" in prefix
        or any(ch in "+#" or ch.isspace() or not ch.isprintable() for ch in prefix)
    ):
        raise BrokerAuthError(
            f"topic prefix {prefix!r} is invalid: it needs one or more non-empty levels "
            "without '+', '#', whitespace, a leading '$' or a leading/trailing '/'"
        )
    return prefix


def validate_username(username: str, what: str = "ingestor user name") -> str:
    """A user name for the password file, the ACL and ingestor.env."""
    if (
        username == ""
        or any(ch in ":'\"\\" for ch in username)
        or any(ch.isspace() or not ch.isprintable() for ch in username)
    ):
        raise BrokerAuthError(
            f"{what} {username!r} is invalid: it must be non-empty, without whitespace, "
            "':', quotes or backslashes"
        )
    return username


def _validate_rows(rows: Iterable[tuple[str, str, str]]) -> list[Gateway]:
    """rows: (where, enterprise_id, gateway_id); `where` names the row in errors."""
    seen: dict[str, str] = {}
    out: list[Gateway] = []
    for where, enterprise_id, gateway_id in rows:
        for field, value in (("enterprise_id", enterprise_id), ("gateway_id", gateway_id)):
            problem = _id_problem(value)
            if problem is not None:
                raise BrokerAuthError(f"{where}: {field} {value!r} {problem}")
        gw = Gateway(enterprise_id, gateway_id)
        if gw.username in seen:
            raise BrokerAuthError(
                f"{where}: gateway {gw.username!r} is listed twice (first at {seen[gw.username]})"
            )
        seen[gw.username] = where
        out.append(gw)
    return out


def validate_gateways(
    pairs: Iterable[tuple[str, str] | Gateway], *, source: str = "gateways"
) -> list[Gateway]:
    """Check `(enterprise_id, gateway_id)` pairs; errors say `{source} row N` (1-based)."""
    rows: list[tuple[str, str, str]] = []
    for i, pair in enumerate(pairs, start=1):
        enterprise_id, gateway_id = (
            (pair.enterprise_id, pair.gateway_id) if isinstance(pair, Gateway) else pair
        )
        rows.append((f"{source} row {i}", enterprise_id, gateway_id))
    return _validate_rows(rows)


def load_gateways_csv(path: Path) -> list[Gateway]:
    """Read a `gateways.csv`: header `enterprise_id,gateway_id` (other columns are ignored).

    UTF-8 (a BOM is fine); cells are stripped; blank lines are skipped. Errors name the file
    and line, e.g. `gateways.csv line 4: gateway_id 'gw 7' contains whitespace`.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerAuthError(f"cannot read {path}: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in GATEWAYS_CSV_COLUMNS if c not in header]
    if missing:
        raise BrokerAuthError(
            f"{path.name}: missing column(s) {', '.join(missing)}; "
            f"the header must include {','.join(GATEWAYS_CSV_COLUMNS)}"
        )
    reader.fieldnames = header
    rows: list[tuple[str, str, str]] = []
    for record in reader:
        values = {k: (v or "").strip() for k, v in record.items() if isinstance(k, str)}
        if not any(values.values()):
            continue
        rows.append(
            (f"{path.name} line {reader.line_num}", values["enterprise_id"], values["gateway_id"])
        )
    if not rows:
        raise BrokerAuthError(f"{path.name}: no gateways listed")
    return _validate_rows(rows)


# -- the ACL (pure) -----------------------------------------------------------------------------
def acl_text(
    gateways: Iterable[tuple[str, str] | Gateway],
    *,
    prefix: str = DEFAULT_PREFIX,
    ingestor_user: str = DEFAULT_INGESTOR_USER,
) -> str:
    """The Mosquitto ACL file: the ingestor reads `{prefix}/#`, each gateway writes its own tree.

    Mosquitto denies everything an ACL does not grant, so gateways can neither subscribe nor
    publish elsewhere, and the ingestor cannot publish. Shared subscriptions
    (`$share/<group>/{prefix}/#`) are checked against the same `read` line.
    """
    prefix = validate_prefix(prefix)
    ingestor_user = validate_username(ingestor_user)
    gws = validate_gateways(gateways)
    _check_no_collision(gws, ingestor_user)
    lines = [
        "# Mosquitto ACL generated by greenmon (greenmon.deploy.broker_auth); regenerate, do not",
        "# edit. Anything not granted here is denied; anonymous clients are refused by",
        "# `allow_anonymous false` in mosquitto.conf.",
        "",
        "# Ingestor: subscribes to every gateway's topics, publishes nothing.",
        f"user {ingestor_user}",
        f"topic read {prefix}/#",
    ]
    if gws:
        lines += ["", "# Gateways: each publishes only under its own enterprise/gateway tree."]
    for gw in gws:
        lines += ["", f"user {gw.username}", f"topic write {gw.topic_filter(prefix)}"]
    return "\n".join(lines) + "\n"


def _check_no_collision(gateways: Sequence[Gateway], ingestor_user: str) -> None:
    for gw in gateways:
        if gw.username == ingestor_user:
            raise BrokerAuthError(
                f"ingestor user name {ingestor_user!r} is also a gateway's user name"
            )


# -- passwords and files ------------------------------------------------------------------------
def generate_password() -> SecretStr:
    """A fresh random password: letters and digits only, so that no spreadsheet reads it as
    a formula and no shell or web form mangles it (32 characters, ~190 bits)."""
    return SecretStr("".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH)))


def _check_password(username: str, password: SecretStr, forbidden: str = ":") -> None:
    value = password.get_secret_value()
    if (
        len(value) < MIN_PASSWORD_LENGTH
        or value.startswith("$")  # mosquitto_passwd -U would take it for a hash
        or any(ch in forbidden for ch in value)
        or any(ch.isspace() or not ch.isprintable() for ch in value)
    ):
        # Never echo the password itself.
        raise BrokerAuthError(
            f"the password supplied for {username!r} is unusable: it needs at least "
            f"{MIN_PASSWORD_LENGTH} printable characters, no leading '$', no whitespace or "
            + " ".join(repr(ch) for ch in forbidden)
        )


def read_credentials_csv(path: Path) -> dict[str, SecretStr]:
    """username → password from an earlier `credentials.csv` (to keep passwords on rerun)."""
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"username", "password"} <= set(reader.fieldnames):
                raise BrokerAuthError(f"{path.name}: expected columns username,password,topic")
            return {
                row["username"]: SecretStr(row["password"])
                for row in reader
                if row.get("username") and row.get("password")
            }
    except OSError as exc:
        raise BrokerAuthError(f"cannot read {path}: {exc}") from exc


def _private_tmp(path: Path, text: str) -> Path:
    """Write `text` to a fresh 0600 temp file next to `path`; returns the temp path."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fd = -1
            fh.write(text)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _find_mosquitto_passwd(binary: str | None) -> str:
    path = binary or shutil.which("mosquitto_passwd", path=_SEARCH_PATH)
    if path is None:
        raise BrokerAuthError(
            "`mosquitto_passwd` not found; install it with `apt-get install -y mosquitto`"
        )
    return path


def _hash_password_file(
    tmp: Path, binary: str, usernames: Sequence[str], secrets_: Sequence[str]
) -> None:
    """`mosquitto_passwd -U` turns the plain `user:password` file into hashes, in place."""
    try:
        res = subprocess.run(
            [binary, "-U", str(tmp)],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerAuthError(f"could not run {binary}: {type(exc).__name__}") from None
    if res.returncode != 0:
        detail = (res.stderr or res.stdout).strip()
        for s in secrets_:
            detail = detail.replace(s, "***")
        raise BrokerAuthError(f"mosquitto_passwd -U failed (exit {res.returncode}): {detail}")
    lines = tmp.read_text(encoding="utf-8").splitlines()
    hashed = [line.partition(":") for line in lines if line]
    if [u for u, _, _ in hashed] != list(usernames) or not all(
        _HASHED.match(h) for _, _, h in hashed
    ):
        raise BrokerAuthError("mosquitto_passwd -U did not produce the expected hashed file")


def write_broker_auth(
    directory: Path,
    gateways: Iterable[tuple[str, str] | Gateway],
    *,
    prefix: str = DEFAULT_PREFIX,
    ingestor_user: str = DEFAULT_INGESTOR_USER,
    passwords: Mapping[str, SecretStr | str] | None = None,
    mosquitto_passwd: str | None = None,
) -> BrokerAuthFiles:
    """Write `passwd`, `acl`, `credentials.csv` and `ingestor.env` into `directory`.

    `passwords` maps user names to passwords to keep (e.g. `read_credentials_csv` of the
    previous run, so that adding a gateway does not rotate everyone); every other user gets
    a new `generate_password()`. All files are 0600 and replaced atomically.
    """
    prefix = validate_prefix(prefix)
    ingestor_user = validate_username(ingestor_user)
    gws = validate_gateways(gateways)
    _check_no_collision(gws, ingestor_user)
    binary = _find_mosquitto_passwd(mosquitto_passwd)
    supplied = {
        k: v if isinstance(v, SecretStr) else SecretStr(v) for k, v in (passwords or {}).items()
    }

    def password_for(username: str, forbidden: str = ":") -> SecretStr:
        pw = supplied.get(username)
        if pw is None:
            return generate_password()
        _check_password(username, pw, forbidden)
        return pw

    # The ingestor's password is single-quoted in ingestor.env: no quote, no backslash.
    ingestor = BrokerCredential(ingestor_user, password_for(ingestor_user, ":'\\"), f"{prefix}/#")
    creds = tuple(
        BrokerCredential(gw.username, password_for(gw.username), gw.readings_topic(prefix))
        for gw in gws
    )
    users = [ingestor, *creds]

    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "passwd": directory / "passwd",
        "acl": directory / "acl",
        "credentials_csv": directory / "credentials.csv",
        "ingestor_env": directory / "ingestor.env",
    }
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CREDENTIALS_CSV_COLUMNS)
    for c in creds:
        writer.writerow([c.username, c.password.get_secret_value(), c.topic])
    env = (
        "# greenmon ingestor's broker login (secret: keep mode 0600). Load with\n"
        "#   set -a; . ./ingestor.env; set +a\n"
        f"GREENMON_MQTT_USERNAME='{ingestor.username}'\n"
        f"GREENMON_MQTT_PASSWORD='{ingestor.password.get_secret_value()}'\n"
    )
    plain = "".join(f"{u.username}:{u.password.get_secret_value()}\n" for u in users)

    tmps: dict[str, Path] = {}
    try:
        tmps["passwd"] = _private_tmp(paths["passwd"], plain)
        _hash_password_file(
            tmps["passwd"],
            binary,
            [u.username for u in users],
            [u.password.get_secret_value() for u in users],
        )
        tmps["acl"] = _private_tmp(
            paths["acl"], acl_text(gws, prefix=prefix, ingestor_user=ingestor_user)
        )
        tmps["credentials_csv"] = _private_tmp(paths["credentials_csv"], buf.getvalue())
        tmps["ingestor_env"] = _private_tmp(paths["ingestor_env"], env)
        for key, tmp in tmps.items():
            os.chmod(tmp, 0o600)
            os.replace(tmp, paths[key])
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
    return BrokerAuthFiles(
        directory=directory,
        passwd=paths["passwd"],
        acl=paths["acl"],
        credentials_csv=paths["credentials_csv"],
        ingestor_env=paths["ingestor_env"],
        prefix=prefix,
        ingestor=ingestor,
        gateways=creds,
    )


def _read_env(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip().strip("'")
    return out


def read_broker_auth(directory: Path) -> BrokerAuthFiles:
    """The `BrokerAuthFiles` of a directory `write_broker_auth` filled earlier.

    For starting a broker from files made before (e.g. `LocalServices(..., broker_auth=...)`);
    the prefix is taken from the ACL's ingestor `topic read` line.
    """
    directory = directory.resolve()
    paths = {
        name: directory / name for name in ("passwd", "acl", "credentials.csv", "ingestor.env")
    }
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing:
        raise BrokerAuthError(f"{directory}: missing {', '.join(missing)}; generate them first")
    try:
        acl = paths["acl"].read_text(encoding="utf-8").splitlines()
        env = _read_env(paths["ingestor.env"])
        with paths["credentials.csv"].open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BrokerAuthError(f"cannot read {directory}: {type(exc).__name__}") from None
    reads = [line.split(None, 2)[2] for line in acl if line.startswith("topic read ")]
    user, password = env.get("GREENMON_MQTT_USERNAME"), env.get("GREENMON_MQTT_PASSWORD")
    if len(reads) != 1 or not reads[0].endswith("/#") or not user or not password:
        raise BrokerAuthError(f"{directory}: acl or ingestor.env is not what greenmon writes")
    try:
        gateways = tuple(
            BrokerCredential(r["username"], SecretStr(r["password"]), r["topic"]) for r in rows
        )
    except (KeyError, TypeError):
        raise BrokerAuthError(
            f"{paths['credentials.csv']}: expected columns {','.join(CREDENTIALS_CSV_COLUMNS)}"
        ) from None
    return BrokerAuthFiles(
        directory=directory,
        passwd=paths["passwd"],
        acl=paths["acl"],
        credentials_csv=paths["credentials.csv"],
        ingestor_env=paths["ingestor.env"],
        prefix=reads[0][:-2],
        ingestor=BrokerCredential(user, SecretStr(password), reads[0]),
        gateways=gateways,
    )
