"""Prices: the public catalog (``genai-prices``) with per-tenant negotiated overrides on top.

An unknown model is priced as unknown (``None``), never as zero, and so is a call whose usage the
provider did not report (``Usage.reported`` false). Catalog look-ups are cached per (provider, model);
flat per-token prices are then computed here in a few microseconds, and tiered prices fall back to the
catalog's own calculation. papayya's provider names are the catalog's, except ``bedrock`` (AWS
Bedrock), which the catalog calls ``aws``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

log = logging.getLogger("papayya.pricing")

MTOK = Decimal(1_000_000)
# papayya's provider name -> the catalog's (genai-prices) provider id, where they differ.
CATALOG_PROVIDERS = {"bedrock": "aws"}


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
    """The public price catalog, cached per (provider, model)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def _lookup(self, provider: str, model: str) -> Any:
        key = (provider, model)
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
            )
        except LookupError:
            entry = None
            log.warning(
                "no public price for %s/%s; its calls are recorded with cost unknown", provider, model
            )
        else:
            entry = _flat_rates(calc.model_price) or calc.model_price
        with self._lock:
            self._cache[key] = entry
        return entry

    def price(self, provider: str, model: str, usage: Usage) -> Decimal | None:
        entry = self._lookup(provider, model)
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


def price_call(
    provider: str, model: str, usage: Usage, overrides: dict[tuple[str, str], dict[str, Decimal | None]]
) -> Price:
    """Price one call: the tenant's override where it has one, else the public catalog, else unknown.
    A call whose usage was not reported is unknown whatever the prices."""
    if not usage.reported:
        return _UNKNOWN
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
