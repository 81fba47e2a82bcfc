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

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each name is imported on first use
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
        InvalidInput,
        JournalMiss,
        MigrationError,
        NotFound,
        PapayyaError,
        Paused,
        ReplayError,
        StaleLease,
        StoreClosed,
        StoreUnavailable,
        TenantError,
    )
    from papayya.hookspecs import hookimpl
    from papayya.models import Item, ItemStatus, Outcome, Reason, RunStatus
    from papayya.replay import replay
    from papayya.result import ItemResult, RunResult
    from papayya.runtime import configure, reset

__version__ = "0.1.0"

# Public name -> the module that defines it. ``import papayya`` stays cheap (the CLI's ``--help`` and
# a worker's start do not pay for the store, pydantic and the HTTP clients until they use them).
_LAZY: dict[str, str] = {
    "tenants": "papayya.tenants:",
    "Agent": "papayya.agent",
    "RunHandle": "papayya.agent",
    "agent": "papayya.agent",
    "Retryable": "papayya.builtins",
    "Cluster": "papayya.clusters",
    "clusters": "papayya.clusters",
    "Settings": "papayya.config",
    "UnknownTenants": "papayya.config",
    "retriever": "papayya.context",
    "run": "papayya.context",
    "pause": "papayya.control",
    "resume_run": "papayya.control",
    "resume_tenant": "papayya.control",
    "hookimpl": "papayya.hookspecs",
    "Item": "papayya.models",
    "ItemStatus": "papayya.models",
    "Outcome": "papayya.models",
    "Reason": "papayya.models",
    "RunStatus": "papayya.models",
    "replay": "papayya.replay",
    "ItemResult": "papayya.result",
    "RunResult": "papayya.result",
    "configure": "papayya.runtime",
    "reset": "papayya.runtime",
    "AttemptAbandoned": "papayya.errors",
    "BudgetError": "papayya.errors",
    "ConfigError": "papayya.errors",
    "ControlFlow": "papayya.errors",
    "InputError": "papayya.errors",
    "InvalidInput": "papayya.errors",
    "JournalMiss": "papayya.errors",
    "MigrationError": "papayya.errors",
    "NotFound": "papayya.errors",
    "PapayyaError": "papayya.errors",
    "Paused": "papayya.errors",
    "ReplayError": "papayya.errors",
    "StaleLease": "papayya.errors",
    "StoreClosed": "papayya.errors",
    "StoreUnavailable": "papayya.errors",
    "TenantError": "papayya.errors",
}


class _Package(types.ModuleType):
    """``papayya`` itself. Three public functions share their name with the module that defines them
    (``agent``, ``clusters``, ``replay``): when the import system binds such a submodule to the package,
    the function is kept, so ``papayya.replay(...)`` works whichever was imported first."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


_SHADOWED = frozenset({"agent", "clusters", "replay"})


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'papayya' has no attribute {name!r}")
    module = importlib.import_module(where.rstrip(":"))
    value = module if where.endswith(":") else getattr(module, name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


sys.modules[__name__].__class__ = _Package


__all__ = [
    "Agent",
    "AttemptAbandoned",
    "BudgetError",
    "Cluster",
    "ConfigError",
    "ControlFlow",
    "InputError",
    "InvalidInput",
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
    "StoreClosed",
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
