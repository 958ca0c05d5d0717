"""`certfleet impact`: what a CA renewal plan found and did."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from orchestrator.cli.common import JsonFlag, connected, fail, out, print_json

__all__ = ["impact"]


def impact(
    plan_id: Annotated[str, typer.Argument(help="Plan id (from the webhook's answer).")],
    as_json: JsonFlag = False,
) -> None:
    """Which devices are safe, at risk or unknown for a renewal plan, and its rollouts."""
    from orchestrator.services.renewals import plan_view  # noqa: PLC0415

    with connected() as container:
        plan = plan_view(container.renewal_deps(), plan_id)
    if plan is None:
        raise fail(f"no plan {plan_id!r}")
    if as_json:
        plan.pop("anchor_pem", None)
        print_json(plan)
        return
    counts = plan["impact"]["counts"]
    out.print(
        f"[bold]{plan['id']}[/] · {plan['event']} · {plan['state']}"
        + (f" · {plan['reason']}" if plan.get("reason") else ""),
        highlight=False,
    )
    out.print(
        f"new CA: {plan['chain']['anchor_subject']} · endpoints {', '.join(plan['endpoints'])}"
    )
    table = Table("verdict", "devices", "examples", title="Impact at cutover")
    for verdict in ("safe", "at_risk", "unknown"):
        table.add_row(verdict, str(counts[verdict]), ", ".join(plan["impact"][verdict][:5]))
    out.print(table)
    for field in ("add_rollout", "retire_rollout"):
        if plan.get(field):
            out.print(f"{field.replace('_', ' ')}: {plan[field]} ({plan.get(field + '_state')})")
