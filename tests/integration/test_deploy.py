"""The deployment files: deploy/compose.yaml is valid Compose, and every command that
compose.yaml, the systemd units and the Kubernetes manifests run starts for real
against a throwaway Redis and Mosquitto and gets ready; so do their health checks.

Each command is taken from the file as written, with only what differs on a test
machine replaced: the image's or the units' venv by this repo's .venv/bin, addresses
that listen on every interface by 127.0.0.1, the container ports by free ones, the
Redis and MQTT endpoints by the test services', the token's PIN file, the device CA and
the CRL by files in the test's own directory. The settings are those of
deploy/env.example (compose, systemd) or of the ConfigMap and Secret (Kubernetes),
plus what each file sets for one process (a listener's client id).

No private signing key is on any disk or in any Secret of the shipped deployments
(issue 17): the root key is in a PKCS#11 token, here a SoftHSM2 token of the test
labelled as the files say, holding a root key made as `certfleet keys create-root`
makes it. Where p11-kit is installed the token is served by certfleet-p11-kit.service's
own command (`p11-kit server`, on a socket of the test's directory) and the workers
reach it through p11-kit's client module as compose and systemd do; elsewhere, and
for Kubernetes (whose module is the HSM's own library), through SoftHSM2's module.
Every worker must get its delegation from that token at start (`delegation_issued`).

Every listener a deployment runs has a stable client id of its own (issue 11): a
compose service per listener with a fixed id, a StatefulSet whose pods' names are
the ids, a systemd template named by host and instance. With it a listener keeps a
persistent session on the broker, so what arrives while it restarts waits for it
there; this rule replaces the old one that no deployment may fix a client id (which
kept replicas from sharing one, at the price of losing messages on every restart).
The commands run against a Mosquitto of their own, so the sessions they leave behind
take no share of other tests' messages on the session-wide broker.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.adapters.crl_file import CrlFilePublisher
from orchestrator.adapters.issuer_local import LocalCaIssuer
from orchestrator.adapters.pkcs11_signer import release_tokens
from orchestrator.config import Settings
from orchestrator.domain.identity import RevokedCertificate
from orchestrator.protocol.cose import key_id
from simulator.services import LocalService, free_port, start_mosquitto
from tests.mtls import device_identity, make_pki, start_mtls_broker, try_connect
from tests.procs import BIN, REPO, Proc, start, wait_until
from tests.softhsm import SoftHsmToken, softhsm_token

pytestmark = pytest.mark.integration

DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "env.example"
SYSTEMD = DEPLOY / "systemd"
K8S = DEPLOY / "k8s"
UNIT_BIN = "/opt/certfleet/.venv/bin/"
ENV_FILE = "/etc/certfleet/certfleet.env"
CERTFLEET_SERVICES = {"worker", "beat", "listener", "api", "flower"}
COMPOSE_LISTENERS = {"listener-1": "certfleet-listener-1", "listener-2": "certfleet-listener-2"}
CLIENT_ID = "CERTFLEET_LISTENER_CLIENT_ID"
CONTAINER_PORTS = {"api": 8080, "flower": 5555}
READY_TIMEOUT = 45.0
BROKER_LOG = "connections.log"
MOSQUITTO_CONF = DEPLOY / "mosquitto" / "mosquitto.conf"
CRL_RELOAD_SCRIPT = DEPLOY / "mosquitto" / "run-with-crl-reload.sh"
# systemd units that run as root on the broker's or the token's side, not certfleet
# processes.
P11_KIT_UNIT = "certfleet-p11-kit.service"
BROKER_SIDE_UNITS = frozenset({"certfleet-crl-reload.service", P11_KIT_UNIT})
# Where the systemd units keep the token's PIN (docs/operations.md, "systemd").
SYSTEMD_PIN_FILE = "/etc/certfleet/pkcs11-pin"


# -- what the files say ---------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines, in the subset that docker compose and systemd read alike."""
    env: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Z][A-Z0-9_]*)=([^\s\"'#]*)", line)
        assert match, f"{path.name}:{number}: not KEY=value without quotes or spaces: {line!r}"
        assert match[1] not in env, f"{path.name}:{number}: {match[1]} set twice"
        env[match[1]] = match[2]
    return env


@dataclass
class Role:
    """One process a deployment file runs, as this test runs it."""

    source: str  # e.g. "compose:worker", "systemd:certfleet-api.service"
    kind: str  # worker, beat, listener, api or flower
    argv: list[str]
    env: dict[str, str]
    port: int | None = None
    healthchecks: list[list[str]] = field(default_factory=list)

    @property
    def client_id(self) -> str | None:
        """The fixed MQTT client id it runs with, if any."""
        return self.env.get(CLIENT_ID)


def kind_of(argv: list[str]) -> str:
    text = " ".join(argv)
    match = re.search(r"workers\.app (worker|beat|flower)\b|certfleet (listener|api)\b", text)
    assert match, f"not a certfleet command: {text}"
    return match[1] or match[2]


def localize(argv: list[str], port: int | None, container_port: int | None) -> list[str]:
    """Loopback for every-interface addresses, a free port for the container's one."""
    out: list[str] = []
    for token in argv:
        local = token.replace("0.0.0.0", "127.0.0.1")  # noqa: S104 -- replaced, not bound
        if port is not None and container_port is not None:
            if local == str(container_port) and out and out[-1] == "--port":
                local = str(port)
            local = re.sub(rf"(--port[= ]|:){container_port}\b", rf"\g<1>{port}", local)
        out.append(local)
    return out


def from_path(argv: list[str]) -> list[str]:
    """The image puts its venv first on PATH; here that venv is this repo's .venv."""
    if argv[0] in ("celery", "certfleet", "python"):
        return [str(BIN / argv[0]), *argv[1:]]
    assert argv[0] == "sh", f"unexpected program {argv[0]!r}"
    return argv


def compose_unescape(value: str) -> str:
    """Compose interpolates ${VAR} from the host at `up`; `$$` is a literal `$`."""
    assert "$" not in value.replace("$$", ""), (
        f"{value!r} relies on compose interpolation from the host; use $$ for the container"
    )
    return value.replace("$$", "$")


def compose_argv(value: str | list[str]) -> list[str]:
    return [compose_unescape(v) for v in (shlex.split(value) if isinstance(value, str) else value)]


def compose_roles(env_example: dict[str, str]) -> list[Role]:
    spec = yaml.safe_load(COMPOSE.read_text())
    roles = []
    for name, service in sorted(spec["services"].items()):
        if name in ("redis", "mosquitto"):
            continue
        assert service["image"] == "certfleet:latest"
        assert "entrypoint" not in service, "the image's commands are the entrypoints"
        argv = compose_argv(service["command"])
        kind = kind_of(argv)
        assert kind == name.split("-")[0], f"compose service {name} runs a {kind}"
        env = {
            **env_example,
            **{k: compose_unescape(str(v)) for k, v in service.get("environment", {}).items()},
        }
        port = free_port() if kind in CONTAINER_PORTS else None
        checks = []
        if "healthcheck" in service:
            test = service["healthcheck"]["test"]
            if test[0] == "CMD-SHELL":
                checks.append(["sh", "-c", compose_unescape(test[1])])
            else:
                assert test[0] == "CMD"
                checks.append(from_path(compose_argv(test[1:])))
        roles.append(
            Role(
                f"compose:{name}",
                kind,
                from_path(localize(argv, port, CONTAINER_PORTS.get(kind))),
                env,
                port,
                [localize(c, port, CONTAINER_PORTS.get(kind)) for c in checks],
            )
        )
    assert {r.kind for r in roles} == CERTFLEET_SERVICES
    return roles


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values, with backslash continuations joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def systemd_expand(value: str, unit: str, instance: str, env: Mapping[str, str]) -> list[str]:
    """Specifiers (%i, %H, %%), then ${VAR} as one word and $VAR split into words."""
    specifiers = {"i": instance, "I": instance, "n": unit, "H": socket.gethostname(), "%": "%"}

    def specifier(match: re.Match[str]) -> str:
        assert match[1] in specifiers, f"{unit}: specifier %{match[1]} is not expected here"
        return specifiers[match[1]]

    words = []
    for word in shlex.split(re.sub(r"%(.)", specifier, value)):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            words.extend(env.get(whole[1], "").split())
            continue
        expanded = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m[1], ""), word)
        assert "$" not in expanded, f"{unit}: cannot expand {word!r}"
        words.append(expanded)
    return words


