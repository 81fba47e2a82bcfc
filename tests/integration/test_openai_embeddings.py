"""OpenAI embeddings through an instrumented client inside an agent: ledger, replay, budget gate.

The provider is papayya's FakeProvider, driven by the real openai client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import openai
import psycopg
import pytest
from genai_prices import Usage, calc_price
from openai.types import CreateEmbeddingResponse

import papayya
import papayya_openai
from papayya import Retryable, agent, run
from papayya.runtime import Runtime
from papayya.testing import FakeProvider, count_tokens, fake_embedding

MODEL = "text-embedding-3-small"


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0) as c:
        yield papayya_openai.instrument(c)


def step_key(item_id: object) -> str:
    """The idempotency key papayya sends for an item's first embeddings call."""
    return f"papayya-{item_id}-llm:openai.embeddings#1"


def test_an_embedding_is_priced_from_its_prompt_tokens_and_replayed_as_the_sdk_type(
    rt: Runtime, tenant: str, fake: FakeProvider, client: openai.OpenAI
) -> None:
    # Given an agent that embeds two texts, then fails retryably on its first attempt
    vectors: list[list[list[float]]] = []

    @agent(retries=1, backoff=0)
    def embed(item: papayya.Item) -> dict[str, int]:
        response = client.embeddings.create(
            model=MODEL, input=["hello there", "general kenobi"], dimensions=8
        )
        assert isinstance(response, CreateEmbeddingResponse)
        vectors.append([d.embedding for d in response.data])
        if run.attempt == 1:
            raise Retryable("the vector store timed out")
        return {"vectors": len(response.data)}

    # When it runs
    result = embed.map([{"id": "a"}], tenant=tenant)

    # Then the provider was asked once, the retry got the same vectors back from the journal
    assert result.counts["succeeded"] == 1
    assert fake.count == 1
    assert vectors[0] == vectors[1]
    assert vectors[0][0] == pytest.approx(fake_embedding("hello there", 8), rel=1e-6)
    # and the ledger holds one call: prompt tokens in, nothing out, at the catalog's embedding price
    (item,) = result.items()
    (call,) = rt.store.item_detail(item.item_id)["llm_calls"]
    tokens = count_tokens("hello there") + count_tokens("general kenobi")
    assert (call["step_key"], call["provider"], call["model"]) == ("llm:openai.embeddings#1", "openai", MODEL)
    assert (call["input_tokens"], call["output_tokens"], call["stop_reason"]) == (tokens, 0, None)
    assert call["price_source"] == "catalog"
    assert call["cost_usd"] == Decimal(
        calc_price(Usage(input_tokens=tokens), MODEL, provider_id="openai").total_price
    )
    assert call["idempotency_key"] == fake.idempotency_keys[0] == step_key(item.item_id)
    assert result.counts["degraded"] == 0  # no stop reason is not an incomplete answer


def test_an_async_client_records_embeddings(rt: Runtime, tenant: str, fake: FakeProvider) -> None:
    aclient = papayya_openai.instrument(
        openai.AsyncOpenAI(base_url=fake.openai_url, api_key="test", max_retries=0)
    )

    @agent(retries=1, backoff=0)
    async def embed(item: papayya.Item) -> dict[str, float]:
        response = await aclient.embeddings.create(model=MODEL, input=item.input["text"], dimensions=4)
        assert isinstance(response, CreateEmbeddingResponse)
        if item.id == "flaky" and run.attempt == 1:
            raise Retryable("try again")
        return {"x": response.data[0].embedding[0]}

    items = [{"id": str(i), "text": f"doc {i}"} for i in range(4)] + [{"id": "flaky", "text": "doc f"}]
    try:
        result = embed.map(items, tenant=tenant, concurrency=5)
    finally:
        asyncio.run(aclient.close())

    assert result.counts == {"succeeded": 5, "degraded": 0, "failed": 0}
    assert fake.count == 5  # the retried item's second attempt replayed its call
    assert result.llm_calls == 5
    assert result.unpriced_calls == 0


def test_the_budget_reserves_an_embedding_input_only(
    rt: Runtime, tenant: str, fake: FakeProvider, client: openai.OpenAI
) -> None:
    # Given a tenant paying $1 per output token (were the reservation to assume the default output
    # cap, 4,096 of them, no call would fit) and $1 per 1,000 input tokens, under a $0.50 budget
    papayya.tenants.add(tenant)
    papayya.tenants.set_price(tenant, "openai", MODEL, input_mtok="1000", output_mtok="1000000")
    papayya.tenants.set_budget(tenant, "0.50", "total")

    @agent
    def embed(item: papayya.Item) -> int:
        return len(client.embeddings.create(model=MODEL, input=item.input["text"], dimensions=4).data)

    # When a short text and a text too long for the budget are embedded
    short = embed.map([{"id": "short", "text": "hello there"}], tenant=tenant)
    long = embed.map([{"id": "long", "text": "word " * 300}], tenant=tenant)

    # Then the short one ran, reserving its input only, and the long one paused before any request
    assert short.status == "completed"
    assert short.counts["succeeded"] == 1
    with psycopg.connect(rt.store.url) as conn:
        ((cost, reserved),) = conn.execute(
            "SELECT cost_usd, reserved_usd FROM papayya.llm_calls WHERE tenant_id = %s", (tenant,)
        ).fetchall()
    assert cost == Decimal(count_tokens("hello there")) / 1000
    assert cost <= reserved < Decimal("0.10")
    assert long.status == "paused"
    assert long.paused_reason is not None
    assert long.paused_reason.startswith("budget:tenant")
    assert fake.count == 1
