"""Throwaway TLS material for development and tests: a private CA, a server certificate for
the loopback broker and, optionally, client certificates. NOT for production.

Owns calling the `openssl` CLI (1.1.1 or 3.x; the `cryptography` package is not a dependency)
to make an EC P-256 CA, a server certificate whose subjectAltName covers 127.0.0.1, ::1 and
localhost (or the hosts given), and client certificates whose CN can be a broker user name
(for Mosquitto's `require_certificate` / `use_identity_as_username`). Private keys are 0600.
Production certificates come from the organisation's PKI or ACME: see deploy/README.md.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from greenmon.errors import GreenmonError

DEFAULT_HOSTS = ("127.0.0.1", "::1", "localhost")
DEFAULT_DAYS = 30
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/usr/local/bin"])


class TlsError(GreenmonError):
    """The dev certificates could not be made; the message says which openssl step failed."""


@dataclass(frozen=True)
class TlsFiles:
    """Paths of a dev CA, the broker's certificate and key, and optionally a client's."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path | None = None
    client_key: Path | None = None

    @classmethod
    def in_directory(cls, directory: Path, client_name: str | None = None) -> TlsFiles:
        """The files `create_dev_tls` wrote into `directory` earlier (checked to exist)."""
        d = directory.resolve()
        client = (
            (d / f"client-{client_name}.crt", d / f"client-{client_name}.key")
            if client_name is not None
            else (None, None)
        )
        tls = cls(d, d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key", *client)
        missing = [
            p.name
            for p in (tls.ca_cert, tls.ca_key, tls.server_cert, tls.server_key, *client)
            if p is not None and not p.is_file()
        ]
        if missing:
            raise TlsError(f"{d}: missing {', '.join(missing)}; create them with create_dev_tls")
        return tls


def _openssl(binary: str | None) -> str:
    path = binary or shutil.which("openssl", path=_SEARCH_PATH)
    if path is None:
        raise TlsError("`openssl` not found; install it with `apt-get install -y openssl`")
    return path


def _run(openssl: str, step: str, *args: str, cwd: Path) -> None:
    try:
        res = subprocess.run(
            [openssl, *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            umask=0o077,  # every file openssl creates (keys first of all) starts as 0600
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TlsError(f"{step}: could not run openssl: {exc}") from exc
    if res.returncode != 0:
        raise TlsError(f"{step}: openssl failed (exit {res.returncode}):\n{res.stderr.strip()}")


def _check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise TlsError(
            f"{what} {name!r} is invalid: use 1-64 characters from A-Z a-z 0-9 . _ - "
            "(starting with a letter or digit)"
        )
    return name


def _alt_names(hosts: Sequence[str]) -> str:
    if not hosts:
        raise TlsError("the server certificate needs at least one host name or IP address")
    ips, dns = [], []
    for host in hosts:
        try:
            ips.append(str(ipaddress.ip_address(host)))
        except ValueError:
            dns.append(_check_name(host, "host name"))
    lines = [f"IP.{i} = {ip}" for i, ip in enumerate(ips, start=1)]
    lines += [f"DNS.{i} = {d}" for i, d in enumerate(dns, start=1)]
    return "\n".join(lines)


_CA_CONF = """\
[req]
prompt = no
distinguished_name = dn
x509_extensions = v3_ca
[dn]
O = greenmon development
CN = greenmon throwaway dev CA - do not trust
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

_LEAF_CONF = """\
[req]
prompt = no
distinguished_name = dn
[dn]
O = greenmon development
CN = {cn}
[v3_leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = {eku}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
{san}
"""


def _new_key(openssl: str, key: Path) -> None:
    _run(
        openssl,
        f"key {key.name}",
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        str(key),
        cwd=key.parent,
    )
    os.chmod(key, 0o600)


def _issue(
    openssl: str,
    ca_cert: Path,
    ca_key: Path,
    *,
    stem: str,
    cn: str,
    eku: str,
    san: str,
    days: int,
) -> tuple[Path, Path]:
    """Key + certificate `{stem}.key/.crt` signed by the CA."""
    directory = ca_cert.parent
    key, cert = directory / f"{stem}.key", directory / f"{stem}.crt"
    csr, conf = directory / f"{stem}.csr", directory / f"{stem}.cnf"
    san_section = f"subjectAltName = @alt\n[alt]\n{san}\n" if san else ""
    conf.write_text(_LEAF_CONF.format(cn=cn, eku=eku, san=san_section), encoding="utf-8")
    try:
        _new_key(openssl, key)
        _run(
            openssl,
            f"request {stem}",
            "req",
            "-new",
            "-key",
            str(key),
            "-config",
            str(conf),
            "-out",
            str(csr),
            cwd=directory,
        )
        _run(
            openssl,
            f"sign {stem}",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_cert),
            "-CAkey",
            str(ca_key),
            "-set_serial",
            str(secrets.randbits(63) + 1),
            "-days",
            str(days),
            "-sha256",
            "-extfile",
            str(conf),
            "-extensions",
            "v3_leaf",
            "-out",
            str(cert),
            cwd=directory,
        )
    finally:
        csr.unlink(missing_ok=True)
        conf.unlink(missing_ok=True)
    os.chmod(cert, 0o644)
    return cert, key


def create_client_certificate(
    tls: TlsFiles, name: str, *, days: int = DEFAULT_DAYS, openssl: str | None = None
) -> tuple[Path, Path]:
    """Issue `client-{name}.crt/.key` from the dev CA; CN = `name` (e.g. a broker user name)."""
    _check_name(name, "client name")
    return _issue(
        _openssl(openssl),
        tls.ca_cert,
        tls.ca_key,
        stem=f"client-{name}",
        cn=name,
        eku="clientAuth",
        san="",
        days=days,
    )


def create_dev_tls(
    directory: Path,
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    client_name: str | None = None,
    days: int = DEFAULT_DAYS,
    openssl: str | None = None,
) -> TlsFiles:
    """A new throwaway CA + server certificate for `hosts` (+ a client certificate if named).

    Files in `directory`: ca.crt, ca.key, server.crt, server.key[, client-{name}.crt/.key].
    For development and tests only: the CA key lies next to the certificates.
    """
    if not 1 <= days <= 3650:
        raise TlsError(f"days must be between 1 and 3650, not {days}")
    san = _alt_names(hosts)
    if client_name is not None:
        _check_name(client_name, "client name")
    binary = _openssl(openssl)
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    ca_conf = directory / "ca.cnf"
    ca_conf.write_text(_CA_CONF, encoding="utf-8")
    try:
        _new_key(binary, ca_key)
        _run(
            binary,
            "CA certificate",
            "req",
            "-new",
            "-x509",
            "-key",
            str(ca_key),
            "-config",
            str(ca_conf),
            "-days",
            str(days),
            "-sha256",
            "-set_serial",
            str(secrets.randbits(63) + 1),
            "-out",
            str(ca_cert),
            cwd=directory,
        )
    finally:
        ca_conf.unlink(missing_ok=True)
    os.chmod(ca_cert, 0o644)
    server_cert, server_key = _issue(
        binary,
        ca_cert,
        ca_key,
        stem="server",
        cn=next((h for h in hosts if not _is_ip(h)), hosts[0]),
        eku="serverAuth",
        san=san,
        days=days,
    )
    tls = TlsFiles(directory, ca_cert, ca_key, server_cert, server_key)
    if client_name is None:
        return tls
    client_cert, client_key = create_client_certificate(tls, client_name, days=days, openssl=binary)
    return TlsFiles(directory, ca_cert, ca_key, server_cert, server_key, client_cert, client_key)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