def systemd_roles(env_example: dict[str, str]) -> list[Role]:
    roles = []
    for path in sorted(SYSTEMD.glob("*.service")):
        if path.name in BROKER_SIDE_UNITS:
            continue
        unit = read_unit(path)["Service"]
        assert unit["EnvironmentFile"] == [ENV_FILE], path.name
        for key, value in {
            "User": "certfleet",
            "Restart": "on-failure",
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "PrivateTmp": "yes",
        }.items():
            assert unit.get(key) == [value], f"{path.name}: {key}={value}"
        env = dict(env_example)
        for line in unit.get("Environment", []):
            for assignment in systemd_expand(line, path.name, "1", {}):
                key, _, value = assignment.partition("=")
                env[key] = value
        (exec_start,) = unit["ExecStart"]
        argv = systemd_expand(exec_start, path.name, "1", env)
        assert argv[0].startswith(UNIT_BIN), f"{path.name} runs {argv[0]}, not from {UNIT_BIN}"
        argv[0] = str(BIN / argv[0].removeprefix(UNIT_BIN))
        kind = kind_of(argv)
        port = free_port() if kind in CONTAINER_PORTS else None
        roles.append(
            Role(
                f"systemd:{path.name}",
                kind,
                localize(argv, port, CONTAINER_PORTS.get(kind)),
                env,
                port,
            )
        )
    assert {r.kind for r in roles} == CERTFLEET_SERVICES
    return roles


