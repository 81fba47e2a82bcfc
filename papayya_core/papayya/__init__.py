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
from papayya.agent import Agent, agent
from papayya.builtins import Retryable
from papayya.config import Settings, UnknownTenants
from papayya.context import retriever, run
from papayya.control import pause, resume_run, resume_tenant
from papayya.errors import (
    AttemptAbandoned,
    BudgetError,
    ConfigError,
    ControlFlow,
    InputError,
    MigrationError,
    NotFound,
    PapayyaError,
    Paused,
    StaleLease,
    StoreUnavailable,
    TenantError,
)
from papayya.hookspecs import hookimpl
from papayya.models import Item, ItemStatus, Outcome, Reason, RunStatus
from papayya.result import ItemResult, RunResult
from papayya.runtime import configure, reset

__version__ = "0.1.0"

__all__ = [
    # the contract
    "Agent",
    # errors
    "AttemptAbandoned",
    "BudgetError",
    "ConfigError",
    "ControlFlow",
    "InputError",
    "Item",
    "ItemResult",
    "ItemStatus",
    "MigrationError",
    "NotFound",
    "Outcome",
    "PapayyaError",
    "Paused",
    "Reason",
    "Retryable",
    "RunResult",
    "RunStatus",
    # configuration and tenants
    "Settings",
    "StaleLease",
    "StoreUnavailable",
    "TenantError",
    "UnknownTenants",
    "__version__",
    "agent",
    "configure",
    "hookimpl",
    "pause",
    "reset",
    "resume_run",
    "resume_tenant",
    "retriever",
    "run",
    "tenants",
]
