"""The `certfleet` command."""

from __future__ import annotations

import asyncio
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from orchestrator.bootstrap import bootstrap
from orchestrator.cli.api import api
from orchestrator.cli.common import JsonFlag, connected, fail, out, print_json
from orchestrator.cli.crl import crl_app
from orchestrator.cli.device import bundle_app, device_app
from orchestrator.cli.fleet_view import identity_tables
from orchestrator.cli.keys import keys_app
from orchestrator.cli.renewal import impact
from orchestrator.cli.rollout import rollout_app
from orchestrator.clock import utcnow
from orchestrator.domain.errors import CertfleetError

__all__ = ["app", "main"]

COMMANDS_GROUP = "certfleet.commands"
"""Entry point group of the commands other installed packages add (the simulator's `simulate`)."""


def _add_installed_commands(app: typer.Typer) -> None:
    """Add each command an installed package offers under `COMMANDS_GROUP`, by its name."""
    for entry_point in entry_points(group=COMMANDS_GROUP):
        app.command(entry_point.name)(entry_point.load())


app = typer.Typer(
    name="certfleet",
    help="Rotate the CA certificates of a device fleet over MQTT, safely.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
fleet_app = typer.Typer(help="The fleet's certificate state.", no_args_is_help=True)
creds_app = typer.Typer(help="The credential library (digest -> PEM).", no_args_is_help=True)
app.add_typer(fleet_app, name="fleet")
app.add_typer(creds_app, name="creds")
app.add_typer(keys_app, name="keys")
app.add_typer(device_app, name="device")
app.add_typer(bundle_app, name="bundle")
app.add_typer(rollout_app, name="rollout")
app.add_typer(crl_app, name="crl")
app.command("impact")(impact)
app.command("api")(api)
_add_installed_commands(app)


@app.command()
def listener() -> None:
    """Record what devices report over MQTT into the inventory (runs until Ctrl-C)."""
    import signal  # noqa: PLC0415

    from workers.listener import run_listener  # noqa: PLC0415 -- the service loads only here

    container = bootstrap()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run_listener(container, stop=stop)

    try:
        asyncio.run(run())
    finally:
        container.close()


@creds_app.command("import")
def creds_import(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="PEM files.")],
    as_json: JsonFlag = False,
) -> None:
    """Add PEM files to the library so devices holding them are known."""
    from orchestrator.services.inventory import import_pems  # noqa: PLC0415

    with connected() as container:
        imported = import_pems(container.library, [(str(f), f.read_bytes()) for f in files])
    rows: list[dict[str, Any]] = [
        {
            "file": str(f),
            "sha256": i.sha256,
            "subjects": list(i.subjects),
            "not_after": i.not_after.isoformat(),
            "new": i.new,
        }
        for f, i in zip(files, imported, strict=True)
    ]
    if as_json:
        print_json(rows)
        return
    table = Table("file", "sha256", "subject", "not after", "")
    for row in rows:
        table.add_row(
            row["file"],
            row["sha256"][:16] + "…",
            row["subjects"][0],
            row["not_after"],
            "new" if row["new"] else "known",
        )
    out.print(table)


def _short_subject(subject: str | None) -> str:
    """The CN of an RFC 4514 subject, else the whole subject."""
    if not subject:
        return ""
    for part in subject.split(","):
        if part.startswith("CN="):
            return part[3:]
    return subject


def _status_tables(status: dict[str, Any]) -> None:
    scanned = status["scanned_at"] or "never (run `certfleet fleet scan`)"
    window = status["warning_days"]
    out.print(
        f"[bold]{status['devices']}[/] devices · last scan {scanned}"
        + (f" · warning window {window} days" if window is not None else "")
    )
    table = Table("sec_tag", "ok", "expiring", "expired", "unknown", title="Devices by sec_tag")
    for tag, counts in status["by_tag"].items():
        table.add_row(
            tag,
            f"[green]{counts['ok']}[/]",
            f"[yellow]{counts['expiring']}[/]",
            f"[red]{counts['expired']}[/]",
            str(counts["unknown"]),
        )
    out.print(table)
    expiring = status["expiring"]
    if expiring:
        shown = expiring[:15]
        now = utcnow()
        title = f"Expired and expiring, soonest first ({len(shown)} of {status['expiring_total']})"
        table = Table("device", "sec_tag", "not after (UTC)", "days left", "CA", title=title)
        for item in shown:
            not_after = datetime.fromisoformat(item["not_after"])
            days = (not_after - now).total_seconds() / 86400
            table.add_row(
                item["device_id"],
                str(item["sec_tag"]),
                not_after.strftime("%Y-%m-%d %H:%M"),
                f"[red]{days:.1f}[/]" if days < 0 else f"[yellow]{days:.1f}[/]",
                _short_subject(item["subject"]),
            )
        out.print(table)
    if status["unknown_digests"]:
        out.print(
            f"{len(status['unknown_digests'])} CA digests are not in the library "
            "(`certfleet creds import FILE.pem` makes them known)"
        )
    identity_tables(status, now=utcnow())
    if status["rejected_reports"]:
        rejected = ", ".join(f"{k}={v}" for k, v in status["rejected_reports"].items())
        out.print(f"Rejected device messages: {rejected}")


@fleet_app.command("scan")
def fleet_scan(
    as_json: JsonFlag = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for a worker.")
    ] = 120,
) -> None:
    """Run `scan_fleet` on a Celery worker, wait for it, print the summary."""
    container = bootstrap()
    try:
        status = dict(container.tasks.run_scan(timeout=timeout))
    except TimeoutError:
        raise fail(
            f"no worker finished the scan within {timeout:.0f}s; is `make worker` running?"
        ) from None
    except CertfleetError as exc:
        raise fail(str(exc)) from None
    finally:
        container.close()
    if as_json:
        print_json(status)
    else:
        _status_tables(status)


@fleet_app.command("status")
def fleet_status(as_json: JsonFlag = False) -> None:
    """Show the last scan's summary (CAs and identities) and the rejected-message counts."""
    from orchestrator.services.scan import fleet_status as read_status  # noqa: PLC0415

    with connected() as container:
        status = read_status(container.inventory)
    if as_json:
        print_json(status)
    else:
        _status_tables(status)


@fleet_app.command("migrate")
def fleet_migrate(
    delete_legacy: Annotated[
        bool,
        typer.Option(
            "--delete-legacy", help="Then delete the inventory's keys of before the shards."
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Carry an inventory stored before the shards over to them (once, after upgrading;
    safe to run again: a state a device has sent since is kept)."""
    from orchestrator.adapters.redis_inventory_legacy import (  # noqa: PLC0415
        delete_legacy_inventory,
        migrate_legacy_inventory,
    )

    with connected() as container:
        done = migrate_legacy_inventory(container.redis, now=utcnow())
        deleted = delete_legacy_inventory(container.redis) if delete_legacy else None
    result: dict[str, int | None] = {
        "devices": done.devices,
        "client_keys": done.client_keys,
        "legacy_keys_deleted": deleted,
    }
    if as_json:
        print_json(result)
        return
    out.print(f"Carried over {done.devices} devices and {done.client_keys} client keys.")
    if deleted is not None:
        out.print(f"Deleted {deleted} legacy keys.")


def main() -> None:
    """Console-script entry point."""
    app()