def k8s_documents() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def k8s_expand(value: str, env: Mapping[str, str]) -> str:
    """$(VAR) from the container's environment; $$( is a literal $(."""
    return re.sub(
        r"\$(\$)?\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: f"$({m[2]})" if m[1] else env.get(m[2], m[0]),
        value,
    )


def k8s_env_value(item: Mapping[str, Any], secret: Mapping[str, str], pod: str) -> str:
    """A container env entry's value: literal, from the Secret, or the pod's name."""
    source = item.get("valueFrom")
    if source is None:
        return str(item["value"])
    if "secretKeyRef" in source:
        return secret[source["secretKeyRef"]["key"]]
    assert source["fieldRef"]["fieldPath"] == "metadata.name", f"unexpected env {item}"
    return pod


def k8s_roles() -> list[Role]:
    """Every Deployment's and StatefulSet's container, as its first pod runs it."""
    docs = k8s_documents()
    (config,) = [d["data"] for d in docs if d["kind"] == "ConfigMap"]
    (secret,) = [d["stringData"] for d in docs if d["kind"] == "Secret"]
    roles = []
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        # A StatefulSet's pods are <name>-0, -1, ...; a Deployment's get a random suffix.
        pod = doc["metadata"]["name"] + ("-0" if doc["kind"] == "StatefulSet" else "-5d8f9-x2k4q")
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        env = dict(config) if container.get("envFrom") else {}
        for item in container.get("env", []):
            env[item["name"]] = k8s_env_value(item, secret, pod)
        argv = [k8s_expand(v, env) for v in [*container["command"], *container.get("args", [])]]
        kind = kind_of(argv)
        port = free_port() if kind in CONTAINER_PORTS else None
        checks = [
            probe["exec"]["command"]
            for probe in (container.get("livenessProbe"), container.get("readinessProbe"))
            if probe and "exec" in probe
        ]
        roles.append(
            Role(
                f"k8s:{doc['metadata']['name']}",
                kind,
                from_path(localize(argv, port, CONTAINER_PORTS.get(kind))),
                env,
                port,
                [from_path(c) for c in checks],
            )
        )
    assert {r.kind for r in roles} == CERTFLEET_SERVICES
    return roles


# -- static checks --------------------------------------------------------------------------


SETTINGS = {f"CERTFLEET_{name.upper()}" for name in Settings.model_fields}


def test_env_example_and_configmap_name_only_real_settings() -> None:
    """A misspelt CERTFLEET_* would be silently ignored; the shared settings fix no client id.

    Every listener sets its own (test_every_listener_has_a_stable_client_id_of_its_own).
    """
    env = read_env_file(ENV_EXAMPLE)
    (config,) = [d["data"] for d in k8s_documents() if d["kind"] == "ConfigMap"]
    for source, names in (("env.example", set(env)), ("ConfigMap", set(config))):
        certfleet = {n for n in names if n.startswith("CERTFLEET_")}
        assert certfleet <= SETTINGS, f"{source}: unknown {sorted(certfleet - SETTINGS)}"
        assert "CERTFLEET_LISTENER_CLIENT_ID" not in names, source
    assert env["CERTFLEET_REDIS_URL"] == "redis://redis:6379/0"
    assert (env["CERTFLEET_MQTT_HOST"], env["CERTFLEET_MQTT_PORT"]) == ("mosquitto", "1883")
    assert env["CERTFLEET_PKCS11_PIN_FILE"].startswith("/run/secrets/")
    for name in ("MQTT_USERNAME", "MQTT_PASSWORD", "WEBHOOK_SECRETS", "API_TOKENS"):
        assert env[f"CERTFLEET_{name}"], name
    assert re.fullmatch(r"[^:,]+:[^,]+", env["FLOWER_BASIC_AUTH"])


def test_grafana_dashboard_queries_metrics_that_exist() -> None:
    """Every certfleet_* series the dashboard queries is one the code exports."""
    dashboard = json.loads((DEPLOY / "grafana" / "certfleet.json").read_text())
    source = "\n".join(
        p.read_text() for d in ("orchestrator", "workers") for p in (REPO / d).rglob("*.py")
    )
    exported = set(re.findall(r"certfleet_[a-z_]+", source))
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queried |= set(re.findall(r"certfleet_[a-z_]+", target["expr"]))
    assert queried, "the dashboard queries nothing"
    assert queried <= exported, f"not exported: {sorted(queried - exported)}"
    assert {
        "certfleet_devices",
        "certfleet_devices_reported",
        "certfleet_rollouts",
        "certfleet_device_transitions_total",
        "certfleet_bundles_pushed_total",
        "certfleet_bundles_rejected_total",
        "certfleet_webhooks_total",
        "certfleet_scan_duration_seconds",
    } <= queried


def conf_value(text: str, key: str) -> list[str]:
    """Every value of `key` in a mosquitto.conf."""
    return [
        line.split(None, 1)[1]
        for line in text.splitlines()
        if line.strip() and not line.startswith("#") and line.split()[0] == key
    ]


def mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """A compose service's bind mounts: container path -> host path (":ro" dropped)."""
    return {parts[1]: parts[0] for parts in (str(v).split(":") for v in service.get("volumes", []))}


