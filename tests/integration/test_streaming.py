"""Streamed calls through instrumented clients: accounted, journaled and replayed like the others.

The real openai and anthropic clients stream from papayya's FakeProvider (Server-Sent Events in each
provider's shape); its request count and bill prove what was (and was not) paid for.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

import papayya
import papayya_anthropic
import papayya_openai
from papayya import Retryable, RunResult, agent, run
from papayya.runtime import Runtime
from papayya.testing import FakeProvider

GPT = "gpt-4o-mini"
CLAUDE = "claude-3-5-haiku-latest"
LONG = "please summarise this rather long document about the quarterly numbers of the company"


@pytest.fixture
def oai(fake: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0) as c:
        yield papayya_openai.instrument(c)


@pytest.fixture
def claude(fake: FakeProvider) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake.anthropic_url, api_key="test", max_retries=0) as c:
        yield papayya_anthropic.instrument(c)


def calls_of(rt: Runtime, result: RunResult) -> list[dict[str, Any]]:
    (item,) = result.items()
    calls: list[dict[str, Any]] = rt.store.item_detail(item.item_id)["llm_calls"]
    return calls


# Each API streamed three ways: (start the stream, read the whole text from it, the stop reason's
# spelling there, what a call cut by max tokens stops with).


def chat_text(stream: Any) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream)


def response_text(stream: Any) -> str:
    return "".join(e.delta for e in stream if e.type == "response.output_text.delta")


def message_text(stream: Any) -> str:
    return "".join(e.delta.text for e in stream if e.type == "content_block_delta")


APIS: dict[str, tuple[Callable[..., Any], Callable[[Any], str], str]] = {
    "chat": (
        lambda c, text, **kw: c.chat.completions.create(
            model=GPT, messages=[{"role": "user", "content": text}], stream=True, **kw
        ),
        chat_text,
        "length",
    ),
    "responses": (
        lambda c, text, max_tokens=None, **kw: c.responses.create(
            model=GPT,
            input=text,
            stream=True,
            **({"max_output_tokens": max_tokens} if max_tokens else {}),
            **kw,
        ),
        response_text,
        "max_output_tokens",
    ),
    "messages": (
        lambda c, text, max_tokens=256, **kw: c.messages.create(
            model=CLAUDE,
            max_tokens=max_tokens,
            messages=[{"role": "user", "content": text}],
            stream=True,
            **kw,
        ),
        message_text,
        "max_tokens",
    ),
}


@pytest.fixture(params=sorted(APIS))
def api(
    request: pytest.FixtureRequest, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> tuple[Any, Callable[..., Any], Callable[[Any], str], str]:
    start, read, cut = APIS[request.param]
    return (claude if request.param == "messages" else oai), start, read, cut


def test_a_streamed_call_is_accounted_as_the_same_call_unstreamed(
    rt: Runtime, tenant: str, fake: FakeProvider, oai: openai.OpenAI
) -> None:
    # Given one item that streams a question and one that asks it plainly
    @agent
    def ask(item):
        messages = [{"role": "user", "content": LONG}]
        if item.id == "plain":
            return oai.chat.completions.create(model=GPT, messages=messages).choices[0].message.content
        chunks = list(oai.chat.completions.create(model=GPT, messages=messages, stream=True))
        assert all(chunk.choices for chunk in chunks)  # the usage-only chunk papayya asked for is hidden
        return "".join(chunk.choices[0].delta.content or "" for chunk in chunks)

    result = ask.map([{"id": "plain"}, {"id": "streamed"}], tenant=tenant)

    # Then both answers are the same, and so are their ledger rows, to the bill's last digit
    assert result.counts["succeeded"] == 2
    plain, streamed = sorted(result.items(), key=lambda i: i.key)
    assert rt.store.item_detail(plain.item_id)["output"] == rt.store.item_detail(streamed.item_id)["output"]
    rows = [rt.store.item_detail(i.item_id)["llm_calls"][0] for i in (plain, streamed)]
    fields = ("model", "input_tokens", "output_tokens", "stop_reason", "cost_usd")
    plain_row, streamed_row = ([r[f] for f in fields] for r in rows)
    assert plain_row == streamed_row
    assert [r["cost_usd"] for r in rows] == [e.cost_usd for e in fake.bill]
    assert plain.cost_usd == streamed.cost_usd > 0
    # and the streamed request asked for its usage
    (asked,) = [r for r in fake.requests if r.body.get("stream")]
    assert asked.body["stream_options"] == {"include_usage": True}


def test_every_streamed_api_is_billed_as_the_ledger_says(
    rt: Runtime,
    tenant: str,
    fake: FakeProvider,
    api: tuple[Any, Callable[..., Any], Callable[[Any], str], str],
) -> None:
    client, start, read, _cut = api

    @agent
    def ask(item):
        return read(start(client, LONG))

    result = ask.map([{"id": "a"}], tenant=tenant)

    (row,) = calls_of(rt, result)
    (bill,) = fake.bill
    assert (row["input_tokens"], row["output_tokens"], row["cost_usd"]) == (
        bill.input_tokens,
        bill.output_tokens,
        bill.cost_usd,
    )
    assert row["stop_reason"] in ("stop", "completed", "end_turn")
    assert result.items()[0].cost_usd == bill.cost_usd


def test_a_caller_who_asks_for_usage_gets_the_usage_chunk(
    rt: Runtime, tenant: str, fake: FakeProvider, oai: openai.OpenAI
) -> None:
    @agent(retries=1, backoff=0)
    def ask(item):
        stream = oai.chat.completions.create(
            model=GPT,
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        last = list(stream)[-1]
        if run.attempt == 1:
            raise Retryable("after the call")
        return {"choices": len(last.choices), "tokens": last.usage.total_tokens}

    result = ask.map([{"id": "a"}], tenant=tenant)

    (item,) = result.items()
    assert rt.store.item_detail(item.item_id)["output"] == {
        "choices": 0,
        "tokens": fake.bill[0].input_tokens + fake.bill[0].output_tokens,
    }
    assert fake.count == 1  # the retry got the journaled chunks, usage chunk included


def test_a_retry_after_a_streamed_call_pays_nothing_and_replays_the_same_text(
    rt: Runtime,
    tenant: str,
    fake: FakeProvider,
    api: tuple[Any, Callable[..., Any], Callable[[Any], str], str],
) -> None:
    client, start, read, _cut = api
    texts: list[str] = []
    kinds: list[type] = []

    # Given an agent that streams an answer and crashes once after reading it
    @agent(retries=1, backoff=0)
    def ask(item):
        stream = start(client, f"tell me about {item.id}")
        kinds.append(type(stream))
        texts.append(read(stream))
        if run.attempt == 1:
            raise ConnectionError("the worker's socket dropped after the stream was paid")
        return texts[-1]

    result = ask.map([{"id": "apples"}], tenant=tenant)

    # Then the retry read the same text through the SDK's own stream class, and nothing was paid again
    assert result.counts["succeeded"] == 1
    assert texts == ["You said: tell me about apples"] * 2
    sdk = anthropic.Stream if client.__class__.__module__.startswith("anthropic") else openai.Stream
    assert all(issubclass(k, sdk) for k in kinds)
    assert fake.count == 1
    assert len(calls_of(rt, result)) == 1
    assert result.items()[0].cost_usd == fake.billed_usd


def test_the_sdk_stream_helpers_that_call_create_are_recorded_and_replayed(
    rt: Runtime, tenant: str, fake: FakeProvider, oai: openai.OpenAI
) -> None:
    @agent(retries=1, backoff=0)
    def ask(item):
        with oai.chat.completions.stream(model=GPT, messages=[{"role": "user", "content": "chat"}]) as chat:
            completion = chat.get_final_completion()
        with oai.responses.stream(model=GPT, input="responses") as responses:
            response = responses.get_final_response()
        if run.attempt == 1:
            raise Retryable("after both calls")
        return [completion.choices[0].message.content, response.output_text]

    result = ask.map([{"id": "a"}], tenant=tenant)

    (item,) = result.items()
    assert rt.store.item_detail(item.item_id)["output"] == ["You said: chat", "You said: responses"]
    assert fake.count == 2
    rows = calls_of(rt, result)
    assert [r["step_key"] for r in rows] == ["llm:openai.chat#1", "llm:openai.responses#1"]
    assert [r["cost_usd"] for r in rows] == [e.cost_usd for e in fake.bill]


def test_a_truncated_stream_degrades_the_item_also_when_replayed_from_the_journal(
    rt: Runtime,
    tenant: str,
    fake: FakeProvider,
    api: tuple[Any, Callable[..., Any], Callable[[Any], str], str],
) -> None:
    client, start, read, cut = api

    @agent
    def ask(item):
        return read(start(client, LONG, max_tokens=3))

    result = ask.map([{"id": "a"}], tenant=tenant)

    # Then the stop reason in the stream's last events degrades the item
    (item,) = result.items()
    assert item.status == "degraded"
    assert [(r["code"], r["path"]) for r in item.reasons] == [("llm_stop_reason", cut)]
    (row,) = calls_of(rt, result)
    assert (row["stop_reason"], row["output_tokens"]) == (cut, 3)
    # and a from-journal replay reaches the same verdict from the journaled events, for nothing
    again = papayya.replay(item=item.item_id, from_journal=True, agent=ask)
    (replayed,) = again.items()
    assert (replayed.status, [r["path"] for r in replayed.reasons]) == ("degraded", [cut])
    assert fake.count == 1
    assert again.llm_calls == 0


def test_the_budget_gate_pauses_the_item_before_the_stream_opens(
    rt: Runtime,
    tenant: str,
    fake: FakeProvider,
    api: tuple[Any, Callable[..., Any], Callable[[Any], str], str],
) -> None:
    client, start, read, _cut = api

    @agent
    def ask(item):
        return read(start(client, LONG))

    result = ask.map([{"id": "a"}], tenant=tenant, budget_usd="0.0000001")

    (item,) = result.items()
    assert item.status == "paused"
    assert result.paused_reason.startswith("budget:run")
    assert fake.count == 0
    assert result.llm_calls == 0


def test_a_chat_stream_left_midway_is_settled_on_its_reservation_and_asked_again_on_retry(
    rt: Runtime, tenant: str, fake: FakeProvider, oai: openai.OpenAI
) -> None:
    # Given an agent that reads the first piece of a streamed answer and stops reading
    @agent(retries=1, backoff=0)
    def peek(item):
        stream = oai.chat.completions.create(
            model=GPT, messages=[{"role": "user", "content": LONG}], max_tokens=50, stream=True
        )
        for chunk in stream:
            if chunk.choices[0].delta.content:
                first = chunk.choices[0].delta.content
                break
        if run.attempt == 1:
            raise Retryable("after the peek")
        return first

    result = peek.map([{"id": "a"}], tenant=tenant)

    # Then each stream left midway has one ledger row, settled on its reservation (OpenAI had not yet
    # reported usage) and saying so; nothing was journaled, so the retry asked again
    assert result.counts["succeeded"] == 1
    rows = calls_of(rt, result)
    assert [r["stop_reason"] for r in rows] == ["abandoned:reservation"] * 2
    assert all(r["output_tokens"] == 50 and r["cost_usd"] > fake.bill[0].cost_usd for r in rows)
    assert fake.count == 2
    assert result.items()[0].cost_usd == sum(r["cost_usd"] for r in rows)


def test_an_anthropic_stream_closed_midway_is_settled_on_the_usage_reported_so_far(
    rt: Runtime, tenant: str, fake: FakeProvider, claude: anthropic.Anthropic
) -> None:
    @agent
    def peek(item):
        with claude.messages.create(
            model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": LONG}], stream=True
        ) as stream:
            return next(e for e in stream if e.type == "content_block_delta").delta.text

    result = peek.map([{"id": "a"}], tenant=tenant)

    (row,) = calls_of(rt, result)
    assert row["stop_reason"] == "abandoned:reported_usage"
    assert (row["input_tokens"], row["output_tokens"]) == (fake.bill[0].input_tokens, 1)
    assert result.counts["succeeded"] == 1


def test_a_chat_stream_closed_after_its_finish_reason_is_settled_in_full(
    rt: Runtime, tenant: str, fake: FakeProvider, oai: openai.OpenAI
) -> None:
    # Given a caller that stops at the finish_reason, before the usage chunk papayya asked for
    @agent(retries=1, backoff=0)
    def ask(item):
        text = ""
        stream = oai.chat.completions.create(
            model=GPT, messages=[{"role": "user", "content": LONG}], stream=True
        )
        for chunk in stream:
            text += chunk.choices[0].delta.content or ""
            if chunk.choices[0].finish_reason:
                break
        if run.attempt == 1:
            raise Retryable("after the call")
        return text

    result = ask.map([{"id": "a"}], tenant=tenant)

    # Then papayya read the usage chunk left, recorded the call in full and the retry paid nothing
    (row,) = calls_of(rt, result)
    assert (row["stop_reason"], row["cost_usd"]) == ("stop", fake.bill[0].cost_usd)
    assert fake.count == 1
    assert result.counts["succeeded"] == 1


def test_async_streams_are_recorded_replayed_and_settled_when_closed(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    aoai = papayya_openai.instrument(openai.AsyncOpenAI(base_url=fake.openai_url, api_key="t", max_retries=0))
    aclaude = papayya_anthropic.instrument(
        anthropic.AsyncAnthropic(base_url=fake.anthropic_url, api_key="t", max_retries=0)
    )

    @agent(retries=1, backoff=0)
    async def ask(item):
        stream = await aoai.chat.completions.create(
            model=GPT, messages=[{"role": "user", "content": "async chat"}], stream=True
        )
        assert isinstance(stream, openai.AsyncStream)
        chat = "".join([c.choices[0].delta.content or "" async for c in stream])
        async with aoai.responses.stream(model=GPT, input="async responses") as responses:
            response = await responses.get_final_response()
        async with await aclaude.messages.create(
            model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": LONG}], stream=True
        ) as peek:
            async for event in peek:
                if event.type == "content_block_delta":
                    break
        if run.attempt == 1:
            raise Retryable("after three calls")
        return [chat, response.output_text]

    try:
        result = ask.map([{"id": "a"}], tenant=tenant)
    finally:
        asyncio.run(aoai.close())
        asyncio.run(aclaude.close())

    (item,) = result.items()
    assert rt.store.item_detail(item.item_id)["output"] == [
        "You said: async chat",
        "You said: async responses",
    ]
    rows = calls_of(rt, result)
    # the two complete streams were paid once; the Anthropic stream left midway, on each attempt
    assert fake.count == 4
    assert [(r["step_key"], r["stop_reason"]) for r in rows] == [
        ("llm:openai.chat#1", "stop"),
        ("llm:openai.responses#1", "completed"),
        ("llm:anthropic.messages#1", "abandoned:reported_usage"),
        ("llm:anthropic.messages#1", "abandoned:reported_usage"),
    ]
    assert [r["cost_usd"] for r in rows[:2]] == [e.cost_usd for e in fake.bill[:2]]
    assert item.cost_usd == sum((r["cost_usd"] for r in rows), Decimal(0))


def test_a_stream_never_read_is_settled_on_its_reservation_when_python_frees_it(
    rt: Runtime,
    tenant: str,
    fake: FakeProvider,
    api: tuple[Any, Callable[..., Any], Callable[[Any], str], str],
) -> None:
    client, start, _read, _cut = api

    @agent
    def forget(item):
        stream = start(client, LONG, max_tokens=40)
        del stream
        gc.collect()  # an OpenAI stream holds itself in a cycle; an Anthropic one is freed at once
        return "done"

    result = forget.map([{"id": "a"}], tenant=tenant)

    (row,) = calls_of(rt, result)
    assert (row["stop_reason"], row["output_tokens"]) == ("abandoned:reservation", 40)
    assert result.items()[0].cost_usd == row["cost_usd"] > 0
    assert result.counts["succeeded"] == 1


def test_anthropics_messages_stream_helper_is_recorded_replayed_and_degrades_on_max_tokens(
    rt: Runtime, tenant: str, fake: FakeProvider, claude: anthropic.Anthropic
) -> None:
    texts: list[str] = []

    # Given an agent that streams through the SDK's helper (which does not call messages.create)
    @agent(retries=1, backoff=0)
    def ask(item):
        with claude.messages.stream(
            model=CLAUDE, max_tokens=item.input["max_tokens"], messages=[{"role": "user", "content": LONG}]
        ) as stream:
            texts.append("".join(stream.text_stream))
            final = stream.get_final_message()
        if run.attempt == 1:
            raise Retryable("after the stream")
        return {"text": texts[-1], "stop": final.stop_reason}

    whole = ask.map([{"id": "whole", "max_tokens": 256}], tenant=tenant)

    # Then it was paid once and recorded once, and the retry read the same text from the journal
    assert texts[0] == texts[1] == f"You said: {LONG}"
    assert fake.count == 1
    (row,) = calls_of(rt, whole)
    assert (row["step_key"], row["stop_reason"], row["cost_usd"]) == (
        "llm:anthropic.messages#1",
        "end_turn",
        fake.bill[0].cost_usd,
    )
    assert whole.counts["succeeded"] == 1
    # and a stream cut by max_tokens degrades the item, on its paid attempt and on its replay alike
    cut = ask.map([{"id": "cut", "max_tokens": 3}], tenant=tenant)
    (item,) = cut.items()
    assert (item.status, [r["path"] for r in item.reasons]) == ("degraded", ["max_tokens"])
    assert fake.count == 2


def test_anthropics_async_stream_helper_is_recorded_and_its_output_format_refused(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    aclaude = papayya_anthropic.instrument(
        anthropic.AsyncAnthropic(base_url=fake.anthropic_url, api_key="t", max_retries=0)
    )

    @agent
    async def ask(item):
        async with aclaude.messages.stream(
            model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "async helper"}]
        ) as stream:
            message = await stream.get_final_message()
        return message.content[0].text

    @agent
    async def parse(item):
        async with aclaude.messages.stream(
            model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "x"}], output_format=dict
        ) as stream:
            return await stream.get_final_message()

    try:
        result = ask.map([{"id": "a"}], tenant=tenant)
        refused = parse.map([{"id": "b"}], tenant=tenant)
    finally:
        asyncio.run(aclaude.close())

    (item,) = result.items()
    assert rt.store.item_detail(item.item_id)["output"] == "You said: async helper"
    (row,) = calls_of(rt, result)
    assert row["cost_usd"] == fake.bill[0].cost_usd
    # a parsed structured output through the helper is refused in one sentence, nothing paid
    (failed,) = refused.items()
    assert failed.status == "failed"
    assert "output_config" in rt.store.item_detail(failed.item_id)["error"]["message"]
    assert fake.count == 1
