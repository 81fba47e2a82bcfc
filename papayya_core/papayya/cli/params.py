"""Command-line values: ids, tenants, ``key=value`` config, prices and time windows.

Each type turns text into a checked value or fails with a sentence saying what was expected.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

import click

from papayya.budgets import parse_amount
from papayya.tenants import validate_tenant_id

T = TypeVar("T")

# click.ParamType is generic only from click 8.5 on; subscripting it at runtime would break older clicks.
if TYPE_CHECKING:

    class Param(click.ParamType[T], Generic[T]):
        """A click parameter type converting to ``T``."""

else:

    class Param(click.ParamType, Generic[T]):
        """A click parameter type converting to ``T``."""


def short(value: str, limit: int = 40) -> str:
    """``repr`` of user text, cut so a 10 kB argument does not flood the message."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + "…"


class IdType(Param[UUID]):
    """A run or item id: a UUID, or a sentence saying it is not one and where to find one."""

    name = "uuid"

    def __init__(self, noun: str, where: str) -> None:
        # noun with its article ("a run id"); where: how to find a valid one
        self.noun = noun
        self.where = where

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> UUID:
        if isinstance(value, UUID):
            return value
        try:
            return UUID(str(value).strip())
        except ValueError:
            self.fail(
                f"{short(str(value))} is not {self.noun} (a UUID such as "
                f"0b6f5a4e-8a51-4c1e-9f0d-3c2f0e1d2a3b); {self.where}",
                param,
                ctx,
            )


RUN_ID = IdType("a run id", "list runs with `papayya runs list`")
ITEM_ID = IdType("an item id", "list items with `papayya items list RUN`")


class TenantType(Param[str]):
    """A tenant id, checked like the library checks it (TenantError says what is wrong)."""

    name = "tenant"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return validate_tenant_id(value)


TENANT = TenantType()


class KeysType(Param[list[str]]):
    """``KEY,KEY,...``: item ids (the user's keys) of a run, separated by commas."""

    name = "key,key"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[str]:
        if isinstance(value, list):
            return value
        keys = [k.strip() for k in str(value).split(",") if k.strip()]
        if not keys:
            self.fail(f"{short(str(value))} names no item; give item ids like a-17,b-42", param, ctx)
        return keys


KEYS = KeysType()


class ConfigPair(Param[tuple[str, Any]]):
    """``key=value``; the value is read as JSON when it is JSON (``5``, ``true``, ``[1,2]``), else text."""

    name = "key=value"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, Any]:
        if isinstance(value, tuple):
            return value
        key, eq, raw = str(value).partition("=")
        key = key.strip()
        if not eq or not key:
            self.fail(f"{short(str(value))} is not key=value (for example tier=gold or max_items=500)", param)
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw
        return key, parsed


CONFIG_PAIR = ConfigPair()


@dataclass(frozen=True)
class PriceSpec:
    """A negotiated price in USD per million tokens; None means "the public price for that kind"."""

    provider: str
    model: str
    input_mtok: Decimal | None
    output_mtok: Decimal | None
    cache_read_mtok: Decimal | None = None
    cache_write_mtok: Decimal | None = None

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"


_PRICE_EXAMPLE = "openai:gpt-4o-mini=0.15/0.60 (USD per million tokens: input/output[/cache read])"


class PriceType(Param[PriceSpec]):
    """``provider:model=IN/OUT[/CACHE_READ[/CACHE_WRITE]]``; ``-`` keeps the public price for a kind."""

    name = "provider:model=IN/OUT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> PriceSpec:
        if isinstance(value, PriceSpec):
            return value
        text = str(value)
        target, eq, prices = text.rpartition("=")
        provider, colon, model = target.partition(":")
        parts = prices.split("/")
        if not eq or not colon or not provider.strip() or not model.strip() or not 2 <= len(parts) <= 4:
            self.fail(f"{short(text)} is not a price; write it like {_PRICE_EXAMPLE}", param, ctx)
        amounts: list[Decimal | None] = []
        for raw in parts:
            part = raw.strip()
            if part in ("", "-"):
                amounts.append(None)
                continue
            try:
                amount = Decimal(part)
            except InvalidOperation:
                amount = Decimal("NaN")
            if not amount.is_finite() or amount < 0:
                self.fail(
                    f"{short(part)} in {short(text)} is not a price; "
                    f"give a number >= 0, like {_PRICE_EXAMPLE}",
                    param,
                    ctx,
                )
            amounts.append(amount)
        if all(a is None for a in amounts):
            self.fail(f"{short(text)} gives no price; write it like {_PRICE_EXAMPLE}", param, ctx)
        amounts += [None] * (4 - len(amounts))
        return PriceSpec(provider.strip(), model.strip(), *amounts)


PRICE = PriceType()


class ModelType(Param[tuple[str, str]]):
    """``provider:model``, naming a price override to remove."""

    name = "provider:model"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        provider, colon, model = str(value).partition(":")
        if not colon or not provider.strip() or not model.strip():
            self.fail(f"{short(str(value))} is not provider:model (for example openai:gpt-4o-mini)", param)
        return provider.strip(), model.strip()


MODEL = ModelType()


class BudgetType(Param[Decimal]):
    """A budget in USD: a finite number >= 0 (``40``, ``12.50``, ``$40``), checked like the library checks
    it (BudgetError says what is wrong)."""

    name = "usd"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Decimal:
        if isinstance(value, Decimal):
            return value
        return parse_amount(value)


BUDGET = BudgetType()


_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class TimeType(Param[datetime]):
    """An ISO date or time (UTC unless it has an offset), or a duration back from now: ``7d``, ``24h``."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value)
        match = _DURATION.match(text)
        if match:
            return datetime.now(UTC) - timedelta(**{_UNITS[match[2].lower()]: int(match[1])})
        try:
            parsed = datetime.fromisoformat(text.strip())
        except ValueError:
            self.fail(
                f"{short(text)} is not a time; give an ISO date or time like 2026-05-01 or "
                "2026-05-01T12:00:00+02:00, or a duration back from now like 30m, 24h, 7d or 2w",
                param,
                ctx,
            )
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


TIME = TimeType()