def test_the_crl_certfleet_writes_is_the_one_the_broker_reads(
    env_example: dict[str, str],
) -> None:
    """compose, systemd and Kubernetes put CERTFLEET_CRL_FILE where the broker's crlfile is.

    compose mounts one host directory into the workers (read-write) and the broker
    (read-only) and runs the broker under the script that reloads it; systemd watches
    the file inside the workers' state directory and reloads mosquitto; the Kubernetes
    workers mount the claim that the broker is told to mount. The device listener is
    the one with the crlfile, and the issuer's CA is the broker's cafile there.
    """
    conf = MOSQUITTO_CONF.read_text()
    (crlfile,) = conf_value(conf, "crlfile")
    device_listener = conf.split("listener 8883", 1)[1].split("\nlistener ", 1)[0]
    assert f"crlfile {crlfile}" in device_listener
    assert "require_certificate true" in device_listener
    assert "use_identity_as_username true" in device_listener

    crl = Path(env_example["CERTFLEET_CRL_FILE"])
    assert crl.name == Path(crlfile).name
    assert "CERTFLEET_CRL_RELOAD_PID_FILE" not in env_example, "the broker's side reloads"
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    worker, broker = mounts(services["worker"]), mounts(services["mosquitto"])
    assert worker[str(crl.parent)] == broker[str(Path(crlfile).parent)] == "./crl"
    assert services["mosquitto"]["volumes"].count(f"./crl:{Path(crlfile).parent}:ro") == 1
    script = f"/mosquitto/config/{CRL_RELOAD_SCRIPT.name}"
    assert broker[script] == f"./mosquitto/{CRL_RELOAD_SCRIPT.name}"
    assert services["mosquitto"]["command"] == ["sh", script]
    secrets = {
        f"/run/secrets/{name}": spec["file"]
        for name, spec in yaml.safe_load(COMPOSE.read_text())["secrets"].items()
    }
    assert (
        secrets[env_example["CERTFLEET_ISSUER_CA_CERT_FILE"]] == "./mosquitto/certs/device-ca.pem"
    )
    (cafile,) = conf_value(device_listener, "cafile")
    assert cafile.endswith("/certs/device-ca.pem")
    assert env_example["CERTFLEET_ISSUER_CA_KEY_FILE"] in secrets

    path_unit = read_unit(SYSTEMD / "certfleet-crl-reload.path")
    assert path_unit["Path"]["PathChanged"] == [str(crl)]
    assert path_unit["Path"]["Unit"] == ["certfleet-crl-reload.service"]
    reload_unit = read_unit(SYSTEMD / "certfleet-crl-reload.service")
    assert reload_unit["Service"]["ExecStart"] == ["/bin/systemctl try-restart mosquitto.service"]
    assert "certfleet-crl-reload.path" in " ".join(
        read_unit(SYSTEMD / "certfleet.target")["Unit"]["Wants"]
    )
    (state,) = read_unit(SYSTEMD / "certfleet-worker@.service")["Service"]["StateDirectory"]
    assert Path("/var/lib", state) == crl.parent

    docs = k8s_documents()
    (config,) = [d["data"] for d in docs if d["kind"] == "ConfigMap"]
    (worker_pod,) = [
        d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "certfleet-worker"
    ]
    (container,) = worker_pod["containers"]
    mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in worker_pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    k8s_crl = Path(config["CERTFLEET_CRL_FILE"])
    (volume,) = [name for name, path in mounted.items() if Path(path) == k8s_crl.parent]
    assert claims[volume] in {
        d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"
    }
    (init,) = worker_pod["initContainers"]
    copied = " ".join(init["command"])
    for name in ("CERTFLEET_ISSUER_CA_CERT_FILE", "CERTFLEET_ISSUER_CA_KEY_FILE"):
        assert config[name] in copied, f"the init container copies {name}"
    assert (
        f"install -m 0600 /secret/device-ca-key.pem {config['CERTFLEET_ISSUER_CA_KEY_FILE']}"
        in copied
    )


def test_the_broker_script_restarts_the_broker_when_certfleet_replaces_the_crl(
    tmp_path: Path,
) -> None:
    """Under run-with-crl-reload.sh a revocation counts for new connections within seconds.

    Mosquitto 2.0 alone would keep accepting the revoked certificate until a SIGHUP or
    a restart (tests/integration/test_broker_mtls.py shows that); the script restarts it
    on the same ports, and SIGTERM to the script stops the broker too.
    """
    pki = make_pki(tmp_path / "pki")
    broker = start_mtls_broker(tmp_path / "broker", pki, wrapper=CRL_RELOAD_SCRIPT)
    try:
        device = device_identity(pki.device_ca, "dev-1")
        assert try_connect(broker, device.pem, device.key_pem) == "accepted"
        now = datetime.now(UTC)
        revoked = RevokedCertificate(
            serial=device.certificate.serial_number,
            revoked_at=now,
            not_after=device.certificate.not_valid_after_utc,
            device_id="dev-1",
        )
        issuer = LocalCaIssuer(pki.device_ca_file, pki.device_ca_key_file)
        CrlFilePublisher(pki.crl_file).publish(
            issuer.sign_crl([revoked], now=now, next_update=now + timedelta(days=1))
        )
        wait_until(
            lambda: try_connect(broker, device.pem, device.key_pem) == "certificate_revoked",
            timeout=20,
            interval=0.5,
            what="the revoked certificate refused",
        )
        other = device_identity(pki.device_ca, "dev-2")
        assert try_connect(broker, other.pem, other.key_pem) == "accepted"
        output = (broker.service.workdir / "mosquitto.out").read_text()
        assert output.count("restarting mosquitto") == 1, output
    finally:
        broker.stop()
    assert broker.service.process.returncode == 0, "SIGTERM stops the script and the broker"
    assert "mosquitto version" in broker.service.log_file.read_text()


