"""`certfleet rollout`: plan, create, watch and steer wave rollouts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from orchestrator.bootstrap import bootstrap
from orchestrator.cli.common import JsonFlag, connected, fail, out, print_json
from orchestrator.cli.report import report
from orchestrator.cli.rollout_view import rollouts_table, status_table, watch_status
from orchestrator.clock import utcnow
from orchestrator.config import Settings
from orchestrator.domain.endpoints import parse_endpoint
from orchestrator.domain.errors import CertfleetError
from orchestrator.domain.rollout import (
    IDENTITY_KIND,
    RolloutSpec,
    parse_duration,
    parse_percent,
    parse_selector,
    parse_waves,
    parse_window,
)
from orchestrator.services.inventory import read_pem_files
from orchestrator.services.rollout import (
    command,
    create_rollout,
    plan_rollout,
    rollout_status,
)

__all__ = ["rollout_app"]

rollout_app = typer.Typer(
    help="Wave rollouts with health gates and rollback.", no_args_is_help=True
)

SpecArg = Annotated[Path | None, typer.Argument(help="Spec file (YAML or JSON).", dir_okay=False)]
SpecOpt = Annotated[
    Path | None, typer.Option("--spec", help="Spec file (YAML or JSON).", dir_okay=False)
]
Kind = Annotated[
    str | None,
    typer.Option("--kind", help="trust.add, trust.replace, trust.retire or identity.rotate."),
]
Ca = Annotated[list[Path] | None, typer.Option("--ca", help="New CA PEM (repeat for several).")]
Tag = Annotated[
    int | None,
    typer.Option(
        "--tag",
        help="The live sec_tag (retire: the one to retire; identity.rotate: the identity "
        "tag in use, default the first of CERTFLEET_IDENTITY_TAGS).",
    ),
]
Spare = Annotated[
    int | None,
    typer.Option(
        "--spare-tag",
        help="Where the new CA is staged (identity.rotate: where the new key is made, "
        "default the other of CERTFLEET_IDENTITY_TAGS).",
    ),
]
Probe = Annotated[
    str | None, typer.Option("--probe", help="HOST:PORT the devices' TLS check connects to.")
]
Waves = Annotated[str | None, typer.Option("--waves", help="e.g. 1%,10%,50%,100% or 5,25%,100%.")]
Bake = Annotated[str | None, typer.Option("--bake", help="Seconds (or 30s, 5m, 1h) between waves.")]
Advance = Annotated[str | None, typer.Option("--advance", help="auto or manual.")]
MaxFailure = Annotated[str | None, typer.Option("--max-failure", help="e.g. 10%.")]
MinSample = Annotated[
    int | None, typer.Option("--min-sample", help="Decided devices before the rate is trusted.")
]
Timeout = Annotated[
    str | None, typer.Option("--device-timeout", help="Seconds a device has to decide.")
]
ResendAfter = Annotated[
    str | None,
    typer.Option(
        "--resend-after",
        help="Seconds before a device that has not answered is sent a fresh stage "
        "(default: a third of the device timeout).",
    ),
]
MaxResends = Annotated[
    int | None,
    typer.Option("--max-resends", help="Fresh stages sent before a device times out (default 2)."),
]
TimeoutsFail = Annotated[
    bool | None, typer.Option("--timeouts-fail/--timeouts-pass", help="Count timeouts as failures.")
]
PushRate = Annotated[float | None, typer.Option("--push-rate", help="Devices per second.")]
Window = Annotated[str | None, typer.Option("--window", help="Maintenance window 'CRON|DURATION'.")]
Select = Annotated[
    str | None, typer.Option("--select", help="all, expiring:DAYS, digest:SHA256 or file:PATH.")
]
Name = Annotated[str | None, typer.Option("--name", help="Seeds the plan (same name, same waves).")]


def _load_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise fail(f"cannot read the spec {path}: {exc}") from None
    if not isinstance(data, dict):
        raise fail(f"{path}: a spec is a mapping of settings")
    base = path.parent
    cas = data.get("ca", [])
    data["ca"] = [base / p for p in ([cas] if isinstance(cas, str) else cas)]
    if isinstance(data.get("select"), str) and data["select"].startswith("file:"):
        data["select"] = "file:" + str(base / data["select"][5:])
    return data


def _identity_tags(data: dict[str, Any]) -> None:
    """Fill an identity rotation's missing tags from `CERTFLEET_IDENTITY_TAGS` (A,B): the
    tag given is the one in use and the spare is the other; neither given: A to B."""
    try:
        first, second = Settings().identity_tag_pair
    except (ValueError, CertfleetError) as exc:
        raise fail(f"CERTFLEET_IDENTITY_TAGS: {exc}") from None
    if "tag" in data:
        data["spare_tag"] = second if int(data["tag"]) == first else first
    elif "spare_tag" in data:
        data["tag"] = second if int(data["spare_tag"]) == first else first
    else:
        data["tag"], data["spare_tag"] = first, second


def _spec(spec_file: Path | None, **flags: Any) -> RolloutSpec:
    """The spec file's settings, overridden by the flags given."""
    data = _load_file(spec_file) if spec_file is not None else {}
    data.update({k: v for k, v in flags.items() if v is not None and v != []})
    if data.get("kind") == IDENTITY_KIND and ("tag" not in data or "spare_tag" not in data):
        _identity_tags(data)
    try:
        ca_pems = read_pem_files(Path(p) for p in data.get("ca", []))
        probe = data.get("probe")
        host, port = parse_endpoint(str(probe), what="--probe") if probe else ("", 0)
        return RolloutSpec(
            kind=data.get("kind", "trust.replace"),
            ca_pems=tuple(ca_pems),
            tag=int(data["tag"]),
            spare_tag=int(data["spare_tag"]),
            probe_host=host,
            probe_port=port,
            waves=parse_waves(str(data.get("waves", "1%,10%,50%,100%"))),
            bake_seconds=parse_duration(data.get("bake", 0)),
            advance=data.get("advance", "auto"),
            max_failure=parse_percent(str(data.get("max_failure", "10%"))),
            min_sample=int(data.get("min_sample", 10)),
            device_timeout_seconds=parse_duration(data.get("device_timeout", 300)),
            timeouts_fail=bool(data.get("timeouts_fail", False)),
            resend_after_seconds=(
                parse_duration(data["resend_after"]) if data.get("resend_after") else None
            ),
            max_resends=int(data.get("max_resends", 2)),
            push_rate=float(data["push_rate"]) if data.get("push_rate") else None,
            window=parse_window(data["window"]) if data.get("window") else None,
            selector=parse_selector(str(data.get("select", "all"))),
            name=data.get("name"),
        )
    except KeyError as exc:
        raise fail(
            f"the spec needs {exc.args[0].replace('_', '-')} (a --flag or a key in the file)"
        ) from None
    except (CertfleetError, OSError, ValueError) as exc:
        raise fail(str(exc)) from None


