"""Broker auth and ACL: pure tables for the ACL text and id checks, the generated files, and
what a real Mosquitto (started by `LocalServices(..., broker_auth=...)`) lets each user do."""

from __future__ import annotations

import os
import queue
import signal
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import SecretStr

from greenmon.deploy.broker_auth import (
    BrokerAuthError,
    BrokerAuthFiles,
    Gateway,
    acl_text,
    load_gateways_csv,
    read_broker_auth,
    read_credentials_csv,
    validate_gateways,
    validate_prefix,
    write_broker_auth,
)
from greenmon.deploy.local import LocalServices
from greenmon.errors import GreenmonError

WAIT = 5.0  # every wait for something that must happen
QUIET = 0.5  # extra wait, after a later control message arrived, for what must not arrive
NOT_AUTHORIZED = 0x87


# -- pure: the ACL text -------------------------------------------------------------------------
def _rules(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize(
    ("gateways", "prefix", "ingestor", "expected"),
    [
        (
            [("E0001", "gw-01")],
            "greenmon/v1",
            "greenmon-ingestor",
            [
                "user greenmon-ingestor",
                "topic read greenmon/v1/#",
                "user E0001.gw-01",
                "topic write greenmon/v1/E0001/gw-01/#",
            ],
        ),
        (
            [("E0001", "gw-01"), ("E0001", "gw-02"), ("E0002", "gw-01")],
            "greenmon/v1",
            "ingest",
            [
                "user ingest",
                "topic read greenmon/v1/#",
                "user E0001.gw-01",
                "topic write greenmon/v1/E0001/gw-01/#",
                "user E0001.gw-02",
                "topic write greenmon/v1/E0001/gw-02/#",
                "user E0002.gw-01",
                "topic write greenmon/v1/E0002/gw-01/#",
            ],
        ),
        (
            [Gateway("320612-ACME", "line_3")],
            "nantong/energy/v1",
            "greenmon-ingestor",
            [
                "user greenmon-ingestor",
                "topic read nantong/energy/v1/#",
                "user 320612-ACME.line_3",
                "topic write nantong/energy/v1/320612-ACME/line_3/#",
            ],
        ),
        (
            [],
            "greenmon/v1",
            "greenmon-ingestor",
            ["user greenmon-ingestor", "topic read greenmon/v1/#"],
        ),
        (
            [("企业1", "网关1")],
            "gm",
            "i",
            ["user i", "topic read gm/#", "user 企业1.网关1", "topic write gm/企业1/网关1/#"],
        ),
    ],
)
def test_acl_text(
    gateways: list[tuple[str, str] | Gateway], prefix: str, ingestor: str, expected: list[str]
) -> None:
    text = acl_text(gateways, prefix=prefix, ingestor_user=ingestor)
    assert _rules(text) == expected
    assert text.endswith("\n")
    # Nothing but `user` and `topic read|write` lines: no `pattern`, no deny-less wildcards.
    assert all(r.startswith(("user ", "topic read ", "topic write ")) for r in _rules(text))


def test_acl_text_is_deterministic_and_keeps_input_order() -> None:
    pairs = [("E0002", "gw-01"), ("E0001", "gw-01")]
    assert acl_text(pairs) == acl_text(list(pairs))
    users = [r for r in _rules(acl_text(pairs)) if r.startswith("user ")]
    assert users == ["user greenmon-ingestor", "user E0002.gw-01", "user E0001.gw-01"]


# -- pure: id, prefix and user-name validation --------------------------------------------------
@pytest.mark.parametrize(
    ("pair", "fragment"),
    [
        (("E 0001", "gw-01"), "enterprise_id 'E 0001' contains whitespace"),
        (("E0001", "gw\t01"), "gateway_id 'gw\\t01' contains whitespace"),
        (("E0001", ""), "gateway_id '' is empty"),
        (("", "gw-01"), "enterprise_id '' is empty"),
        (("E0001/x", "gw-01"), "contains '/'"),
        (("E0001", "gw+"), "contains '+'"),
        (("E0001", "#"), "contains '#'"),
        (("E0001.a", "gw-01"), "contains '.'"),
        (("E0001", "gw.01"), "contains '.'"),
        (("E0001", "gw:01"), "contains ':'"),
        (("E0001", "gw\x0001"), "control character"),
    ],
)
def test_bad_ids_name_the_row(pair: tuple[str, str], fragment: str) -> None:
    rows = [("E0001", "ok-1"), pair]
    with pytest.raises(BrokerAuthError) as err:
        validate_gateways(rows)
    assert str(err.value).startswith("gateways row 2: ")
    assert fragment in str(err.value)
    assert isinstance(err.value, GreenmonError)
    with pytest.raises(BrokerAuthError):
        acl_text(rows)


def test_duplicate_gateway_is_refused() -> None:
    with pytest.raises(
        BrokerAuthError, match=r"row 3: gateway 'E1.g1' is listed twice \(first at gateways row 1\)"
    ):
        validate_gateways([("E1", "g1"), ("E1", "g2"), ("E1", "g1")])


def test_good_ids_pass() -> None:
    gws = validate_gateways([("E0001", "gw-01"), ("320612_X", "GW_7"), Gateway("企业", "网关")])
    assert [g.username for g in gws] == ["E0001.gw-01", "320612_X.GW_7", "企业.网关"]
    assert gws[0].readings_topic() == "greenmon/v1/E0001/gw-01/readings"
    assert gws[0].topic_filter("p/q") == "p/q/E0001/gw-01/#"


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "/greenmon/v1",
        "greenmon/v1/",
        "greenmon//v1",
        "greenmon/#",
        "green+mon",
        "$SYS/x",
        "green mon",
        "gm\n",
    ],
)
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(BrokerAuthError, match="topic prefix"):
        validate_prefix(prefix)
    with pytest.raises(BrokerAuthError, match="topic prefix"):
        acl_text([("E1", "g1")], prefix=prefix)


