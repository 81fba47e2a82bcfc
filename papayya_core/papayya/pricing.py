"""Prices: the public catalog (``genai-prices``) with per-tenant negotiated overrides on top.

An unknown model is priced as unknown (``None``), never as zero, and so is a call whose usage the
provider did not report (``Usage.reported`` false). Catalog look-ups are cached per (provider, model);
flat per-token prices are then computed here in a few microseconds, and tiered prices fall back to the
catalog's own calculation. papayya's provider names are the catalog's, except ``bedrock`` (AWS
Bedrock), which the catalog calls ``aws``.

**Batch mode** (``price_call(..., mode="batch")``, a call sent through a provider's batch API): the
catalog's own batch price where it has one for the model (genai-prices models them as price variants
selected by ``{"processing": "batch"}``), else the live price times the provider's published batch
rate (``BATCH_DISCOUNTS``), else unknown.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

log = logging.getLogger("papayya.pricing")

MTOK = Decimal(1_000_000)
# papayya's provider name -> the catalog's (genai-prices) provider id, where they differ.
CATALOG_PROVIDERS = {"bedrock": "aws"}

# What a call sent through the provider's batch API costs, as a fraction of the live price: OpenAI's
# Batch API and Anthropic's Message Batches both bill 50% of the standard rates (as published on
# 2026-12-08). genai-prices has batch prices of its own for many models and is preferred where it has
# one; this table prices the rest (e.g. older models the catalog lists at live rates only).
BATCH_DISCOUNTS: dict[str, Decimal] = {
    "openai": Decimal("0.5"),
    "anthropic": Decimal("0.5"),
}
# The genai-prices request context that selects a model's batch price variant.
_BATCH_CONTEXT = {"processing": "batch"}


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one LLM call. ``input_tokens`` includes cached input tokens.

    ``reported`` is False when the provider's answer carried no usage papayya could read: the counts
    are then zeros that say nothing, and the call is priced as unknown, never as free.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reported: bool = True


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens. ``None`` cache rates mean "same as input"."""

    input_mtok: Decimal
    output_mtok: Decimal
    cache_read_mtok: Decimal | None = None
    cache_write_mtok: Decimal | None = None

    def cost(self, u: Usage) -> Decimal:
        uncached = max(0, u.input_tokens - u.cache_read_tokens - u.cache_write_tokens)
        cache_read = self.input_mtok if self.cache_read_mtok is None else self.cache_read_mtok
        cache_write = self.input_mtok if self.cache_write_mtok is None else self.cache_write_mtok
        total = (
            uncached * self.input_mtok
            + u.cache_read_tokens * cache_read
            + u.cache_write_tokens * cache_write
            + u.output_tokens * self.output_mtok
        )
        return total / MTOK


@dataclass(frozen=True, slots=True)
class Price:
    """A priced call: ``cost_usd`` is None when no price is known; ``source`` says where it came from."""

    cost_usd: Decimal | None
    source: str  # "catalog" | "tenant" | "unknown", or the client library that priced it ("litellm")


_UNKNOWN = Price(None, "unknown")
_MISSING = object()


class Catalog:
    """The public price catalog, cached per (provider, model, live or batch)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, bool], Any] = {}
        self._lock = threading.Lock()

    def _lookup(self, provider: str, model: str, batch: bool = False) -> Any:
        key = (provider, model, batch)
        hit = self._cache.get(key, _MISSING)
        if hit is not _MISSING:
            return hit
        from genai_prices import Usage as GUsage
        from genai_prices import calc_price

        entry: Any
        try:
            calc = calc_price(
                GUsage(input_tokens=1, output_tokens=1),
                model,
                provider_id=CATALOG_PROVIDERS.get(provider, provider),
                price_context=_BATCH_CONTEXT if batch else None,
            )
        except LookupError:
            entry = None
            if not batch:  # the live look-up says it once
                log.warning(
                    "no public price for %s/%s; its calls are recorded with cost unknown", provider, model
                )
        else:
            # Without a batch variant the catalog answers its live price: that is not a batch price.
            has_price = not batch or _has_batch_variant(calc)
            entry = (_flat_rates(calc.model_price) or calc.model_price) if has_price else None
        with self._lock:
            self._cache[key] = entry
        return entry

    def price(self, provider: str, model: str, usage: Usage, *, batch: bool = False) -> Decimal | None:
        """The catalog's price of ``usage``; with ``batch``, its batch price (None if it has none)."""
        entry = self._lookup(provider, model, batch)
        if entry is None:
            return None
        if isinstance(entry, Rates):
            return entry.cost(usage)
        from genai_prices import Usage as GUsage

        result = entry.calc_price(
            GUsage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
            )
        )
        return Decimal(result["total_price"])

    def rates(self, provider: str, model: str) -> Rates | None:
        entry = self._lookup(provider, model)
        return entry if isinstance(entry, Rates) else None


