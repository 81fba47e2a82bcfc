"""LiteLLM calls inside an agent: gated, journaled, priced and attributed like the raw clients' calls.

The real ``litellm`` sends to papayya's FakeProvider (its OpenAI route, and its Anthropic route with
``api_base``), offline; the fake's request count and bill prove what was (and was not) paid for.
"""

from __future__ import annotations

# papayya_litellm first: it keeps LiteLLM's price map local before litellm is imported.
import papayya_litellm  # isort: skip

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import litellm
import pytest

import papayya
from papayya import Retryable, RunResult, agent, run
from papayya.runtime import Runtime
from papayya.testing import FakeProvider, Reply

pytestmark = [
    # LiteLLM's response types are TypedDicts with ReadOnly items; pydantic warns, when LiteLLM builds
    # their schemas lazily during a first call, that it will not enforce ReadOnly. Nothing to act on.
    pytest.mark.filterwarnings(
        r"ignore:Items? .* on TypedDict class '\w+' (is|are) using the `ReadOnly` qualifier:UserWarning"
    ),
    # LiteLLM reads pydantic's model_fields / model_computed_fields from an instance while it checks
    # a stream's chunks (the usage chunk papayya asks for), which pydantic 2.11 deprecated; raised as
    # an error here, it would break LiteLLM's stream, not papayya's code.
    pytest.mark.filterwarnings(
        "ignore:Accessing the 'model_(computed_)?fields' attribute on the instance is deprecated"
        ":pydantic.warnings.PydanticDeprecatedSince211:litellm\\.litellm_core_utils\\.model_response_utils"
    ),
]

GPT = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-3-5-haiku-latest"
EMBED = "openai/text-embedding-3-small"
LONG = "please summarise this rather long document about the quarterly numbers of the company"


@pytest.fixture(autouse=True)
def instrumented() -> Iterator[None]:
    papayya_litellm.instrument()
    yield
    papayya_litellm.uninstrument()


def ask(fake: FakeProvider, text: str, model: str = GPT, **kwargs: Any) -> Any:
    base = fake.anthropic_url if model.startswith("anthropic/") else fake.openai_url
    return litellm.completion(
        model=model, messages=[{"role": "user", "content": text}], api_base=base, api_key="test", **kwargs
    )


async def aask(fake: FakeProvider, text: str, model: str = GPT, **kwargs: Any) -> Any:
    base = fake.anthropic_url if model.startswith("anthropic/") else fake.openai_url
    return await litellm.acompletion(
        model=model, messages=[{"role": "user", "content": text}], api_base=base, api_key="test", **kwargs
    )


def rows_of(rt: Runtime, result: RunResult) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for item in sorted(result.items(), key=lambda i: i.key):
        rows.extend(rt.store.item_detail(item.item_id)["llm_calls"])
    return rows