@pytest.mark.parametrize("prefix", ["greenmon/v1", "greenmon", "a/b/c/d", "nantong-energy/v2"])
def test_good_prefix(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize("user", ["", "in gest", "in:gest", "ingest\n", "in'gest", "in\\gest"])
def test_bad_ingestor_user(user: str) -> None:
    with pytest.raises(BrokerAuthError, match="ingestor user name"):
        acl_text([("E1", "g1")], ingestor_user=user)


def test_ingestor_user_must_not_be_a_gateway_user() -> None:
    with pytest.raises(BrokerAuthError, match="also a gateway"):
        acl_text([("greenmon", "ingestor")], ingestor_user="greenmon.ingestor")


# -- gateways.csv ---------------------------------------------------------------------------------
def test_load_gateways_csv(tmp_path: Path) -> None:
    path = tmp_path / "gateways.csv"
    path.write_text(
        "\ufeffenterprise_id, gateway_id ,vendor\nE0001,gw-01,Acme\n\n E0002 , gw-01 ,\n",
        encoding="utf-8",
    )
    assert load_gateways_csv(path) == [Gateway("E0001", "gw-01"), Gateway("E0002", "gw-01")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("enterprise,gateway\nE1,g1\n", "missing column(s) enterprise_id, gateway_id"),
        ("enterprise_id,gateway_id\n", "no gateways listed"),
        (
            "enterprise_id,gateway_id\nE1,g1\nE2,g 2\n",
            "gateways.csv line 3: gateway_id 'g 2' contains whitespace",
        ),
        (
            "enterprise_id,gateway_id\nE1,g1\nE1.x,g1\n",
            "gateways.csv line 3: enterprise_id 'E1.x' contains '.'",
        ),
        ("enterprise_id,gateway_id\nE1,g1\nE1\n", "gateways.csv line 3: gateway_id '' is empty"),
        (
            "enterprise_id,gateway_id\nE1,g1\nE1,g1\n",
            "line 3: gateway 'E1.g1' is listed twice (first at gateways.csv line 2)",
        ),
    ],
)
def test_load_gateways_csv_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "gateways.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BrokerAuthError) as err:
        load_gateways_csv(path)
    assert message in str(err.value)


