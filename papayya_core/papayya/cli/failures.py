"""``papayya failures``: degraded and failed items grouped by the shape of what went wrong."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import click

from papayya import tenants
from papayya.cli import render
from papayya.cli.connect import connect
from papayya.cli.params import RUN_ID, TENANT, TIME
from papayya.clusters import clusters


@click.command("failures")
@click.argument("run_id", metavar="[RUN]", type=RUN_ID, required=False)
@click.option(
    "--tenant",
    type=TENANT,
    default=None,
    is_eager=True,  # read first: a short RUN is looked up within it
    help="Only this tenant's items.",
)
@click.option("--agent", default=None, metavar="NAME", help="Only items of this agent's runs.")
@click.option(
    "--since", type=TIME, default=None, help="Only items finished since then: 7d, 24h or an ISO time."
)
@click.option("--until", type=TIME, default=None, help="Only items finished before then.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=20, show_default=True)
@render.json_option
def failures_command(
    run_id: UUID | None,
    tenant: str | None,
    agent: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """List failure clusters (of RUN, or across runs), largest first.

    A cluster is one way items went wrong: the same exception type, normalised message and place in
    your code, or the same degradation reasons on the same fields. Each has an id to replay it with
    `papayya replay --run RUN --cluster CLUSTER`.
    """
    store = connect()
    if tenant is not None:
        tenants.get(tenant)
    if run_id is not None:
        store.run_get(run_id, tenant)
    found = clusters(run_id=run_id, tenant=tenant, agent=agent, since=since, until=until, limit=limit)
    rows = [_cluster_row(c.as_dict()) for c in found]
    if as_json:
        render.emit_json(rows)
        return
    if not rows:
        render.out(f"No degraded or failed items {_scope(run_id, tenant, agent, since, until)}.")
        return
    render.out(
        render.table(
            [
                "cluster",
                "outcome",
                "items",
                "tenants",
                "label",
                "first seen",
                "last seen",
                "cost",
                "sample ids",
            ],
            [
                (
                    r["cluster"],
                    r["outcome"],
                    f"{r['items']:,}",
                    f"{r['tenants']:,}",
                    r["label"],
                    render.when(r["first_seen"], seconds=False),
                    render.when(r["last_seen"], seconds=False),
                    render.money(r["cost_usd"]),
                    ", ".join(r["sample_keys"]),
                )
                for r in rows
            ],
            right=["items", "tenants", "cost"],
            whole=["cluster"],
        )
    )
    if len(rows) == limit:
        render.out(render.note(f"(the largest {limit}; --limit shows more)"))
    if run_id is not None:
        render.out(
            render.note(
                f"replay one: papayya replay --run {run_id} --cluster CLUSTER (--from-journal pays nothing); "
                f"see an item: papayya items show ID --run {run_id}"
            )
        )
    else:
        render.out(render.note("replay one run's cluster: papayya replay --run RUN --cluster CLUSTER"))


def _cluster_row(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "cluster": c["cluster"],
        "outcome": c["outcome"],
        "label": c["label"],
        "items": c["items"],
        "tenants": c["tenants"],
        "first_seen": c["first_seen"],
        "last_seen": c["last_seen"],
        "cost_usd": c["cost_usd"],
        "sample_item_ids": c["sample_item_ids"],
        "sample_keys": c["sample_keys"],
    }


def _scope(
    run_id: UUID | None,
    tenant: str | None,
    agent: str | None,
    since: datetime | None,
    until: datetime | None,
) -> str:
    """``in run R for tenant 'acme' since 2026-05-01 12:00Z``: what was searched, for the empty answer."""
    parts = [f"in run {run_id}" if run_id is not None else "in any run"]
    if tenant is not None:
        parts.append(f"for tenant {tenant!r}")
    if agent is not None:
        parts.append(f"of agent {agent!r}")
    if since is not None:
        parts.append(f"since {render.when(since, seconds=False)}")
    if until is not None:
        parts.append(f"before {render.when(until, seconds=False)}")
    return " ".join(parts)
