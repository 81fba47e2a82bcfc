"""papayya: the workload layer for LLM batch pipelines.

Tenants have items, items have outcomes, outcomes are accountable::

    from papayya import agent, run

    @agent(output=Enriched, retries=3)
    def enrich(item):
        context = run.retrieve(item.id)
        return call_my_llm(item, context)

    result = enrich.map(items, tenant="t47", concurrency=8)
    result.counts, result.cost_usd, result.items(outcome="degraded")
"""

from __future__ import annotations

from papayya import tenants
from papayya.agent import Agent, RunHandle, agent
from papayya.builtins import Retryable
from papayya.clusters import Cluster, clusters
from papayya.config import Settings, UnknownTenants
from papayya.context import retriever, run
from papayya.control import pause, resume_run, resume_tenant
from papayya.errors import (
    AttemptAbandoned,
    BudgetError,
    ConfigError,
    ControlFlow,
    InputError,
    JournalMiss,
    MigrationError,
    NotFound,
    PapayyaError,
    Paused,
    ReplayError,
    StaleLease,
    StoreUnavailable,
    TenantError,
)
from papayya.hookspecs import hookimpl
from papayya.models import Item, ItemStatus, Outcome, Reason, RunStatus
from papayya.replay import replay
from papayya.result import ItemResult, RunResult
from papayya.runtime import configure, reset

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AttemptAbandoned",
    "BudgetError",
    "Cluster",
    "ConfigError",
    "ControlFlow",
    "InputError",
    "Item",
    "ItemResult",
    "ItemStatus",
    "JournalMiss",
    "MigrationError",
    "NotFound",
    "Outcome",
    "PapayyaError",
    "Paused",
    "Reason",
    "ReplayError",
    "Retryable",
    "RunHandle",
    "RunResult",
    "RunStatus",
    "Settings",
    "StaleLease",
    "StoreUnavailable",
    "TenantError",
    "UnknownTenants",
    "__version__",
    "agent",
    "clusters",
    "configure",
    "hookimpl",
    "pause",
    "replay",
    "reset",
    "resume_run",
    "resume_tenant",
    "retriever",
    "run",
    "tenants",
]
