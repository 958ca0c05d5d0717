"""`certfleet conformance`: run the device contract's conformance suite against one device.

Registered through the `certfleet.commands` entry point group (pyproject.toml) like
the simulator's command; the suite's modules load only when the command runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from orchestrator.conformance.model import Trust

if TYPE_CHECKING:
    from orchestrator.bootstrap import Container
    from orchestrator.conformance.material import IdentityIssuer
    from orchestrator.conformance.suite import Outcome
    from orchestrator.conformance.verdict import StepResult

__all__ = ["conformance", "print_table"]

out = Console()
err = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(2)


def _tags(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    try:
        tags: tuple[int, ...] = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        tags = ()
    if len(tags) != 3 or len(set(tags)) != 3:
        raise _fail("--spare-tags takes three distinct sec_tags the device holds nothing in")
    return tags[0], tags[1], tags[2]


def _pem(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"cannot read {what} {path}: {exc}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise _fail(f"{what} {path} holds no PEM certificate")
    return text


def _identity_issuer(
    ca: Path | None, key: Path | None, probe: str | None
) -> tuple[IdentityIssuer | None, tuple[str, int] | None]:
    """`--identity-ca`, `--identity-ca-key` and `--probe-identity`: all three, or none."""
    from orchestrator.conformance.material import IdentityIssuer  # noqa: PLC0415
    from orchestrator.domain.endpoints import parse_endpoint  # noqa: PLC0415
    from orchestrator.domain.errors import CertfleetError  # noqa: PLC0415

    given = [ca is not None, key is not None, probe is not None]
    if not any(given):
        return None, None
    if not all(given) or ca is None or key is None or probe is None:
        raise _fail("--identity-ca, --identity-ca-key and --probe-identity go together")
    try:
        issuer = IdentityIssuer.load(ca.read_bytes(), key.read_bytes())
        return issuer, parse_endpoint(probe, what="--probe-identity")
    except (OSError, ValueError, TypeError, CertfleetError) as exc:
        raise _fail(f"cannot issue identities with {ca} and {key}: {exc}") from None


def print_table(outcome: Outcome) -> None:
    """One row per step: its result, what the contract expects, what the device did."""
    table = Table("step", "result", "expected", "got", "detail")
    table.title = f"conformance of {outcome.device_id}"
    for r in outcome.results:
        mark = "[green]pass[/]" if r.passed else "[bold red]FAIL[/]"
        table.add_row(r.name, mark, r.expected, r.got, r.detail)
    out.print(table)


def _known_trust(container: Container, device_id: str) -> Trust | None:
    """The device's trust as certfleet's inventory last recorded it."""
    state = container.inventory.device_credentials(device_id)
    if state is None or not state.active_tags:
        return None
    items = {(c.sec_tag, int(c.type)): c.sha256 for c in state.credentials}
    return Trust(items=items, active=tuple(state.active_tags), identity=state.identity_tag)


def conformance(  # noqa: PLR0917 -- typer maps each CLI option to a parameter
    device_id: Annotated[str, typer.Argument(help="The device under test.")],
    probe_good: Annotated[
        str, typer.Option("--probe-good", help="HOST:PORT of a TLS server --ca-good validates.")
    ],
    probe_bad: Annotated[
        str,
        typer.Option("--probe-bad", help="HOST:PORT of a TLS server --ca-good does NOT validate."),
    ],
    ca_good: Annotated[
        Path,
        typer.Option("--ca-good", exists=True, dir_okay=False, help="CA PEM of --probe-good."),
    ],
    ca_bad: Annotated[
        Path | None,
        typer.Option(
            "--ca-bad",
            exists=True,
            dir_okay=False,
            help="A CA PEM that does not validate --probe-good (default: a throwaway CA).",
        ),
    ] = None,
    probe_bad_reason: Annotated[
        str,
        typer.Option("--probe-bad-reason", help="The health_failed reason --probe-bad causes."),
    ] = "unknown_ca",
    spare_tags: Annotated[
        str | None,
        typer.Option(
            "--spare-tags",
            help="Three sec_tags the device holds nothing in, e.g. 43,44,45 "
            "(default: the first free ones above its active tags).",
        ),
    ] = None,
    trusted_keys: Annotated[
        int,
        typer.Option(
            "--trusted-keys", min=1, max=3, help="Signer keys the device trusts at the start."
        ),
    ] = 1,
    step_timeout: Annotated[
        float,
        typer.Option("--step-timeout", min=1, help="Seconds a bundle's reports may take."),
    ] = 60.0,
    state_wait: Annotated[
        float,
        typer.Option("--state-wait", min=0, help="Seconds to wait for the device's state message."),
    ] = 60.0,
    fallback_after: Annotated[
        float,
        typer.Option("--fallback-after", min=1, help="commit_by of the fallback step, seconds."),
    ] = 5.0,
    undo_window: Annotated[
        float,
        typer.Option(
            "--undo-window",
            min=1,
            help="undo_by of the undo_by step, seconds: more than a commit and a rollback take.",
        ),
    ] = 60.0,
    broker_host: Annotated[
        str | None,
        typer.Option("--broker-host", help="MQTT broker host (default: CERTFLEET_MQTT_HOST)."),
    ] = None,
    broker_port: Annotated[
        int | None,
        typer.Option("--broker-port", help="MQTT broker port (default: CERTFLEET_MQTT_PORT)."),
    ] = None,
    tls: Annotated[bool, typer.Option("--tls", help="Connect to the broker over TLS.")] = False,
    broker_ca: Annotated[
        Path | None,
        typer.Option(
            "--broker-ca",
            exists=True,
            dir_okay=False,
            help="With --tls: the CA PEM that validates the broker (default: the system's).",
        ),
    ] = None,
    identity_ca: Annotated[
        Path | None,
        typer.Option(
            "--identity-ca",
            exists=True,
            dir_okay=False,
            help="A CA PEM whose client certificates --probe-identity (and the broker) accept: "
            "the suite rotates a device's identity with it.",
        ),
    ] = None,
    identity_ca_key: Annotated[
        Path | None,
        typer.Option(
            "--identity-ca-key", exists=True, dir_okay=False, help="The --identity-ca's key."
        ),
    ] = None,
    probe_identity: Annotated[
        str | None,
        typer.Option(
            "--probe-identity",
            help="HOST:PORT of a TLS server the device's CA tags validate that requires a "
            "client certificate of --identity-ca.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Drive a device through the contract's conformance suite over MQTT; exit 1 if a step fails."""
    from orchestrator.bootstrap import bootstrap  # noqa: PLC0415 -- loads only when the command runs
    from orchestrator.cli.common import print_json  # noqa: PLC0415
    from orchestrator.clock import utcnow  # noqa: PLC0415
    from orchestrator.conformance.material import throwaway_ca  # noqa: PLC0415
    from orchestrator.conformance.runner import Broker  # noqa: PLC0415
    from orchestrator.conformance.suite import SuiteOptions, run_suite  # noqa: PLC0415
    from orchestrator.domain.endpoints import parse_endpoint  # noqa: PLC0415
    from orchestrator.domain.errors import CertfleetError  # noqa: PLC0415

    if broker_ca is not None and not tls:
        raise _fail("--broker-ca belongs to --tls")
    try:
        good_endpoint = parse_endpoint(probe_good, what="--probe-good")
        bad_endpoint = parse_endpoint(probe_bad, what="--probe-bad")
    except CertfleetError as exc:
        raise _fail(str(exc)) from None
    issuer, identity_endpoint = _identity_issuer(identity_ca, identity_ca_key, probe_identity)
    options = SuiteOptions(
        ca_good=_pem(ca_good, "--ca-good") or "",
        ca_bad=_pem(ca_bad, "--ca-bad") or throwaway_ca(),
        probe_good=good_endpoint,
        probe_bad=bad_endpoint,
        probe_bad_reason=probe_bad_reason,
        spare=_tags(spare_tags),
        trusted_keys=trusted_keys,
        step_timeout=step_timeout,
        state_wait=state_wait,
        fallback_after=fallback_after,
        undo_window=undo_window,
        identity_issuer=issuer,
        probe_identity=identity_endpoint,
    )
    container = bootstrap()
    settings = container.settings
    try:
        # the device keeps the fleet's revocation: the suite's revokes end by sending it back
        options = dataclasses.replace(options, revocation=container.delegations.revocation())
    except CertfleetError as exc:
        container.close()
        raise _fail(f"cannot read the fleet's revoked delegations: {exc}") from None
    context = None
    if tls:
        context = ssl.create_default_context(cafile=str(broker_ca) if broker_ca else None)
    broker = Broker(
        host=broker_host or settings.mqtt_host,
        port=broker_port or settings.mqtt_port,
        username=settings.mqtt_username,
        password=settings.mqtt_password,
        tls_context=context,
    )

    def progress(result: StepResult) -> None:
        mark = "[green]pass[/]" if result.passed else "[bold red]FAIL[/]"
        err.print(f"{mark} {result.name}", highlight=False)

    def waiting(seconds: float) -> None:
        err.print(
            f"waiting up to {seconds:g} s for the state of {device_id} "
            "(a device publishes it on every CONNECT)",
            highlight=False,
        )

    try:
        outcome = asyncio.run(
            run_suite(
                device_id=device_id,
                broker=broker,
                topics=container.topics,
                main_key=container.root_signer,
                next_seq=lambda: container.sequences.next_sequence(device_id),
                clock=utcnow,
                options=options,
                known_trust=lambda: _known_trust(container, device_id),
                on_waiting=waiting,
                on_result=progress,
            )
        )
    except (CertfleetError, ValueError) as exc:
        raise _fail(str(exc)) from None
    finally:
        container.close()
    if as_json:
        print_json(outcome.to_json())
    else:
        print_table(outcome)
    if not outcome.passed:
        err.print(
            f"[bold red]{len(outcome.failed)} of {len(outcome.results)} steps failed:[/] "
            + ", ".join(outcome.failed),
            highlight=False,
        )
        raise typer.Exit(1)
    err.print(f"[green]all {len(outcome.results)} steps passed[/]", highlight=False)
