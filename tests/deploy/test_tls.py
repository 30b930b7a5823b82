"""Dev TLS material from the `openssl` CLI, and a real Mosquitto speaking MQTT over TLS
(`LocalServices(..., tls=...)`, with and without broker auth and client certificates)."""

from __future__ import annotations

import queue
import ssl
import stat
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import SecretStr

from greenmon.deploy.broker_auth import BrokerAuthFiles, write_broker_auth
from greenmon.deploy.local import LocalServices
from greenmon.deploy.tls import TlsError, TlsFiles, create_client_certificate, create_dev_tls
from greenmon.errors import GreenmonError, ServicesError

WAIT = 5.0
NO_CONNACK_WAIT = 2.0


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the files ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return create_dev_tls(tmp_path_factory.mktemp("tls"), client_name="E0001.gw-01")


def test_dev_tls_files(tls: TlsFiles) -> None:
    assert tls.client_cert is not None and tls.client_key is not None
    assert {p.name for p in tls.directory.iterdir()} == {
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
        "client-E0001.gw-01.crt",
        "client-E0001.gw-01.key",
    }
    for key in (tls.ca_key, tls.server_key, tls.client_key):
        assert _mode(key) == 0o600, key
    for cert in (tls.ca_cert, tls.server_cert, tls.client_cert):
        assert _mode(cert) == 0o644, cert
    # Both leaves chain to the CA, under OpenSSL's strict X.509 checks.
    res = _openssl(
        "verify",
        "-x509_strict",
        "-CAfile",
        str(tls.ca_cert),
        str(tls.server_cert),
        str(tls.client_cert),
    )
    assert res.returncode == 0, res.stderr
    san = _openssl("x509", "-in", str(tls.server_cert), "-noout", "-ext", "subjectAltName")
    assert "IP Address:127.0.0.1" in san.stdout and "DNS:localhost" in san.stdout
    purpose = _openssl("x509", "-in", str(tls.server_cert), "-noout", "-ext", "extendedKeyUsage")
    assert "TLS Web Server Authentication" in purpose.stdout
    subject = _openssl("x509", "-in", str(tls.client_cert), "-noout", "-subject").stdout
    assert "CN = E0001.gw-01" in subject or "CN=E0001.gw-01" in subject
    # Python's own verifier accepts the CA and the server chain.
    ctx = ssl.create_default_context(cafile=str(tls.ca_cert))
    ctx.load_cert_chain(str(tls.client_cert), str(tls.client_key))


def test_tls_files_in_directory(tls: TlsFiles, tmp_path: Path) -> None:
    assert TlsFiles.in_directory(tls.directory, client_name="E0001.gw-01") == tls
    server_only = TlsFiles.in_directory(tls.directory)
    assert server_only.server_cert == tls.server_cert and server_only.client_cert is None
    with pytest.raises(TlsError, match=r"missing client-nobody\.crt, client-nobody\.key"):
        TlsFiles.in_directory(tls.directory, client_name="nobody")
    with pytest.raises(TlsError, match=r"missing ca\.crt"):
        TlsFiles.in_directory(tmp_path)


