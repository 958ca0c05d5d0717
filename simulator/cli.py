"""`certfleet simulate`: the simulator's command, a plugin of the `certfleet` CLI.

The product's CLI never imports the simulator: it loads this command through the
`certfleet.commands` entry point group (pyproject.toml). The heavy modules load
inside the command, so `certfleet --help` stays light.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rich.console import Console

from simulator.cli_options import (
    FAULTS,
    FaultPlan,
    KeyEscrowFile,
    identity_not_after,
    load_identities,
    parse_faults,
    write_attestation_keys,
)

if TYPE_CHECKING:
    from simulator.fleet import IdentityProvisioning

__all__ = ["FAULTS", "simulate"]

err = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    """Print an error on stderr as the `certfleet` command does; raise the returned Exit."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(1)


def _provisioned_signer(path: Path) -> ec.EllipticCurvePublicKey:
    """The signer key the devices are provisioned with: a P-256 PEM public key, or its private key.

    Read as a device's factory would read `certfleet keys export-public`: the mode of a
    private key file is the product's concern (its signer refuses one readable by others).
    """
    data = path.read_bytes()
    try:
        key = (
            serialization.load_pem_private_key(data, password=None).public_key()
            if b"PRIVATE KEY" in data
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"{path} is not an unencrypted PEM key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{path} must hold a P-256 key")
    return key


def _trusted_signers(
    signer_pub: Path | None, default: Path, *, root_in_token: bool = False
) -> dict[bytes, ec.EllipticCurvePublicKey]:
    """Key id -> key of the root the devices trust; none (with a warning) if the default fails.

    The default is the development root key file; a root in a PKCS#11 token is not read
    here (a device only ever gets its public key): give `--signer-pub`.
    """
    from orchestrator.protocol.cose import key_id  # noqa: PLC0415 -- loads only when the command runs

    if signer_pub is None and root_in_token:
        err.print(
            "[yellow]devices trust no bundle signer[/] (the root key is in a PKCS#11 token, "
            "CERTFLEET_ROOT_SIGNER=pkcs11: give --signer-pub with the public key "
            "`certfleet keys export-public` prints)",
            highlight=False,
        )
        return {}
    try:
        public = _provisioned_signer(signer_pub or default)
    except (ValueError, OSError) as exc:
        if signer_pub is not None:
            raise _fail(str(exc)) from None
        err.print(f"[yellow]devices trust no bundle signer[/] ({exc})", highlight=False)
        return {}
    return {key_id(public): public}


def _identity(
    ca: Path | None,
    ca_key: Path | None,
    given: Path | None,
    tag: int,
    days: float,
    *,
    scale: bool,
) -> IdentityProvisioning | None:
    """How the devices get their first identity, if `--identity-ca` or `--identities` asks."""
    from simulator.fleet import IdentityProvisioning, ca_issuer  # noqa: PLC0415
    from simulator.pki import load_ca  # noqa: PLC0415

    if ca is None and ca_key is None and given is None:
        return None
    if (ca is None) != (ca_key is None):
        raise _fail("--identity-ca and --identity-ca-key go together")
    if scale:
        raise _fail("identities need a connection of each device's own; drop --scale")
    issue = None
    try:
        if ca is not None and ca_key is not None:
            issue = ca_issuer(load_ca(ca, ca_key), not_after=identity_not_after(days))
        identities = load_identities(given) if given is not None else {}
    except (ValueError, TypeError, OSError) as exc:
        raise _fail(f"cannot provision the identities: {exc}") from None
    return IdentityProvisioning(issue, tag=tag, given=identities)


def _faults(values: list[str], devices: int, *, scale: bool) -> FaultPlan:
    """The `--fault` options; `NAME@N` only in the per-device mode (scale mode has no per-device
    faults)."""
    try:
        plan = parse_faults(values, devices)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if scale and plan.by_device:
        raise _fail("--fault NAME@N names devices of the per-device mode; drop --scale")
    return plan


def _check_identities(identity: IdentityProvisioning | None, device_ids: list[str]) -> None:
    """Refuse `--identities` that leave a device without one when no CA can issue it."""
    if identity is None or identity.issue is not None:
        return
    missing = [name for name in device_ids if name not in identity.given]
    if missing:
        raise _fail(f"--identities has none for {missing[0]} (and {len(missing) - 1} more)")


