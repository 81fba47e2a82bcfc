"""The fake provider answers the real openai, anthropic and boto3 clients, counts requests and fails on
demand."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import Message
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from papayya.ledger import STREAM_EVENTS, extract_usage
from papayya.pricing import price_call
from papayya.testing import (
    FakeProvider,
    FakeRequest,
    Fault,
    Reply,
    converse_stream_events,
    count_tokens,
    encode_event,
    encode_event_message,
    fake_embedding,
)

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def oai(fake: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0) as client:
        yield client


@pytest.fixture
def claude(fake: FakeProvider) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake.anthropic_url, api_key="test", max_retries=0) as client:
        yield client


def test_chat_completion_is_derived_from_the_prompt(fake: FakeProvider, oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "system", "content": "be brief"}, *HELLO]
    )

    assert isinstance(reply, ChatCompletion)
    assert reply.model == "gpt-4o-mini"
    assert reply.choices[0].message.content == "You said: hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == count_tokens("be brief\nhello there")
    assert reply.usage.completion_tokens == count_tokens("You said: hello there")
    assert fake.count == 1
    assert fake.requests[0].api == "openai.chat"


def test_the_same_request_gets_the_same_answer(oai: openai.OpenAI) -> None:
    first = oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    second = oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)

    assert first.choices[0].message == second.choices[0].message
    assert first.usage == second.usage


def test_responses_api(fake: FakeProvider, oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="gpt-4o-mini", instructions="be brief", input="hello there")

    assert isinstance(response, Response)
    assert response.output_text == "You said: hello there"
    assert response.status == "completed"
    assert response.usage is not None
    assert response.usage.input_tokens == count_tokens("be brief\nhello there")
    assert fake.requests[0].api == "openai.responses"


def test_anthropic_messages(fake: FakeProvider, claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="claude-3-5-haiku-latest",
        max_tokens=100,
        system="be brief",
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
    )

    assert isinstance(message, Message)
    assert message.model == "claude-3-5-haiku-latest"
    assert message.content[0].type == "text"
    assert message.content[0].text == "You said: hello there"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == count_tokens("be brief\nhello there")
    assert fake.counts == {"claude-3-5-haiku-latest": 1}


def test_cached_tokens_are_reported_the_way_each_provider_reports_them(
    fake: FakeProvider, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    fake.reply = lambda r: Reply(
        "ok", input_tokens=100, output_tokens=7, cached_tokens=60, cache_write_tokens=10
    )

    chat = oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    message = claude.messages.create(model="claude-3-5-haiku-latest", max_tokens=100, messages=HELLO)

    # OpenAI counts cached tokens inside prompt_tokens; Anthropic's input_tokens leaves them out.
    assert chat.usage is not None
    assert chat.usage.prompt_tokens_details is not None
    assert (chat.usage.prompt_tokens, chat.usage.prompt_tokens_details.cached_tokens) == (100, 60)
    assert chat.usage.completion_tokens == 7
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (
        30,
        60,
        10,
    )


def test_counts_requests_per_model_and_the_idempotency_keys_seen(
    fake: FakeProvider, oai: openai.OpenAI
) -> None:
    oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO, extra_headers={"Idempotency-Key": "k-1"})
    oai.chat.completions.create(model="gpt-4.1-mini", messages=HELLO)
    oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)

    assert fake.count == 3
    assert fake.counts == {"gpt-4o-mini": 2, "gpt-4.1-mini": 1}
    assert fake.idempotency_keys == ["k-1", None, None]

    fake.reset()
    assert fake.count == 0


def test_rate_limit_with_retry_after(fake: FakeProvider, oai: openai.OpenAI) -> None:
    fake.fail(429, retry_after=7)

    with pytest.raises(openai.RateLimitError) as raised:
        oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)

    assert raised.value.response.headers["retry-after"] == "7"
    assert [r.status for r in fake.requests] == [429, 200]


def test_the_sdk_retries_with_the_same_idempotency_key(fake: FakeProvider) -> None:
    fake.fail(500, times=2, retry_after=0.01)

    with openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=2) as client:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, extra_headers={"Idempotency-Key": "k"}
        )

    assert [r.status for r in fake.requests] == [500, 500, 200]
    assert fake.idempotency_keys == ["k", "k", "k"]


def test_failures_can_target_requests_by_predicate(
    fake: FakeProvider, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    fake.fail(529, times=None, when=lambda r: r.api == "anthropic.messages")

    oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    with pytest.raises(anthropic.OverloadedError):
        claude.messages.create(model="claude-3-5-haiku-latest", max_tokens=10, messages=HELLO)
    fake.fail(500)
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert [r.status for r in fake.requests] == [200, 529, 500]


def test_stop_reasons_in_each_providers_spelling(
    fake: FakeProvider, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    fake.stop_with("length", times=3)
    chat = oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    message = claude.messages.create(model="claude-3-5-haiku-latest", max_tokens=100, messages=HELLO)
    response = oai.responses.create(model="gpt-4o-mini", input="hi")
    fake.stop_with("content_filter", times=2)
    filtered = oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    refused = claude.messages.create(model="claude-3-5-haiku-latest", max_tokens=100, messages=HELLO)
    normal = oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)

    assert chat.choices[0].finish_reason == "length"
    assert message.stop_reason == "max_tokens"
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert filtered.choices[0].finish_reason == "content_filter"
    assert refused.stop_reason == "refusal"
    assert normal.choices[0].finish_reason == "stop"


def test_a_reply_longer_than_max_tokens_is_cut(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    chat = oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_completion_tokens=2)
    message = claude.messages.create(model="claude-3-5-haiku-latest", max_tokens=2, messages=HELLO)

    assert chat.choices[0].finish_reason == "length"
    assert chat.choices[0].message.content == "You said"
    assert chat.usage is not None
    assert chat.usage.completion_tokens == 2
    assert message.stop_reason == "max_tokens"


def test_the_reply_hook_decides_the_answer(fake: FakeProvider, oai: openai.OpenAI) -> None:
    def reply(request: FakeRequest) -> str | Reply | Fault:
        if "boom" in request.prompt:
            return Fault(503, message="down")
        if request.model == "gpt-4.1-mini":
            return Reply("fixed", model="gpt-4.1-mini-2025-04-14")
        return request.last_user_message.upper()

    fake.reply = reply

    shout = oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    pinned = oai.chat.completions.create(model="gpt-4.1-mini", messages=HELLO)
    with pytest.raises(openai.InternalServerError) as raised:
        oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "boom"}])

    assert shout.choices[0].message.content == "HELLO THERE"
    assert pinned.model == "gpt-4.1-mini-2025-04-14"
    assert raised.value.status_code == 503


def test_a_broken_reply_hook_answers_500(fake: FakeProvider, oai: openai.OpenAI) -> None:
    def reply(request: FakeRequest) -> str:
        raise ValueError("oops")

    fake.reply = reply

    with pytest.raises(openai.InternalServerError, match="oops"):
        oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)


def test_a_streamed_answer_is_the_same_answer_in_each_providers_events(
    fake: FakeProvider, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    fake.stop_with("length", when=lambda r: "cut" in r.prompt, times=None)
    chat = [{"role": "user", "content": "a longer message, cut"}]
    plain = oai.chat.completions.create(model="gpt-4o-mini", messages=chat)
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=chat, stream=True, stream_options={"include_usage": True}
        )
    )
    *texts, last = chunks
    assert "".join(c.choices[0].delta.content or "" for c in texts) == plain.choices[0].message.content
    assert len(texts) > 3
    assert texts[-1].choices[0].finish_reason == "length"
    assert (last.choices, last.usage) == ([], plain.usage)
    assert all(c.usage is None for c in texts)
    # without include_usage, no usage chunk
    assert all(
        c.choices for c in oai.chat.completions.create(model="gpt-4o-mini", messages=chat, stream=True)
    )

    events = list(oai.responses.create(model="gpt-4o-mini", input="hello", stream=True))
    assert (events[0].type, events[-1].type) == ("response.created", "response.completed")
    assert events[-1].response.output_text == "You said: hello"
    assert events[-1].response.usage == oai.responses.create(model="gpt-4o-mini", input="hello").usage

    claude_model = "claude-3-5-haiku-latest"
    kinds = [
        e.type for e in claude.messages.create(model=claude_model, max_tokens=2, messages=HELLO, stream=True)
    ]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    with claude.messages.stream(model=claude_model, max_tokens=2, messages=HELLO) as stream:
        message = stream.get_final_message()
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 2)
    # billed as the same answers without streaming
    bill = fake.bill
    assert bill[0].usage == bill[1].usage == bill[2].usage
    assert bill[3].usage == bill[4].usage
    assert bill[-1].usage == bill[-2].usage


def test_async_clients(fake: FakeProvider) -> None:
    async def both() -> tuple[str | None, str]:
        async with (
            openai.AsyncOpenAI(base_url=fake.openai_url, api_key="test") as oai,
            anthropic.AsyncAnthropic(base_url=fake.anthropic_url, api_key="test") as claude,
        ):
            chat, message = await asyncio.gather(
                oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO),
                claude.messages.create(model="claude-3-5-haiku-latest", max_tokens=50, messages=HELLO),
            )
        block = message.content[0]
        assert block.type == "text"
        return chat.choices[0].message.content, block.text

    assert asyncio.run(both()) == ("You said: hello there", "You said: hello there")
    assert fake.count == 2


def test_url_needs_a_running_server() -> None:
    fake = FakeProvider()
    with pytest.raises(RuntimeError, match="not running"):
        _ = fake.url
    with fake:
        assert fake.openai_url.startswith("http://127.0.0.1:")
        assert fake.openai_url.endswith("/v1")
    fake.stop()  # stopping twice is harmless


def test_unknown_route_is_404(fake: FakeProvider, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        oai.moderations.create(model="omni-moderation-latest", input="hi")
    assert fake.count == 0


def test_embeddings_are_deterministic_unit_vectors_as_floats_or_base64(
    fake: FakeProvider, oai: openai.OpenAI
) -> None:
    texts = ["hello there", "general kenobi"]

    # the SDK asks for base64 unless told otherwise, and decodes it to float32 values
    packed = oai.embeddings.create(model="text-embedding-3-small", input=texts, dimensions=8)
    floats = oai.embeddings.create(
        model="text-embedding-3-small", input=texts, dimensions=8, encoding_format="float"
    )
    full = oai.embeddings.create(model="text-embedding-3-small", input="hello there", encoding_format="float")

    assert isinstance(packed, CreateEmbeddingResponse)
    assert [d.embedding for d in floats.data] == [fake_embedding(t, 8) for t in texts]
    for got, want in zip(packed.data, floats.data, strict=True):
        assert got.embedding == pytest.approx(want.embedding, rel=1e-6)
    assert [d.index for d in floats.data] == [0, 1]
    assert sum(x * x for x in floats.data[0].embedding) == pytest.approx(1.0)
    assert len(full.data[0].embedding) == 1536
    assert full.data[0].embedding[:8] != floats.data[0].embedding  # derived from text and size
    assert floats.model == "text-embedding-3-small"
    tokens = count_tokens("hello there") + count_tokens("general kenobi")
    assert (floats.usage.prompt_tokens, floats.usage.total_tokens) == (tokens, tokens)
    assert [r.api for r in fake.requests] == ["openai.embeddings"] * 3
    assert fake.requests[0].body["encoding_format"] == "base64"
    assert fake.requests[0].prompt == "hello there\ngeneral kenobi"


def test_embeddings_of_token_arrays_count_one_token_per_id(oai: openai.OpenAI) -> None:
    one = oai.embeddings.create(model="text-embedding-3-small", input=[101, 102, 103], dimensions=4)
    two = oai.embeddings.create(model="text-embedding-3-small", input=[[1, 2], [3, 4, 5, 6]], dimensions=4)

    assert len(one.data) == 1
    assert one.usage.prompt_tokens == 3
    assert [d.embedding for d in two.data] == [
        pytest.approx(fake_embedding([1, 2], 4), rel=1e-6),
        pytest.approx(fake_embedding([3, 4, 5, 6], 4), rel=1e-6),
    ]
    assert two.usage.prompt_tokens == 6


def test_embeddings_are_counted_and_fail_on_demand_but_have_no_stop_reason(
    fake: FakeProvider, oai: openai.OpenAI
) -> None:
    fake.stop_with("length")  # not for embeddings: left for the next chat request
    fake.fail(500)

    with pytest.raises(openai.InternalServerError):
        oai.embeddings.create(
            model="text-embedding-3-small", input="hi", extra_headers={"Idempotency-Key": "k"}
        )
    oai.embeddings.create(model="text-embedding-3-small", input="hi", extra_headers={"Idempotency-Key": "k"})
    with pytest.raises(openai.BadRequestError, match="non-empty"):
        oai.embeddings.create(model="text-embedding-3-small", input=[])
    chat = oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)

    assert [r.status for r in fake.requests] == [500, 200, 400, 200]
    assert fake.idempotency_keys == ["k", "k", None, None]
    assert fake.counts == {"text-embedding-3-small": 3, "gpt-4o-mini": 1}
    assert chat.choices[0].finish_reason == "length"


def test_256_requests_at_once_are_all_answered_and_billed(fake: FakeProvider) -> None:
    # Given 256 threads that send their request at the same instant
    n = 256
    start = threading.Barrier(n, timeout=30)

    def ask(i: int) -> ChatCompletion:
        start.wait()
        return client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"item {i}"}],
            extra_headers={"Idempotency-Key": f"k-{i}"},
        )

    # When they all reach the fake, with no retry to hide a refused connection
    with (
        openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0, timeout=60) as client,
        ThreadPoolExecutor(max_workers=n) as pool,
    ):
        replies = list(pool.map(ask, range(n)))

    # Then every one is answered, and billed once with the usage its client saw
    assert [r.choices[0].message.content for r in replies] == [f"You said: item {i}" for i in range(n)]
    assert fake.count == n
    bill = {entry.idempotency_key: entry for entry in fake.bill}
    assert len(bill) == len(fake.bill) == n
    for i, reply in enumerate(replies):
        assert reply.usage is not None
        entry = bill[f"k-{i}"]
        assert (entry.input_tokens, entry.output_tokens) == (
            reply.usage.prompt_tokens,
            reply.usage.completion_tokens,
        )
    assert fake.billed_usd == sum((e.cost_usd for e in bill.values() if e.cost_usd is not None), Decimal(0))


def _billed_as_the_ledger_would_record(fake: FakeProvider, provider: str, response: Any) -> None:
    """The fake's last bill entry is what papayya's ledger records and prices from ``response``."""
    entry = fake.bill[-1]
    model, usage, _ = extract_usage(provider, response)
    assert (entry.provider, entry.model, entry.usage) == (provider, model, usage)
    assert entry.cost_usd == price_call(provider, entry.model, usage, {}).cost_usd


def test_the_bill_agrees_with_the_ledger_for_every_api(
    fake: FakeProvider, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    headers = {"Idempotency-Key": "k"}
    chat = oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO, extra_headers=headers)
    _billed_as_the_ledger_would_record(fake, "openai", chat)
    response = oai.responses.create(model="gpt-4o-mini", input="hello there", extra_headers=headers)
    _billed_as_the_ledger_would_record(fake, "openai", response)
    message = claude.messages.create(
        model="claude-3-5-haiku-latest", max_tokens=100, messages=HELLO, extra_headers=headers
    )
    _billed_as_the_ledger_would_record(fake, "anthropic", message)
    vectors = oai.embeddings.create(
        model="text-embedding-3-small", input="hello there", extra_headers=headers
    )
    _billed_as_the_ledger_would_record(fake, "openai", vectors)

    assert [(e.api, e.idempotency_key, e.number) for e in fake.bill] == [
        ("openai.chat", "k", 1),
        ("openai.responses", "k", 2),
        ("anthropic.messages", "k", 3),
        ("openai.embeddings", "k", 4),
    ]
    assert chat.usage is not None
    assert (fake.bill[0].input_tokens, fake.bill[0].output_tokens) == (
        chat.usage.prompt_tokens,
        chat.usage.completion_tokens,
    )
    assert (fake.bill[3].input_tokens, fake.bill[3].output_tokens) == (vectors.usage.prompt_tokens, 0)
    assert all(e.cost_usd is not None and e.cost_usd > 0 for e in fake.bill)
    assert fake.billed_usd == sum((e.cost_usd for e in fake.bill if e.cost_usd is not None), Decimal(0))


def test_cached_tokens_are_billed_as_the_ledger_counts_them(
    fake: FakeProvider, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    fake.reply = lambda r: Reply(
        "ok", input_tokens=100, output_tokens=7, cached_tokens=60, cache_write_tokens=10, model=r.model
    )

    chat = oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    _billed_as_the_ledger_would_record(fake, "openai", chat)
    message = claude.messages.create(model="claude-3-5-haiku-latest", max_tokens=100, messages=HELLO)
    _billed_as_the_ledger_would_record(fake, "anthropic", message)

    # input_tokens counts cached tokens too, for both providers (Anthropic's response leaves them out)
    openai_bill, anthropic_bill = fake.bill
    assert (openai_bill.input_tokens, openai_bill.cache_read_tokens, openai_bill.cache_write_tokens) == (
        100,
        60,
        0,  # OpenAI does not report cache writes
    )
    assert (
        anthropic_bill.input_tokens,
        anthropic_bill.cache_read_tokens,
        anthropic_bill.cache_write_tokens,
    ) == (100, 60, 10)


def test_the_reported_model_is_billed_and_an_unpriced_one_costs_none(
    fake: FakeProvider, oai: openai.OpenAI
) -> None:
    fake.reply = lambda r: Reply("ok", model="gpt-4o-mini-2024-07-18") if r.model == "gpt-4o-mini" else "ok"

    pinned = oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    oai.chat.completions.create(model="papayya-no-such-model", messages=HELLO)

    priced, unpriced = fake.bill
    assert priced.model == pinned.model == "gpt-4o-mini-2024-07-18"
    assert priced.cost_usd is not None
    assert (unpriced.model, unpriced.cost_usd) == ("papayya-no-such-model", None)
    assert fake.billed_usd == priced.cost_usd


def test_faults_are_not_billed(fake: FakeProvider, oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    fake.fail(429, retry_after=1)
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    fake.fail(529, when=lambda r: r.api == "anthropic.messages")
    with pytest.raises(anthropic.OverloadedError):
        claude.messages.create(model="claude-3-5-haiku-latest", max_tokens=10, messages=HELLO)
    fake.reply = lambda r: Fault(503) if "boom" in r.prompt else "ok"
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "boom"}])
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="", messages=HELLO, stream=True)
    fake.fail(500)
    with pytest.raises(openai.InternalServerError):
        oai.embeddings.create(model="text-embedding-3-small", input="hi")
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model="text-embedding-3-small", input=[])
    oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO, extra_headers={"Idempotency-Key": "ok"})

    assert [r.status for r in fake.requests] == [429, 529, 503, 400, 500, 400, 200]
    assert [(e.idempotency_key, e.number) for e in fake.bill] == [("ok", 7)]
    assert fake.billed_usd == fake.bill[0].cost_usd

    fake.reset()
    assert (fake.bill, fake.billed_usd) == ([], Decimal(0))


@pytest.fixture
def bedrock(fake: FakeProvider) -> Iterator[Any]:
    import boto3
    import botocore.config

    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=fake.url,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )
    yield client
    client.close()


BEDROCK_HELLO = [{"role": "user", "content": [{"text": "hello there"}]}]


def test_bedrock_converse_is_answered_and_billed_as_the_ledger_records_it(
    fake: FakeProvider, bedrock: Any
) -> None:
    fake.reply = lambda r: Reply(
        "ok", input_tokens=100, output_tokens=7, cached_tokens=60, cache_write_tokens=10
    )

    response = bedrock.converse(
        modelId="amazon.nova-lite-v1:0",
        messages=BEDROCK_HELLO,
        system=[{"text": "be brief"}],
        inferenceConfig={"maxTokens": 50},
    )

    assert response["output"]["message"] == {"role": "assistant", "content": [{"text": "ok"}]}
    assert response["stopReason"] == "end_turn"
    # Bedrock's inputTokens leaves out the cached prompt tokens; the bill counts them in
    assert response["usage"] == {
        "inputTokens": 30,
        "outputTokens": 7,
        "totalTokens": 107,
        "cacheReadInputTokens": 60,
        "cacheWriteInputTokens": 10,
    }
    (request,) = fake.requests
    assert (request.api, request.model, request.max_tokens) == (
        "bedrock.converse",
        "amazon.nova-lite-v1:0",
        50,
    )
    assert request.prompt == "be brief\nhello there"
    assert request.idempotency_key is None
    # Converse names no model: the ledger records the one asked for, as the bill does
    (entry,) = fake.bill
    model, usage, _ = extract_usage("bedrock", response)
    assert (model, entry.provider, entry.model, entry.usage) == (None, "bedrock", request.model, usage)
    assert entry.cost_usd == price_call("bedrock", request.model, usage, {}).cost_usd
    assert (entry.input_tokens, entry.cache_read_tokens, entry.cache_write_tokens) == (100, 60, 10)
    assert entry.cost_usd is not None
    assert entry.cost_usd > 0


def test_bedrock_stop_reasons_and_max_tokens(fake: FakeProvider, bedrock: Any) -> None:
    fake.stop_with("content_filter")
    filtered = bedrock.converse(modelId="amazon.nova-lite-v1:0", messages=BEDROCK_HELLO)
    cut = bedrock.converse(
        modelId="amazon.nova-lite-v1:0", messages=BEDROCK_HELLO, inferenceConfig={"maxTokens": 1}
    )

    assert filtered["stopReason"] == "content_filtered"
    assert (cut["stopReason"], cut["usage"]["outputTokens"]) == ("max_tokens", 1)
    assert extract_usage("bedrock", cut)[2] == "max_tokens"


@pytest.mark.parametrize(
    ("status", "code"),
    [(429, "ThrottlingException"), (400, "ValidationException"), (500, "InternalServerException")],
)
def test_bedrock_faults_raise_boto3s_own_errors(
    fake: FakeProvider, bedrock: Any, status: int, code: str
) -> None:
    fake.fail(status, message="no")

    with pytest.raises(bedrock.exceptions.ClientError) as raised:
        bedrock.converse(modelId="amazon.nova-lite-v1:0", messages=BEDROCK_HELLO)

    assert type(raised.value).__name__ == code
    assert raised.value.response["Error"] == {"Code": code, "Message": "no"}
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert fake.bill == []


def test_a_reply_can_leave_out_its_usage_and_is_billed_all_the_same(fake: FakeProvider, bedrock: Any) -> None:
    fake.reply = lambda r: Reply("ok", report_usage=False)

    response = bedrock.converse(modelId="amazon.nova-lite-v1:0", messages=BEDROCK_HELLO)

    assert "usage" not in response
    _, usage, stop = extract_usage("bedrock", response)
    assert (usage.reported, stop) == (False, "end_turn")
    assert price_call("bedrock", "amazon.nova-lite-v1:0", usage, {}).cost_usd is None
    assert fake.bill[0].cost_usd is not None


def test_the_event_stream_encoder_is_read_back_by_botocores_own_decoder() -> None:
    from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

    frames = [
        encode_event("messageStart", {"role": "assistant"}),
        encode_event_message({":message-type": "event", ":event-type": "é"}, b""),  # empty, not ASCII
        encode_event("contentBlockDelta", {"delta": {"text": "x" * 70_000}, "contentBlockIndex": 0}),
    ]
    buffer = EventStreamBuffer()
    for frame in frames:  # fed in odd-sized pieces, as a socket delivers them
        for i in range(0, len(frame), 1_000):
            buffer.add_data(frame[i : i + 1_000])
    start, empty, delta = list(buffer)

    assert start.headers == {
        ":event-type": "messageStart",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(start.payload) == {"role": "assistant"}
    assert (empty.headers[":event-type"], empty.payload) == ("é", b"")
    assert len(json.loads(delta.payload)["delta"]["text"]) == 70_000
    # the prelude and message CRCs are checked: a flipped payload byte is refused
    broken = bytearray(frames[0])
    broken[-6] ^= 1
    corrupt = EventStreamBuffer()
    corrupt.add_data(bytes(broken))
    with pytest.raises(ChecksumMismatch):
        next(corrupt)


def test_bedrock_converse_stream_is_the_converse_answer_in_events(fake: FakeProvider, bedrock: Any) -> None:
    fake.stop_with("length", times=None)
    whole = bedrock.converse(modelId="amazon.nova-lite-v1:0", messages=BEDROCK_HELLO)
    streamed = bedrock.converse_stream(modelId="amazon.nova-lite-v1:0", messages=BEDROCK_HELLO)

    events = list(streamed["stream"])
    assert streamed["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/vnd.amazon.eventstream"
    assert events == converse_stream_events(whole)
    assert [next(iter(e)) for e in events] == [
        "messageStart",
        *["contentBlockDelta"] * 3,
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    assert "".join(e["contentBlockDelta"]["delta"]["text"] for e in events[1:4]) == "You said: hello there"
    # the ledger folds the events into the Converse answer's usage and stop reason
    assert extract_usage("bedrock", {STREAM_EVENTS: events}) == extract_usage("bedrock", whole)
    assert extract_usage("bedrock", whole)[2] == "max_tokens"
    first, second = fake.bill
    assert (second.api, second.usage, second.cost_usd) == (
        "bedrock.converse_stream",
        first.usage,
        first.cost_usd,
    )


def test_a_bedrock_stream_fault_is_an_http_error_before_any_event(fake: FakeProvider, bedrock: Any) -> None:
    fake.fail(429)

    with pytest.raises(bedrock.exceptions.ThrottlingException):
        bedrock.converse_stream(modelId="amazon.nova-lite-v1:0", messages=BEDROCK_HELLO)
    assert fake.bill == []


@pytest.mark.parametrize(
    ("model", "body", "answer"),
    [
        (
            "us.anthropic.claude-3-haiku-20240307-v1:0",
            {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 2, "messages": HELLO},
            {
                "id": "msg_fake_1",
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": "You said"}],
                "stop_reason": "max_tokens",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 3,
                    "output_tokens": 2,
                    "cache_read_input_tokens": 0,
                    "cache_creation_input_tokens": 0,
                },
            },
        ),
        (
            "meta.llama3-1-8b-instruct-v1:0",
            {"prompt": "hello there", "max_gen_len": 2},
            {
                "generation": "You said",
                "prompt_token_count": 3,
                "generation_token_count": 2,
                "stop_reason": "length",
            },
        ),
        (
            "amazon.titan-text-express-v1",
            {"inputText": "hello there", "textGenerationConfig": {"maxTokenCount": 2}},
            {
                "inputTextTokenCount": 3,
                "results": [{"tokenCount": 2, "outputText": "You said", "completionReason": "LENGTH"}],
            },
        ),
        ("cohere.command-text-v14", {"prompt": "hello there"}, {"text": "You said: hello there"}),
    ],
)
def test_bedrock_invoke_model_answers_in_each_model_familys_body(
    fake: FakeProvider, bedrock: Any, model: str, body: dict[str, Any], answer: dict[str, Any]
) -> None:
    response = bedrock.invoke_model(modelId=model, body=json.dumps(body))

    assert json.loads(response["body"].read()) == answer
    assert response["contentType"] == "application/json"
    (request,) = fake.requests
    assert (request.api, request.model, request.prompt) == ("bedrock.invoke", model, "hello there")
    (entry,) = fake.bill
    assert (entry.provider, entry.model, entry.input_tokens) == ("bedrock", model, 3)
    assert entry.output_tokens == (6 if model.startswith("cohere") else 2)