def test_missing_gateways_csv(tmp_path: Path) -> None:
    with pytest.raises(BrokerAuthError, match="cannot read"):
        load_gateways_csv(tmp_path / "nope.csv")


# -- the written files ----------------------------------------------------------------------------
GATEWAYS = [("E0001", "gw-01"), ("E0001", "gw-02"), ("E0002", "gw-01")]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_broker_auth_files(tmp_path: Path) -> None:
    files = write_broker_auth(tmp_path / "auth", GATEWAYS)
    assert {p.name for p in files.directory.iterdir()} == {
        "passwd",
        "acl",
        "credentials.csv",
        "ingestor.env",
    }
    for path in (files.passwd, files.acl, files.credentials_csv, files.ingestor_env):
        assert _mode(path) == 0o600, path
    assert files.acl.read_text() == acl_text(GATEWAYS)

    users = [files.ingestor, *files.gateways]
    passwords = [u.password.get_secret_value() for u in users]
    assert len(set(passwords)) == len(users)
    assert all(len(p) == 32 and p.isalnum() and p.isascii() for p in passwords)

    # Hashed by mosquitto_passwd (PBKDF2-SHA512, `$7$`), one line per user, no plain text.
    passwd = files.passwd.read_text()
    assert [line.split(":", 1)[0] for line in passwd.splitlines()] == [u.username for u in users]
    assert all(line.split(":", 1)[1].startswith("$7$") for line in passwd.splitlines())
    assert not any(p in passwd for p in passwords)

    rows = files.credentials_csv.read_text().splitlines()
    assert rows[0] == "username,password,topic"
    assert rows[1:] == [
        f"{c.username},{c.password.get_secret_value()},{c.topic}" for c in files.gateways
    ]
    assert files.gateway("E0002", "gw-01").topic == "greenmon/v1/E0002/gw-01/readings"
    assert files.ingestor.topic == "greenmon/v1/#"
    assert files.ingestor.password.get_secret_value() not in files.credentials_csv.read_text()
    env = files.ingestor_env.read_text()
    assert "GREENMON_MQTT_USERNAME='greenmon-ingestor'\n" in env
    assert f"GREENMON_MQTT_PASSWORD='{passwords[0]}'\n" in env

    # Secrets never show in reprs.
    for text in (repr(files), str(files), repr(files.gateways[0])):
        assert not any(p in text for p in passwords)


