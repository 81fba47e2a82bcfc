from __future__ import annotations

from decimal import Decimal

import pytest
from genai_prices import Usage as GUsage
from genai_prices import calc_price

from papayya.pricing import CATALOG, Usage, batch_rate, price_call


@pytest.mark.parametrize(
    ("provider", "model"),
    [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-3-5-haiku-latest")],
)
@pytest.mark.parametrize("cache_read", [0, 300])
def test_cached_catalog_price_equals_genai_prices(provider: str, model: str, cache_read: int) -> None:
    usage = Usage(input_tokens=1234, output_tokens=321, cache_read_tokens=cache_read)
    expected = calc_price(
        GUsage(input_tokens=1234, output_tokens=321, cache_read_tokens=cache_read),
        model,
        provider_id=provider,
    ).total_price
    assert CATALOG.price(provider, model, usage) == expected


def test_unknown_model_is_priced_unknown_not_zero() -> None:
    price = price_call("openai", "no-such-model-2099", Usage(100, 10), {})
    assert price.cost_usd is None
    assert price.source == "unknown"


def test_tenant_override_wins_and_falls_back_per_field() -> None:
    overrides = {("openai", "gpt-4o-mini"): {"input_mtok": Decimal("0.10"), "output_mtok": None}}
    price = price_call("openai", "gpt-4o-mini", Usage(1_000_000, 1_000_000), overrides)
    public = CATALOG.rates("openai", "gpt-4o-mini")
    assert public is not None
    assert price.source == "tenant"
    assert price.cost_usd == Decimal("0.10") + public.output_mtok


def test_a_negotiated_price_of_zero_is_zero() -> None:
    overrides = {("openai", "gpt-4o-mini"): {"input_mtok": Decimal(0), "output_mtok": Decimal(0)}}
    assert price_call("openai", "gpt-4o-mini", Usage(500, 500), overrides).cost_usd == 0


def test_override_for_a_model_the_catalog_does_not_know() -> None:
    overrides = {("acme-llm", "private-1"): {"input_mtok": Decimal(1), "output_mtok": Decimal(2)}}
    price = price_call("acme-llm", "private-1", Usage(1_000_000, 500_000), overrides)
    assert price == price_call("acme-llm", "private-1", Usage(1_000_000, 500_000), overrides)
    assert price.cost_usd == Decimal(2)
    assert price.source == "tenant"


def test_bedrock_is_priced_at_the_catalogs_aws_prices() -> None:
    usage = Usage(input_tokens=1234, output_tokens=321, cache_read_tokens=200, cache_write_tokens=100)
    model = "global.anthropic.claude-haiku-4-5-20251001-v1:0"
    expected = calc_price(
        GUsage(input_tokens=1234, output_tokens=321, cache_read_tokens=200, cache_write_tokens=100),
        model,
        provider_id="aws",
    ).total_price
    price = price_call("bedrock", model, usage, {})
    assert (price.cost_usd, price.source) == (expected, "catalog")
    assert price_call("bedrock", "acme.internal-model-v1:0", usage, {}).cost_usd is None


def test_a_call_whose_usage_was_not_reported_is_priced_unknown_even_with_an_override() -> None:
    overrides = {("bedrock", "amazon.nova-lite-v1:0"): {"input_mtok": Decimal(1), "output_mtok": Decimal(2)}}
    for given in ({}, overrides):
        price = price_call("bedrock", "amazon.nova-lite-v1:0", Usage(reported=False), given)
        assert (price.cost_usd, price.source) == (None, "unknown")


def test_bedrock_calls_through_litellm_and_langchain_are_recorded_as_bedrock_and_priced_at_aws() -> None:
    # Given the provider names LiteLLM and LangChain use for Bedrock
    from papayya_langchain.calls import PROVIDERS
    from papayya_litellm.providers import route

    model = "amazon.nova-lite-v1:0"
    # Then each is papayya's "bedrock", as papayya_bedrock records it, and priced at the catalog's aws
    assert route({"model": f"bedrock/{model}"}).provider == "bedrock"
    assert {PROVIDERS[name] for name in ("bedrock", "amazon_bedrock", "bedrock_converse")} == {"bedrock"}
    assert price_call("bedrock", model, Usage(1000, 100), {}).cost_usd is not None


# -- batch mode ----------------------------------------------------------------------------------


def test_the_batch_rate_is_the_providers_published_discount() -> None:
    assert batch_rate("openai") == Decimal("0.5")
    assert batch_rate("anthropic") == Decimal("0.5")
    assert batch_rate("bedrock") is None


def test_a_batch_call_is_priced_at_the_catalogs_own_batch_price_where_it_has_one() -> None:
    # gpt-4o-mini has a batch price in genai-prices; it leaves cached input at the live rate
    usage = Usage(input_tokens=1234, output_tokens=321, cache_read_tokens=300)
    expected = calc_price(
        GUsage(input_tokens=1234, output_tokens=321, cache_read_tokens=300),
        "gpt-4o-mini",
        provider_id="openai",
        price_context={"processing": "batch"},
    ).total_price
    price = price_call("openai", "gpt-4o-mini", usage, {}, mode="batch")
    assert (price.cost_usd, price.source) == (expected, "catalog")
    live = price_call("openai", "gpt-4o-mini", Usage(1234, 321), {}).cost_usd
    assert live is not None
    assert price_call("openai", "gpt-4o-mini", Usage(1234, 321), {}, mode="batch").cost_usd == live / 2


def test_a_batch_call_the_catalog_has_no_batch_price_for_is_the_live_price_at_the_batch_rate() -> None:
    usage = Usage(input_tokens=1234, output_tokens=321, cache_read_tokens=200, cache_write_tokens=100)
    live = price_call("anthropic", "claude-3-5-haiku-latest", usage, {})
    batch = price_call("anthropic", "claude-3-5-haiku-latest", usage, {}, mode="batch")
    assert live.cost_usd is not None
    assert (batch.cost_usd, batch.source) == (live.cost_usd * Decimal("0.5"), "catalog")


def test_a_negotiated_price_in_batch_mode_gets_the_batch_rate_too() -> None:
    overrides = {("openai", "gpt-4o-mini"): {"input_mtok": Decimal(1), "output_mtok": Decimal(2)}}
    price = price_call("openai", "gpt-4o-mini", Usage(1_000_000, 1_000_000), overrides, mode="batch")
    assert (price.cost_usd, price.source) == (Decimal("1.5"), "tenant")


def test_a_batch_call_without_a_batch_price_or_rate_is_priced_unknown() -> None:
    usage = Usage(1000, 100)
    assert price_call("bedrock", "amazon.nova-lite-v1:0", usage, {}).cost_usd is not None
    for provider, model, given in [
        ("bedrock", "amazon.nova-lite-v1:0", Usage(1000, 100)),
        ("openai", "no-such-model-2099", Usage(1000, 100)),
        ("openai", "gpt-4o-mini", Usage(reported=False)),
    ]:
        price = price_call(provider, model, given, {}, mode="batch")
        assert (price.cost_usd, price.source) == (None, "unknown")


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        price_call("openai", "gpt-4o-mini", Usage(1, 1), {}, mode="flex")