def test_extra_client_certificate(tls: TlsFiles) -> None:
    cert, key = create_client_certificate(tls, "greenmon-ingestor")
    assert cert.name == "client-greenmon-ingestor.crt" and _mode(key) == 0o600
    res = _openssl("verify", "-CAfile", str(tls.ca_cert), str(cert))
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"client_name": "bad/name"}, "client name 'bad/name' is invalid"),
        ({"client_name": "has space"}, "client name 'has space' is invalid"),
        ({"client_name": "$HOME"}, "client name '$HOME' is invalid"),
        ({"hosts": ()}, "at least one host"),
        ({"hosts": ("127.0.0.1", "bad host")}, "host name 'bad host' is invalid"),
        ({"days": 0}, "days must be between"),
        ({"openssl": "/nonexistent/openssl"}, "could not run openssl"),
    ],
)
def test_dev_tls_errors(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(TlsError) as err:
        create_dev_tls(tmp_path, **kwargs)  # type: ignore[arg-type]
    assert message in str(err.value)
    assert isinstance(err.value, GreenmonError)


def test_require_certificate_needs_tls(tmp_path: Path) -> None:
    with pytest.raises(ServicesError, match="needs TLS"):
        LocalServices(tmp_path, require_client_certificate=True)


# -- against the real broker ----------------------------------------------------------------------
class Client:
    """A paho 2.x MQTT 5 client over TLS with bounded waits."""

    def __init__(
        self,
        port: int,
        *,
        ca: Path | None,
        cert: tuple[Path, Path] | None = None,
        login: tuple[str, SecretStr] | None = None,
        use_tls: bool = True,
    ) -> None:
        self.port = port
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"t-{uuid.uuid4().hex[:10]}",
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        if use_tls:
            # Verification stays on: CERT_REQUIRED and host name checks (paho's defaults).
            self.c.tls_set(
                ca_certs=str(ca) if ca else None,
                certfile=str(cert[0]) if cert else None,
                keyfile=str(cert[1]) if cert else None,
            )
        if login is not None:
            self.c.username_pw_set(login[0], login[1].get_secret_value())
        self.connack: ReasonCode | None = None
        self.connected = threading.Event()
        self.acked = threading.Event()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = lambda *_a: self.acked.set()
        self.c.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))

    def _on_connect(self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        self.connack = rc
        self.connected.set()

    def connect(self, wait: float = WAIT) -> ReasonCode | None:
        self.c.connect("127.0.0.1", self.port, keepalive=10)
        self.c.loop_start()
        self.connected.wait(wait)
        return self.connack

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for cli in opened:
        cli.close()


def _port(svc: LocalServices) -> int:
    return int(urlsplit(svc.mqtt_url).port or 0)


@pytest.fixture(scope="module")
def tls_broker(
    tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles
) -> Iterator[tuple[LocalServices, BrokerAuthFiles]]:
    """Production-like: password + ACL and TLS on the one listener."""
    root = tmp_path_factory.mktemp("tls_broker")
    auth = write_broker_auth(root / "auth", [("E0001", "gw-01")])
    svc = LocalServices(root / "run", broker_auth=auth, tls=tls)
    svc.up()
    try:
        yield svc, auth
    finally:
        svc.down()


@pytest.mark.integration
def test_tls_conf_and_url(tls_broker: tuple[LocalServices, BrokerAuthFiles], tls: TlsFiles) -> None:
    svc, _ = tls_broker
    assert svc.mqtt_url.startswith("mqtts://127.0.0.1:")
    lines = (svc.runtime_dir / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    assert sum(line.startswith("listener ") for line in lines) == 1
    for line in (
        f"cafile {tls.ca_cert}",
        f"certfile {tls.server_cert}",
        f"keyfile {tls.server_key}",
        "require_certificate false",
        "allow_anonymous false",
    ):
        assert line in lines


@pytest.mark.integration
def test_messages_flow_over_tls_with_the_ca(
    tls_broker: tuple[LocalServices, BrokerAuthFiles], tls: TlsFiles, clients: list[Client]
) -> None:
    svc, auth = tls_broker
    gw_cred = auth.gateway("E0001", "gw-01")
    ingestor = Client(
        _port(svc), ca=tls.ca_cert, login=(auth.ingestor.username, auth.ingestor.password)
    )
    gw = Client(_port(svc), ca=tls.ca_cert, login=(gw_cred.username, gw_cred.password))
    clients += [ingestor, gw]
    for cli in (ingestor, gw):
        rc = cli.connect()
        assert rc is not None and not rc.is_failure, rc
        assert cli.c.socket() is not None and isinstance(cli.c.socket(), ssl.SSLSocket)
    ingestor.c.subscribe("greenmon/v1/#", qos=1)
    assert ingestor.acked.wait(WAIT)
    info = gw.c.publish(gw_cred.topic, b"over-tls", qos=1)
    info.wait_for_publish(WAIT)
    assert ingestor.messages.get(timeout=WAIT) == (gw_cred.topic, b"over-tls")


@pytest.mark.integration
def test_client_without_the_ca_cannot_connect(
    tls_broker: tuple[LocalServices, BrokerAuthFiles], clients: list[Client]
) -> None:
    svc, auth = tls_broker
    cli = Client(_port(svc), ca=None, login=(auth.ingestor.username, auth.ingestor.password))
    clients.append(cli)
    with pytest.raises(ssl.SSLCertVerificationError):
        cli.connect()
    assert cli.connack is None


@pytest.mark.integration
def test_plain_mqtt_is_not_served_on_the_tls_listener(
    tls_broker: tuple[LocalServices, BrokerAuthFiles], clients: list[Client]
) -> None:
    svc, auth = tls_broker
    cli = Client(
        _port(svc), ca=None, login=(auth.ingestor.username, auth.ingestor.password), use_tls=False
    )
    clients.append(cli)
    assert cli.connect(NO_CONNACK_WAIT) is None


@pytest.mark.integration
def test_require_client_certificate(tmp_path: Path, tls: TlsFiles, clients: list[Client]) -> None:
    assert tls.client_cert is not None and tls.client_key is not None
    svc = LocalServices(tmp_path, tls=tls, require_client_certificate=True)
    svc.up()
    try:
        conf = (tmp_path / "mosquitto" / "mosquitto.conf").read_text().splitlines()
        assert "require_certificate true" in conf and "allow_anonymous true" in conf
        with_cert = Client(_port(svc), ca=tls.ca_cert, cert=(tls.client_cert, tls.client_key))
        clients.append(with_cert)
        rc = with_cert.connect()
        assert rc is not None and not rc.is_failure, rc

        without = Client(_port(svc), ca=tls.ca_cert)
        clients.append(without)
        try:
            rc = without.connect(NO_CONNACK_WAIT)
        except (ssl.SSLError, OSError):
            rc = None  # TLS 1.2 fails in the handshake, TLS 1.3 right after it
        assert rc is None or rc.is_failure
    finally:
        svc.down()