def test_every_listener_has_a_stable_client_id_of_its_own(env_example: dict[str, str]) -> None:
    """compose, Kubernetes and systemd each give every listener a fixed, distinct client id.

    It is what keeps a listener's session, and the messages queued in it, across a
    restart; two listeners with one id would take the session from each other.
    """
    compose = [r for r in compose_roles(env_example) if r.kind == "listener"]
    assert {r.source.removeprefix("compose:"): r.client_id for r in compose} == COMPOSE_LISTENERS
    assert len(set(COMPOSE_LISTENERS.values())) == len(COMPOSE_LISTENERS)

    docs = k8s_documents()
    (listener,) = [
        d
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
        and d["metadata"]["name"] == "certfleet-listener"
    ]
    assert listener["kind"] == "StatefulSet", "stable pod names, so stable client ids"
    assert listener["spec"]["replicas"] >= 2
    (container,) = listener["spec"]["template"]["spec"]["containers"]
    (client_id,) = [e for e in container["env"] if e["name"] == CLIENT_ID]
    assert client_id["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    (governing,) = [
        d
        for d in docs
        if d["kind"] == "Service" and d["metadata"]["name"] == listener["spec"]["serviceName"]
    ]
    assert governing["spec"]["clusterIP"] == "None", "a StatefulSet's Service is headless"
    labels = listener["spec"]["template"]["metadata"]["labels"]
    assert governing["spec"]["selector"].items() <= labels.items()
    assert listener["spec"]["selector"]["matchLabels"] == labels

    systemd = [r for r in systemd_roles(env_example) if r.kind == "listener"]
    assert [r.source for r in systemd] == ["systemd:certfleet-listener@.service"], "a template"
    unit = read_unit(SYSTEMD / "certfleet-listener@.service")["Service"]
    assert f"{CLIENT_ID}=certfleet-listener-%H-%i" in unit["Environment"]

    for role in (*compose_roles(env_example), *k8s_roles(), *systemd_roles(env_example)):
        if role.kind != "listener":
            assert role.client_id is None, f"{role.source} sets a client id"


def unit_option(argv: list[str], name: str) -> str:
    """The value of `--name=VALUE` in a command line."""
    (value,) = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    return value


