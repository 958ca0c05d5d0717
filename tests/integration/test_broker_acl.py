"""The shipped broker config and ACL (deploy/mosquitto/) on a real mosquitto.

The test reads `deploy/mosquitto/mosquitto.conf` and `deploy/mosquitto/acl` as shipped,
rewrites only the listener ports and addresses, the run-as user and the file paths
(certificates, password file, ACL, persistence) to files it generates, and starts
mosquitto from the result. Devices connect over mutual TLS with client certificates
whose CN is their device id; the services log in on the other listener as `certfleet`.
"""

from __future__ import annotations

import getpass
import itertools
import queue
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from simulator.pki import issue_server_cert, make_ca
from simulator.services import LocalService, ServiceError, free_port, wait_for_port
from tests.mtls import device_identity, empty_crl

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
NOW = datetime.now(UTC)
NOT_BEFORE, NOT_AFTER = NOW - timedelta(days=1), NOW + timedelta(days=30)
SERVICE_USER = "certfleet"
SERVICE_PASSWORD = "s3rvice-pa55word"
SHIPPED_DEVICE_PORT, SHIPPED_SERVICE_PORT = 8883, 1883
# The only keys whose values the test changes in the shipped config.
REWRITTEN_KEYS = frozenset(
    {
        "listener",
        "user",
        "cafile",
        "certfile",
        "keyfile",
        "password_file",
        "acl_file",
        "crlfile",
        "persistence_location",
    }
)
QUIET = 1.5  # seconds to wait for something that must not arrive
TIMEOUT = 5.0  # seconds to wait for something that must happen

SUCCESS = 0x00
GRANTED_QOS_1 = 0x01
NOT_AUTHORIZED = 0x87
REFUSED = -1  # no CONNACK at all: the broker closed the connection (e.g. TLS failed)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def rewrite_config(shipped: str, *, ports: dict[int, int], paths: dict[str, Path]) -> str:
    """The shipped config with listener ports/addresses, `user` and file paths replaced."""
    lines = []
    for line in shipped.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "listener":
            port = int(value.split()[0])
            lines.append(f"listener {ports[port]} 127.0.0.1")
        elif key == "user":
            lines.append(f"user {getpass.getuser()}")
        elif key in paths:
            lines.append(f"{key} {paths[key]}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


@dataclass
class Broker:
    """The running broker and what clients need to reach it."""

    service: LocalService
    device_port: int
    service_port: int
    client_files: Path  # <device>.pem / <device>-key.pem, server-ca.pem, rogue-*.pem


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Mosquitto started from the shipped config and ACL, with generated PKI and password."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    passwd_tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(binary).exists() or not Path(passwd_tool).exists():
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)")
    base = tmp_path_factory.mktemp("broker-acl")
    certs, clients, data = base / "certs", base / "clients", base / "data"
    for directory in (certs, clients, data):
        directory.mkdir()

    device_ca = make_ca("certfleet device identity CA", not_before=NOT_BEFORE, not_after=NOT_AFTER)
    server_ca = make_ca("certfleet broker CA", not_before=NOT_BEFORE, not_after=NOT_AFTER)
    server = issue_server_cert(server_ca, not_before=NOT_BEFORE, not_after=NOT_AFTER)
    rogue_ca = make_ca("not the device CA", not_before=NOT_BEFORE, not_after=NOT_AFTER)
    _write(clients / "server-ca.pem", server_ca.pem)
    for name, cert in (
        ("dev-a", device_identity(device_ca, "dev-a", not_after=NOT_AFTER)),
        ("dev-b", device_identity(device_ca, "dev-b", not_after=NOT_AFTER)),
        ("rogue-dev-b", device_identity(rogue_ca, "dev-b", not_after=NOT_AFTER)),
    ):
        _write(clients / f"{name}.pem", cert.pem)
        _write(clients / f"{name}-key.pem", cert.key_pem)

    passwd = certs / "passwd"
    subprocess.run(
        [passwd_tool, "-b", "-c", str(passwd), SERVICE_USER, SERVICE_PASSWORD],
        check=True,
        capture_output=True,
    )
    device_port, service_port = free_port(), free_port()
    shipped = (DEPLOY / "mosquitto.conf").read_text()
    config = rewrite_config(
        shipped,
        ports={SHIPPED_DEVICE_PORT: device_port, SHIPPED_SERVICE_PORT: service_port},
        paths={
            "cafile": _write(certs / "device-ca.pem", device_ca.pem),
            "certfile": _write(certs / "server.pem", server.pem),
            "keyfile": _write(certs / "server-key.pem", server.key_pem),
            "password_file": passwd,
            "acl_file": DEPLOY / "acl",  # the shipped ACL itself
            "crlfile": _write(certs / "devices.crl.pem", empty_crl(device_ca, NOW)),
            "persistence_location": Path(f"{data}/"),
        },
    )
    _assert_only_allowed_keys_changed(shipped, config)
    config_file = base / "mosquitto.conf"
    config_file.write_text(config)

    log_file = base / "mosquitto.log"
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [binary, "-c", str(config_file)],
            cwd=base,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service = LocalService("mosquitto", "127.0.0.1", service_port, process, base, log_file)
    try:
        for port in (device_port, service_port):
            wait_for_port("127.0.0.1", port, timeout=15, process=process)
    except ServiceError as exc:
        service.stop()
        pytest.fail(f"mosquitto did not start from the shipped config: {exc}\n{service.log_tail()}")
    yield Broker(service, device_port, service_port, clients)
    service.stop()