LEDGER = ("provider", "model", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def ledger_of(rows: list[dict[str, Any]]) -> dict[str | None, tuple[Any, ...]]:
    """The ledger rows by the idempotency key of their request."""
    return {r["idempotency_key"]: (*(r[f] for f in LEDGER), r["cost_usd"]) for r in rows}


def bill_of(fake: FakeProvider) -> dict[str | None, tuple[Any, ...]]:
    """The fake's bill by the idempotency key each request carried."""
    return {
        e.idempotency_key: (
            e.provider,
            e.model,
            e.input_tokens,
            e.output_tokens,
            e.cache_read_tokens,
            e.cache_write_tokens,
            e.cost_usd,
        )
        for e in fake.bill
    }


def test_the_ledger_is_the_fakes_bill_call_for_call(rt: Runtime, tenant: str, fake: FakeProvider) -> None:
    # Given an agent that asks OpenAI and Anthropic through LiteLLM, with a cached prompt, and embeds
    fake.reply = lambda r: (
        Reply(f"noted: {r.last_user_message}", input_tokens=400, cached_tokens=100, cache_write_tokens=50)
        if r.api == "anthropic.messages"
        else f"noted: {r.last_user_message}"
    )

    @agent
    def enrich(item):
        gpt = ask(fake, f"{LONG} {item.id}")
        claude = ask(fake, f"{LONG} {item.id}", model=CLAUDE, max_tokens=200)
        vectors = litellm.embedding(model=EMBED, input=[item.id, LONG], api_base=fake.openai_url, api_key="t")
        assert isinstance(gpt, litellm.ModelResponse)
        return [gpt.choices[0].message.content, claude.choices[0].message.content, len(vectors.data)]

    result = enrich.map([{"id": "a"}, {"id": "b"}], tenant=tenant)

    # Then each call is one ledger row with the provider LiteLLM routed it to, the model, the tokens
    # and the cost of the fake's bill for the request that carried the row's idempotency key
    assert result.counts["succeeded"] == 2, [
        (i.status, i.reasons, rt.store.item_detail(i.item_id).get("error")) for i in result.items()
    ]
    rows = rows_of(rt, result)
    assert ledger_of(rows) == bill_of(fake)
    assert len(rows) == len(fake.bill) == 6
    assert [r["provider"] for r in rows] == ["openai", "anthropic", "openai"] * 2
    assert [r["price_source"] for r in rows] == ["catalog"] * 6
    assert all(r["cost_usd"] > 0 for r in rows)
    assert result.cost_usd == fake.billed_usd
    # and each request carried the idempotency key papayya gives its step
    steps = ("llm:litellm.completion#1", "llm:litellm.completion#2", "llm:litellm.embedding#1")
    expected = {f"papayya-{i.item_id}-{step}" for i in result.items() for step in steps}
    assert set(fake.idempotency_keys) == expected


def test_a_budget_pauses_the_item_at_the_call_with_nothing_sent(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    @agent
    def enrich(item):
        return ask(fake, LONG).choices[0].message.content

    result = enrich.map([{"id": "a"}], tenant=tenant, budget_usd="0.0000001")

    (item,) = result.items()
    assert item.status == "paused"
    assert result.paused_reason.startswith("budget:run")
    assert fake.count == 0
    assert result.llm_calls == 0


def test_a_retry_after_a_recorded_call_pays_nothing(rt: Runtime, tenant: str, fake: FakeProvider) -> None:
    # Given an agent whose first attempt fails after its LiteLLM call was paid for
    seen: list[tuple[int, str]] = []

    @agent(retries=1, backoff=0)
    def enrich(item):
        reply = ask(fake, LONG)
        assert isinstance(reply, litellm.ModelResponse)
        seen.append((run.attempt, reply.choices[0].message.content))
        if run.attempt == 1:
            raise Retryable("the downstream write timed out")
        return reply.choices[0].message.content

    result = enrich.map([{"id": "a"}], tenant=tenant)

    # Then the retry got the recorded answer back as a ModelResponse: one request, one ledger row
    assert result.counts["succeeded"] == 1
    assert seen == [(1, f"You said: {LONG}"), (2, f"You said: {LONG}")]
    assert fake.count == 1
    assert ledger_of(rows_of(rt, result)) == bill_of(fake)

    # And a from-journal replay answers from the journal too, paying nothing
    (item,) = result.items()
    replayed = papayya.replay(item=item.item_id, from_journal=True)
    assert replayed.counts["succeeded"] == 1
    assert fake.count == 1
    assert replayed.llm_calls == 0


@pytest.mark.parametrize("model", [GPT, CLAUDE])
def test_a_truncated_answer_degrades_the_item_live_and_from_the_journal(
    rt: Runtime, tenant: str, fake: FakeProvider, model: str
) -> None:
    @agent
    def brief(item):
        return ask(fake, "tell me everything", model=model, max_tokens=2).choices[0].message.content

    result = brief.map([{"id": "a"}], tenant=tenant)

    # LiteLLM spells the Anthropic route's max_tokens as OpenAI's "length"
    assert result.counts["degraded"] == 1
    (item,) = result.items()
    assert [(r["code"], r["path"]) for r in item.reasons] == [("llm_stop_reason", "length")]
    (row,) = rows_of(rt, result)
    assert (row["stop_reason"], row["output_tokens"]) == ("length", 2)

    replayed = papayya.replay(item=item.item_id, from_journal=True)
    assert replayed.counts["degraded"] == 1
    (again,) = replayed.items()
    assert [(r["code"], r["path"]) for r in again.reasons] == [("llm_stop_reason", "length")]
    assert fake.count == 1


def test_an_unknown_model_is_recorded_with_cost_unknown_never_zero(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    @agent
    def call(item):
        return ask(fake, "x", model="openai/papayya-house-model-7").choices[0].message.content

    result = call.map([{"id": "a"}], tenant=tenant)

    (row,) = rows_of(rt, result)
    assert (row["provider"], row["model"]) == ("openai", "papayya-house-model-7")
    assert row["cost_usd"] is None
    assert row["price_source"] == "unknown"
    assert result.unpriced_calls == 1
    (item,) = result.items()
    assert item.cost_unknown is True
    assert result.counts["succeeded"] == 1


@pytest.fixture
def litellm_only_model() -> Iterator[str]:
    """A model LiteLLM's cost map prices (registered as a user would) and papayya's catalog does not."""
    name = "papayya-litellm-priced-1"
    litellm.register_model(
        {
            f"openai/{name}": {
                "input_cost_per_token": 0.001,
                "output_cost_per_token": 0.002,
                "litellm_provider": "openai",
                "mode": "chat",
                "max_tokens": 4096,
            }
        }
    )
    yield name
    litellm.model_cost.pop(f"openai/{name}", None)


def test_a_model_only_litellm_prices_is_recorded_at_litellms_price(
    rt: Runtime, tenant: str, fake: FakeProvider, litellm_only_model: str
) -> None:
    @agent(retries=1, backoff=0)
    def call(item):
        answer = ask(fake, "x", model=f"openai/{litellm_only_model}", max_tokens=10)
        if run.attempt == 1:
            raise Retryable("once more, from the journal")
        return answer.choices[0].message.content

    result = call.map([{"id": "a"}], tenant=tenant)

    # Then the one paid call is in the ledger at LiteLLM's price (its cost map: $0.001 in, $0.002 out
    # per token), said to be LiteLLM's, and it is the run's cost; the retry paid and recorded nothing
    (row,) = rows_of(rt, result)
    (billed,) = fake.bill
    expected = Decimal("0.001") * billed.input_tokens + Decimal("0.002") * billed.output_tokens
    assert row["price_source"] == "litellm"
    assert row["cost_usd"] == expected
    assert result.cost_usd == expected
    assert result.unpriced_calls == 0
    assert fake.count == 1


def test_a_tenant_price_wins_over_litellms(
    rt: Runtime, tenant: str, fake: FakeProvider, litellm_only_model: str
) -> None:
    papayya.tenants.add(tenant)
    papayya.tenants.set_price(tenant, "openai", litellm_only_model, input_mtok="1", output_mtok="2")

    @agent
    def call(item):
        return ask(fake, "x", model=f"openai/{litellm_only_model}", max_tokens=10).choices[0].message.content

    (row,) = rows_of(rt, call.map([{"id": "a"}], tenant=tenant))
    assert row["price_source"] == "tenant"


def test_a_model_only_litellm_prices_is_still_held_by_the_budget(
    rt: Runtime, tenant: str, fake: FakeProvider, litellm_only_model: str
) -> None:
    # Given a budget smaller than LiteLLM's price for the call's worst case (10 output tokens: $0.02)
    @agent
    def call(item):
        return ask(fake, "x", model=f"openai/{litellm_only_model}", max_tokens=10).choices[0].message.content

    result = call.map([{"id": "a"}], tenant=tenant, budget_usd="0.01")

    # Then the gate reserved on LiteLLM's estimate and paused the item: nothing was sent
    (item,) = result.items()
    assert item.status == "paused"
    assert fake.count == 0


def test_embeddings_are_recorded_and_replayed(rt: Runtime, tenant: str, fake: FakeProvider) -> None:
    @agent(retries=1, backoff=0)
    def embed(item):
        vectors = litellm.embedding(model=EMBED, input=[LONG], api_base=fake.openai_url, api_key="test")
        assert isinstance(vectors, litellm.EmbeddingResponse)
        if run.attempt == 1:
            raise Retryable("try again")
        return len(vectors.data[0]["embedding"])

    result = embed.map([{"id": "a"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    assert fake.count == 1
    (row,) = rows_of(rt, result)
    assert (row["model"], row["output_tokens"], row["stop_reason"]) == ("text-embedding-3-small", 0, None)
    assert ledger_of([row]) == bill_of(fake)


def test_async_calls_are_recorded_and_replayed(rt: Runtime, tenant: str, fake: FakeProvider) -> None:
    @agent(retries=1, backoff=0)
    async def enrich(item):
        gpt = await aask(fake, f"{LONG} {item.id}")
        claude = await aask(fake, item.id, model=CLAUDE, max_tokens=100)
        vectors = await litellm.aembedding(
            model=EMBED, input=[item.id], api_base=fake.openai_url, api_key="t"
        )
        if item.id == "flaky" and run.attempt == 1:
            raise Retryable("try again")
        return [gpt.choices[0].message.content, claude.choices[0].message.content, len(vectors.data)]

    result = enrich.map([{"id": "flaky"}, {"id": "steady"}], tenant=tenant)

    assert result.counts["succeeded"] == 2
    assert fake.count == 6  # the retried item's second attempt was answered from the journal
    assert ledger_of(rows_of(rt, result)) == bill_of(fake)


def chat_text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks)


@pytest.mark.parametrize("model", [GPT, CLAUDE])
def test_a_stream_is_recorded_from_its_usage_and_replayed_from_the_journal(
    rt: Runtime, tenant: str, fake: FakeProvider, model: str
) -> None:
    texts: list[str] = []

    @agent(retries=1, backoff=0)
    def enrich(item):
        chunks = list(ask(fake, LONG, model=model, max_tokens=200, stream=True))
        assert all(c.choices for c in chunks)  # the usage-only chunk papayya asked for is hidden
        texts.append(chat_text(chunks))
        if run.attempt == 1:
            raise Retryable("try again")
        return texts[-1]

    result = enrich.map([{"id": "a"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    assert texts == [f"You said: {LONG}"] * 2
    assert fake.count == 1
    (row,) = rows_of(rt, result)
    assert ledger_of([row]) == bill_of(fake)
    assert row["stop_reason"] == "stop"
    assert fake.requests[0].body.get("stream") is True


def test_a_truncated_stream_degrades_the_item(rt: Runtime, tenant: str, fake: FakeProvider) -> None:
    @agent
    def brief(item):
        return chat_text(list(ask(fake, LONG, max_tokens=2, stream=True)))

    result = brief.map([{"id": "a"}], tenant=tenant)

    (item,) = result.items()
    assert result.counts["degraded"] == 1, rt.store.item_detail(item.item_id)["error"]["message"][-1500:]
    assert [(r["code"], r["path"]) for r in item.reasons] == [("llm_stop_reason", "length")]
    (row,) = rows_of(rt, result)
    assert ledger_of([row]) == bill_of(fake)


def test_a_stream_closed_midway_is_settled_on_its_reservation(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    @agent
    def peek(item):
        with ask(fake, LONG, max_tokens=50, stream=True) as stream:
            for chunk in stream:
                if chunk.choices[0].delta.content:
                    return chunk.choices[0].delta.content
        return None

    result = peek.map([{"id": "a"}], tenant=tenant)

    # Then its one ledger row says it was left midway and is priced on what it reserved, never free
    assert result.counts["succeeded"] == 1
    (row,) = rows_of(rt, result)
    assert row["stop_reason"] == "abandoned:reservation"
    assert (row["output_tokens"], row["price_source"]) == (50, "catalog")
    assert row["cost_usd"] > 0


def test_an_async_stream_is_recorded(rt: Runtime, tenant: str, fake: FakeProvider) -> None:
    @agent
    async def enrich(item):
        stream = await aask(fake, LONG, stream=True, stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        assert chunks[-1].usage is not None  # the caller asked for the usage chunk: it is kept
        return chat_text([c for c in chunks if c.choices])

    result = enrich.map([{"id": "a"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    (row,) = rows_of(rt, result)
    assert ledger_of([row]) == bill_of(fake)


def close_litellms_main_thread_loop() -> None:
    """LiteLLM's sync path, called on the main thread, sets an event loop there for its service logger
    (``asyncio.get_event_loop()``) and never closes it; ``asyncio.run`` would then drop it unclosed."""
    policy = asyncio.get_event_loop_policy()
    try:
        loop = policy.get_event_loop()
    except RuntimeError:  # none was set (an earlier asyncio.run cleared it and LiteLLM made none)
        return
    loop.close()
    policy.set_event_loop(None)


def test_calls_outside_an_agent_pass_through_untouched(fake: FakeProvider) -> None:
    reply = ask(fake, "hello")
    close_litellms_main_thread_loop()
    assert reply.choices[0].message.content == "You said: hello"
    assert fake.requests[0].idempotency_key is None
    assert asyncio.run(aask(fake, "again")).choices[0].message.content == "You said: again"
    assert fake.count == 2


def test_uninstrument_restores_litellms_functions() -> None:
    assert papayya_litellm.instrumented()
    papayya_litellm.instrument()  # twice is harmless
    papayya_litellm.uninstrument()
    assert not papayya_litellm.instrumented()
    assert not hasattr(litellm.completion, "__papayya_original__")


@pytest.mark.slow
def test_importing_papayya_litellm_keeps_litellms_price_map_offline() -> None:
    probe = (
        "import os, papayya_litellm, litellm\n"
        "from litellm.litellm_core_utils.get_model_cost_map import get_model_cost_map_source_info as s\n"
        "print(os.environ['LITELLM_LOCAL_MODEL_COST_MAP'], s()['source'], s()['is_env_forced'])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITELLM_")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "local", "True"]
    # A user's own setting is kept
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "true"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "true"
