"""Replay: re-drive exactly what did not work, into a new run, from the recorded inputs.

A replay never changes the run it replays. It creates a new run linked by ``replayed_from`` (at run
and item level) holding exactly the chosen slice — one item, an outcome, a cluster, explicit ids, or
everything that did not succeed — with each item's recorded input snapshot (not the user's source
data, which may have changed since). Two modes:

- fresh (the default): new item ids, so new idempotency keys and new LLM calls, paid for;
- ``from_journal=True``: every journaled step answers from the original item's journal, so nothing is
  paid; an LLM step the original never recorded is an error (``JournalMiss``), never a call.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any
from uuid import UUID

from papayya import registry, validate
from papayya.errors import AgentNotImportable, NotFound, ReplayError
from papayya.execute import ItemRef
from papayya.runtime import get_runtime

if TYPE_CHECKING:
    from papayya.agent import Agent
    from papayya.result import RunResult

OUTCOMES = ("succeeded", "degraded", "failed", "cancelled", "paused", "stalled", "queued", "running")


def _describe(slice_: dict[str, Any]) -> str:
    """``outcome degraded; keys a, b`` for people, not a Python dict."""
    parts = [f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in slice_.items()]
    text = "; ".join(parts) or "all items"
    return text if len(text) <= 2 * validate.SHOWN_CHARS else text[: 2 * validate.SHOWN_CHARS] + "…"


def _uuid(value: UUID | str, what: str) -> UUID:
    return validate.uuid(value, what)


def replay(
    *,
    item: UUID | str | None = None,
    run: UUID | str | None = None,
    outcome: str | None = None,
    cluster: str | None = None,
    keys: list[str] | None = None,
    not_succeeded: bool = False,
    tenant: str | None = None,
    from_journal: bool = False,
    agent: Agent | None = None,
    concurrency: int | None = None,
    progress: bool | None = None,
    execute: bool = True,
    llm_mode: str | None = None,
) -> RunResult:
    """Replay one item (``item``) or a slice of a run (``run`` with ``outcome``, ``cluster``, ``keys`` or
    ``not_succeeded``; no filter replays the whole run) into a new run, and run it in this process.

    With ``tenant`` and neither ``item`` nor ``run``, the slice is taken across all the tenant's runs by
    the counting rule (each item it sent once, as the item whose outcome counts now), by ``outcome``,
    ``cluster`` or ``not_succeeded``, into one run linked item by item (and, at run level, to the newest
    run the items come from, whose agent and options it uses).

    Args:
        tenant: Scope: the item or run must belong to this tenant (a tenant-scoped caller passes it).
        from_journal: Answer every journaled step from the original items' journal (zero cost).
        agent: The agent to run; by default this process's agent of the original's name, else its module
            imported where that cannot start a batch again (``papayya.registry``).
        llm_mode: ``live`` or ``batch`` (see :mod:`papayya.batches`); by default the original run's.
        execute: False creates the replay run and hands its items to the workers of the original's
            backend without running them here or waiting: ``papayya worker`` processes claim them on the
            native engine; on a queue backend (Celery, SQS, Temporal) they are published to it, from
            this process's configuration of that backend.

    Raises:
        NotFound: the item, run or tenant scope does not match anything.
        ReplayError: the slice is empty (nothing is created), or ``from_journal`` for items with no journal.
    """
    from papayya.result import RunResult

    # Ids, names and keys are checked before any SQL: a refusal is one sentence, never a driver error.
    _check_mode(llm_mode, None)
    item = validate.optional_uuid(item, "an item id")
    run = validate.optional_uuid(run, "a run id")
    tenant = validate.optional_tenant_id(tenant)
    validate.optional_text(outcome, "outcome")
    validate.optional_text(cluster, "cluster id")
    if keys is not None:
        if not isinstance(keys, list | tuple):
            raise ReplayError(f"keys={validate.shown(keys)} must be a list of item keys.")
        keys = [validate.text(k, "item key", max_length=validate.MAX_KEY_LENGTH) for k in keys]
    rt = get_runtime()
    store = rt.store
    item_ids: list[UUID] | None = None
    if item is not None:
        if run is not None or outcome or cluster or keys or not_succeeded:
            raise ReplayError("Replay either one item or a slice of a run, not both.")
        detail = store.item_detail(_uuid(item, "an item id"), tenant)
        source = store.run_get(detail["run_id"], detail["tenant_id"])
        item_ids = [detail["item_id"]]
        slice_: dict[str, Any] = {"item": str(detail["item_id"]), "key": detail["key"]}
    elif run is not None:
        source = store.run_get(_uuid(run, "a run id"), tenant)
        if outcome is not None and outcome not in OUTCOMES:
            raise ReplayError(f"Unknown outcome {outcome!r}; use one of: {', '.join(OUTCOMES)}.")
        slice_ = {
            k: v
            for k, v in {
                "outcome": outcome,
                "cluster": cluster,
                "keys": keys,
                "not_succeeded": not_succeeded or None,
            }.items()
            if v
        }
    elif tenant is not None and (outcome or cluster or not_succeeded) and not keys:
        return _replay_across(
            tenant,
            outcome=outcome,
            cluster=cluster,
            not_succeeded=not_succeeded,
            from_journal=from_journal,
            agent=agent,
            concurrency=concurrency,
            progress=progress,
            execute=execute,
            llm_mode=llm_mode,
        )
    else:
        raise ReplayError("Say what to replay: an item, or a run (with --outcome, --cluster or ids).")
    if cluster is not None:
        known = store.clusters(
            run_id=source["run_id"],
            tenant_id=source["tenant_id"],
            agent=None,
            since=None,
            until=None,
            limit=1_000_000,
        )
        if cluster not in {c["cluster"] for c in known}:
            raise NotFound(
                f"No cluster {validate.shown(cluster)} in run {source['run_id']}; list them with "
                f"`papayya failures {source['run_id']}`."
            )
    _check_mode(llm_mode, source["backend"])
    cannot_load: AgentNotImportable | None = None
    if agent is None and execute:  # known before anything is created: a missing script leaves nothing
        try:
            agent = registry.find(source["agent_name"], source["entrypoint"], verb="replay")
        except AgentNotImportable as exc:
            cannot_load = exc
    tenant_id = source["tenant_id"]
    new_run = uuid.uuid4()
    counts = store.replay_create(
        {
            "run_id": new_run,
            "source_run_id": source["run_id"],
            "tenant_id": tenant_id,
            "item_ids": item_ids,
            "keys": keys,
            "status": outcome,
            "not_succeeded": not_succeeded,
            "fingerprint": cluster,
            "from_journal": from_journal,
            "name": f"replay of {source['name'] or source['run_id']}",
            "backend": None,
            "llm_mode": llm_mode,
            "slice": {**slice_, "from_journal": from_journal},
        },
        require_journal=from_journal,
        refuse=cannot_load,
    )
    if not counts["runs"]:
        raise ReplayError(
            f"The slice ({_describe(slice_)}) of run {source['run_id']} is empty; nothing was created."
        )
    if not execute or agent is None:
        _hand_over(rt, source, new_run, tenant_id)
        return RunResult.load(new_run, tenant_id)
    pending = store.run_pending_items(new_run, tenant_id)
    workers = concurrency or int((source["options"] or {}).get("concurrency") or 8)
    label = f"replay of {source['run_id']}"
    return agent._execute(rt, new_run, tenant_id, pending, workers, progress, label, source["backend"])


def _hand_over(rt: Any, source: dict[str, Any], run_id: UUID, tenant_id: str) -> None:
    """Give a replay run's queued items to the workers of its backend, by agent name (no import): a
    queue backend publishes them as its reaper re-drives items, so its workers run them."""
    if source["backend"] == "native":
        rt.store.notify_work(source["agent_name"])
        return
    runner = rt.backend_named(source["backend"])
    publish = getattr(runner, "redrive", None)
    if publish is None:
        raise ReplayError(
            f"Run {run_id} was created, but backend {source['backend']} cannot be handed recorded items; "
            f"run it with `papayya resume {run_id}` where the agent's code is importable."
        )
    pending = rt.store.run_pending_items(run_id, tenant_id)
    publish(rt, [ItemRef(item_id, key, run_id, tenant_id) for item_id, key in pending])


def _check_mode(llm_mode: str | None, backend: str | None) -> None:
    """A replay's LLM mode is live or batch, and batch runs on the native engine."""
    from papayya.config import LLM_MODES

    if llm_mode is None:
        return
    if llm_mode not in LLM_MODES:
        raise ReplayError(
            f"llm_mode {llm_mode!r} is not one of: {', '.join(LLM_MODES)}; nothing was created."
        )
    if llm_mode == "batch" and backend not in (None, "native"):
        raise ReplayError(
            f"llm_mode='batch' runs on the native engine, not on the {backend} backend of this run yet; "
            "replay it live. Nothing was created."
        )