def _assert_only_allowed_keys_changed(shipped: str, rewritten: str) -> None:
    before, after = shipped.splitlines(), rewritten.splitlines()
    assert len(before) == len(after)
    changed = {old.split()[0] for old, new in zip(before, after, strict=True) if old.strip() != new}
    assert changed <= REWRITTEN_KEYS, f"the test changed more than it may: {changed}"
    settings = [line for line in after if line and not line.startswith("#")]
    assert not [line for line in settings if " /mosquitto/" in line], "a compose path is left"
    listeners = [line for line in settings if line.startswith("listener ")]
    assert len(listeners) == 2
    assert all(line.endswith(" 127.0.0.1") for line in listeners)


class Client:
    """A paho MQTT 5 client that records what the broker answered and what arrived."""

    def __init__(self, client_id: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._acks: dict[int, list[ReasonCode]] = {}
        self._acked = threading.Condition()
        self._connack: queue.Queue[int] = queue.Queue()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message

    # paho callbacks (network thread)
    def _on_connect(self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        self._connack.put(rc.value)

    def _on_disconnect(self, *_args: object) -> None:
        self._connack.put(REFUSED)  # read only while a connect waits for its CONNACK

    def _on_subscribe(
        self, _c: object, _u: object, mid: int, codes: list[ReasonCode], _p: object
    ) -> None:
        self._ack(mid, codes)

    def _on_publish(self, _c: object, _u: object, mid: int, rc: ReasonCode, _p: object) -> None:
        self._ack(mid, [rc])

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        self.messages.put((message.topic, bytes(message.payload)))

    def _ack(self, mid: int, codes: list[ReasonCode]) -> None:
        with self._acked:
            self._acks[mid] = codes
            self._acked.notify_all()

    def _wait_ack(self, mid: int) -> list[ReasonCode]:
        with self._acked:
            if not self._acked.wait_for(lambda: mid in self._acks, TIMEOUT):
                raise AssertionError(f"no acknowledgement for mid {mid}")
            return self._acks.pop(mid)

    def tls(self, files: Path, device: str | None) -> Client:
        """TLS 1.2 (as the nRF9160) validating the broker, with `device`'s certificate if any."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(files / "server-ca.pem")
        if device is not None:
            context.load_cert_chain(files / f"{device}.pem", files / f"{device}-key.pem")
        self._client.tls_set_context(context)
        return self

    def login(self, username: str | None, password: str | None = None) -> Client:
        """Username/password for the service listener."""
        if username is not None:
            self._client.username_pw_set(username, password)
        return self

    def connect(self, port: int, *, clean_start: bool = True, expiry: int = 0) -> int:
        """The CONNACK reason code, or REFUSED when the connection ended without one."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = expiry
        try:
            self._client.connect(
                "127.0.0.1", port, keepalive=30, clean_start=clean_start, properties=properties
            )
        except (OSError, ssl.SSLError):  # e.g. the TLS handshake failed
            return REFUSED
        self._client.loop_start()
        try:
            rc = self._connack.get(timeout=TIMEOUT)
        except queue.Empty:
            rc = REFUSED
        if rc != SUCCESS:
            self.close()  # or paho's network thread would keep reconnecting
        return rc

    def subscribe(self, topic: str) -> int:
        """Subscribe with QoS 1; the SUBACK reason code."""
        _rc, mid = self._client.subscribe(topic, qos=1)
        assert mid is not None
        return self._wait_ack(mid)[0].value

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish with QoS 1; the PUBACK reason code."""
        info = self._client.publish(topic, payload, qos=1)
        return self._wait_ack(info.mid)[0].value

    def publish_qos0(self, topic: str, payload: bytes) -> None:
        """Publish with QoS 0: no acknowledgement to wait for."""
        self._client.publish(topic, payload, qos=0).wait_for_publish(TIMEOUT)

    def received(self, timeout: float = TIMEOUT) -> tuple[str, bytes]:
        """The next message that arrives within `timeout`."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"nothing arrived within {timeout}s") from None

    def nothing_more(self, timeout: float = QUIET) -> list[tuple[str, bytes]]:
        """Whatever arrives within `timeout` (expected: nothing)."""
        deadline = time.monotonic() + timeout
        arrived = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                arrived.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return arrived

    def drain(self) -> list[tuple[str, bytes]]:
        """Whatever has arrived so far, without waiting."""
        arrived = []
        while not self.messages.empty():
            arrived.append(self.messages.get_nowait())
        return arrived

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def clients(broker: Broker) -> Iterator[Callable[..., Client]]:
    """Make an MQTT 5 client with the given client id; all are closed after the test."""
    made: list[Client] = []

    def make(client_id: str) -> Client:
        made.append(Client(client_id))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def device(broker: Broker, clients: Callable[..., Client]) -> Callable[..., Client]:
    """Connect a device with its client certificate (client id = device id)."""

    def connect(
        name: str, *, client_id: str | None = None, clean_start: bool = True, expiry: int = 0
    ) -> Client:
        client = clients(client_id or name).tls(broker.client_files, name)
        rc = client.connect(broker.device_port, clean_start=clean_start, expiry=expiry)
        assert rc == SUCCESS, f"{name} could not connect: {rc}\n{broker.service.log_tail()}"
        return client

    return connect


@pytest.fixture
def service(broker: Broker, clients: Callable[..., Client]) -> Callable[[], Client]:
    """Connect a certfleet service subscribed to every device's state and reports."""
    counter = itertools.count()

    def connect() -> Client:
        client = clients(f"certfleet-test-{next(counter)}").login(SERVICE_USER, SERVICE_PASSWORD)
        rc = client.connect(broker.service_port)
        assert rc == SUCCESS, f"the service could not connect: {rc}\n{broker.service.log_tail()}"
        for kind in ("state", "report"):
            assert client.subscribe(f"$share/certfleet/certfleet/+/{kind}") == GRANTED_QOS_1
        return client

    return connect


def nothing_more_arrives(*clients: Client) -> bool:
    """True when none of `clients` receives anything within QUIET seconds."""
    time.sleep(QUIET)
    arrived = {id(c): c.drain() for c in clients}
    assert not any(arrived.values()), arrived
    return True


def topic(device_id: str, kind: str) -> str:
    """`certfleet/{device_id}/{kind}` under the default prefix the shipped ACL names."""
    return f"certfleet/{device_id}/{kind}"


def test_the_broker_runs_the_shipped_config_with_only_ports_addresses_user_and_paths_changed(
    broker: Broker,
) -> None:
    """Every line of the shipped config but listener/user/file paths reaches the broker as is."""
    # given the shipped config and the one the broker was started from
    shipped = (DEPLOY / "mosquitto.conf").read_text()
    started = (broker.service.workdir / "mosquitto.conf").read_text()

    # then only the allowed keys differ, and the security settings are all there
    _assert_only_allowed_keys_changed(shipped, started)
    for setting in (
        "persistence true",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "allow_anonymous false",
        "message_size_limit 16384",
    ):
        assert setting in started.splitlines()
    # one set of rules for both listeners: with per_listener_settings, Mosquitto 2.0
    # mishandles offline sessions on a reload (docs/operations.md)
    settings = [line for line in started.splitlines() if line and not line.startswith("#")]
    assert not [line for line in settings if line.startswith("per_listener_settings")]
    keys = [line.split()[0] for line in settings]
    assert keys.count("acl_file") == keys.count("password_file") == 1
    assert keys.index("acl_file") < keys.index("listener")


def test_a_device_writes_its_own_state_and_report_and_reads_its_own_bundle(
    device: Callable[..., Client], service: Callable[[], Client]
) -> None:
    """Device A's state and report reach the services; its bundle reaches A."""
    # given a service and device A subscribed to its bundle topic
    svc = service()
    dev_a = device("dev-a")
    assert dev_a.subscribe(topic("dev-a", "bundle")) == GRANTED_QOS_1

    # when A publishes its state and a report, and the service a bundle for A
    assert dev_a.publish(topic("dev-a", "state"), b"state-a") == SUCCESS
    assert dev_a.publish(topic("dev-a", "report"), b"report-a") == SUCCESS
    assert svc.publish(topic("dev-a", "bundle"), b"bundle-a") == SUCCESS

    # then each arrives where it should
    assert svc.received() == (topic("dev-a", "state"), b"state-a")
    assert svc.received() == (topic("dev-a", "report"), b"report-a")
    assert dev_a.received() == (topic("dev-a", "bundle"), b"bundle-a")


def test_a_device_cannot_publish_on_another_devices_topics(
    device: Callable[..., Client], service: Callable[[], Client]
) -> None:
    """A's publishes to B's state, report or bundle are refused (PUBACK 0x87) and go nowhere."""
    # given a service and devices A and B, B subscribed to its bundle topic
    svc = service()
    dev_a, dev_b = device("dev-a"), device("dev-b")
    assert dev_b.subscribe(topic("dev-b", "bundle")) == GRANTED_QOS_1

    # when A publishes as B, and also sends B a bundle
    refused = [
        dev_a.publish(topic("dev-b", kind), b"forged") for kind in ("state", "report", "bundle")
    ]
    # ... and then its own state, which the service must see first
    assert dev_a.publish(topic("dev-a", "state"), b"sentinel") == SUCCESS

    # then the broker answered "not authorized" and nothing forged arrived
    assert refused == [NOT_AUTHORIZED] * 3
    assert svc.received() == (topic("dev-a", "state"), b"sentinel")
    assert nothing_more_arrives(svc, dev_b)


def test_a_device_cannot_read_another_devices_bundle(
    device: Callable[..., Client], service: Callable[[], Client]
) -> None:
    """Subscribing to B's bundle topic is granted by mosquitto 2.0 but delivers nothing to A."""
    # given devices A and B, each subscribed to B's bundle topic
    svc = service()
    dev_a, dev_b = device("dev-a"), device("dev-b")
    assert dev_b.subscribe(topic("dev-b", "bundle")) == GRANTED_QOS_1

    # when A subscribes to B's bundle topic too, and the service sends B a bundle
    suback = dev_a.subscribe(topic("dev-b", "bundle"))
    assert svc.publish(topic("dev-b", "bundle"), b"bundle-b") == SUCCESS

    # then mosquitto 2.0 granted the SUBSCRIBE (its ACL file never restricts
    # subscriptions) but checks "read" per message: B gets its bundle, A nothing
    assert suback == GRANTED_QOS_1
    assert dev_b.received() == (topic("dev-b", "bundle"), b"bundle-b")
    assert dev_a.nothing_more() == []


def test_a_device_subscribed_to_wildcards_receives_only_its_own_bundles(
    device: Callable[..., Client], service: Callable[[], Client]
) -> None:
    """Wildcards over other devices deliver nothing of B's to A, only A's own bundle."""
    # given device A subscribed to wildcards over every device, and device B
    svc = service()
    dev_a, dev_b = device("dev-a"), device("dev-b")
    wildcards = [
        "certfleet/+/bundle",
        "certfleet/#",
        "#",
        "certfleet/+/state",
        "certfleet/+/report",
        "$share/snoop/certfleet/+/bundle",
    ]
    assert [dev_a.subscribe(w) for w in wildcards] == [GRANTED_QOS_1] * len(wildcards)

    # when B reports, the service sends B a bundle, and then A one
    assert dev_b.publish(topic("dev-b", "state"), b"state-b") == SUCCESS
    assert dev_b.publish(topic("dev-b", "report"), b"report-b") == SUCCESS
    assert svc.publish(topic("dev-b", "bundle"), b"bundle-b") == SUCCESS
    assert svc.publish(topic("dev-a", "bundle"), b"bundle-a") == SUCCESS

    # then A receives its own bundle (once per matching subscription) and nothing of B's
    first = dev_a.received()
    arrived = [first, *dev_a.nothing_more()]
    assert first == (topic("dev-a", "bundle"), b"bundle-a")
    assert set(arrived) == {(topic("dev-a", "bundle"), b"bundle-a")}


def test_a_device_cannot_take_over_another_devices_session(
    device: Callable[..., Client], service: Callable[[], Client]
) -> None:
    """A connecting with B's client id gets a session of its own, not B's queued bundle."""
    # given B's persistent session, subscribed to its bundle, with a bundle queued while away
    svc = service()
    dev_b = device("dev-b", clean_start=False, expiry=300)
    assert dev_b.subscribe(topic("dev-b", "bundle")) == GRANTED_QOS_1
    dev_b.close()
    assert svc.publish(topic("dev-b", "bundle"), b"queued-for-b") == SUCCESS

    # when A connects with client id "dev-b" asking to resume the session
    impostor = device("dev-a", client_id="dev-b", clean_start=False, expiry=300)

    # then the broker made A's client id its CN: nothing of B's is delivered to A,
    # and B still finds its bundle when it comes back
    assert impostor.nothing_more() == []
    impostor.close()
    dev_b_again = device("dev-b", clean_start=False, expiry=0)
    assert dev_b_again.received() == (topic("dev-b", "bundle"), b"queued-for-b")


def test_the_device_listener_refuses_clients_without_a_device_certificate(
    broker: Broker, clients: Callable[..., Client]
) -> None:
    """No client certificate, one from another CA, or plain MQTT: no session on 8883."""
    # given clients with no certificate, a rogue "dev-b" certificate, and no TLS at all
    no_cert = clients("dev-x").tls(broker.client_files, None)
    rogue = clients("dev-b").tls(broker.client_files, "rogue-dev-b")
    plain = clients("dev-y")

    # when each connects to the device listener
    results = [c.connect(broker.device_port) for c in (no_cert, rogue, plain)]

    # then none gets a CONNACK: the broker ends the connection
    assert results == [REFUSED] * 3


def test_the_service_listener_refuses_anonymous_and_wrong_passwords(
    broker: Broker, clients: Callable[..., Client]
) -> None:
    """Without the services' password nobody connects to 1883 (CONNACK 0x87 Not authorized)."""
    # given an anonymous client, a wrong password, and a device id without password
    anonymous = clients("anon")
    wrong = clients("wrong").login(SERVICE_USER, "not-the-password")
    device_name = clients("dev-a").login("dev-a")

    # when each connects to the service listener
    results = [c.connect(broker.service_port) for c in (anonymous, wrong, device_name)]

    # then mosquitto 2.0.11 answers 0x87 to all (not 0x86 "bad user name or password")
    assert results == [NOT_AUTHORIZED] * 3


def test_the_services_receive_every_devices_messages_and_bundle_any_device(
    device: Callable[..., Client], service: Callable[[], Client]
) -> None:
    """The shared subscriptions get A's and B's state and reports; bundles reach each device."""
    # given a service on the shared subscriptions and devices A and B on their bundle topics
    svc = service()
    devices = {name: device(name) for name in ("dev-a", "dev-b")}
    for name, client in devices.items():
        assert client.subscribe(topic(name, "bundle")) == GRANTED_QOS_1

    # when both devices publish state and a report, and the service a bundle to each
    for name, client in devices.items():
        assert client.publish(topic(name, "state"), f"state-{name}".encode()) == SUCCESS
        assert client.publish(topic(name, "report"), f"report-{name}".encode()) == SUCCESS
    for name in devices:
        assert svc.publish(topic(name, "bundle"), f"bundle-{name}".encode()) == SUCCESS

    # then the service has all four messages and each device exactly its own bundle,
    # while the service may not forge device messages
    got = {svc.received() for _ in range(4)}
    assert got == {
        (topic(name, kind), f"{kind}-{name}".encode())
        for name in devices
        for kind in ("state", "report")
    }
    for name, client in devices.items():
        assert client.received() == (topic(name, "bundle"), f"bundle-{name}".encode())
    assert svc.publish(topic("dev-a", "state"), b"forged") == NOT_AUTHORIZED
    assert nothing_more_arrives(svc, *devices.values())


def test_payloads_over_16384_bytes_are_dropped(
    device: Callable[..., Client], service: Callable[[], Client]
) -> None:
    """message_size_limit: a 16384-byte state is forwarded, a 16385-byte one is not."""
    # given a service and device A
    svc = service()
    dev_a = device("dev-a")

    # when A publishes one byte over the limit (QoS 0: mosquitto 2.0.11 would answer a
    # QoS 1 one with PUBACK 0x95, which paho rejects as malformed), then exactly the limit
    dev_a.publish_qos0(topic("dev-a", "state"), b"x" * 16385)
    assert dev_a.publish(topic("dev-a", "state"), b"y" * 16384) == SUCCESS

    # then only the message within the limit arrives
    assert svc.received() == (topic("dev-a", "state"), b"y" * 16384)
    assert svc.nothing_more() == []