def simulate(  # noqa: PLR0917 -- typer maps each CLI option to a parameter
    devices: Annotated[int, typer.Option("--devices", min=1, help="How many devices.")],
    ca: Annotated[Path, typer.Option("--ca", exists=True, dir_okay=False, help="CA chain PEM.")],
    tag: Annotated[int, typer.Option("--tag", help="sec_tag that holds the CA chain.")] = 42,
    id_prefix: Annotated[str, typer.Option("--id-prefix", help="Device id prefix.")] = "sim-",
    duration: Annotated[
        float | None,
        typer.Option("--duration", min=0, help="Seconds to run (default: until Ctrl-C)."),
    ] = None,
    signer_pub: Annotated[
        Path | None,
        typer.Option(
            "--signer-pub",
            exists=True,
            dir_okay=False,
            help="Root public key the devices trust (`certfleet keys export-public`; "
            "default: the public half of the development key CERTFLEET_SIGNING_KEY_FILE).",
        ),
    ] = None,
    tls: Annotated[
        bool,
        typer.Option("--tls", help="Connect over TLS, validating the broker with the active tags."),
    ] = False,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            help="Fault injection, NAME for every device or NAME@N,M for devices N and M: "
            "probe-refused (the devices' network refuses every probe); accept-replay (a "
            "broken firmware that accepts replayed bundles); csr-wrong-subject, "
            "csr-reused-key, csr-foreign-key (device N+1's key), csr-bad-signature, "
            "attestation-forged (a keygen whose CSR "
            "certfleet must refuse); identity-refused (the broker refuses the device's new "
            "identities).",
        ),
    ] = None,
    identity_ca: Annotated[
        Path | None,
        typer.Option(
            "--identity-ca",
            exists=True,
            dir_okay=False,
            help="Give each device a client certificate of this CA (PEM) and its key in "
            "--identity-tag, presented to a TLS broker; needs --identity-ca-key.",
        ),
    ] = None,
    identity_ca_key: Annotated[
        Path | None,
        typer.Option(
            "--identity-ca-key", exists=True, dir_okay=False, help="The --identity-ca's key."
        ),
    ] = None,
    identities: Annotated[
        Path | None,
        typer.Option(
            "--identities",
            exists=True,
            dir_okay=False,
            help="Factory identities made elsewhere: JSON {device id: {cert: PEM, key: PEM}}; "
            "devices not in it get one from --identity-ca.",
        ),
    ] = None,
    identity_tag: Annotated[
        int, typer.Option("--identity-tag", help="sec_tag of the devices' first identity.")
    ] = 44,
    identity_days: Annotated[
        float,
        typer.Option("--identity-days", min=0, help="Days until the first identities expire."),
    ] = 10.0,
    fleet_seed: Annotated[
        str,
        typer.Option(
            "--fleet-seed", help="Seed of the modems' attestation keys (with each device id)."
        ),
    ] = "certfleet",
    attestation_keys_out: Annotated[
        Path | None,
        typer.Option(
            "--attestation-keys-out",
            dir_okay=False,
            help="Write the devices' public attestation keys as JSON {device id: PEM} "
            "(CERTFLEET_ATTESTATION_KEYS_FILE); with --duration 0, write it and exit.",
        ),
    ] = None,
    broker_port: Annotated[
        int | None,
        typer.Option(
            "--broker-port", help="The devices' broker port (default: CERTFLEET_MQTT_PORT)."
        ),
    ] = None,
    scale: Annotated[
        bool,
        typer.Option(
            "--scale",
            help="Scale mode: many devices per process and per MQTT connection, probes "
            "shared by devices that would make the same handshake.",
        ),
    ] = False,
    connections: Annotated[
        int, typer.Option("--connections", min=1, help="Scale mode: MQTT connections per process.")
    ] = 4,
    processes: Annotated[
        int,
        typer.Option(
            "--processes", min=1, help="Scale mode: processes, each with a slice of the devices."
        ),
    ] = 1,
    key_escrow: Annotated[
        Path | None,
        typer.Option(
            "--key-escrow",
            dir_okay=False,
            help="Tests only: append every private key the modems hold or make to this file "
            "(JSON lines), for a test that searches what a run recorded for them.",
        ),
    ] = None,
) -> None:
    """Run N simulated nRF9160 devices holding the CA chain in a sec_tag."""
    from orchestrator.config import Settings  # noqa: PLC0415 -- loads only when the command runs
    from orchestrator.logs import configure_logging  # noqa: PLC0415
    from orchestrator.protocol import Topics  # noqa: PLC0415
    from simulator.agent import BrokerAddress  # noqa: PLC0415
    from simulator.fleet import build_fleet, device_id, provisioned_modem, run_fleet  # noqa: PLC0415
    from simulator.modem import ModemError  # noqa: PLC0415

    plan = _faults(fault or [], devices, scale=scale)
    identity = _identity(
        identity_ca, identity_ca_key, identities, identity_tag, identity_days, scale=scale
    )
    _check_identities(identity, [device_id(id_prefix, n) for n in range(devices)])
    if attestation_keys_out is not None:
        ids = [device_id(id_prefix, n) for n in range(devices)]
        write_attestation_keys(attestation_keys_out, ids, fleet_seed)
        err.print(f"attestation keys of {devices} devices -> {attestation_keys_out}")
        if duration == 0:
            return
    if not scale and (connections != 4 or processes != 1):
        raise _fail("--connections and --processes belong to scale mode; add --scale")
    if scale and tls:
        raise _fail(
            "--scale shares each MQTT connection between devices, so it cannot validate the "
            "broker with each device's tags; drop --tls or --scale"
        )
    settings = Settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    signers = _trusted_signers(
        signer_pub, settings.signing_key_file, root_in_token=settings.root_signer == "pkcs11"
    )
    broker = BrokerAddress(
        host=settings.mqtt_host,
        port=broker_port or settings.mqtt_port,
        username=settings.mqtt_username,
        password=settings.mqtt_password,
        tls=tls,
    )
    ca_chain = ca.read_bytes()
    try:
        provisioned_modem(ca_chain, tag)
    except (ModemError, ValueError) as exc:
        raise _fail(f"cannot load {ca} into sec_tag {tag}: {exc}") from None
    topics = Topics(settings.topic_prefix)
    try:
        for n in (0, devices - 1):
            topics.state(device_id(id_prefix, n))
    except ValueError as exc:
        raise _fail(f"--id-prefix {id_prefix!r} makes no valid device id: {exc}") from None
    faults = plan.everywhere
    err.print(
        f"{devices} devices ({id_prefix}00000..) with {ca.name} in sec_tag {tag} "
        f"-> {'mqtts' if tls else 'mqtt'}://{settings.mqtt_host}:{broker.port}"
        + (f" (scale mode: {processes} x {connections} connections)" if scale else "")
    )

    def ready(count: int) -> None:
        err.print(f"ready: {count} devices", highlight=False)

    if scale:
        from simulator.scale import (  # noqa: PLC0415
            ScaleSpec,
            run_scale_fleet,
            run_scale_processes,
        )

        spec = ScaleSpec(
            count=devices,
            ca_chain=ca_chain,
            sec_tag=tag,
            id_prefix=id_prefix,
            broker=broker,
            topics=topics,
            signers=signers,
            faults=faults,
            connections=connections,
        )
        if processes == 1:
            asyncio.run(run_scale_fleet(spec, duration=duration, on_ready=ready))
        elif run_scale_processes(spec, processes=processes, duration=duration, on_ready=ready):
            raise _fail("a simulator process ended with an error; see its log above")
        return
    try:
        agents = build_fleet(
            count=devices,
            ca_chain=ca_chain,
            sec_tag=tag,
            id_prefix=id_prefix,
            broker=broker,
            topics=topics,
            signers=signers,
            faults=faults,
            identity=identity,
            fleet_seed=fleet_seed,
            device_faults=plan.by_device,
            key_escrow=KeyEscrowFile(key_escrow) if key_escrow is not None else None,
        )
    except (ModemError, ValueError) as exc:
        raise _fail(f"cannot provision the devices: {exc}") from None
    asyncio.run(run_fleet(agents, duration=duration))