def _spec_from(spec: Path | None, spec_opt: Path | None, **flags: Any) -> RolloutSpec:
    if spec is not None and spec_opt is not None:
        raise fail("give the spec once: as an argument or with --spec")
    return _spec(spec or spec_opt, **flags)


@rollout_app.command("plan")
def plan(
    spec: SpecArg = None,
    spec_opt: SpecOpt = None,
    kind: Kind = None,
    ca: Ca = None,
    tag: Tag = None,
    spare_tag: Spare = None,
    probe: Probe = None,
    waves: Waves = None,
    bake: Bake = None,
    advance: Advance = None,
    max_failure: MaxFailure = None,
    min_sample: MinSample = None,
    device_timeout: Timeout = None,
    resend_after: ResendAfter = None,
    max_resends: MaxResends = None,
    timeouts_fail: TimeoutsFail = None,
    push_rate: PushRate = None,
    window: Window = None,
    select: Select = None,
    name: Name = None,
    as_json: JsonFlag = False,
) -> None:
    """Show wave sizes and sample devices; changes nothing."""
    rollout_spec = _spec_from(
        spec,
        spec_opt,
        kind=kind,
        ca=ca,
        tag=tag,
        spare_tag=spare_tag,
        probe=probe,
        waves=waves,
        bake=bake,
        advance=advance,
        max_failure=max_failure,
        min_sample=min_sample,
        device_timeout=device_timeout,
        resend_after=resend_after,
        max_resends=max_resends,
        timeouts_fail=timeouts_fail,
        push_rate=push_rate,
        window=window,
        select=select,
        name=name,
    )
    with connected() as container:
        result = plan_rollout(container.inventory, rollout_spec, now=utcnow()).as_json()
    if as_json:
        print_json(result)
        return
    table = Table(
        "wave", "devices", "sample", title=f"{result['devices']} devices, seed {result['seed']}"
    )
    for wave in result["waves"]:
        table.add_row(str(wave["index"]), str(wave["size"]), ", ".join(wave["sample"]))
    out.print(table)


