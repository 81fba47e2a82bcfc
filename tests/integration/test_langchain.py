"""LangChain and LangGraph model calls inside an agent: ledger, budget gate, journal replay.

The real ``langchain-openai`` ChatOpenAI and ``langchain-anthropic`` ChatAnthropic talk to papayya's
FakeProvider; its request count and bill prove what was (and was not) paid for.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import openai
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AnyMessage, HumanMessage
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph

import papayya
import papayya_langchain
import papayya_openai
from papayya import Retryable, RunResult, agent, run
from papayya.runtime import Runtime
from papayya.testing import FakeProvider, Reply
from papayya_langchain import PapayyaCache, PapayyaCallbackHandler

GPT = "gpt-4o-mini"
CLAUDE = "claude-3-5-haiku-latest"


def gpt(fake: FakeProvider, model: str = GPT, **kwargs: Any) -> ChatOpenAI:
    # max_retries=0: retries are papayya's business in these tests, not the SDK's.
    return ChatOpenAI(
        model=model,
        base_url=fake.openai_url,
        api_key="test",
        max_retries=0,
        cache=PapayyaCache(),
        callbacks=[PapayyaCallbackHandler()],
        **kwargs,
    )


def claude(fake: FakeProvider, **kwargs: Any) -> ChatAnthropic:
    return ChatAnthropic(
        model=CLAUDE,
        base_url=fake.anthropic_url,
        api_key="test",
        max_retries=0,
        cache=PapayyaCache(),
        callbacks=[PapayyaCallbackHandler()],
        **kwargs,
    )


def calls_of(rt: Runtime, result: RunResult) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for item in sorted(result.items(), key=lambda i: i.key):
        rows.extend(rt.store.item_detail(item.item_id)["llm_calls"])
    return rows


def test_each_call_is_in_the_ledger_as_the_provider_billed_it(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    # Given an agent that asks OpenAI, then Anthropic (which reads part of its prompt from the cache)
    fake.reply = lambda r: (
        Reply(
            f"notes on {r.last_user_message}", input_tokens=2000, cached_tokens=1500, cache_write_tokens=100
        )
        if r.api == "anthropic.messages"
        else f"draft of {r.last_user_message}"
    )
    openai_model, anthropic_model = gpt(fake), claude(fake, max_tokens=256)

    @agent
    def write(item):
        draft = openai_model.invoke(f"draft {item.id}").content
        notes = anthropic_model.invoke([HumanMessage(f"review {draft}")]).content
        return {"draft": draft, "notes": notes}

    # When it runs over two items, one after the other
    result = write.map([{"id": "a"}, {"id": "b"}], tenant=tenant, concurrency=1)

    # Then the ledger holds each call as the provider billed it, call for call, to the last digit
    assert result.counts["succeeded"] == 2
    rows = calls_of(rt, result)
    fields = ("provider", "model", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    assert [[r[f] for f in (*fields, "cost_usd")] for r in rows] == [
        [getattr(e, f) for f in (*fields, "cost_usd")] for e in fake.bill
    ]
    assert all(r["cost_usd"] > 0 and r["price_source"] == "catalog" for r in rows)
    assert [r["step_key"] for r in rows[:2]] == ["llm:langchain.openai#1", "llm:langchain.anthropic#1"]
    assert [r["stop_reason"] for r in rows] == ["stop", "end_turn"] * 2
    assert result.cost_usd == fake.billed_usd
    assert result.llm_calls == fake.count == 4


def test_a_budget_with_no_room_pauses_the_item_at_the_call(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    model = gpt(fake)

    @agent
    def ask(item):
        return model.invoke("a question worth more than the budget").content

    result = ask.map([{"id": "a"}], tenant=tenant, budget_usd="0.0000001")

    (item,) = result.items()
    assert item.status == "paused"
    assert result.paused_reason is not None
    assert result.paused_reason.startswith("budget:run")
    assert fake.count == 0  # no request reached the provider
    assert result.llm_calls == 0


def test_a_retry_gets_the_recorded_answers_and_pays_nothing(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    # Given an agent that makes two calls (the second reads the first's answer), then fails retryably
    model = gpt(fake)
    seen: list[tuple[int, str, str]] = []

    @agent(retries=2, backoff=0)
    def enrich(item):
        first = model.invoke([HumanMessage("first question")])
        second = model.invoke([HumanMessage("first question"), first, HumanMessage("second question")])
        seen.append((run.attempt, str(first.content), str(second.content)))
        if run.attempt == 1:
            raise Retryable("the downstream write timed out")
        return {"answers": [first.content, second.content]}

    result = enrich.map([{"id": "a"}], tenant=tenant)

    # Then the second attempt got both answers from the journal: two requests, two ledger rows
    assert result.counts["succeeded"] == 1
    assert fake.count == 2
    assert [s[1:] for s in seen] == [("You said: first question", "You said: second question")] * 2
    rows = calls_of(rt, result)
    assert [r["step_key"] for r in rows] == ["llm:langchain.openai#1", "llm:langchain.openai#2"]
    assert result.llm_calls == 2
    assert result.cost_usd == fake.billed_usd


def test_a_truncated_answer_degrades_the_item_also_when_replayed_from_the_journal(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    model = gpt(fake, max_tokens=3)

    @agent
    def brief(item):
        return {"text": model.invoke("tell me everything about the quarter").content}

    result = brief.map([{"id": "a"}], tenant=tenant)

    (item,) = result.items()
    assert item.status == "degraded"
    assert [(r["code"], r["path"]) for r in item.reasons] == [("llm_stop_reason", "length")]
    (row,) = calls_of(rt, result)
    assert (row["stop_reason"], row["output_tokens"]) == ("length", 3)
    # and a from-journal replay reaches the same verdict from the journal, for nothing
    again = papayya.replay(item=item.item_id, from_journal=True, agent=brief)
    (replayed,) = again.items()
    assert (replayed.status, [r["path"] for r in replayed.reasons]) == ("degraded", ["length"])
    assert rt.store.item_detail(replayed.item_id)["output"] == rt.store.item_detail(item.item_id)["output"]
    assert fake.count == 1
    assert again.llm_calls == 0


def test_an_unknown_model_is_recorded_with_cost_unknown_not_zero(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    model = gpt(fake, model="papayya-house-model-7")

    @agent
    def call(item):
        return model.invoke("x").content

    result = call.map([{"id": "a"}], tenant=tenant)

    (row,) = calls_of(rt, result)
    assert (row["model"], row["cost_usd"], row["price_source"]) == ("papayya-house-model-7", None, "unknown")
    assert result.unpriced_calls == 1
    (item,) = result.items()
    assert item.cost_unknown is True


class Notes(TypedDict):
    messages: Annotated[list[AnyMessage], operator.add]


def summary_graph(model: BaseChatModel) -> Any:
    def summarise(state: Notes) -> Notes:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(Notes)
    graph.add_node("summarise", summarise)
    graph.add_edge(START, "summarise")
    graph.add_edge("summarise", END)
    return graph.compile()


def test_a_langgraph_node_calling_a_chat_model_is_accounted_and_replayed(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    # Given a one-node graph whose node calls a chat model; the handler comes in through the graph's
    # config, and the model only has papayya's cache
    model = ChatOpenAI(
        model=GPT, base_url=fake.openai_url, api_key="test", max_retries=0, cache=PapayyaCache()
    )
    graph = summary_graph(model)

    @agent(retries=1, backoff=0)
    def summarise(item):
        state = graph.invoke(
            {"messages": [HumanMessage(f"summarise {item.id}")]},
            config={"callbacks": [PapayyaCallbackHandler()]},
        )
        if run.attempt == 1:
            raise Retryable("the write failed")
        return {"summary": state["messages"][-1].content}

    result = summarise.map([{"id": "report"}], tenant=tenant)

    # Then the node's call is one ledger row named after the node, and the retry paid nothing
    assert result.counts["succeeded"] == 1
    (row,) = calls_of(rt, result)
    assert (row["step_key"], row["provider"], row["model"]) == ("llm:summarise#1", "openai", GPT)
    assert row["cost_usd"] == fake.bill[0].cost_usd
    assert fake.count == 1
    (item,) = result.items()
    assert rt.store.item_detail(item.item_id)["output"] == {"summary": "You said: summarise report"}


def test_async_calls_are_accounted_and_replayed(rt: Runtime, tenant: str, fake: FakeProvider) -> None:
    model = gpt(fake)

    @agent(retries=1, backoff=0)
    async def ask(item):
        answers = await asyncio.gather(
            model.ainvoke(f"{item.id} one", config={"metadata": {papayya_langchain.STEP_METADATA: "one"}}),
            model.ainvoke(f"{item.id} two", config={"metadata": {papayya_langchain.STEP_METADATA: "two"}}),
        )
        if run.attempt == 1:
            raise Retryable("flaky")
        return [a.content for a in answers]

    result = ask.map([{"id": "a"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    assert sorted(r["step_key"] for r in calls_of(rt, result)) == ["llm:one#1", "llm:two#1"]
    assert fake.count == 2
    (item,) = result.items()
    assert rt.store.item_detail(item.item_id)["output"] == ["You said: a one", "You said: a two"]


@pytest.fixture
def installed() -> Iterator[PapayyaCallbackHandler]:
    previous = get_llm_cache()
    yield papayya_langchain.install()
    set_llm_cache(previous)


def test_a_call_is_recorded_once_whoever_else_sees_it(
    rt: Runtime, tenant: str, fake: FakeProvider, installed: PapayyaCallbackHandler
) -> None:
    # Given a ChatOpenAI over a papayya-instrumented OpenAI client (which LangChain calls through
    # with_raw_response), the process-wide handler from install() and one more handler on the call
    with openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0) as raw:
        client = papayya_openai.instrument(raw)
        model = ChatOpenAI(
            model=GPT,
            base_url=fake.openai_url,
            api_key="test",
            root_client=client,
            client=client.chat.completions,
            max_retries=0,
        )

        @agent(retries=1, backoff=0)
        def ask(item):
            answer = model.invoke("hello", config={"callbacks": [PapayyaCallbackHandler()]})
            if run.attempt == 1:
                raise Retryable("flaky")
            return answer.content

        result = ask.map([{"id": "a"}], tenant=tenant)

    # Then the call is one ledger row, and the retry got it from install()'s global cache
    assert result.counts["succeeded"] == 1
    (row,) = calls_of(rt, result)
    assert row["cost_usd"] == fake.bill[0].cost_usd
    assert fake.count == 1
    assert installed is papayya_langchain.install()


def test_a_streamed_call_is_recorded_once_with_its_usage(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    # Given a model that streams, asking for the usage in the stream, and one that does not ask
    model, silent = gpt(fake, stream_usage=True), gpt(fake)

    @agent
    def ask(item):
        text = "".join(str(chunk.content) for chunk in model.stream("stream me a story"))
        silent_text = "".join(str(chunk.content) for chunk in silent.stream("stream me a story"))
        return {"text": text, "same": text == silent_text}

    result = ask.map([{"id": "a"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    reported, unreported = calls_of(rt, result)
    billed = fake.bill[0]
    assert (reported["input_tokens"], reported["output_tokens"]) == (
        billed.input_tokens,
        billed.output_tokens,
    )
    assert reported["cost_usd"] == billed.cost_usd
    # the stream that reported no usage is settled on its reservation: more than billed, never free
    assert unreported["cost_usd"] > fake.bill[1].cost_usd
    assert fake.count == result.llm_calls == 2


def test_a_stream_left_midway_is_settled_on_its_reservation(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    model = gpt(fake, stream_usage=True, max_tokens=50)

    @agent
    def peek(item):
        for chunk in model.stream("stream me a long story about the quarter"):
            if chunk.content:
                return {"first": chunk.content}
        return {"first": None}

    result = peek.map([{"id": "a"}], tenant=tenant)

    (item,) = result.items()
    assert (item.status, item.reasons, rt.store.item_detail(item.item_id).get("error")) == (
        "succeeded",
        [],
        None,
    )
    (row,) = calls_of(rt, result)
    assert row["stop_reason"] == "abandoned:reservation"
    assert row["output_tokens"] == 50
    assert row["cost_usd"] > fake.bill[0].cost_usd
    assert fake.count == 1


def test_a_retried_stream_gets_the_recorded_answer_and_pays_nothing(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    # Given an agent that streams two answers (one a model asked to report usage), then fails retryably
    model, silent = gpt(fake, stream_usage=True), gpt(fake)
    seen: list[list[str]] = []

    @agent(retries=2, backoff=0)
    def tell(item):
        texts = ["".join(str(c.content) for c in m.stream(f"{item.id}: a story")) for m in (model, silent)]
        seen.append(texts)
        if run.attempt == 1:
            raise Retryable("the downstream write timed out")
        return {"stories": texts}

    result = tell.map([{"id": "a"}], tenant=tenant)

    # Then the retry read both streams from the journal: the same text, two requests, two rows
    assert result.counts["succeeded"] == 1
    assert seen[0] == seen[1] == ["You said: a: a story"] * 2
    assert fake.count == result.llm_calls == 2
    assert [r["step_key"] for r in calls_of(rt, result)] == [
        "llm:langchain.openai#1",
        "llm:langchain.openai#2",
    ]


def test_a_truncated_stream_degrades_the_item_also_when_replayed_from_the_journal(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    model = gpt(fake, stream_usage=True, max_tokens=3)

    @agent
    def brief(item):
        return {"text": "".join(str(c.content) for c in model.stream("tell me everything about the quarter"))}

    result = brief.map([{"id": "a"}], tenant=tenant)

    (item,) = result.items()
    assert (item.status, [r["path"] for r in item.reasons]) == ("degraded", ["length"])
    again = papayya.replay(item=item.item_id, from_journal=True, agent=brief)
    (replayed,) = again.items()
    assert (replayed.status, [r["path"] for r in replayed.reasons]) == ("degraded", ["length"])
    assert rt.store.item_detail(replayed.item_id)["output"] == rt.store.item_detail(item.item_id)["output"]
    assert fake.count == 1
    assert again.llm_calls == 0


def test_an_async_stream_is_replayed_from_the_journal(rt: Runtime, tenant: str, fake: FakeProvider) -> None:
    model = claude(fake, stream_usage=True)

    @agent(retries=1, backoff=0)
    async def tell(item):
        text = "".join([str(c.content) async for c in model.astream(f"{item.id} as a poem")])
        if run.attempt == 1:
            raise Retryable("flaky")
        return {"poem": text}

    result = tell.map([{"id": "a"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    (row,) = calls_of(rt, result)
    assert (row["provider"], row["cost_usd"]) == ("anthropic", fake.bill[0].cost_usd)
    assert fake.count == 1
    (item,) = result.items()
    assert rt.store.item_detail(item.item_id)["output"] == {"poem": "You said: a as a poem"}


def test_a_model_without_papayyas_cache_streams_from_the_provider_again(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    # Given a model whose cache is switched off: LangChain would call the provider on invoke, so papayya
    # does not answer its stream from the journal either; the repeat is recorded as paid
    model = gpt(fake, stream_usage=True).model_copy(update={"cache": False})

    @agent(retries=1, backoff=0)
    def tell(item):
        text = "".join(str(c.content) for c in model.stream("a story"))
        if run.attempt == 1:
            raise Retryable("flaky")
        return {"story": text}

    result = tell.map([{"id": "a"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    assert fake.count == result.llm_calls == 2
