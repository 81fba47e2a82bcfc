"""Anthropic calls made through an instrumented client inside an agent: ledger, journal, retries.

The provider is papayya's FakeProvider, driven by the real anthropic client; its request count proves
what was (and was not) paid for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import pytest
from anthropic.types import Message
from genai_prices import Usage, calc_price

import papayya_anthropic
from papayya import Retryable, RunResult, agent, run
from papayya.runtime import Runtime
from papayya.testing import FakeProvider, Reply, count_tokens

MODEL = "claude-3-5-haiku-latest"


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[anthropic.Anthropic]:
    # max_retries=0: retries are papayya's business in these tests, not the SDK's.
    with anthropic.Anthropic(base_url=fake.anthropic_url, api_key="test", max_retries=0) as c:
        yield papayya_anthropic.instrument(c)


def ask(client: anthropic.Anthropic, text: str, **kwargs: Any) -> Message:
    kwargs.setdefault("max_tokens", 256)
    return client.messages.create(model=MODEL, messages=[{"role": "user", "content": text}], **kwargs)


def text_of(message: Message) -> str:
    block = message.content[0]
    assert block.type == "text"
    return block.text


def only_item(rt: Runtime, result: RunResult) -> dict[str, Any]:
    (item,) = result.items()
    return rt.store.item_detail(item.item_id)


def test_each_call_lands_in_the_ledger_with_cache_tokens_and_catalog_cost(
    rt: Runtime, tenant: str, fake: FakeProvider, client: anthropic.Anthropic
) -> None:
    # Anthropic reports cache reads and writes beside input_tokens; the ledger's input_tokens is the
    # whole prompt (the three added up), as for OpenAI.
    fake.reply = lambda r: Reply("noted", input_tokens=3000, cached_tokens=2048, cache_write_tokens=512)

    @agent
    def summarize(item):
        return {"summary": text_of(ask(client, item.input["text"]))}

    result = summarize.map([{"id": str(i), "text": f"document {i}"} for i in range(2)], tenant=tenant)

    assert result.counts == {"succeeded": 2, "degraded": 0, "failed": 0}
    output_tokens = count_tokens("noted")
    usage = Usage(
        input_tokens=3000, output_tokens=output_tokens, cache_read_tokens=2048, cache_write_tokens=512
    )
    expected = Decimal(calc_price(usage, MODEL, provider_id="anthropic").total_price)
    for item in result.items():
        (call,) = rt.store.item_detail(item.item_id)["llm_calls"]
        assert (call["provider"], call["model"]) == ("anthropic", MODEL)
        assert (call["input_tokens"], call["output_tokens"]) == (3000, output_tokens)
        assert (call["cache_read_tokens"], call["cache_write_tokens"]) == (2048, 512)
        assert call["stop_reason"] == "end_turn"
        assert call["price_source"] == "catalog"
        assert call["cost_usd"] == expected
    assert result.cost_usd == 2 * expected
    assert result.llm_calls == fake.count == 2


def test_an_unknown_model_is_recorded_with_cost_unknown_not_zero(
    rt: Runtime, tenant: str, client: anthropic.Anthropic
) -> None:
    @agent
    def call(item):
        message = client.messages.create(
            model="claude-papayya-internal", max_tokens=64, messages=[{"role": "user", "content": "x"}]
        )
        return {"text": text_of(message)}

    result = call.map([{"id": "a"}], tenant=tenant)

    (call_row,) = only_item(rt, result)["llm_calls"]
    assert (call_row["model"], call_row["cost_usd"], call_row["price_source"]) == (
        "claude-papayya-internal",
        None,
        "unknown",
    )
    assert result.unpriced_calls == 1
    (item,) = result.items()
    assert item.cost_unknown is True


def test_a_max_tokens_stop_degrades_the_item(rt: Runtime, tenant: str, client: anthropic.Anthropic) -> None:
    @agent
    def brief(item):
        return {"text": text_of(ask(client, "tell me everything", max_tokens=2))}

    result = brief.map([{"id": "a"}], tenant=tenant)

    assert result.counts["degraded"] == 1
    (item,) = result.items()
    assert [(r["code"], r["path"]) for r in item.reasons] == [("llm_stop_reason", "max_tokens")]
    (call,) = only_item(rt, result)["llm_calls"]
    assert (call["stop_reason"], call["output_tokens"]) == ("max_tokens", 2)


def test_a_refusal_degrades_the_item(
    rt: Runtime, tenant: str, fake: FakeProvider, client: anthropic.Anthropic
) -> None:
    fake.stop_with("refusal")

    @agent
    def answer(item):
        return {"text": text_of(ask(client, "hello"))}

    result = answer.map([{"id": "a"}], tenant=tenant)

    (item,) = result.items()
    assert (item.status, item.reasons[0]["path"]) == ("degraded", "refusal")


def test_a_retry_gets_the_recorded_message_and_pays_nothing(
    rt: Runtime, tenant: str, fake: FakeProvider, client: anthropic.Anthropic
) -> None:
    # Given an agent that fails retryably after its LLM call on the first attempt
    keys: list[str] = []
    ids: list[str] = []

    @agent(retries=2, backoff=0)
    def enrich(item):
        keys.append(run.idempotency_key("anthropic.messages"))
        message = ask(client, "hello")
        assert isinstance(message, Message)
        ids.append(message.id)
        if run.attempt == 1:
            raise Retryable("the downstream write timed out")
        return {"text": text_of(message)}

    # When it runs
    result = enrich.map([{"id": "a"}], tenant=tenant)

    # Then the provider was called once, the ledger holds one call, and the retry saw the same message
    assert result.counts["succeeded"] == 1
    assert fake.count == 1
    detail = only_item(rt, result)
    assert len(detail["llm_calls"]) == 1
    assert len(detail["attempts_detail"]) == 2
    assert ids == ["msg_fake_1", "msg_fake_1"]
    assert detail["output"] == {"text": "You said: hello"}
    # and the key the server saw is the one papayya gives that step in every attempt
    expected = f"papayya-{detail['item_id']}-llm:anthropic.messages#1"
    assert keys == [expected, expected]
    assert fake.idempotency_keys == [expected]


@pytest.mark.parametrize(("status", "retry_after"), [(529, None), (429, 0.0), (500, None)])
def test_a_transient_provider_error_is_retried_with_the_same_idempotency_key(
    rt: Runtime,
    tenant: str,
    fake: FakeProvider,
    client: anthropic.Anthropic,
    status: int,
    retry_after: float | None,
) -> None:
    fake.fail(status, retry_after=retry_after)

    @agent(retries=2, backoff=0)
    def call(item):
        return {"text": text_of(ask(client, "hello"))}

    result = call.map([{"id": "a"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    detail = only_item(rt, result)
    first, second = detail["attempts_detail"]
    assert (first["error"]["category"], first["error"]["retryable"]) == ("provider", True)
    assert second["status"] == "succeeded"
    assert [r.status for r in fake.requests] == [status, 200]
    key = f"papayya-{detail['item_id']}-llm:anthropic.messages#1"
    assert fake.idempotency_keys == [key, key]
    assert len(detail["llm_calls"]) == 1


def test_a_provider_error_past_the_retries_fails_the_item(
    rt: Runtime, tenant: str, fake: FakeProvider, client: anthropic.Anthropic
) -> None:
    fake.fail(529, times=None)

    @agent(retries=1, backoff=0)
    def call(item):
        return {"text": text_of(ask(client, "hello"))}

    result = call.map([{"id": "a"}], tenant=tenant)

    assert result.counts["failed"] == 1
    assert result.top_failures[0]["type"] == "OverloadedError"
    assert result.top_failures[0]["category"] == "provider"
    assert fake.count == 2
    assert result.llm_calls == 0


def test_async_agent_with_async_client(rt: Runtime, tenant: str, fake: FakeProvider) -> None:
    aclient = papayya_anthropic.instrument(
        anthropic.AsyncAnthropic(base_url=fake.anthropic_url, api_key="test", max_retries=0)
    )

    @agent(retries=1, backoff=0)
    async def enrich(item):
        message = await aclient.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": item.input["text"]}]
        )
        assert isinstance(message, Message)
        if item.id == "flaky" and run.attempt == 1:
            raise Retryable("try again")
        return {"text": text_of(message)}

    items = [{"id": str(i), "text": f"doc {i}"} for i in range(4)] + [{"id": "flaky", "text": "doc f"}]
    try:
        result = enrich.map(items, tenant=tenant, concurrency=5)
    finally:
        asyncio.run(aclient.close())

    assert result.counts == {"succeeded": 5, "degraded": 0, "failed": 0}
    assert fake.count == 5
    assert result.llm_calls == 5


def test_calls_outside_an_agent_are_untouched(fake: FakeProvider, client: anthropic.Anthropic) -> None:
    assert text_of(ask(client, "hello")) == "You said: hello"
    assert fake.idempotency_keys == [None]


def test_uninstrument_restores_the_client(
    rt: Runtime, tenant: str, fake: FakeProvider, client: anthropic.Anthropic
) -> None:
    papayya_anthropic.instrument(client)  # twice is harmless
    papayya_anthropic.uninstrument(client)

    @agent
    def call(item):
        return {"text": text_of(ask(client, "hello"))}

    result = call.map([{"id": "a"}], tenant=tenant)

    assert (result.counts["succeeded"], result.llm_calls, fake.count) == (1, 0, 1)
    assert "create" not in vars(client.messages)
