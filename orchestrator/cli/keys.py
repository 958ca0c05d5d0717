"""`certfleet keys`: the root signing key, the workers' delegations, and their revocation."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rich.table import Table

from orchestrator.adapters.file_signer import generate_key_file, load_public_key
from orchestrator.cli.common import JsonFlag, connected, err, fail, out, print_json
from orchestrator.clock import utcnow
from orchestrator.config import Settings
from orchestrator.domain.errors import CertfleetError
from orchestrator.logs import configure_logging
from orchestrator.protocol.cose import key_id
from orchestrator.protocol.delegation import DelegationError, Revocation
from orchestrator.protocol.topics import is_valid_device_id
from orchestrator.services.revocations import (
    RevocationDeps,
    RevocationSent,
    record_revocation,
    send_revocation,
)

if TYPE_CHECKING:
    from orchestrator.bootstrap import Container
    from orchestrator.ports.stores import IssuedDelegation

__all__ = ["keys_app", "parse_before"]


keys_app = typer.Typer(
    help="The root signing key (ES256, P-256), the workers' delegations and their revocation.",
    no_args_is_help=True,
)

_KID = re.compile(r"[0-9a-fA-F]{16}")


def _print_public(public: ec.EllipticCurvePublicKey, *, as_json: bool) -> None:
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    point = public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    kid = key_id(public).hex()
    if as_json:
        print_json({"kid": kid, "alg": "ES256", "public_key_pem": pem, "public_point": point.hex()})
    else:
        out.print(f"# key id {kid} (ES256, P-256)", highlight=False)
        out.print(pem, end="", highlight=False)


@keys_app.command("generate")
def generate(
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write it (default: CERTFLEET_SIGNING_KEY_FILE)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key.")] = False,
) -> None:
    """Create a development root key: a P-256 key in a file of mode 0600 (for
    CERTFLEET_ROOT_SIGNER=dev-file; deployments keep the root in a token, see create-root)."""
    path = out_file or Settings().signing_key_file
    try:
        public = generate_key_file(path, overwrite=force)
    except CertfleetError as exc:
        raise fail(str(exc)) from None
    err.print(f"wrote {path} (mode 0600), a development root key")
    out.print(key_id(public).hex(), highlight=False)


@keys_app.command("create-root")
def create_root(
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Destroy the token's key pair of that label and make a new one (devices "
            "trusting the old key must be sent trust-signer first).",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Make the root key pair in the PKCS#11 token (CERTFLEET_PKCS11_*): P-256, the private
    half sensitive and never extractable. Prints its key id and public key."""
    from orchestrator.adapters.pkcs11_signer import create_root_key  # noqa: PLC0415 -- token only

    try:
        settings = Settings()
        configure_logging(level=settings.log_level, fmt=settings.log_format)
        module, token, pin_file = (
            settings.pkcs11_module,
            settings.pkcs11_token,
            settings.pkcs11_pin_file,
        )
        if module is None or not token or pin_file is None:
            raise fail(
                "create-root needs CERTFLEET_PKCS11_MODULE, CERTFLEET_PKCS11_TOKEN and "
                "CERTFLEET_PKCS11_PIN_FILE (the token's module, its label, a 0600 file with "
                "its user PIN)"
            )
        public = create_root_key(module, token, settings.pkcs11_key_label, pin_file, force=force)
    except (CertfleetError, ValueError) as exc:
        raise fail(str(exc)) from None
    err.print(
        f"made the root key {settings.pkcs11_key_label!r} in token {token!r}; provision its "
        "public key into devices (below)"
    )
    if settings.root_signer != "pkcs11":
        err.print("set CERTFLEET_ROOT_SIGNER=pkcs11 for certfleet to sign with it")
    _print_public(public, as_json=as_json)


