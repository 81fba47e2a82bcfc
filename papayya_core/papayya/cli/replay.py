"""``papayya replay``: run again exactly what did not work, into a new run, in this process.

The agent is imported from where the original run was started (its module, importable from the
directory recorded with the run or the current one), as ``papayya resume`` does; a script whose batch
is not under ``if __name__ == "__main__":`` is refused, never run again (``papayya.registry``). The original
run is never changed; the new run is linked to it by ``replayed_from``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

import click

from papayya import registry, tenants
from papayya.cli import render
from papayya.cli.connect import connect
from papayya.cli.control import import_from_here
from papayya.cli.params import KEYS, RUN_ID, TENANT, resolve_item
from papayya.cli.runs import show_detail
from papayya.replay import OUTCOMES, replay

if TYPE_CHECKING:
    from papayya.agent import Agent


@click.command("replay")
@click.option(
    "--item",
    "item_ref",
    default=None,
    metavar="ITEM",
    help="Replay this one item: its id (key), papayya's item UUID or the start of it.",
)
@click.option("--run", "run_id", type=RUN_ID, default=None, metavar="RUN", help="Replay a slice of this run.")
@click.option(
    "--outcome", type=click.Choice(OUTCOMES), default=None, help="Only RUN's items with this outcome."
)
@click.option(
    "--cluster",
    default=None,
    metavar="CLUSTER",
    help="Only RUN's items in this cluster (`papayya failures RUN`).",
)
@click.option(
    "--ids",
    "keys",
    type=KEYS,
    default=None,
    metavar="KEY,KEY",
    help="Only these items of RUN (their ids, comma-separated).",
)
@click.option("--not-succeeded", is_flag=True, help="Only RUN's items that did not succeed.")
@click.option(
    "--tenant",
    type=TENANT,
    default=None,
    is_eager=True,  # read first: ITEM and RUN are looked up within it
    help="Refuse unless the item or run is this tenant's. Without --item or --run: replay this tenant's "
    "items with --outcome, --cluster or --not-succeeded across all its runs (each item once, as it "
    "stands now) into one run.",
)
@click.option(
    "--from-journal",
    is_flag=True,
    help="Answer every recorded step and LLM call from the original items' journal: costs nothing; "
    "shows why the output came out as it did.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=None,
    help="Items to run at once.  [default: the original run's]",
)
@click.option(
    "--llm-mode",
    type=click.Choice(["live", "batch"]),
    default=None,
    help="Send the replay's LLM calls live, or in provider batches at the batch price (native engine; "
    "docs/batch.md).  [default: the original run's]",
)
@render.json_option
def replay_command(
    item_ref: str | None,
    run_id: UUID | None,
    outcome: str | None,
    cluster: str | None,
    keys: list[str] | None,
    not_succeeded: bool,
    tenant: str | None,
    from_journal: bool,
    concurrency: int | None,
    llm_mode: str | None,
    as_json: bool,
) -> None:
    """Replay one ITEM, or a slice of RUN, into a new run, and wait for it.

    Each item starts again from its recorded input. Fresh by default (new LLM calls, paid for);
    with --from-journal nothing is paid. Without a slice option, --run replays every item of RUN.
    The original run is not changed. Shows progress on a terminal, then the new run's summary.
    """
    sliced = outcome is not None or cluster is not None or keys is not None or not_succeeded
    across = item_ref is None and run_id is None and tenant is not None and sliced
    if across and keys is not None:
        raise click.UsageError("--ids chooses items of one run; give it with --run, not across --tenant")
    if item_ref is None and run_id is None and not across:
        raise click.UsageError(
            "Say what to replay: --item ITEM, --run RUN (with --outcome, --cluster, --ids or "
            "--not-succeeded), or --tenant TENANT with --outcome, --cluster or --not-succeeded"
        )
    if item_ref is not None and run_id is not None:
        raise click.UsageError("Give --item or --run, not both")
    if item_ref is not None and sliced:
        raise click.UsageError(
            "--outcome, --cluster, --ids and --not-succeeded choose items of a run; give them with --run, "
            "not --item"
        )
    store = connect()
    if tenant is not None:
        tenants.get(tenant)
    item_id = resolve_item(item_ref, tenant=tenant) if item_ref is not None else None
    # Import the agent before anything is created, so a missing script leaves no queued run behind.
    import_from_here()
    agent: Agent | None = None
    if item_id is not None or run_id is not None:
        if item_id is not None:
            source = store.run_get(store.item_detail(item_id, tenant)["run_id"], tenant)
        else:
            assert run_id is not None
            source = store.run_get(run_id, tenant)
        agent = registry.find(source["agent_name"], source["entrypoint"], verb="replay")
    # across a tenant's runs, replay() finds the agent of the runs the slice comes from
    result = replay(
        item=item_id,
        run=run_id,
        outcome=outcome,
        cluster=cluster,
        keys=keys,
        not_succeeded=not_succeeded,
        tenant=tenant,
        from_journal=from_journal,
        agent=agent,
        concurrency=concurrency,
        llm_mode=llm_mode,
    )
    if as_json:
        render.emit_json(show_detail(store.run_get(result.run_id, result.tenant), result))
        return
    click.echo(render.printable(str(result)))