@rollout_app.command("create")
def create(
    spec: SpecArg = None,
    spec_opt: SpecOpt = None,
    kind: Kind = None,
    ca: Ca = None,
    tag: Tag = None,
    spare_tag: Spare = None,
    probe: Probe = None,
    waves: Waves = None,
    bake: Bake = None,
    advance: Advance = None,
    max_failure: MaxFailure = None,
    min_sample: MinSample = None,
    device_timeout: Timeout = None,
    resend_after: ResendAfter = None,
    max_resends: MaxResends = None,
    timeouts_fail: TimeoutsFail = None,
    push_rate: PushRate = None,
    window: Window = None,
    select: Select = None,
    name: Name = None,
    hold: Annotated[
        bool, typer.Option("--hold", help="Create it without starting it (resume starts it).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Plan and start a rollout; prints its id."""
    rollout_spec = _spec_from(
        spec,
        spec_opt,
        kind=kind,
        ca=ca,
        tag=tag,
        spare_tag=spare_tag,
        probe=probe,
        waves=waves,
        bake=bake,
        advance=advance,
        max_failure=max_failure,
        min_sample=min_sample,
        device_timeout=device_timeout,
        resend_after=resend_after,
        max_resends=max_resends,
        timeouts_fail=timeouts_fail,
        push_rate=push_rate,
        window=window,
        select=select,
        name=name,
    )
    with connected() as container:
        rollout_id = create_rollout(
            container.rollout_deps(), rollout_spec, now=utcnow(), actor="cli", start=not hold
        )
        status = rollout_status(container.rollout_deps(), rollout_id)
    if as_json:
        print_json(status)
    else:
        out.print(rollout_id, highlight=False)


@rollout_app.command("list")
def list_(as_json: JsonFlag = False) -> None:
    """The latest rollouts, newest first."""
    container = bootstrap()
    try:
        deps = container.rollout_deps()
        rows = [rollout_status(deps, rid) for rid in container.rollouts.list_ids()]
    finally:
        container.close()
    if as_json:
        print_json(
            [{k: r[k] for k in ("id", "kind", "state", "created_at", "totals")} for r in rows]
        )
        return
    out.print(rollouts_table(rows))


@rollout_app.command("status")
def status(
    rollout_id: Annotated[str, typer.Argument(help="Rollout id.")],
    as_json: JsonFlag = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Progress bars until the rollout ends.")
    ] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between refreshes.")] = 1.0,
) -> None:
    """A rollout's waves and device counts."""
    with connected() as container:
        deps = container.rollout_deps()
        current = rollout_status(deps, rollout_id)
        if watch:
            current = watch_status(deps, rollout_id, interval)
    if as_json:
        print_json(current)
        return
    out.print(status_table(current))
    if current.get("abort_reason"):
        out.print(f"[red]aborted:[/] {current['abort_reason']}")
    if current.get("unconfirmed_rollback"):
        out.print(
            f"[yellow]rollback not confirmed by:[/] {', '.join(current['unconfirmed_rollback'])}"
        )
    refused = current.get("undo_refused", {})
    if refused.get("count"):
        shown = ", ".join(refused["devices"][:20]) + (" …" if refused["count"] > 20 else "")
        out.print(
            f"[red]{refused['count']} devices refused the rollback (nothing to undo, or "
            f"superseded) and still show the change:[/] {shown}"
        )
    if current.get("unconfirmed"):
        unconfirmed = current["unconfirmed"]
        shown = ", ".join(unconfirmed[:20]) + (" …" if len(unconfirmed) > 20 else "")
        out.print(f"[yellow]{len(unconfirmed)} devices never confirmed the new trust:[/] {shown}")


def _command(verb: str, rollout_id: str) -> None:
    with connected() as container:
        state = command(container.rollout_deps(), rollout_id, verb, now=utcnow(), actor="cli")
    out.print(f"{rollout_id}: {state}", highlight=False)


@rollout_app.command("pause")
def pause(rollout_id: Annotated[str, typer.Argument(help="Rollout id.")]) -> None:
    """Send no more bundles until resumed."""
    _command("pause", rollout_id)


@rollout_app.command("resume")
def resume(rollout_id: Annotated[str, typer.Argument(help="Rollout id.")]) -> None:
    """Continue a paused rollout, or start a held one."""
    _command("resume", rollout_id)


@rollout_app.command("abort")
def abort(rollout_id: Annotated[str, typer.Argument(help="Rollout id.")]) -> None:
    """Stop and roll back every device that staged or committed."""
    _command("abort", rollout_id)


@rollout_app.command("approve")
def approve(rollout_id: Annotated[str, typer.Argument(help="Rollout id.")]) -> None:
    """Start the next wave of a manual rollout."""
    _command("approve", rollout_id)


@rollout_app.command("log")
def log_(
    rollout_id: Annotated[str, typer.Argument(help="Rollout id.")], as_json: JsonFlag = False
) -> None:
    """The audit trail: every state change with time, actor and cause."""
    container = bootstrap()
    try:
        entries = container.rollouts.log(rollout_id)
    finally:
        container.close()
    if not entries:
        raise fail(f"no log for {rollout_id!r}")
    if as_json:
        print_json(entries)
        return
    for e in entries:
        out.print(
            f"{e['time'][:23]}  {e['actor']:<7} {e['kind']:<7} {e['subject']:<24} "
            f"{e['from'] or '-'} -> {e['to']}  ({e['cause']})",
            highlight=False,
        )


rollout_app.command("report")(report)
