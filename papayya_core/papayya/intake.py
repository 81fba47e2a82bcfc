"""Intake: a message a team's own code put on a queue, with a tenant but no papayya item, becomes an item.

Adapters (Celery, SQS) call :func:`adopt` when a message arrives that papayya did not publish: the
message names its tenant (a header or attribute) and, optionally, a key; its body is the input. The
item is recorded in its tenant's *intake run* for the agent, the backend and the UTC day — one open
run per (tenant, agent, backend, day) that every worker finds without coordination — and then runs
through the one lifecycle like any other item: accounting, checks, journal, budget gate, clusters,
``papayya resume`` and ``papayya replay``.

The key is the message's idempotency key within the day's run (and the day before): a redelivered
message (same key) maps to the item its first delivery recorded, so a broker redelivery is a new
attempt of that item, never a second item.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from papayya import tenants
from papayya.agent import prepare_items
from papayya.errors import InputError
from papayya.execute import ItemRef
from papayya.models import Item

if TYPE_CHECKING:
    from papayya.agent import Agent
    from papayya.runtime import Runtime


def adopt(
    rt: Runtime,
    agent: Agent,
    *,
    tenant_id: str,
    key: str | int,
    input: Mapping[str, Any],
    backend: str,
) -> ItemRef:
    """Record a message of ``tenant_id`` as an item of the agent's intake run for today, or find the
    item an earlier delivery of it (same ``key``) recorded; return which item to run.

    Args:
        rt: The runtime.
        agent: The agent the message is for.
        tenant_id: The message's tenant, validated and created (or refused) as ``map()`` does.
        key: The item's key: the message's own key, or its message/task id.
        input: The item's input snapshot (JSON-serialisable mapping).
        backend: The backend the message came from (``celery``, ``sqs``): the run's backend, so the
            reaper re-drives its stalled items there and replays publish there.

    Raises:
        TenantError: the tenant id is unusable, or unknown and unknown tenants are refused.
        InputError: the key or the input is unusable (nothing is recorded).
    """
    tenants.validate_tenant_id(tenant_id)
    if isinstance(key, bool) or not isinstance(key, str | int) or not str(key).strip():
        raise InputError(
            f"A message for agent {agent.name} has no usable key ({key!r}); give it a non-empty string key.",
        )
    if not isinstance(input, Mapping):
        raise InputError(
            f"Item {str(key)[:60]!r}: its input is a {type(input).__name__}, not a mapping; send a JSON "
            "object (a dict).",
            item_key=str(key)[:60],
        )
    ((key_text, input_json),) = prepare_items([Item(str(key), input)], max_bytes=rt.settings.max_input_bytes)
    tenants.ensure(tenant_id, runtime=rt)
    params = {
        "tenant_id": tenant_id,
        "agent_name": agent.name,
        "backend": backend,
        "key": key_text,
        "item_id": uuid.uuid4(),
        "input": input_json,
        "max_attempts": agent.max_attempts,
        "options": Jsonb({"intake": True, "timeout": agent.timeout, "max_attempts": agent.max_attempts}),
        "entrypoint": Jsonb(agent.entrypoint()),
    }
    row = _adopt(rt, params)
    if row is None:  # a concurrent delivery of the same message recorded it first
        row = rt.store.fetch_one("intake_find", params)
    if row is None:  # pragma: no cover - the conflicting row is committed before ON CONFLICT gives way
        raise InputError(f"Item {key_text[:60]!r} could not be recorded; the message will be retried.")
    return ItemRef(row["item_id"], row["key"], row["run_id"], tenant_id)


def _adopt(rt: Runtime, params: dict[str, Any]) -> Any:
    """Run ``intake_adopt``, again if the day's first messages raced to create its run.

    Its insert of the run gives way on the run's primary key (``ON CONFLICT (run_id)``), but PostgreSQL
    handles a conflict only on that arbiter: two inserts that both passed its check before either
    wrote still meet on the run's other unique key, ``(run_id, tenant_id)`` (migration 0011), and the
    later one fails. The statement left nothing behind, and the run exists now, so the next try takes
    the ``DO UPDATE`` path.
    """
    for attempt in range(3):
        try:
            return rt.store.fetch_one("intake_adopt", params)
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name != "runs_run_tenant_key" or attempt == 2:
                raise
    return None  # pragma: no cover - the loop returns or raises


__all__ = ["adopt"]