@keys_app.command("export-public")
def export_public(
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key", help="A key file (default: the configured root, token or development file)."
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Print the public key and key id that devices are provisioned to trust."""
    from orchestrator.adapters.root_signers import root_signer_from_settings  # noqa: PLC0415

    try:
        settings = Settings()
        if key_file is not None or settings.root_signer == "dev-file":
            public = load_public_key(key_file or settings.signing_key_file)
        else:
            public = root_signer_from_settings(settings).public_key
    except (CertfleetError, OSError, ValueError) as exc:
        raise fail(str(exc)) from None
    _print_public(public, as_json=as_json)


# -- delegations ----------------------------------------------------------------------------


def _when(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _delegation_document(issued: IssuedDelegation, revocation: Revocation) -> dict[str, Any]:
    d = issued.delegation
    return {
        "kid": d.kid.hex(),
        "worker": issued.worker,
        "root_kid": d.root_kid.hex(),
        "issued_at": _when(d.issued_at),
        "not_before": _when(d.not_before),
        "expires_at": _when(d.expires_at),
        "ops": list(d.scope.ops),
        "kinds": list(d.scope.kinds),
        "rollouts": list(d.scope.rollouts),
        "revoked": revocation.revokes(d),
    }


@keys_app.command("delegations")
def delegations(as_json: JsonFlag = False) -> None:
    """List the delegations the root signed for workers that have not expired."""
    with connected() as container:
        now = utcnow()
        active = container.delegations.active(now)
        revocation = container.delegations.revocation()
    documents = [_delegation_document(issued, revocation) for issued in active]
    if as_json:
        print_json(
            {
                "delegations": documents,
                "revocation": {
                    "kids": sorted(k.hex() for k in revocation.kids),
                    "before": _when(revocation.before) if revocation.before else None,
                },
            }
        )
        return
    table = Table("kid", "worker", "issued", "expires", "ops", "kinds", "rollouts", "revoked")
    for doc in documents:
        table.add_row(
            doc["kid"],
            doc["worker"],
            doc["issued_at"],
            doc["expires_at"],
            ",".join(doc["ops"]),
            ",".join(map(str, doc["kinds"])),
            ",".join(doc["rollouts"]) or "any",
            "yes" if doc["revoked"] else "",
        )
    out.print(table)
    out.print(
        f"{len(documents)} delegation(s) not expired; revoked: "
        f"{len(revocation.kids)} key id(s)"
        + (f", everything issued before {_when(revocation.before)}" if revocation.before else ""),
        highlight=False,
    )


# -- revoke ---------------------------------------------------------------------------------


def parse_before(text: str, *, now: datetime) -> int:
    """`--before`: `now`, epoch seconds, or an ISO 8601 time (UTC if it names no zone)."""
    if text.strip().lower() == "now":
        return int(now.timestamp())
    if text.strip().isdigit():
        return int(text.strip())
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--before takes now, epoch seconds or an ISO 8601 time, not {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def _parse_kids(values: Sequence[str]) -> list[bytes]:
    kids = []
    for value in values:
        if not _KID.fullmatch(value.strip()):
            raise ValueError(
                f"--kid takes a key id of 8 bytes in hex (16 digits), as `certfleet keys "
                f"delegations` lists it, not {value!r}"
            )
        kids.append(bytes.fromhex(value.strip()))
    return kids


def _revocation_to_send(
    container: Container, kids: Sequence[bytes], cut: int, *, now: datetime, sending: bool
) -> Revocation:
    """The fleet's revocation with `kids` and `cut` added (recorded), or as it stands."""
    registry = container.delegations
    if not kids and not cut:
        if not sending:
            raise fail("give --kid or --before to revoke, and --device or --all to send")
        return registry.revocation()
    try:
        return record_revocation(registry, kids=kids, before=cut, now=now)
    except DelegationError as exc:
        raise fail(str(exc)) from None


def _send(
    container: Container, revocation: Revocation, targets: list[str], *, now: datetime
) -> RevocationSent:
    """The revocation sent to `targets` (the broker reached only if there are some)."""
    if not targets:
        return RevocationSent(0, 0)
    try:
        deps = RevocationDeps(
            root=container.root_signer,
            inventory=container.inventory,
            sequences=container.sequences,
            publisher=container.publisher,  # connects: the broker may be away
            metrics=container.metrics,
        )
    except CertfleetError as exc:
        return RevocationSent(0, len(targets), str(exc))
    ttl = container.settings.bundle_ttl_seconds
    return send_revocation(deps, revocation, targets, now=now, ttl_seconds=ttl)


def _print_revoke_summary(
    revocation: Revocation, *, sent: int, targets: int, revoked: bool
) -> None:
    by_time = f", everything issued before {_when(revocation.before)}" if revocation.before else ""
    out.print(
        f"revoked: {len(revocation.kids)} key id(s){by_time}; sent to {sent} of {targets} "
        "device(s)",
        highlight=False,
    )
    if not targets:
        err.print("recorded only: send it with --device ID or --all")
    if revoked:
        err.print(
            "running workers read the revocation within 30 s and replace a revoked delegation "
            "of theirs by themselves"
        )


@keys_app.command("revoke")
def revoke(
    kid: Annotated[
        list[str] | None,
        typer.Option("--kid", help="A delegated key id (hex) to revoke; repeat for more."),
    ] = None,
    before: Annotated[
        str | None,
        typer.Option(
            "--before",
            help="Revoke every delegation issued before this time: now, epoch seconds or ISO 8601.",
        ),
    ] = None,
    device: Annotated[
        list[str] | None,
        typer.Option("--device", help="Send the revocation to this device; repeat for more."),
    ] = None,
    all_devices: Annotated[
        bool, typer.Option("--all", help="Send the revocation to every device certfleet knows.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Revoke delegations fleet-wide, then send devices a root-signed revoke with the whole list.

    Without --kid and --before it sends the revocation as it stands (to devices that missed it).
    """
    if device and all_devices:
        raise fail("give --device or --all, not both")
    bad_ids = [d for d in device or [] if not is_valid_device_id(d)]
    if bad_ids:
        raise fail(f"not a device id: {bad_ids[0]!r} (1-64 letters, digits or ._:-)")
    now = utcnow()
    try:
        kids = _parse_kids(kid or [])
        cut = parse_before(before, now=now) if before is not None else 0
    except ValueError as exc:
        raise fail(str(exc)) from None
    if cut > int(now.timestamp()) + 60:
        raise fail("--before lies in the future; it would revoke delegations not issued yet")
    with connected() as container:
        revocation = _revocation_to_send(
            container, kids, cut, now=now, sending=bool(device or all_devices)
        )
        targets = list(dict.fromkeys(device or [])) or (
            container.inventory.device_ids() if all_devices else []
        )
        result = _send(container, revocation, targets, now=now)
    summary: dict[str, Any] = {
        "kids": sorted(k.hex() for k in revocation.kids),
        "before": revocation.before,
        "devices": len(targets),
        "sent": result.sent,
        "not_sent": result.not_sent,
    }
    if result.error:
        summary["error"] = result.error
    if as_json:
        print_json(summary)
    else:
        _print_revoke_summary(
            revocation, sent=result.sent, targets=len(targets), revoked=bool(kids or cut)
        )
    if result.not_sent:
        raise fail(f"{result.not_sent} device(s) were not sent the revocation: {result.error}")
