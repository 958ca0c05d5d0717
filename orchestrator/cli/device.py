"""`certfleet device send` and `certfleet bundle inspect`."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError
from rich.table import Table

from orchestrator.adapters.file_signer import load_public_key
from orchestrator.bootstrap import Container, bootstrap
from orchestrator.cli.common import JsonFlag, err, fail, out, print_json
from orchestrator.clock import utcnow
from orchestrator.domain.endpoints import parse_endpoint
from orchestrator.domain.errors import CertfleetError
from orchestrator.protocol.bundle import BundleRejectedError, SignerKey, decode_payload
from orchestrator.protocol.cose import CoseError, Sign1Message, key_id
from orchestrator.protocol.delegation import (
    DELEGATION_LABEL,
    ROOT_OPS,
    Delegation,
    decode_delegation,
)
from orchestrator.protocol.reasons import Reason
from orchestrator.protocol.report import Phase, ReportMessage
from orchestrator.services.bundles import (
    BundleBody,
    IssuedBundle,
    issue_bundle,
    send_bundle,
    stage_body,
)
from orchestrator.services.inventory import parse_pem_chain, read_pem_files
from orchestrator.services.revocations import ROOT_SIGNATURES_METRIC

__all__ = ["bundle_app", "device_app"]


device_app = typer.Typer(help="Talk to one device.", no_args_is_help=True)
bundle_app = typer.Typer(help="Signed bundles.", no_args_is_help=True)

SUCCESS = {
    "stage": Phase.HEALTH_OK,
    "commit": Phase.COMMITTED,
    "rollback": Phase.ROLLED_BACK,
    "retire": Phase.RETIRED,
    "trust-signer": Phase.COMMITTED,
}
FAILURE = {Phase.REJECTED, Phase.HEALTH_FAILED, Phase.FALLBACK}


def _tags(value: str | None, option: str) -> list[int] | None:
    if value is None:
        return None
    try:
        tags = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise fail(f"{option} takes sec_tags separated by commas, e.g. 42,43") from None
    return tags


def _known_active(container: Container, device_id: str) -> list[int]:
    state = container.inventory.device_credentials(device_id)
    if state is None or state.active_tags is None:
        raise fail(
            f"certfleet has no active tag list for {device_id} (it has not reported one); "
            "give it with --active"
        )
    return list(state.active_tags)


def _stage(
    container: Container,
    device_id: str,
    *,
    ca: list[Path],
    tag: int | None,
    probe: str | None,
    probe_tags: list[int] | None,
    active: list[int] | None,
    commit_timeout: float,
) -> BundleBody:
    now = utcnow()
    if not ca or tag is None or probe is None:
        raise fail("--op stage needs --ca, --tag and --probe HOST:PORT")
    host, port = parse_endpoint(probe, what="--probe")
    pems = read_pem_files(ca)
    if active is None:
        active = sorted({*_known_active(container, device_id), tag})
    return stage_body(
        ca_pems=pems,
        tag=tag,
        probe_host=host,
        probe_port=port,
        probe_tags=probe_tags or [tag],
        active_after=active,
        commit_by=now + timedelta(seconds=commit_timeout),
    )


def _trust_signer(new_signer: Path | None, retire_kid: str | None) -> BundleBody:
    if new_signer is None:
        raise fail("--op trust-signer needs --signer-pub FILE (the key to trust)")
    public = load_public_key(new_signer)
    point = public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    try:
        retired = bytes.fromhex(retire_kid) if retire_kid else None
    except ValueError:
        raise fail("--retire-kid takes the key id in hex") from None
    return BundleBody(
        op="trust-signer",
        signer=SignerKey(kid=key_id(public), public_point=point),
        retire_kid=retired,
    )


def _body(
    container: Container,
    device_id: str,
    *,
    op: str,
    ca: list[Path],
    tag: int | None,
    probe: str | None,
    probe_tags: list[int] | None,
    active: list[int] | None,
    commit_timeout: float,
    new_signer: Path | None = None,
    retire_kid: str | None = None,
    undo_window: int = 0,
) -> BundleBody:
    if op == "stage":
        return _stage(
            container,
            device_id,
            ca=ca,
            tag=tag,
            probe=probe,
            probe_tags=probe_tags,
            active=active,
            commit_timeout=commit_timeout,
        )
    if op == "commit":
        if tag is None:
            raise fail("--op commit needs --tag (the staged sec_tag)")
        undo_by = int(utcnow().timestamp()) + undo_window
        return BundleBody(op="commit", tag=tag, active=tuple(active or ()), undo_by=undo_by)
    if op == "rollback":
        return BundleBody(op="rollback", tag=tag)
    if op == "retire":
        if tag is None:
            raise fail("--op retire needs --tag (the sec_tag to delete)")
        if active is None:
            active = [t for t in _known_active(container, device_id) if t != tag]
        return BundleBody(op="retire", tags=(tag,), active=tuple(active))
    if op == "trust-signer":
        return _trust_signer(new_signer, retire_kid)
    raise fail(f"unknown --op {op!r}; use stage, commit, rollback, retire or trust-signer")


def _wait_for_reports(session: Any, issued: IssuedBundle, wait: float) -> list[ReportMessage]:
    reports: list[ReportMessage] = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for _, payload in session.drain(timeout=min(0.5, max(0.0, deadline - time.monotonic()))):
            try:
                report = ReportMessage.model_validate_json(payload)
            except ValidationError:
                continue
            if report.seq != issued.bundle.seq or report.device_id != issued.bundle.device_id:
                continue
            reports.append(report)
            if report.phase in FAILURE or report.phase is SUCCESS[issued.bundle.op]:
                return reports
    return reports


@device_app.command("send")
def send(
    device_id: Annotated[str, typer.Argument(help="The device.")],
    op: Annotated[
        str, typer.Option("--op", help="stage, commit, rollback, retire or trust-signer.")
    ],
    ca: Annotated[
        list[Path] | None,
        typer.Option("--ca", exists=True, dir_okay=False, help="CA chain PEM (stage)."),
    ] = None,
    tag: Annotated[
        int | None,
        typer.Option("--tag", help="Spare tag (stage), staged tag (commit), old tag (retire)."),
    ] = None,
    probe: Annotated[
        str | None, typer.Option("--probe", help="HOST:PORT of the TLS health check.")
    ] = None,
    probe_tags: Annotated[
        str | None,
        typer.Option("--probe-tags", help="sec_tags the probe validates with (default: --tag)."),
    ] = None,
    active: Annotated[
        str | None,
        typer.Option("--active", help="Active tag list after the operation, e.g. 42,43."),
    ] = None,
    rollout_id: Annotated[str, typer.Option("--rollout-id", help="Rollout id to bind.")] = "",
    commit_timeout: Annotated[
        float | None,
        typer.Option(
            "--commit-timeout", help="Seconds the device waits for a commit before falling back."
        ),
    ] = None,
    signer_pub: Annotated[
        Path | None,
        typer.Option(
            "--signer-pub", exists=True, dir_okay=False, help="Key to trust (trust-signer)."
        ),
    ] = None,
    retire_kid: Annotated[
        str | None, typer.Option("--retire-kid", help="Key id to stop trusting (trust-signer).")
    ] = None,
    wait: Annotated[
        float,
        typer.Option("--wait", help="Seconds to wait for the device's reports (0: do not wait)."),
    ] = 60,
    as_json: JsonFlag = False,
) -> None:
    """Sign one bundle for one device, publish it, and print the device's reports."""
    from orchestrator.adapters.mqtt import MqttSession  # noqa: PLC0415 -- MQTT only for this command

    container = bootstrap()
    settings = container.settings
    try:
        body = _body(
            container,
            device_id,
            op=op,
            ca=ca or [],
            tag=tag,
            probe=probe,
            probe_tags=_tags(probe_tags, "--probe-tags"),
            active=_tags(active, "--active"),
            commit_timeout=commit_timeout or settings.commit_timeout_seconds,
            new_signer=signer_pub,
            retire_kid=retire_kid,
            undo_window=settings.undo_window_seconds,
        )
        # The bundle version the device last reported (v1 if certfleet has not heard it).
        known = container.inventory.device_credentials(device_id)
        version = known.protocol_version if known is not None else 1
        # trust-signer is a root-only operation: a device refuses it under a delegation.
        signer = container.root_signer if op in ROOT_OPS else container.signer
        session = MqttSession(settings)
        try:
            if wait > 0:
                session.subscribe(container.topics.report(device_id))
            now = utcnow()
            issued = issue_bundle(
                signer=signer,
                sequences=container.sequences,
                device_id=device_id,
                rollout_id=rollout_id,
                body=body,
                now=now,
                ttl_seconds=settings.bundle_ttl_seconds,
                version=version,
            )
            if op in ROOT_OPS:
                container.metrics.incr(ROOT_SIGNATURES_METRIC, {"purpose": "bundle"})
            send_bundle(session, issued, now=now)
            if not as_json:
                err.print(
                    f"sent {op} seq {issued.bundle.seq} ({len(issued.data)} bytes) to {device_id}"
                )
            reports = _wait_for_reports(session, issued, wait) if wait > 0 else []
        finally:
            session.close()
    except (CertfleetError, ValueError) as exc:
        raise fail(str(exc)) from None
    finally:
        container.close()
    final = reports[-1].phase if reports else None
    if as_json:
        print_json(
            {
                "device_id": device_id,
                "op": op,
                "seq": issued.bundle.seq,
                "bytes": len(issued.data),
                "reports": [r.model_dump(mode="json", exclude_none=True) for r in reports],
            }
        )
    else:
        table = Table("time", "phase", "reason", "detail", "active tags")
        for r in reports:
            table.add_row(
                r.time.strftime("%H:%M:%S"),
                r.phase.value,
                r.reason.value,
                r.detail,
                ",".join(map(str, r.active_tags or [])),
            )
        out.print(table)
    if wait > 0 and final is None:
        err.print(f"no final report from {device_id} within {wait:.0f}s")
        raise typer.Exit(2)
    if final in FAILURE:
        raise typer.Exit(1)


