"""The nouns papayya validates and serialises with pydantic: reasons, recorded errors, and the tenant
records read back. Import them from :mod:`papayya.models` (which loads this module on first use)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from papayya.models import ErrorCategory


class Reason(BaseModel):
    """Why an item is degraded: a stable code, an optional field path, and a human message.

    ``code`` and ``path`` form the degradation fingerprint; ``message`` may carry item data and is
    never used to group items across tenants.
    """

    model_config = ConfigDict(frozen=True)

    code: str
    path: str | None = None
    message: str = ""

    def label(self) -> str:
        return f"{self.code}: {self.path}" if self.path else self.code


class ErrorInfo(BaseModel):
    """A failure as recorded: enough to cluster it and to read it a week later."""

    type: str
    message: str
    pattern: str = ""  # the message with item data normalised away; what clusters show
    category: ErrorCategory
    frame: str | None = None
    traceback: str = ""
    retryable: bool = False


class TenantRecord(BaseModel):
    tenant_id: str
    config: dict[str, Any] = Field(default_factory=dict)
    budget_usd: Decimal | None = None
    budget_period: str = "month"
    max_running: int | None = None  # items of this tenant running at once across all workers
    created_at: datetime
    updated_at: datetime


class PriceOverride(BaseModel):
    tenant_id: str
    provider: str
    model: str
    input_mtok: Decimal | None = None
    output_mtok: Decimal | None = None
    cache_read_mtok: Decimal | None = None
    cache_write_mtok: Decimal | None = None