def test_ingestor_env_is_shell_safe(tmp_path: Path) -> None:
    files = write_broker_auth(
        tmp_path, GATEWAYS, passwords={"greenmon-ingestor": "p$(x)`y`;&|*<>!"}
    )
    env = subprocess.run(
        ["sh", "-c", f"set -a; . {files.ingestor_env}; env"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout.splitlines()
    assert "GREENMON_MQTT_USERNAME=greenmon-ingestor" in env
    assert "GREENMON_MQTT_PASSWORD=p$(x)`y`;&|*<>!" in env


@pytest.mark.parametrize("bad", ["has'quote-in-it", "back\\slash-in-it"])
def test_ingestor_password_cannot_break_its_quotes(tmp_path: Path, bad: str) -> None:
    with pytest.raises(BrokerAuthError, match="'greenmon-ingestor'"):
        write_broker_auth(tmp_path, GATEWAYS, passwords={"greenmon-ingestor": bad})


def test_read_broker_auth_round_trip(tmp_path: Path) -> None:
    written = write_broker_auth(tmp_path / "a", GATEWAYS, prefix="nt/v2", ingestor_user="ing")
    assert read_broker_auth(tmp_path / "a") == written
    with pytest.raises(BrokerAuthError, match="missing passwd"):
        read_broker_auth(tmp_path)


def test_rerun_keeps_supplied_passwords(tmp_path: Path) -> None:
    first = write_broker_auth(tmp_path, GATEWAYS[:2])
    kept = read_credentials_csv(first.credentials_csv)
    kept[first.ingestor.username] = first.ingestor.password
    second = write_broker_auth(tmp_path, GATEWAYS, passwords=kept)
    assert second.ingestor.password == first.ingestor.password
    for old in first.gateways:
        assert second.gateway(*old.username.split(".")).password == old.password
    new = second.gateway("E0002", "gw-01").password.get_secret_value()
    assert new not in {c.password.get_secret_value() for c in first.gateways}


@pytest.mark.parametrize(
    "bad",
    [
        "short",
        "has space in it 123",
        "colon:in:password:x",
        "$7$101$looks-like-a-hash",
        "x" * 20 + "\n",
    ],
)
def test_unusable_supplied_password_is_not_echoed(tmp_path: Path, bad: str) -> None:
    with pytest.raises(BrokerAuthError) as err:
        write_broker_auth(tmp_path, GATEWAYS, passwords={"E0001.gw-02": SecretStr(bad)})
    assert "'E0001.gw-02'" in str(err.value)
    assert bad.strip() not in str(err.value)
    assert not (tmp_path / "passwd").exists()


def test_failing_mosquitto_passwd_leaves_no_plaintext(tmp_path: Path) -> None:
    with pytest.raises(BrokerAuthError, match="mosquitto_passwd -U failed"):
        write_broker_auth(tmp_path, GATEWAYS, mosquitto_passwd="/bin/false")
    assert list(tmp_path.iterdir()) == []


def test_missing_mosquitto_passwd(tmp_path: Path) -> None:
    with pytest.raises(BrokerAuthError, match="could not run"):
        write_broker_auth(tmp_path, GATEWAYS, mosquitto_passwd=str(tmp_path / "nope"))
    assert list(tmp_path.iterdir()) == []


# -- against the real broker ----------------------------------------------------------------------
class Client:
    """A paho 2.x client with bounded waits for CONNACK, SUBACK, PUBACK and messages."""

    def __init__(
        self,
        port: int,
        username: str | None = None,
        password: SecretStr | str | None = None,
        *,
        protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5,
    ) -> None:
        self.port = port
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"t-{uuid.uuid4().hex[:10]}",
            protocol=protocol,
            reconnect_on_failure=False,
        )
        if username is not None:
            pw = password.get_secret_value() if isinstance(password, SecretStr) else password
            self.c.username_pw_set(username, pw)
        self.connack: ReasonCode | None = None
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._connected = threading.Event()
        self._acks: dict[int, object] = {}
        self._ack = threading.Condition()
        self.c.on_connect = self._on_connect
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = lambda _c, _u, msg: self.messages.put((msg.topic, bytes(msg.payload)))

    def _on_connect(self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        self.connack = rc
        self._connected.set()

    def _on_publish(self, _c: object, _u: object, mid: int, rc: ReasonCode, _p: object) -> None:
        with self._ack:
            self._acks[mid] = rc
            self._ack.notify_all()

    def _on_subscribe(
        self, _c: object, _u: object, mid: int, rcs: list[ReasonCode], _p: object
    ) -> None:
        with self._ack:
            self._acks[mid] = rcs
            self._ack.notify_all()

    def _wait_ack(self, mid: int) -> object:
        with self._ack:
            assert self._ack.wait_for(lambda: mid in self._acks, WAIT), f"no ack for mid {mid}"
            return self._acks.pop(mid)

    def connect(self) -> ReasonCode | None:
        self.c.connect("127.0.0.1", self.port, keepalive=10)
        self.c.loop_start()
        self._connected.wait(WAIT)
        return self.connack

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> ReasonCode:
        info = self.c.publish(topic, payload, qos=qos)
        rc = self._wait_ack(info.mid)
        assert isinstance(rc, ReasonCode)
        return rc

    def subscribe(self, topic_filter: str, qos: int = 1) -> list[ReasonCode]:
        result, mid = self.c.subscribe(topic_filter, qos=qos)
        assert result == mqtt.MQTT_ERR_SUCCESS and mid is not None
        rcs = self._wait_ack(mid)
        assert isinstance(rcs, list)
        return rcs

    def expect(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """Wait for (topic, payload); returns everything that came before it."""
        before: list[tuple[str, bytes]] = []
        while True:
            msg = self.messages.get(timeout=WAIT)
            if msg == (topic, payload):
                return before
            before.append(msg)

    def drain(self, wait: float = QUIET) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        try:
            while True:
                out.append(self.messages.get(timeout=wait))
        except queue.Empty:
            return out

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@dataclass
class Broker:
    services: LocalServices
    auth: BrokerAuthFiles
    port: int

    def client(
        self,
        username: str | None = None,
        password: SecretStr | str | None = None,
        protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5,
    ) -> Client:
        return Client(self.port, username, password, protocol=protocol)

    def login(
        self,
        username: str,
        password: SecretStr | str,
        protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5,
    ) -> Client:
        cli = self.client(username, password, protocol)
        rc = cli.connect()
        assert rc is not None and not rc.is_failure, f"{username}: {rc}"
        return cli

    def gateway(
        self, enterprise: str, gateway: str, protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5
    ) -> Client:
        cred = self.auth.gateway(enterprise, gateway)
        return self.login(cred.username, cred.password, protocol)

    def ingestor(self, topic_filter: str = "greenmon/v1/#") -> Client:
        cli = self.login(self.auth.ingestor.username, self.auth.ingestor.password)
        rcs = cli.subscribe(topic_filter, qos=1)
        assert [rc.value for rc in rcs] == [1], rcs  # granted QoS 1
        return cli


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    root = tmp_path_factory.mktemp("broker_auth")
    auth = write_broker_auth(root / "auth", GATEWAYS)
    svc = LocalServices(root / "run", broker_auth=auth)
    svc.up()
    try:
        yield Broker(svc, auth, int(urlsplit(svc.mqtt_url).port or 0))
    finally:
        svc.down()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Collects the clients a test opens and closes them all afterwards."""
    opened: list[Client] = []
    yield opened
    for cli in opened:
        cli.close()


OWN = "greenmon/v1/E0001/gw-01/readings"
FORBIDDEN_FOR_E0001_GW01 = [
    "greenmon/v1/E0002/gw-01/readings",  # another enterprise's gateway
    "greenmon/v1/E0001/gw-02/readings",  # the same enterprise's other gateway
    "greenmon/v1/E0001/gw-01x/readings",  # a look-alike gateway id
    "greenmon/v1/E0001/readings",  # the enterprise level
    "greenmon/v1/alerts",  # elsewhere under the prefix
]


@pytest.mark.integration
def test_generated_mosquitto_conf(broker: Broker) -> None:
    conf = (broker.services.runtime_dir / "mosquitto" / "mosquitto.conf").read_text()
    lines = conf.splitlines()
    assert "allow_anonymous false" in lines
    assert "allow_anonymous true" not in lines
    assert f"password_file {broker.auth.passwd}" in lines
    assert f"acl_file {broker.auth.acl}" in lines
    assert sum(line.startswith("listener ") for line in lines) == 1
    assert broker.services.mqtt_url.startswith("mqtt://127.0.0.1:")


@pytest.mark.integration
def test_default_services_stay_anonymous(tmp_path: Path) -> None:
    svc = LocalServices(tmp_path)
    svc.up()
    try:
        lines = (tmp_path / "mosquitto" / "mosquitto.conf").read_text().splitlines()
        assert "allow_anonymous true" in lines
        assert not any(
            line.startswith(("password_file", "acl_file", "cafile", "certfile")) for line in lines
        )
        cli = Client(int(urlsplit(svc.mqtt_url).port or 0))
        try:
            rc = cli.connect()
            assert rc is not None and not rc.is_failure
        finally:
            cli.close()
    finally:
        svc.down()


@pytest.mark.integration
def test_gateway_publishes_only_under_its_own_topic(broker: Broker, clients: list[Client]) -> None:
    ingestor = broker.ingestor()
    gw = broker.gateway("E0001", "gw-01")
    clients += [ingestor, gw]

    assert gw.publish(OWN, b"own").value == 0
    assert ingestor.expect(OWN, b"own") == []

    for topic in FORBIDDEN_FOR_E0001_GW01:
        rc = gw.publish(topic, b"forbidden")
        assert rc.value == NOT_AUTHORIZED, (topic, rc)  # MQTT 5 PUBACK 0x87 Not authorized
        assert rc.is_failure

    # A control message after the forbidden ones arrives, and nothing else did or does.
    assert gw.publish(OWN, b"control").value == 0
    assert ingestor.expect(OWN, b"control") == []
    assert ingestor.drain() == []


@pytest.mark.integration
def test_mqtt311_forbidden_publish_is_dropped_silently(
    broker: Broker, clients: list[Client]
) -> None:
    ingestor = broker.ingestor()
    gw = broker.gateway("E0001", "gw-01", protocol=mqtt.MQTTv311)
    clients += [ingestor, gw]
    # MQTT 3.1.1 has no reason code in PUBACK: the broker acknowledges and drops.
    assert not gw.publish("greenmon/v1/E0002/gw-01/readings", b"forbidden").is_failure
    assert not gw.publish(OWN, b"control-311").is_failure
    assert ingestor.expect(OWN, b"control-311") == []
    assert ingestor.drain() == []


@pytest.mark.integration
def test_every_gateway_reaches_the_ingestor(broker: Broker, clients: list[Client]) -> None:
    ingestor = broker.ingestor()
    clients.append(ingestor)
    for cred in broker.auth.gateways:
        gw = broker.login(cred.username, cred.password)
        clients.append(gw)
        assert gw.publish(cred.topic, cred.username.encode()).value == 0
        assert ingestor.expect(cred.topic, cred.username.encode()) == []


@pytest.mark.integration
def test_ingestor_shared_subscription(broker: Broker, clients: list[Client]) -> None:
    ingestor = broker.ingestor("$share/ingest/greenmon/v1/#")
    gw = broker.gateway("E0002", "gw-01")
    clients += [ingestor, gw]
    topic = "greenmon/v1/E0002/gw-01/readings"
    assert gw.publish(topic, b"shared").value == 0
    assert ingestor.expect(topic, b"shared") == []


@pytest.mark.integration
def test_ingestor_cannot_publish(broker: Broker, clients: list[Client]) -> None:
    watcher = broker.ingestor()
    writer = broker.ingestor()
    gw = broker.gateway("E0001", "gw-01")
    clients += [watcher, writer, gw]
    for topic in (OWN, "greenmon/v1/E0002/gw-01/readings", "greenmon/v1/alerts", "elsewhere"):
        rc = writer.publish(topic, b"from-ingestor")
        assert rc.value == NOT_AUTHORIZED, (topic, rc)
    assert gw.publish(OWN, b"control").value == 0
    assert watcher.expect(OWN, b"control") == []
    assert watcher.drain() == []
    assert writer.expect(OWN, b"control") == []  # it still reads


@pytest.mark.integration
def test_gateway_cannot_read_other_gateways(broker: Broker, clients: list[Client]) -> None:
    ingestor = broker.ingestor()
    spy = broker.gateway("E0002", "gw-01")
    gw = broker.gateway("E0001", "gw-01")
    clients += [ingestor, spy, gw]
    # Mosquitto 2.0 may grant the SUBACK; its per-message read check still delivers nothing.
    spy.subscribe("greenmon/v1/#")
    spy.subscribe("greenmon/v1/E0002/gw-01/#")
    assert gw.publish(OWN, b"private").value == 0
    assert spy.publish("greenmon/v1/E0002/gw-01/readings", b"own-echo").value == 0
    assert ingestor.expect("greenmon/v1/E0002/gw-01/readings", b"own-echo") == [(OWN, b"private")]
    assert spy.drain() == []


def _wrong(broker: Broker) -> dict[str, tuple[str | None, str | None]]:
    a, b = broker.auth.gateway("E0001", "gw-01"), broker.auth.gateway("E0001", "gw-02")
    return {
        "anonymous": (None, None),
        "ingestor, wrong password": (broker.auth.ingestor.username, "not-the-password-123"),
        "gateway with another gateway's password": (a.username, b.password.get_secret_value()),
        "unknown user": ("E0009.gw-01", a.password.get_secret_value()),
        "empty password": (a.username, ""),
    }


@pytest.mark.integration
@pytest.mark.parametrize(
    "case",
    [
        "anonymous",
        "ingestor, wrong password",
        "gateway with another gateway's password",
        "unknown user",
        "empty password",
    ],
)
@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["v5", "v311"])
def test_connection_refused(
    broker: Broker, clients: list[Client], case: str, protocol: mqtt.MQTTProtocolVersion
) -> None:
    username, password = _wrong(broker)[case]
    cli = broker.client(username, password, protocol=protocol)
    clients.append(cli)
    rc = cli.connect()
    assert rc is not None, "no CONNACK"
    assert rc.is_failure
    # 0x87 Not authorized (Mosquitto 2.0) or 0x86 Bad user name or password (3.1.1 code 4/5).
    assert rc.value in (0x86, NOT_AUTHORIZED), rc


@pytest.mark.integration
def test_added_gateway_after_reload(tmp_path: Path, clients: list[Client]) -> None:
    """Regenerate with one more gateway (old passwords kept), SIGHUP: both can log in."""
    auth = write_broker_auth(tmp_path / "auth", GATEWAYS[:1])
    svc = LocalServices(tmp_path / "run", broker_auth=auth)
    svc.up()
    try:
        port = int(urlsplit(svc.mqtt_url).port or 0)
        old = auth.gateway("E0001", "gw-01")
        kept = {
            **read_credentials_csv(auth.credentials_csv),
            "greenmon-ingestor": auth.ingestor.password,
        }
        new_auth = write_broker_auth(tmp_path / "auth", GATEWAYS, passwords=kept)
        new = new_auth.gateway("E0002", "gw-01")

        probe = Client(port, new.username, new.password)
        clients.append(probe)
        rc = probe.connect()
        assert rc is not None and rc.is_failure  # not yet: the broker has the old files

        pid = svc.status()["mosquitto"]["pid"]
        assert isinstance(pid, int)
        os.kill(pid, signal.SIGHUP)  # what `systemctl reload mosquitto` does
        deadline = time.monotonic() + WAIT
        while True:
            cli = Client(port, new.username, new.password)
            clients.append(cli)
            rc = cli.connect()
            if rc is not None and not rc.is_failure:
                break
            assert time.monotonic() < deadline, f"new gateway still refused after reload: {rc}"
            time.sleep(0.1)
        again = Client(port, old.username, old.password)
        clients.append(again)
        rc = again.connect()
        assert rc is not None and not rc.is_failure, rc
        ingestor = Client(port, new_auth.ingestor.username, new_auth.ingestor.password)
        clients.append(ingestor)
        assert ingestor.connect() is not None and ingestor.subscribe("greenmon/v1/#")
        assert again.publish(old.topic, b"after-reload").value == 0
        assert cli.publish(new.topic, b"new-after-reload").value == 0
        assert ingestor.expect(old.topic, b"after-reload") == []
        assert ingestor.expect(new.topic, b"new-after-reload") == []
        # The new gateway is confined like the others.
        assert cli.publish(old.topic, b"x").value == NOT_AUTHORIZED
    finally:
        svc.down()