@bundle_app.command("inspect")
def inspect(
    source: Annotated[str, typer.Argument(help="Bundle file, or - for stdin.")],
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            exists=True,
            dir_okay=False,
            help="The root public key (PEM) to verify with; a delegated bundle is verified "
            "through its delegation.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Decode a bundle and the delegation it carries; verify them when a key is given."""
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        message = Sign1Message.decode(data)
        bundle = decode_payload(message.payload)
        delegated = _delegation_in(message)
    except (CoseError, BundleRejectedError) as exc:
        raise fail(f"not a certfleet bundle: {exc}") from None
    verified: bool | None = None
    problem = ""
    if key is not None:
        try:
            _verify(message, delegated, load_public_key(key))
            verified = True
        except (CoseError, CertfleetError, ValueError) as exc:
            verified, problem = False, str(exc)
    document: dict[str, Any] = {
        "alg": message.algorithm,
        "kid": message.kid.hex() if message.kid else None,
        "verified": verified,
        "delegation": _delegation_document(delegated[1]) if delegated else None,
        "device_id": bundle.device_id,
        "rollout_id": bundle.rollout_id,
        "seq": bundle.seq,
        "op": bundle.op,
        "issued_at": datetime.fromtimestamp(bundle.issued_at, UTC).isoformat(),
        "expires_at": bundle.expires.isoformat(),
        "tag": bundle.tag,
        "tags": list(bundle.tags),
        "active": list(bundle.active),
        "commit_by": (
            datetime.fromtimestamp(bundle.commit_by, UTC).isoformat() if bundle.commit_by else None
        ),
        "probe": (
            {"host": bundle.probe.host, "port": bundle.probe.port, "tags": list(bundle.probe.tags)}
            if bundle.probe
            else None
        ),
        "credentials": [
            {"type": int(c.type), "bytes": len(c.pem.encode()), "subjects": _subjects(c.pem)}
            for c in bundle.credentials
        ],
    }
    if problem:
        document["problem"] = problem
    if as_json:
        print_json(document)
    else:
        table = Table("field", "value", show_header=False)
        for name, value in document.items():
            table.add_row(name, str(value))
        out.print(table)
    if verified is False:
        raise typer.Exit(1)


def _delegation_in(message: Sign1Message) -> tuple[Sign1Message, Delegation] | None:
    """The delegation in the bundle's protected header (label -65537), not verified."""
    value = message.protected.get(DELEGATION_LABEL)
    if value is None:
        return None
    if type(value) is not bytes:
        raise BundleRejectedError(Reason.BAD_DELEGATION, "label -65537 is not a byte string")
    return decode_delegation(value)


def _verify(
    message: Sign1Message,
    delegated: tuple[Sign1Message, Delegation] | None,
    root: ec.EllipticCurvePublicKey,
) -> None:
    """Raise unless `root` signed the bundle, or the delegation whose key signed it."""
    if delegated is None:
        message.verify(root)
        return
    delegation_message, delegation = delegated
    try:
        delegation_message.verify(root)
    except CoseError as exc:
        raise CoseError(f"the delegation is not signed by this key: {exc}") from None
    if message.kid != delegation.kid:
        raise CoseError("the bundle's kid is not the delegated key's")
    message.verify(delegation.public_key())


def _delegation_document(delegation: Delegation) -> dict[str, Any]:
    def when(epoch: int) -> str:
        return datetime.fromtimestamp(epoch, UTC).isoformat()

    return {
        "kid": delegation.kid.hex(),
        "root_kid": delegation.root_kid.hex(),
        "issued_at": when(delegation.issued_at),
        "not_before": when(delegation.not_before),
        "expires_at": when(delegation.expires_at),
        "ops": list(delegation.scope.ops),
        "kinds": list(delegation.scope.kinds),
        "rollouts": list(delegation.scope.rollouts),
    }


def _subjects(pem: str) -> list[str]:
    try:
        return [c.subject.rfc4514_string() for c in parse_pem_chain(pem.encode(), source="bundle")]
    except CertfleetError:
        return []