def test_no_private_signing_key_is_shipped_the_root_is_in_a_token(
    env_example: dict[str, str],
) -> None:
    """compose, systemd and Kubernetes sign with a root key in a PKCS#11 token (issue 17).

    No deployment file names a signing key file or hands one over (compose secret,
    Kubernetes Secret, env file); the token's PIN (a PIN, not a key) reaches the workers
    only; compose mounts the socket of the p11-kit server that certfleet-p11-kit.service
    runs into the workers only, at the address the env file names; the shipped settings
    are valid together (a delegation outlives a bundle).
    """
    deploy_text = {
        path: path.read_text(errors="replace") for path in DEPLOY.rglob("*") if path.is_file()
    }
    for path, text in deploy_text.items():
        for word in ("CERTFLEET_SIGNING_KEY_FILE", "signing-key.pem", "signing_key"):
            assert word not in text, f"{path.relative_to(REPO)} names {word}"

    docs = k8s_documents()
    (config,) = [d["data"] for d in docs if d["kind"] == "ConfigMap"]
    (secret,) = [d["stringData"] for d in docs if d["kind"] == "Secret"]
    for source, env in (("env.example", env_example), ("ConfigMap", config)):
        assert env["CERTFLEET_ROOT_SIGNER"] == "pkcs11", source
        for name in ("MODULE", "TOKEN", "KEY_LABEL", "PIN_FILE"):
            assert env[f"CERTFLEET_PKCS11_{name}"], f"{source}: CERTFLEET_PKCS11_{name}"
        settings = Settings.model_validate(
            {k.removeprefix("CERTFLEET_").lower(): v for k, v in env.items() if k in SETTINGS}
        )
        assert settings.delegation_hours * 3600 >= 2 * settings.bundle_ttl_seconds, (
            f"{source}: a delegation renewed at half its life covers a new bundle"
        )
    private = [name for name, value in secret.items() if "PRIVATE KEY" in value]
    assert private == ["device-ca-key.pem"], "the device CA's key is the Secret's only key"
    assert secret["pkcs11-pin"]

    services = yaml.safe_load(COMPOSE.read_text())["services"]
    socket_path = Path(env_example["P11_KIT_SERVER_ADDRESS"].removeprefix("unix:path="))
    for name, service in services.items():
        secrets = [s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])]
        mounted = mounts(service)
        if name == "worker":
            assert "pkcs11_pin" in secrets
            assert mounted[str(socket_path.parent)] == str(socket_path.parent)
        else:
            assert "pkcs11_pin" not in secrets, name
            assert str(socket_path.parent) not in mounted, name
    assert env_example["CERTFLEET_PKCS11_PIN_FILE"] == "/run/secrets/pkcs11_pin"

    server = read_unit(SYSTEMD / P11_KIT_UNIT)["Service"]
    (exec_start,) = server["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[:3] == ["/usr/bin/p11-kit", "server", "--foreground"]
    assert Path(unit_option(argv, "name")) == socket_path
    assert server["RuntimeDirectory"] == [socket_path.parent.name]
    assert server["RuntimeDirectoryPreserve"] == ["yes"], "a container's mount survives restarts"
    assert unit_option(argv, "user") == "certfleet", "it answers the units' user only"
    assert argv[-1] == f"pkcs11:token={env_example['CERTFLEET_PKCS11_TOKEN']}"
    worker = read_unit(SYSTEMD / "certfleet-worker@.service")["Unit"]
    assert P11_KIT_UNIT in " ".join(worker["After"])
    assert P11_KIT_UNIT in " ".join(worker["Wants"])
    assert P11_KIT_UNIT in " ".join(read_unit(SYSTEMD / "certfleet.target")["Unit"]["Wants"])
    for path in sorted(SYSTEMD.glob("*.service")):
        if path.name in BROKER_SIDE_UNITS or path.name.startswith("certfleet-worker@"):
            continue
        hidden = read_unit(path)["Service"].get("InaccessiblePaths", [])
        assert f"-{SYSTEMD_PIN_FILE}" in hidden, f"{path.name} cannot read the PIN"

    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }
    for name, pod in pods.items():
        items = [
            item["key"]
            for volume in pod.get("volumes", [])
            for item in volume.get("secret", {}).get("items", [])
        ]
        assert ("pkcs11-pin" in items) == (name == "certfleet-worker"), name
    (init,) = pods["certfleet-worker"]["initContainers"]
    copied = " ".join(init["command"])
    assert f"install -m 0600 /secret/pkcs11-pin {config['CERTFLEET_PKCS11_PIN_FILE']}" in copied


# -- docker-compose config ------------------------------------------------------------------


def test_compose_file_is_valid(tmp_path: Path) -> None:
    """`docker-compose config` accepts deploy/compose.yaml with the example env file."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip(
            "docker-compose is not installed (apt-get install -y docker-compose); "
            "it is what validates deploy/compose.yaml"
        )
    project = tmp_path / "deploy"
    project.mkdir()
    shutil.copy(ENV_EXAMPLE, project / "certfleet.env")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), "--project-directory", str(project), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COMPOSE_INTERACTIVE_NO_CLI": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "is not set" not in result.stderr, result.stderr
    services = yaml.safe_load(result.stdout)["services"]

    certfleet = (CERTFLEET_SERVICES - {"listener"}) | set(COMPOSE_LISTENERS)
    assert set(services) == {"redis", "mosquitto", *certfleet}
    for name in certfleet:
        service = services[name]
        assert service["image"] == "certfleet:latest", name
        assert Path(service["build"]["context"]) == tmp_path, "build: .. is the repo root"
        assert service["environment"].get(CLIENT_ID) == COMPOSE_LISTENERS.get(name), name
        assert service["environment"]["CERTFLEET_REDIS_URL"] == "redis://redis:6379/0"
    for name in COMPOSE_LISTENERS:
        assert services[name]["command"] == ["certfleet", "listener"], name
        assert services[name].get("deploy", {}).get("replicas", 1) == 1, name
    assert services["worker"]["deploy"]["replicas"] == 2
    assert [s["source"] for s in services["worker"]["secrets"]] == [
        "pkcs11_pin",
        "device_ca_cert",
        "device_ca_key",
    ]
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1
    assert services["redis"]["command"][1:] == ["--appendonly", "yes", "--appendfsync", "everysec"]
    published = {
        name: sorted(str(p["target"] if isinstance(p, dict) else p) for p in s.get("ports", []))
        for name, s in services.items()
    }
    assert published["mosquitto"] == ["8883"], "1883 is for the services only"
    assert published["api"] == ["8080"]
    assert published["flower"] == ["127.0.0.1:5555:5555/tcp"]


# -- every command, for real ----------------------------------------------------------------


def http_status(url: str, headers: Mapping[str, str] | None = None) -> int | None:
    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 -- loopback
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 -- loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def ready_probe(role: Role, proc: Proc) -> Callable[[], bool]:
    """The sign that the process does its job, per kind."""

    def probe() -> bool:
        if proc.process.poll() is not None:
            raise AssertionError(f"{role.source} exited {proc.process.returncode}:\n{proc.log()}")
        if role.kind == "worker":
            return " ready." in proc.log()
        if role.kind == "beat":
            return "beat: Acquired lock" in proc.log()
        if role.kind == "listener":
            return "listener_subscribed" in proc.log()
        url = f"http://127.0.0.1:{role.port}/" + ("healthz" if role.kind == "api" else "")
        return http_status(url) == (200 if role.kind == "api" else 401)

    return probe


def connected_with_session(broker: LocalService, client_id: str) -> bool:
    """The broker's log shows `client_id` connected over MQTT 5 keeping its session."""
    log = broker.workdir / BROKER_LOG
    return log.exists() and f" as {client_id} (p5, c0," in log.read_text(errors="replace")


