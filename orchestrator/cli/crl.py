"""`certfleet crl`: the CRL of revoked device certificates the broker reads.

`refresh` signs and publishes it now, as the workers do after a revocation and beat twice
per CRL lifetime (the first CRL of a new deployment, say); `list` shows what it lists.
"""

from __future__ import annotations

import typer
from rich.table import Table

from orchestrator.cli.common import JsonFlag, connected, fail, out, print_json
from orchestrator.clock import utcnow
from orchestrator.services.identity.crl import refresh_crl

__all__ = ["crl_app"]

crl_app = typer.Typer(
    help="The CRL of revoked device certificates (the broker's crlfile).", no_args_is_help=True
)


@crl_app.command("refresh")
def refresh(as_json: JsonFlag = False) -> None:
    """Sign the CRL of every revoked certificate not yet expired and publish it now (even
    when it lists what the last one listed)."""
    with connected() as container:
        if container.crl_publisher is None:
            raise fail("no CRL is configured: set CERTFLEET_CRL_FILE (see docs/operations.md)")
        where = str(container.settings.crl_file)
        try:
            entries = refresh_crl(container.crl_deps(), now=utcnow(), force=True)
        except OSError as exc:
            raise fail(f"cannot write the CRL {where}: {exc}") from None
    if entries < 0:
        raise fail("the CRL could not be made: no CRL signer and the issuer makes none")
    if as_json:
        print_json({"entries": entries, "file": where})
        return
    out.print(f"CRL with {entries} revoked certificates written to {where}")


@crl_app.command("list")
def list_revoked(as_json: JsonFlag = False) -> None:
    """The revoked certificates the CRL lists (those not yet expired)."""
    with connected() as container:
        revoked = container.identity.revoked(now=utcnow())
    rows = [
        {
            "serial": f"{r.serial:x}",
            "device_id": r.device_id,
            "reason": r.reason,
            "revoked_at": r.revoked_at.isoformat(),
            "not_after": r.not_after.isoformat(),
        }
        for r in revoked
    ]
    if as_json:
        print_json(rows)
        return
    table = Table("serial", "device", "reason", "revoked", "expires", title=f"{len(rows)} revoked")
    for row in rows:
        table.add_row(
            row["serial"],
            row["device_id"],
            row["reason"],
            row["revoked_at"][:19],
            row["not_after"][:19],
        )
    out.print(table)