def _has_batch_variant(calc: Any) -> bool:
    """Whether the catalog's answer used a batch price variant of the model that is in force now."""
    model, provider = calc.model, calc.provider
    if not any(m is model for m in provider.models):
        return False  # a model borrowed from another provider is priced at its standard rates
    now = datetime.now(UTC)
    return any(
        variant.when == _BATCH_CONTEXT and (variant.constraint is None or variant.constraint.active(now))
        for variant in getattr(model, "price_variants", None) or ()
    )


def _flat_rates(mp: Any) -> Rates | None:
    """Rates when every token price of ``mp`` is a plain number (not tiered), else None."""
    values = [
        getattr(mp, f, None) for f in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
    ]
    if not all(v is None or isinstance(v, Decimal) for v in values):
        return None
    input_mtok, output_mtok, cache_read, cache_write = values
    if not isinstance(input_mtok, Decimal):
        return None
    return Rates(
        input_mtok, output_mtok if isinstance(output_mtok, Decimal) else Decimal(0), cache_read, cache_write
    )


CATALOG = Catalog()


def batch_rate(provider: str) -> Decimal | None:
    """The fraction of the live price a provider's batch API bills (``BATCH_DISCOUNTS``), or None
    when papayya knows no batch rate for it."""
    return BATCH_DISCOUNTS.get(provider)


def price_call(
    provider: str,
    model: str,
    usage: Usage,
    overrides: dict[tuple[str, str], dict[str, Decimal | None]],
    *,
    mode: str = "live",
) -> Price:
    """Price one call: the tenant's override where it has one, else the public catalog, else unknown.
    A call whose usage was not reported is unknown whatever the prices.

    Args:
        provider: papayya's provider name (``"openai"``, ``"anthropic"``, ``"bedrock"``...).
        model: The model the call reports.
        usage: Its token counts.
        overrides: The tenant's negotiated prices per (provider, model), fields as ``Rates``.
        mode: ``"live"``, or ``"batch"`` for a call sent through the provider's batch API: the
            catalog's batch price where it has one, else the live price (the tenant's or the
            catalog's) times ``batch_rate(provider)``; unknown when neither exists.

    Raises:
        ValueError: ``mode`` is neither ``"live"`` nor ``"batch"``.
    """
    if mode not in ("live", "batch"):
        raise ValueError(f"mode must be 'live' or 'batch', not {mode!r}")
    if not usage.reported:
        return _UNKNOWN
    live = _live_price(provider, model, usage, overrides)
    if mode == "live":
        return live
    if live.source == "catalog":
        cost = CATALOG.price(provider, model, usage, batch=True)
        if cost is not None:
            return Price(cost, "catalog")
    rate = batch_rate(provider)
    if live.cost_usd is None or rate is None:
        return _UNKNOWN
    return Price(live.cost_usd * rate, live.source)


def _live_price(
    provider: str, model: str, usage: Usage, overrides: dict[tuple[str, str], dict[str, Decimal | None]]
) -> Price:
    """The live price: the tenant's override where it has one, else the catalog's, else unknown."""
    override = overrides.get((provider, model))
    if override is not None:
        public = CATALOG.rates(provider, model)

        def pick(field: str) -> Decimal | None:
            mine = override.get(field)
            return mine if mine is not None else (getattr(public, field) if public else None)

        input_mtok, output_mtok = pick("input_mtok"), pick("output_mtok")
        if input_mtok is not None and output_mtok is not None:
            rates = Rates(input_mtok, output_mtok, pick("cache_read_mtok"), pick("cache_write_mtok"))
            return Price(rates.cost(usage), "tenant")
    cost = CATALOG.price(provider, model, usage)
    return _UNKNOWN if cost is None else Price(cost, "catalog")
