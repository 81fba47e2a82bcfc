"""Failure clusters: degraded and failed items grouped by fingerprint, with what they cost.

A cluster is one shape of failure (exception type + normalised message + frame + category) or of
degradation (reason codes + field paths), across a run, a tenant, an agent or a time window. Its label
(written with the outcome, see ``fingerprint.failure_label`` and ``fingerprint.degradation_label``) is
built from codes, paths with list indices as ``<n>``, types, normalised messages and frames, never
from item data, so one tenant's payload never labels another tenant's cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from papayya import validate
from papayya.errors import InputError
from papayya.runtime import get_runtime


@dataclass(frozen=True)
class Cluster:
    """One cluster. ``cluster`` is its id (the fingerprint), usable as ``replay(cluster=...)``."""

    cluster: str
    outcome: str
    label: str
    items: int
    tenants: int
    first_seen: datetime | None
    last_seen: datetime | None
    cost_usd: Decimal
    sample_item_ids: list[UUID]
    sample_keys: list[str]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def clusters(
    *,
    run_id: UUID | str | None = None,
    tenant: str | None = None,
    agent: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
) -> list[Cluster]:
    """Clusters over a run, a tenant, an agent and/or a time window (when items finished), largest first.

    Raises:
        NotFound: ``run_id`` is not a run id's shape.
        TenantError: ``tenant`` is not a usable tenant id.
        InputError: ``agent``, ``since``, ``until`` or ``limit`` is not usable.
    """
    run = validate.optional_uuid(run_id, "a run id")
    tenant = validate.optional_tenant_id(tenant)
    agent = validate.optional_text(agent, "agent name")
    for what, when in (("since", since), ("until", until)):
        if when is not None and not isinstance(when, datetime):
            raise InputError(f"{what}={validate.shown(when)} must be a datetime (or None).")
    validate.count(limit, "limit")
    rows = get_runtime().store.clusters(
        run_id=run,
        tenant_id=tenant,
        agent=agent,
        since=since,
        until=until,
        limit=limit,
    )
    return [Cluster(**{**row, "label": row["label"] or row["cluster"]}) for row in rows]