def _replay_across(
    tenant: str,
    *,
    outcome: str | None,
    cluster: str | None,
    not_succeeded: bool,
    from_journal: bool,
    agent: Agent | None,
    concurrency: int | None,
    progress: bool | None,
    execute: bool,
    llm_mode: str | None = None,
) -> RunResult:
    """:func:`replay` of a slice of a tenant's items across its runs (see there)."""
    from papayya.result import RunResult

    rt = get_runtime()
    store = rt.store
    if outcome is not None and outcome not in OUTCOMES:
        raise ReplayError(f"Unknown outcome {outcome!r}; use one of: {', '.join(OUTCOMES)}.")
    slice_: dict[str, Any] = {
        k: v
        for k, v in {
            "tenant": tenant,
            "outcome": outcome,
            "cluster": cluster,
            "not_succeeded": not_succeeded,
        }.items()
        if v
    }
    rows = store.replay_slice_across(tenant, status=outcome, fingerprint=cluster, not_succeeded=not_succeeded)
    if not rows:
        if cluster is not None:
            raise NotFound(
                f"No item of tenant {tenant!r} is in cluster {validate.shown(cluster)} now; list its "
                f"clusters with `papayya failures --tenant {tenant}`."
            )
        raise ReplayError(f"The slice ({_describe(slice_)}) is empty; nothing was created.")
    agents = sorted({r["agent_name"] for r in rows})
    if len(agents) > 1:
        raise ReplayError(
            f"The slice ({_describe(slice_)}) holds items of {len(agents)} agents ({', '.join(agents)}); "
            "a replay runs one agent: replay each run with --run RUN. Nothing was created."
        )
    seen: dict[str, UUID] = {}
    for r in rows:
        if r["key"] in seen and seen[r["key"]] != r["run_id"]:
            raise ReplayError(
                f"Item id {r['key']!r} is in runs {seen[r['key']]} and {r['run_id']} (not replays of one "
                "another); one run cannot hold both: replay each run with --run RUN. Nothing was created."
            )
        seen[r["key"]] = r["run_id"]
    newest = max(rows, key=lambda r: (r["run_created_at"], str(r["run_id"])))
    source = store.run_get(newest["run_id"], tenant)
    slice_["runs"] = len({r["run_id"] for r in rows})
    _check_mode(llm_mode, source["backend"])
    cannot_load: AgentNotImportable | None = None
    if agent is None and execute:
        try:
            agent = registry.find(source["agent_name"], source["entrypoint"], verb="replay")
        except AgentNotImportable as exc:
            cannot_load = exc
    chosen = {k: v for k, v in slice_.items() if k in ("outcome", "cluster", "not_succeeded")}
    new_run = uuid.uuid4()
    store.replay_create(
        {
            "run_id": new_run,
            "source_run_id": source["run_id"],
            "tenant_id": tenant,
            "item_ids": [r["item_id"] for r in rows],
            "from_journal": from_journal,
            "name": f"replay of tenant {tenant}'s {_describe(chosen)}",
            "backend": None,
            "llm_mode": llm_mode,
            "slice": {**slice_, "from_journal": from_journal},
        },
        require_journal=from_journal,
        refuse=cannot_load,
        query="replay_create_across",
    )
    if not execute or agent is None:
        _hand_over(rt, source, new_run, tenant)
        return RunResult.load(new_run, tenant)
    pending = store.run_pending_items(new_run, tenant)
    workers = concurrency or int((source["options"] or {}).get("concurrency") or 8)
    label = f"replay of tenant {tenant}"
    return agent._execute(rt, new_run, tenant, pending, workers, progress, label, source["backend"])