def run_roles(
    roles: list[Role],
    service_env: Mapping[str, str],
    broker: LocalService,
    log_dir: Path,
    token: RootToken,
) -> None:
    """Start every role at once, each on a Redis database of its own, wait, check, stop.

    A listener with a client id must have connected under it, keeping its session; a
    worker must have got its delegation from the root key in `token`.
    """
    redis_url = service_env["CERTFLEET_REDIS_URL"].rsplit("/", 1)[0]
    pki = log_dir / "deploy-pki"
    if not pki.exists():
        make_pki(pki)
    with ExitStack() as stack:
        started = []
        for db, role in enumerate(roles, 1):
            env = {
                **role.env,
                **service_env,
                "CERTFLEET_REDIS_URL": f"{redis_url}/{db}",
                **token.env_for(role),
                # the device CA and the CRL's directory, where the files put them
                "CERTFLEET_ISSUER_CA_CERT_FILE": str(pki / "device-ca.pem"),
                "CERTFLEET_ISSUER_CA_KEY_FILE": str(pki / "device-ca-key.pem"),
                "CERTFLEET_CRL_FILE": str(pki / "devices.crl.pem"),
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "HOSTNAME": socket.gethostname(),
            }
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", role.source)
            proc = start(name, role.argv, env=env, log_dir=log_dir)
            stack.callback(proc.stop)
            started.append((role, proc, env))
        deadline = time.monotonic() + READY_TIMEOUT
        for role, proc, env in started:
            try:
                wait_until(
                    ready_probe(role, proc),
                    timeout=max(1.0, deadline - time.monotonic()),
                    interval=0.2,
                    what=f"{role.source} ready ({shlex.join(role.argv)})",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n--- its log:\n{proc.log()[-4000:]}") from None
            client_id = role.client_id
            if client_id is not None:
                wait_until(
                    partial(connected_with_session, broker, client_id),
                    timeout=READY_TIMEOUT,
                    interval=0.2,
                    what=f"{role.source} connected as {client_id} with its session",
                )
            if role.kind == "worker":
                wait_until(
                    partial(token.delegated, proc),
                    timeout=READY_TIMEOUT,
                    interval=0.2,
                    what=f"{role.source}'s delegation from the root key {token.kid.hex()}",
                )
            if role.kind == "flower":
                user = env["FLOWER_BASIC_AUTH"].split(",")[0]
                auth = {"Authorization": "Basic " + b64encode(user.encode()).decode()}
                assert http_status(f"http://127.0.0.1:{role.port}/", auth) == 200, role.source
            for check in role.healthchecks:
                result = subprocess.run(
                    check, env={**os.environ, **env}, capture_output=True, timeout=30, check=False
                )
                assert result.returncode == 0, (
                    f"{role.source} health check {check} failed:\n{result.stdout!r}\n"
                    f"{result.stderr!r}"
                )


def p11_kit_client_module() -> Path | None:
    """p11-kit's client module on this machine (Debian: p11-kit-modules), or None."""
    listing = subprocess.run(
        ["dpkg", "-L", "p11-kit-modules"], capture_output=True, text=True, check=False
    ).stdout
    found = [line for line in listing.splitlines() if line.endswith("/pkcs11/p11-kit-client.so")]
    return Path(found[0]) if found and Path(found[0]).is_file() else None


@dataclass
class RootToken:
    """The test's token holding the root key, and how the started processes reach it."""

    token: SoftHsmToken
    kid: bytes
    socket: Path | None  # the p11-kit server's socket; None: no p11-kit on this machine
    client_module: Path | None

    def env_for(self, role: Role) -> dict[str, str]:
        """What differs from the shipped settings on this machine, for a worker: the PIN
        file, and the module where the shipped one is not here. The other roles keep the
        shipped settings, whose PIN file they do not have (the deployments give it to the
        workers only), and must get ready all the same."""
        if role.kind != "worker":
            return {}
        env = {"CERTFLEET_PKCS11_PIN_FILE": str(self.token.pin_file)}
        if role.env.get("P11_KIT_SERVER_ADDRESS") and self.socket and self.client_module:
            env["CERTFLEET_PKCS11_MODULE"] = str(self.client_module)
            env["P11_KIT_SERVER_ADDRESS"] = f"unix:path={self.socket}"
        else:
            env["CERTFLEET_PKCS11_MODULE"] = str(self.token.module)
        return env

    def delegated(self, proc: Proc) -> bool:
        """The worker logged a delegation signed by this root key."""
        return any(
            "delegation_issued" in line and self.kid.hex() in line
            for line in proc.log().splitlines()
        )


@pytest.fixture
def root_token(tmp_path: Path, env_example: dict[str, str]) -> Iterator[RootToken]:
    """A SoftHSM2 token labelled as the deployments say, its root key made in it, served
    by certfleet-p11-kit.service's command where p11-kit is installed."""
    label = env_example["CERTFLEET_PKCS11_TOKEN"]
    with softhsm_token(tmp_path / "hsm", label=label) as token:
        assert token.key_label == env_example["CERTFLEET_PKCS11_KEY_LABEL"]
        kid = key_id(token.create_root())
        release_tokens()
        client = p11_kit_client_module()
        if client is None or shutil.which("p11-kit") is None:
            yield RootToken(token, kid, None, None)
            return
        (exec_start,) = read_unit(SYSTEMD / P11_KIT_UNIT)["Service"]["ExecStart"]
        sock = tmp_path / "p11" / "pkcs11"
        sock.parent.mkdir()
        argv = [
            f"--name={sock}" if word.startswith("--name=") else word
            for word in shlex.split(exec_start)
            # one user runs the test and its processes: the server answers that user
            if not word.startswith(("--user=", "--group="))
        ]
        argv[0] = shutil.which("p11-kit") or argv[0]
        server = start("p11-kit-server", argv, env=token.env, log_dir=tmp_path)
        try:
            wait_until(sock.exists, timeout=15, what=f"p11-kit server's socket:\n{server.log()}")
            yield RootToken(token, kid, sock, client)
        finally:
            server.stop()


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalService]:
    """A Mosquitto for this test alone: the listeners' persistent sessions end with it.

    Its log also goes to a file, written line by line (its stdout is buffered).
    """
    workdir = tmp_path / "mosquitto"
    broker = start_mosquitto(workdir, extra_config=f"log_dest file {workdir / BROKER_LOG}\n")
    yield broker
    broker.stop()


