"""The nouns of papayya as data: statuses, outcomes, items, LLM calls; reasons and the records read back
(pydantic models, in :mod:`papayya.records`) are loaded from here on first use."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from papayya import validate

if TYPE_CHECKING:
    from papayya.records import ErrorInfo, PriceOverride, Reason, TenantRecord

# The pydantic models (papayya.records) load on first use, so what only needs the statuses (the CLI's
# reads, the store) does not import pydantic: ``from papayya.models import Reason`` works as before.
_RECORDS = frozenset({"ErrorInfo", "PriceOverride", "Reason", "TenantRecord"})


def __getattr__(name: str) -> Any:
    if name not in _RECORDS:
        raise AttributeError(f"module 'papayya.models' has no attribute {name!r}")
    from papayya import records

    value = getattr(records, name)
    globals()[name] = value
    return value


class ItemStatus(enum.StrEnum):
    """Where an item is. Mirrored by a CHECK constraint on ``papayya.items.status``."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    STALLED = "stalled"
    WAITING = "waiting"  # stopped at an LLM call sent in a provider batch; runs again when it is answered
    SUCCEEDED = "succeeded"
    DEGRADED = "degraded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Outcome(enum.StrEnum):
    """The verdict on an item once it is terminal."""

    SUCCEEDED = "succeeded"
    DEGRADED = "degraded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset(o.value for o in Outcome)


class RunStatus(enum.StrEnum):
    """Mirrored by a CHECK constraint on ``papayya.runs.status``."""

    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class ErrorCategory(enum.StrEnum):
    """Whose fault a failure is, as far as papayya can tell."""

    USER = "user"
    PROVIDER = "provider"
    PAPAYYA = "papayya"


class Item:
    """One unit of work: a stable ``id`` and a JSON input.

    Dict-style access reads the input (``item["domain"]``); attribute access reads ``id``.
    """

    __slots__ = ("id", "input")

    def __init__(self, id: str | int, input: Mapping[str, Any] | None = None, /, **fields: Any) -> None:
        # A str stays as given; an int is written in decimal. Anything else (None, a float, a bool)
        # would become text nobody chose ("None"), so it is refused here, naming the fix.
        self.id = id if type(id) is str else validate.item_id_text(id)
        data: dict[str, Any] = dict(input or {})
        data.update(fields)
        self.input = data

    def __getitem__(self, key: str) -> Any:
        return self.input[key]

    def __contains__(self, key: object) -> bool:
        return key in self.input

    def get(self, key: str, default: Any = None) -> Any:
        return self.input.get(key, default)

    def keys(self) -> Any:
        return self.input.keys()

    def __repr__(self) -> str:
        return f"Item(id={self.id!r}, input={json.dumps(self.input, default=str)[:80]})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Item) and (self.id, self.input) == (other.id, other.input)

    def __hash__(self) -> int:
        return hash(self.id)


@dataclass(frozen=True, slots=True)
class LLMCall:
    """One LLM call as recorded in the ledger (a plain dataclass: it is built on the hot path)."""

    tenant_id: str
    run_id: UUID
    item_id: UUID
    attempt_id: UUID
    step_key: str | None
    provider: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    stop_reason: str | None = None
    latency_ms: float | None = None
    cost_usd: Decimal | None = None
    price_source: str = "unknown"
    idempotency_key: str | None = None

    def as_params(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in _LLM_CALL_FIELDS}


_LLM_CALL_FIELDS = tuple(LLMCall.__dataclass_fields__)

__all__ = [
    "TERMINAL",
    "ErrorCategory",
    "ErrorInfo",
    "Item",
    "ItemStatus",
    "LLMCall",
    "Outcome",
    "PriceOverride",
    "Reason",
    "RunStatus",
    "TenantRecord",
]
