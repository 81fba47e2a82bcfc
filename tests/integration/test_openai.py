"""OpenAI calls made through an instrumented client inside an agent: ledger, journal, retries.

The provider is papayya's FakeProvider, driven by the real openai client; its request count proves
what was (and was not) paid for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
from genai_prices import Usage, calc_price
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

import papayya_openai
from papayya import Retryable, RunResult, agent, run
from papayya.runtime import Runtime
from papayya.testing import FakeProvider, Reply, count_tokens

MODEL = "gpt-4o-mini"


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[openai.OpenAI]:
    # max_retries=0: retries are papayya's business in these tests, not the SDK's.
    with openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0) as c:
        yield papayya_openai.instrument(c)


def ask(client: openai.OpenAI, text: str, **kwargs: Any) -> ChatCompletion:
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}], **kwargs)


def only_item(rt: Runtime, result: RunResult) -> dict[str, Any]:
    (item,) = result.items()
    return rt.store.item_detail(item.item_id)


def catalog_price(model: str, **usage: int) -> Decimal:
    return Decimal(calc_price(Usage(**usage), model, provider_id="openai").total_price)


def test_each_call_lands_in_the_ledger_with_usage_stop_reason_and_catalog_cost(
    rt: Runtime, tenant: str, fake: FakeProvider, client: openai.OpenAI
) -> None:
    fake.reply = lambda r: Reply(f"summary of {r.last_user_message}", input_tokens=1200, cached_tokens=1024)

    @agent
    def summarize(item):
        reply = ask(client, item.input["text"])
        return {"summary": reply.choices[0].message.content}

    result = summarize.map([{"id": str(i), "text": f"document {i}"} for i in range(3)], tenant=tenant)

    assert result.counts == {"succeeded": 3, "degraded": 0, "failed": 0}
    assert result.llm_calls == 3
    assert result.unpriced_calls == 0
    output_tokens = count_tokens("summary of document 0")
    expected = catalog_price(MODEL, input_tokens=1200, output_tokens=output_tokens, cache_read_tokens=1024)
    for item in result.items():
        (call,) = rt.store.item_detail(item.item_id)["llm_calls"]
        assert (call["provider"], call["model"]) == ("openai", MODEL)
        assert (call["input_tokens"], call["output_tokens"]) == (1200, output_tokens)
        assert (call["cache_read_tokens"], call["cache_write_tokens"]) == (1024, 0)
        assert call["stop_reason"] == "stop"
        assert call["price_source"] == "catalog"
        assert call["cost_usd"] == expected
        assert item.cost_usd == expected
    assert result.cost_usd == 3 * expected
    assert fake.count == 3


def test_an_unknown_model_is_recorded_with_cost_unknown_not_zero(
    rt: Runtime, tenant: str, client: openai.OpenAI
) -> None:
    @agent
    def call(item):
        reply = client.chat.completions.create(
            model="papayya-house-model-7", messages=[{"role": "user", "content": "x"}]
        )
        return {"text": reply.choices[0].message.content}

    result = call.map([{"id": "a"}], tenant=tenant)

    (call_row,) = only_item(rt, result)["llm_calls"]
    assert call_row["model"] == "papayya-house-model-7"
    assert call_row["cost_usd"] is None
    assert call_row["price_source"] == "unknown"
    assert result.unpriced_calls == 1
    (item,) = result.items()
    assert item.cost_unknown is True
    assert result.counts["succeeded"] == 1


def test_a_length_stop_degrades_the_item(rt: Runtime, tenant: str, client: openai.OpenAI) -> None:
    @agent
    def brief(item):
        return {"text": ask(client, "tell me everything", max_completion_tokens=2).choices[0].message.content}

    result = brief.map([{"id": "a"}], tenant=tenant)

    assert result.counts["degraded"] == 1
    (item,) = result.items()
    assert [(r["code"], r["path"]) for r in item.reasons] == [("llm_stop_reason", "length")]
    (call,) = only_item(rt, result)["llm_calls"]
    assert (call["stop_reason"], call["output_tokens"]) == ("length", 2)


def test_a_content_filter_stop_degrades_the_item(
    rt: Runtime, tenant: str, fake: FakeProvider, client: openai.OpenAI
) -> None:
    fake.stop_with("content_filter", when=lambda r: "forbidden" in r.prompt)

    @agent
    def answer(item):
        return {"text": ask(client, item.input["q"]).choices[0].message.content}

    result = answer.map([{"id": "ok", "q": "fine"}, {"id": "bad", "q": "forbidden"}], tenant=tenant)

    assert result.counts == {"succeeded": 1, "degraded": 1, "failed": 0}
    (bad,) = result.items(outcome="degraded")
    assert (bad.key, bad.reasons[0]["code"], bad.reasons[0]["path"]) == (
        "bad",
        "llm_stop_reason",
        "content_filter",
    )


def test_a_retry_gets_the_recorded_response_and_pays_nothing(
    rt: Runtime, tenant: str, fake: FakeProvider, client: openai.OpenAI
) -> None:
    # Given an agent that makes two LLM calls, then fails retryably on its first attempt
    seen: list[tuple[int, str, str, str]] = []

    @agent(retries=2, backoff=0)
    def enrich(item):
        key = run.idempotency_key("openai.chat")
        first = ask(client, "first question")
        second = ask(client, "second question")
        assert isinstance(first, ChatCompletion)
        seen.append((run.attempt, key, first.id, second.id))
        if run.attempt == 1:
            raise Retryable("the downstream write timed out")
        return {"answers": [first.choices[0].message.content, second.choices[0].message.content]}

    # When it runs
    result = enrich.map([{"id": "a"}], tenant=tenant)

    # Then the second attempt got both responses back from the journal: the provider was asked twice,
    # the ledger holds two calls, and the item succeeded with the recorded answers
    assert result.counts["succeeded"] == 1
    assert fake.count == 2
    detail = only_item(rt, result)
    assert [c["step_key"] for c in detail["llm_calls"]] == ["llm:openai.chat#1", "llm:openai.chat#2"]
    assert [a["status"] for a in detail["attempts_detail"]] == ["failed", "succeeded"]
    assert detail["output"] == {"answers": ["You said: first question", "You said: second question"]}
    assert [s[2:] for s in seen] == [("chatcmpl-fake-1", "chatcmpl-fake-2")] * 2
    # and the idempotency key the server saw is the one papayya gives that step in every attempt
    expected = f"papayya-{detail['item_id']}-llm:openai.chat#1"
    assert [s[1] for s in seen] == [expected, expected]
    assert fake.idempotency_keys == [expected, f"papayya-{detail['item_id']}-llm:openai.chat#2"]
    assert result.llm_calls == 2


@pytest.mark.parametrize(("status", "retry_after"), [(500, None), (429, 0.0)])
def test_a_transient_provider_error_is_retried_with_the_same_idempotency_key(
    rt: Runtime,
    tenant: str,
    fake: FakeProvider,
    client: openai.OpenAI,
    status: int,
    retry_after: float | None,
) -> None:
    fake.fail(status, retry_after=retry_after)

    @agent(retries=2, backoff=0)
    def call(item):
        return {"text": ask(client, "hello").choices[0].message.content}

    result = call.map([{"id": "a"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    detail = only_item(rt, result)
    first, second = detail["attempts_detail"]
    assert (first["status"], first["error"]["category"], first["error"]["retryable"]) == (
        "failed",
        "provider",
        True,
    )
    assert second["status"] == "succeeded"
    assert [r.status for r in fake.requests] == [status, 200]
    key = f"papayya-{detail['item_id']}-llm:openai.chat#1"
    assert fake.idempotency_keys == [key, key]
    assert len(detail["llm_calls"]) == 1  # the failed request cost nothing and is not in the ledger


def test_a_bad_request_is_not_retried(
    rt: Runtime, tenant: str, fake: FakeProvider, client: openai.OpenAI
) -> None:
    fake.fail(400, message="messages must not be empty")

    @agent(retries=2, backoff=0)
    def call(item):
        return {"text": ask(client, "hello").choices[0].message.content}

    result = call.map([{"id": "a"}], tenant=tenant)

    assert result.counts["failed"] == 1
    assert result.top_failures[0]["type"] == "BadRequestError"
    assert fake.count == 1


def test_responses_api_calls_are_recorded_and_replayed(
    rt: Runtime, tenant: str, fake: FakeProvider, client: openai.OpenAI
) -> None:
    @agent(retries=1, backoff=0)
    def respond(item):
        response = client.responses.create(model=MODEL, input="hello there")
        assert isinstance(response, Response)
        if run.attempt == 1:
            raise Retryable("try again")
        return {"text": response.output_text}

    result = respond.map([{"id": "a"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    assert fake.count == 1
    detail = only_item(rt, result)
    assert detail["output"] == {"text": "You said: hello there"}
    (call,) = detail["llm_calls"]
    assert (call["step_key"], call["stop_reason"]) == ("llm:openai.responses#1", "completed")
    assert call["input_tokens"] == count_tokens("hello there")
    assert call["cost_usd"] == catalog_price(
        MODEL, input_tokens=call["input_tokens"], output_tokens=call["output_tokens"]
    )


def test_a_responses_api_cut_short_records_why(rt: Runtime, tenant: str, client: openai.OpenAI) -> None:
    @agent
    def respond(item):
        return {
            "text": client.responses.create(model=MODEL, input="hello there", max_output_tokens=2).output_text
        }

    result = respond.map([{"id": "a"}], tenant=tenant)

    (call,) = only_item(rt, result)["llm_calls"]
    assert call["stop_reason"] == "max_output_tokens"


def test_a_responses_api_cut_short_degrades_the_item(rt: Runtime, tenant: str, client: openai.OpenAI) -> None:
    @agent
    def respond(item):
        return {
            "text": client.responses.create(model=MODEL, input="hello there", max_output_tokens=2).output_text
        }

    result = respond.map([{"id": "a"}], tenant=tenant)

    assert result.counts["degraded"] == 1


def test_async_agent_with_async_client(rt: Runtime, tenant: str, fake: FakeProvider) -> None:
    aclient = papayya_openai.instrument(
        openai.AsyncOpenAI(base_url=fake.openai_url, api_key="test", max_retries=0)
    )
    attempts: list[int] = []

    @agent(retries=1, backoff=0)
    async def enrich(item):
        reply = await aclient.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": item.input["text"]}]
        )
        assert isinstance(reply, ChatCompletion)
        attempts.append(run.attempt)
        if item.id == "flaky" and run.attempt == 1:
            raise Retryable("try again")
        return {"text": reply.choices[0].message.content}

    items = [{"id": str(i), "text": f"doc {i}"} for i in range(5)] + [{"id": "flaky", "text": "doc f"}]
    try:
        result = enrich.map(items, tenant=tenant, concurrency=6)
    finally:
        asyncio.run(aclient.close())

    assert result.counts == {"succeeded": 6, "degraded": 0, "failed": 0}
    assert fake.count == 6  # the retried item's second attempt replayed its call
    assert sorted(attempts) == [1] * 6 + [2]
    assert result.llm_calls == 6
    flaky = next(i for i in result.items() if i.key == "flaky")
    assert rt.store.item_detail(flaky.item_id)["output"] == {"text": "You said: doc f"}


def test_calls_outside_an_agent_are_not_recorded(
    rt: Runtime, tenant: str, fake: FakeProvider, client: openai.OpenAI
) -> None:
    reply = ask(client, "hello")

    assert reply.choices[0].message.content == "You said: hello"
    assert fake.idempotency_keys == [None]


def test_uninstrumented_client_inside_an_agent_is_not_recorded(
    rt: Runtime, tenant: str, fake: FakeProvider, client: openai.OpenAI
) -> None:
    papayya_openai.uninstrument(client)

    @agent
    def call(item):
        return {"text": ask(client, "hello").choices[0].message.content}

    result = call.map([{"id": "a"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    assert result.llm_calls == 0
    assert fake.count == 1


def test_with_options_copies_stay_instrumented(
    rt: Runtime, tenant: str, fake: FakeProvider, client: openai.OpenAI
) -> None:
    @agent
    def call(item):
        return {"text": ask(client.with_options(timeout=5), "hello").choices[0].message.content}

    result = call.map([{"id": "a"}], tenant=tenant)

    assert result.llm_calls == 1
    assert fake.idempotency_keys[0] is not None