@pytest.fixture
def deploy_env(service_env: dict[str, str], own_broker: LocalService) -> dict[str, str]:
    """The test services' settings, with MQTT on this test's own broker."""
    return {
        **service_env,
        "CERTFLEET_MQTT_HOST": own_broker.host,
        "CERTFLEET_MQTT_PORT": str(own_broker.port),
    }


def start_redis_with_compose_command(tmp_path: Path) -> subprocess.Popen[bytes]:
    """compose's redis command (AOF, fsync every second) on a free port, and its health check."""
    spec = yaml.safe_load(COMPOSE.read_text())["services"]["redis"]
    argv, port = compose_argv(spec["command"]), free_port()
    binary = shutil.which(argv[0]) or f"/usr/bin/{argv[0]}"
    tmp_path.mkdir(exist_ok=True)
    process = subprocess.Popen(
        [binary, *argv[1:], "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    health = compose_argv(spec["healthcheck"]["test"][1:])

    def pong() -> bool:
        ping = [health[0], "-p", str(port), *health[1:]]
        return subprocess.run(ping, capture_output=True, check=False).stdout.strip() == b"PONG"

    wait_until(pong, timeout=15, what="redis with compose's command")
    info = subprocess.run(
        [health[0], "-p", str(port), "config", "get", "appendfsync"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert info.stdout.split() == ["appendfsync", "everysec"]
    assert any(tmp_path.glob("appendonly*")), "AOF is on"
    return process


def test_compose_commands_start_and_get_ready(
    env_example: dict[str, str],
    deploy_env: dict[str, str],
    own_broker: LocalService,
    log_dir: Path,
    root_token: RootToken,
) -> None:
    """worker, beat, listeners, api and flower as compose runs them; so does its Redis."""
    redis = start_redis_with_compose_command(log_dir / "redis")
    try:
        run_roles(compose_roles(env_example), deploy_env, own_broker, log_dir, root_token)
    finally:
        redis.terminate()
        redis.wait(timeout=10)


def test_systemd_commands_start_and_get_ready(
    env_example: dict[str, str],
    deploy_env: dict[str, str],
    own_broker: LocalService,
    log_dir: Path,
    root_token: RootToken,
) -> None:
    """Every ExecStart= and Environment=, with /opt/certfleet's venv swapped for this repo's."""
    run_roles(systemd_roles(env_example), deploy_env, own_broker, log_dir, root_token)


def test_k8s_commands_start_and_get_ready(
    deploy_env: dict[str, str], own_broker: LocalService, log_dir: Path, root_token: RootToken
) -> None:
    """Every Deployment's and StatefulSet's command with its env, and its exec probes."""
    run_roles(k8s_roles(), deploy_env, own_broker, log_dir, root_token)
