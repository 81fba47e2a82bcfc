"""AWS Bedrock Converse calls made through an instrumented boto3 client inside an agent: ledger,
journal, budgets, retries.

The provider is papayya's FakeProvider, driven by the real boto3 ``bedrock-runtime`` client; its
request count and bill prove what was (and was not) paid for. boto3 sends no idempotency key, so the
ledger is compared with the bill call for call by order, tokens and cost.
"""

from __future__ import annotations

import gc
import io
import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import botocore.config
import botocore.eventstream
import botocore.response
import psycopg
import pytest
from genai_prices import Usage, calc_price

import papayya
import papayya_bedrock
from papayya import Retryable, RunResult, agent, run
from papayya.runtime import Runtime
from papayya.testing import FakeProvider, Reply, count_tokens

MODEL = "amazon.nova-lite-v1:0"  # a model the public catalog prices under "aws"
CLAUDE = "global.anthropic.claude-haiku-4-5-20251001-v1:0"
LLAMA = "meta.llama3-1-8b-instruct-v1:0"
TITAN = "amazon.titan-text-express-v1"
LONG = "please summarise this rather long document about the quarterly numbers of the company"


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[Any]:
    # total_max_attempts=1: retries are papayya's business in these tests, not boto3's.
    c = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=fake.url,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )
    yield papayya_bedrock.instrument(c)
    c.close()


def ask(client: Any, text: str, *, model: str = MODEL, max_tokens: int = 256) -> dict[str, Any]:
    response: dict[str, Any] = client.converse(
        modelId=model,
        messages=[{"role": "user", "content": [{"text": text}]}],
        inferenceConfig={"maxTokens": max_tokens},
    )
    return response


def ask_stream(client: Any, text: str, *, model: str = MODEL, max_tokens: int = 256) -> dict[str, Any]:
    response: dict[str, Any] = client.converse_stream(
        modelId=model,
        messages=[{"role": "user", "content": [{"text": text}]}],
        inferenceConfig={"maxTokens": max_tokens},
    )
    return response


def stream_text(response: dict[str, Any]) -> str:
    return "".join(
        e["contentBlockDelta"]["delta"]["text"] for e in response["stream"] if "contentBlockDelta" in e
    )


def invoke_body(model: str, text: str, max_tokens: int) -> dict[str, Any]:
    """An InvokeModel request body in the model family's own shape."""
    if model == LLAMA:
        return {"prompt": text, "max_gen_len": max_tokens}
    if model == TITAN:
        return {"inputText": text, "textGenerationConfig": {"maxTokenCount": max_tokens}}
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}],
    }


def invoke(client: Any, model: str, text: str, *, max_tokens: int = 256) -> dict[str, Any]:
    response = client.invoke_model(modelId=model, body=json.dumps(invoke_body(model, text, max_tokens)))
    return {**response, "body": json.loads(response["body"].read())}


def invoked_text(body: dict[str, Any]) -> str:
    if "generation" in body:
        return str(body["generation"])
    if "results" in body:
        return str(body["results"][0]["outputText"])
    return str(body["content"][0]["text"])


def text_of(response: dict[str, Any]) -> str:
    text: str = response["output"]["message"]["content"][0]["text"]
    return text


def only_item(rt: Runtime, result: RunResult) -> dict[str, Any]:
    (item,) = result.items()
    return rt.store.item_detail(item.item_id)


def ledger_rows(rt: Runtime, tenant: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(rt.store.url) as conn:
        return conn.execute(
            "SELECT provider, model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
            "cost_usd, price_source FROM papayya.llm_calls WHERE tenant_id = %s ORDER BY call_id",
            (tenant,),
        ).fetchall()


def test_the_ledger_matches_the_bill_call_for_call(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    # Bedrock reports cache reads and writes beside inputTokens; the ledger's input_tokens is the
    # whole prompt, as for the other providers.
    fake.reply = lambda r: (
        Reply("noted", input_tokens=3000, cached_tokens=2048, cache_write_tokens=512)
        if r.model == CLAUDE
        else f"You said: {r.last_user_message}"
    )

    @agent
    def summarize(item):
        return {"summary": text_of(ask(client, item.input["text"], model=item.input["model"]))}

    items = [{"id": str(i), "text": f"document {i}", "model": [MODEL, CLAUDE][i % 2]} for i in range(4)]
    result = summarize.map(items, tenant=tenant, concurrency=1)

    assert result.counts == {"succeeded": 4, "degraded": 0, "failed": 0}
    rows = ledger_rows(rt, tenant)
    bill = fake.bill
    assert len(rows) == len(bill) == fake.count == 4
    assert sorted(rows, key=repr) == sorted(
        (
            (
                "bedrock",
                e.model,
                e.input_tokens,
                e.output_tokens,
                e.cache_read_tokens,
                e.cache_write_tokens,
                e.cost_usd,
                "catalog",
            )
            for e in bill
        ),
        key=repr,
    )
    # the catalog's aws prices, cache tokens priced as such
    cached = Usage(
        input_tokens=3000, output_tokens=count_tokens("noted"), cache_read_tokens=2048, cache_write_tokens=512
    )
    claude = Decimal(calc_price(cached, CLAUDE, provider_id="aws").total_price)
    assert [r[6] for r in rows if r[1] == CLAUDE] == [claude, claude]
    assert all(r[6] > 0 for r in rows)
    assert result.cost_usd == fake.billed_usd
    assert result.unpriced_calls == 0
    (call,) = only_item(rt, summarize.map([{"id": "x", "text": "hi", "model": MODEL}], tenant=tenant))[
        "llm_calls"
    ]
    assert (call["provider"], call["model"], call["stop_reason"]) == ("bedrock", MODEL, "end_turn")


def test_an_unknown_model_is_recorded_with_cost_unknown_not_zero(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    @agent
    def call(item):
        return {"text": text_of(ask(client, "x", model="acme.internal-model-v1:0"))}

    result = call.map([{"id": "a"}], tenant=tenant)

    (row,) = only_item(rt, result)["llm_calls"]
    assert (row["provider"], row["model"], row["cost_usd"], row["price_source"]) == (
        "bedrock",
        "acme.internal-model-v1:0",
        None,
        "unknown",
    )
    assert row["input_tokens"] > 0
    assert result.unpriced_calls == 1
    (item,) = result.items()
    assert item.cost_unknown is True
    assert [e.cost_usd for e in fake.bill] == [None]


def test_an_answer_without_usage_is_recorded_unpriced_and_returned_untouched(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    fake.reply = lambda r: Reply("fine", report_usage=False)
    seen: list[dict[str, Any]] = []

    @agent
    def call(item):
        response = ask(client, "hello")
        seen.append(response)
        return {"text": text_of(response)}

    result = call.map([{"id": "a"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    (response,) = seen
    assert "usage" not in response
    assert (text_of(response), response["stopReason"]) == ("fine", "end_turn")
    (row,) = only_item(rt, result)["llm_calls"]
    assert (row["model"], row["cost_usd"], row["price_source"]) == (MODEL, None, "unknown")
    assert result.unpriced_calls == 1
    assert fake.bill[0].cost_usd is not None  # Bedrock billed it all the same


def test_a_budget_with_no_room_pauses_the_item_before_the_call(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    # Given a tenant paying $1 per output token under a $0.50 budget: no call of 256 tokens fits
    papayya.tenants.add(tenant)
    papayya.tenants.set_price(tenant, "bedrock", MODEL, input_mtok="1", output_mtok="1000000")
    papayya.tenants.set_budget(tenant, "0.50", "total")

    @agent
    def call(item):
        return {"text": text_of(ask(client, "hello"))}

    result = call.map([{"id": "a"}], tenant=tenant)

    assert result.status == "paused"
    assert result.paused_reason is not None
    assert result.paused_reason.startswith("budget:tenant")
    assert (fake.count, fake.bill, ledger_rows(rt, tenant)) == (0, [], [])


def test_a_tenant_price_override_prices_bedrock_calls(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    papayya.tenants.add(tenant)
    papayya.tenants.set_price(tenant, "bedrock", MODEL, input_mtok="500000", output_mtok="1000000")

    @agent
    def call(item):
        return {"text": text_of(ask(client, "hello"))}

    result = call.map([{"id": "a"}], tenant=tenant)

    (row,) = only_item(rt, result)["llm_calls"]
    (entry,) = fake.bill
    assert row["price_source"] == "tenant"
    assert row["cost_usd"] == Decimal(entry.input_tokens) / 2 + entry.output_tokens


def test_a_retry_gets_the_recorded_response_and_pays_nothing(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    # Given an agent that fails retryably after its Bedrock call on the first attempt
    seen: list[dict[str, Any]] = []

    @agent(retries=2, backoff=0)
    def enrich(item):
        response = ask(client, "hello")
        seen.append(response)
        if run.attempt == 1:
            raise Retryable("the downstream write timed out")
        return {"text": text_of(response)}

    # When it runs
    result = enrich.map([{"id": "a"}], tenant=tenant)

    # Then Bedrock was called once, the ledger holds one call, and the retry got the same dict back
    assert result.counts["succeeded"] == 1
    assert fake.count == len(fake.bill) == 1
    detail = only_item(rt, result)
    assert len(detail["llm_calls"]) == 1
    assert len(detail["attempts_detail"]) == 2
    paid, replayed = seen
    assert replayed == paid
    assert replayed is not paid
    assert set(replayed) >= {"ResponseMetadata", "output", "stopReason", "usage", "metrics"}
    assert detail["output"] == {"text": "You said: hello"}


def test_bytes_in_the_request_and_the_response_survive_the_journal(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    # An image travels as raw bytes (not UTF-8), and a retry must get bytes back where boto3 gave them.
    image = bytes(range(256)) * 4
    original = client.converse.__papayya_original__

    def converse_with_redacted_reasoning(**kwargs: Any) -> dict[str, Any]:
        response: dict[str, Any] = original(**kwargs)
        response["output"]["message"]["content"].insert(
            0, {"reasoningContent": {"redactedContent": b"\xff\x00secret"}}
        )
        return response

    papayya_bedrock.uninstrument(client)
    client.converse = converse_with_redacted_reasoning  # boto3's method, answering bytes as it can
    papayya_bedrock.instrument(client)
    seen: list[dict[str, Any]] = []

    @agent(retries=1, backoff=0)
    def look(item):
        response = client.converse(
            modelId=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [{"image": {"format": "png", "source": {"bytes": image}}}, {"text": "what?"}],
                }
            ],
            inferenceConfig={"maxTokens": 64},
        )
        seen.append(response)
        if run.attempt == 1:
            raise Retryable("again")
        return {"n": len(response["output"]["message"]["content"])}

    result = look.map([{"id": "a"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    assert fake.count == 1
    assert fake.requests[0].body["messages"][0]["content"][0]["image"]["source"]["bytes"]  # sent as base64
    paid, replayed = seen
    assert replayed["output"]["message"]["content"][0] == {
        "reasoningContent": {"redactedContent": b"\xff\x00secret"}
    }
    assert replayed == paid


def test_a_max_tokens_stop_degrades_the_item(rt: Runtime, tenant: str, client: Any) -> None:
    @agent
    def brief(item):
        return {"text": text_of(ask(client, "tell me everything", max_tokens=2))}

    result = brief.map([{"id": "a"}], tenant=tenant)

    assert result.counts["degraded"] == 1
    (item,) = result.items()
    assert [(r["code"], r["path"]) for r in item.reasons] == [("llm_stop_reason", "max_tokens")]
    (call,) = only_item(rt, result)["llm_calls"]
    assert (call["stop_reason"], call["output_tokens"]) == ("max_tokens", 2)


def test_a_replayed_max_tokens_stop_degrades_the_retry_too(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    fake.stop_with("length")

    @agent(retries=1, backoff=0)
    def brief(item):
        response = ask(client, "hello")
        if run.attempt == 1:
            raise Retryable("again")
        return {"stop": response["stopReason"]}

    result = brief.map([{"id": "a"}], tenant=tenant)

    (item,) = result.items()
    assert (item.status, item.reasons[0]["path"]) == ("degraded", "max_tokens")
    assert fake.count == 1


def test_a_content_filter_stop_degrades_the_item(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    fake.stop_with("content_filter")

    @agent
    def answer(item):
        return {"text": text_of(ask(client, "hello"))}

    result = answer.map([{"id": "a"}], tenant=tenant)

    (item,) = result.items()
    assert (item.status, item.reasons[0]["path"]) == ("degraded", "content_filtered")


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_transient_bedrock_error_is_retried(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any, status: int
) -> None:
    fake.fail(status)

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
    assert len(detail["llm_calls"]) == len(fake.bill) == 1


def test_a_validation_error_is_not_retried(rt: Runtime, tenant: str, fake: FakeProvider, client: Any) -> None:
    fake.fail(400, message="maxTokens is too large")

    @agent(retries=2, backoff=0)
    def call(item):
        return {"text": text_of(ask(client, "hello"))}

    result = call.map([{"id": "a"}], tenant=tenant)

    assert result.counts["failed"] == 1
    assert result.top_failures[0]["type"] == "ValidationException"
    assert result.top_failures[0]["category"] == "provider"
    assert fake.count == 1
    assert result.llm_calls == 0


def test_calls_outside_an_agent_are_untouched(fake: FakeProvider, client: Any) -> None:
    response = ask(client, "hello")

    assert text_of(response) == "You said: hello"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    # converse_stream and invoke_model outside an attempt are boto3's own, as they were
    streamed = client.converse_stream(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert isinstance(streamed["stream"], botocore.eventstream.EventStream)
    assert stream_text(streamed) == "You said: hi"
    invoked = client.invoke_model(modelId=LLAMA, body=json.dumps({"prompt": "hi"}))
    assert isinstance(invoked["body"], botocore.response.StreamingBody)
    assert json.loads(invoked["body"].read())["generation"] == "You said: hi"
    assert fake.count == 3


def test_instrumenting_twice_does_not_wrap_twice_and_uninstrument_restores(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    wrapper = client.converse
    assert papayya_bedrock.instrument(client) is client
    assert client.converse is wrapper

    @agent
    def call(item):
        return {"text": text_of(ask(client, "hello"))}

    assert call.map([{"id": "a"}], tenant=tenant).llm_calls == 1
    papayya_bedrock.uninstrument(client)
    assert "converse" not in vars(client)
    assert "converse_stream" not in vars(client)
    result = call.map([{"id": "b"}], tenant=tenant)
    assert (result.counts["succeeded"], result.llm_calls, fake.count) == (1, 0, 2)


def test_instrument_refuses_another_client() -> None:
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with pytest.raises(TypeError, match="bedrock-runtime"):
        papayya_bedrock.instrument(s3)
    s3.close()


# -- converse_stream ------------------------------------------------------------------------------


def test_a_streamed_call_is_accounted_as_the_bill_says_and_reads_as_boto3s(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    seen: list[tuple[str, list[str], int]] = []

    @agent
    def summarize(item):
        response = ask_stream(client, item.input["text"])
        events = list(response["stream"])
        kinds = [next(iter(e)) for e in events]
        seen.append(
            (
                "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e),
                kinds,
                response["ResponseMetadata"]["HTTPStatusCode"],
            )
        )
        return {"summary": seen[-1][0]}

    result = summarize.map([{"id": str(i), "text": f"document {i}"} for i in range(3)], tenant=tenant)

    assert result.counts["succeeded"] == 3
    assert sorted(t for t, _, _ in seen) == [f"You said: document {i}" for i in range(3)]
    assert (seen[0][1][0], seen[0][1][-2:]) == ("messageStart", ["messageStop", "metadata"])
    assert {s for _, _, s in seen} == {200}
    rows = ledger_rows(rt, tenant)
    assert sorted(rows, key=repr) == sorted(
        (
            ("bedrock", e.model, e.input_tokens, e.output_tokens, 0, 0, e.cost_usd, "catalog")
            for e in fake.bill
        ),
        key=repr,
    )
    assert [e.api for e in fake.bill] == ["bedrock.converse_stream"] * 3
    assert result.cost_usd == fake.billed_usd > 0


def test_the_budget_gate_pauses_the_item_before_the_stream_opens(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    @agent
    def call(item):
        return stream_text(ask_stream(client, LONG))

    result = call.map([{"id": "a"}], tenant=tenant, budget_usd="0.0000001")

    assert result.status == "paused"
    assert result.paused_reason is not None
    assert result.paused_reason.startswith("budget:run")
    assert (fake.count, result.llm_calls) == (0, 0)


def test_a_retry_after_a_streamed_call_replays_its_events_and_pays_nothing(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    seen: list[dict[str, Any]] = []

    @agent(retries=1, backoff=0)
    def enrich(item):
        response = ask_stream(client, LONG)
        seen.append({**response, "stream": list(response["stream"])})
        if run.attempt == 1:
            raise Retryable("the downstream write timed out")
        return "ok"

    result = enrich.map([{"id": "a"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    assert fake.count == len(fake.bill) == 1
    assert result.llm_calls == 1
    paid, replayed = seen
    assert replayed == paid  # the same events, the same ResponseMetadata
    assert result.cost_usd == fake.billed_usd


def test_a_truncated_stream_degrades_the_item_also_when_replayed_from_the_journal(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    @agent
    def brief(item):
        return stream_text(ask_stream(client, LONG, max_tokens=3))

    result = brief.map([{"id": "a"}], tenant=tenant)

    (item,) = result.items()
    assert item.status == "degraded"
    assert [(r["code"], r["path"]) for r in item.reasons] == [("llm_stop_reason", "max_tokens")]
    (call,) = only_item(rt, result)["llm_calls"]
    assert (call["stop_reason"], call["output_tokens"]) == ("max_tokens", 3)
    # the journaled events reach the same verdict on a from-journal replay, for nothing
    again = papayya.replay(item=item.item_id, from_journal=True, agent=brief)
    (replayed,) = again.items()
    assert (replayed.status, [r["path"] for r in replayed.reasons]) == ("degraded", ["max_tokens"])
    assert (fake.count, again.llm_calls) == (1, 0)


def test_a_stream_left_midway_is_settled_on_its_reservation_and_asked_again_on_retry(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    # Given an agent that reads the first piece of a streamed answer and stops reading
    @agent(retries=1, backoff=0)
    def peek(item):
        response = ask_stream(client, LONG, max_tokens=50)
        for event in response["stream"]:
            if "contentBlockDelta" in event:
                first = event["contentBlockDelta"]["delta"]["text"]
                break
        if run.attempt == 1:
            raise Retryable("after the peek")
        return first

    result = peek.map([{"id": "a"}], tenant=tenant)

    # Then each stream left midway has one ledger row, settled on its reservation (Bedrock reports
    # usage only in its last event) and saying so; nothing was journaled, so the retry asked again
    assert result.counts["succeeded"] == 1
    calls = only_item(rt, result)["llm_calls"]
    assert [c["stop_reason"] for c in calls] == ["abandoned:reservation"] * 2
    assert all(c["output_tokens"] == 50 and c["cost_usd"] > fake.bill[0].cost_usd for c in calls)
    assert fake.count == 2
    assert result.items()[0].cost_usd == sum(c["cost_usd"] for c in calls)


def test_a_stream_closed_after_its_stop_is_settled_in_full(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    @agent
    def read_until_stop(item):
        response = ask_stream(client, LONG)
        stream = response["stream"]
        for event in stream:
            if "messageStop" in event:
                stream.close()  # the usage (the metadata event) is left: papayya reads it first
                break
        return "ok"

    result = read_until_stop.map([{"id": "a"}], tenant=tenant)

    (call,) = only_item(rt, result)["llm_calls"]
    (entry,) = fake.bill
    assert (call["stop_reason"], call["input_tokens"], call["output_tokens"]) == (
        "end_turn",
        entry.input_tokens,
        entry.output_tokens,
    )
    assert call["cost_usd"] == entry.cost_usd


def test_a_stream_never_read_is_settled_on_its_reservation_when_python_frees_it(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    @agent
    def forget(item):
        response = ask_stream(client, LONG, max_tokens=40)
        del response
        gc.collect()
        return "done"

    result = forget.map([{"id": "a"}], tenant=tenant)

    (call,) = only_item(rt, result)["llm_calls"]
    assert (call["stop_reason"], call["output_tokens"]) == ("abandoned:reservation", 40)
    assert result.items()[0].cost_usd == call["cost_usd"] > 0
    assert result.counts["succeeded"] == 1


# -- invoke_model ---------------------------------------------------------------------------------


def test_invoke_model_is_accounted_per_model_family_as_the_bill_says(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    models = [CLAUDE, LLAMA, TITAN]

    @agent
    def summarize(item):
        response = invoke(client, item.input["model"], item.input["text"])
        return {"summary": invoked_text(response["body"])}

    items = [{"id": str(i), "text": f"document {i}", "model": models[i % 3]} for i in range(6)]
    result = summarize.map(items, tenant=tenant, concurrency=1)

    assert result.counts == {"succeeded": 6, "degraded": 0, "failed": 0}
    rows = ledger_rows(rt, tenant)
    assert len(rows) == len(fake.bill) == 6
    assert sorted(rows, key=repr) == sorted(
        (
            ("bedrock", e.model, e.input_tokens, e.output_tokens, 0, 0, e.cost_usd, "catalog")
            for e in fake.bill
        ),
        key=repr,
    )
    assert {r[1] for r in rows} == set(models)
    assert all(r[6] > 0 for r in rows)
    assert result.cost_usd == fake.billed_usd
    assert result.unpriced_calls == 0


@pytest.mark.parametrize("model", [CLAUDE, LLAMA, TITAN, "cohere.command-text-v14"])
def test_the_budget_gate_pauses_the_item_before_invoke_model_is_sent(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any, model: str
) -> None:
    # Given a tenant paying $1 per output token under a $0.50 budget: no call of 256 tokens fits (nor
    # one of a family papayya does not read, reserved on PAPAYYA_DEFAULT_MAX_OUTPUT_TOKENS)
    papayya.tenants.add(tenant)
    papayya.tenants.set_price(tenant, "bedrock", model, input_mtok="1", output_mtok="1000000")
    papayya.tenants.set_budget(tenant, "0.50", "total")

    @agent
    def call(item):
        return invoked_text(invoke(client, model, "hello")["body"])

    result = call.map([{"id": "a"}], tenant=tenant)

    assert result.status == "paused"
    assert result.paused_reason is not None
    assert result.paused_reason.startswith("budget:tenant")
    assert (fake.count, fake.bill, ledger_rows(rt, tenant)) == (0, [], [])


def test_a_retry_after_invoke_model_gets_a_readable_body_and_pays_nothing(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    seen: list[dict[str, Any]] = []

    @agent(retries=1, backoff=0)
    def enrich(item):
        response = client.invoke_model(modelId=LLAMA, body=json.dumps({"prompt": "hello"}).encode())
        seen.append({**response, "body": response["body"].read()})
        if run.attempt == 1:
            raise Retryable("again")
        return json.loads(seen[-1]["body"])["generation"]

    result = enrich.map([{"id": "a"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    assert fake.count == len(fake.bill) == result.llm_calls == 1
    paid, replayed = seen
    assert replayed == paid  # the body's bytes, contentType and ResponseMetadata, as boto3 gave them
    assert json.loads(paid["body"])["generation"] == "You said: hello"
    assert set(paid) == {"ResponseMetadata", "contentType", "body"}
    assert only_item(rt, result)["output"] == "You said: hello"


@pytest.mark.parametrize(("model", "stop"), [(CLAUDE, "max_tokens"), (LLAMA, "length"), (TITAN, "LENGTH")])
def test_a_truncated_invoke_model_answer_degrades_the_item_also_from_the_journal(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any, model: str, stop: str
) -> None:
    @agent
    def brief(item):
        return invoked_text(invoke(client, model, LONG, max_tokens=3)["body"])

    result = brief.map([{"id": "a"}], tenant=tenant)

    (item,) = result.items()
    assert (item.status, [r["path"] for r in item.reasons]) == ("degraded", [stop.lower()])
    (call,) = only_item(rt, result)["llm_calls"]
    assert (call["stop_reason"], call["output_tokens"]) == (stop, 3)
    again = papayya.replay(item=item.item_id, from_journal=True, agent=brief)
    (replayed,) = again.items()
    assert (replayed.status, [r["path"] for r in replayed.reasons]) == ("degraded", [stop.lower()])
    assert fake.count == 1


def test_an_invoke_model_body_of_an_unknown_family_is_unpriced_with_its_reason_and_untouched(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    bodies: list[bytes] = []

    @agent
    def call(item):
        response = client.invoke_model(modelId="cohere.command-text-v14", body=json.dumps({"prompt": "hi"}))
        bodies.append(response["body"].read())
        return "ok"

    result = call.map([{"id": "a"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    assert bodies == [b'{"text": "You said: hi"}']  # the body as Bedrock sent it
    (row,) = only_item(rt, result)["llm_calls"]
    assert (row["model"], row["cost_usd"], row["price_source"]) == (
        "cohere.command-text-v14",
        None,
        "unknown",
    )
    assert row["stop_reason"] == "unpriced:papayya does not read cohere.command-text-v14's body"
    assert result.unpriced_calls == 1


def test_an_invoke_model_body_that_is_not_json_is_unpriced_with_its_reason_and_untouched(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    original = client.invoke_model.__papayya_original__

    def invoke_answering_text(**kwargs: Any) -> dict[str, Any]:
        response: dict[str, Any] = original(**kwargs)
        response["body"].read()
        return {**response, "body": botocore.response.StreamingBody(io.BytesIO(b"\xffnot json"), 9)}

    papayya_bedrock.uninstrument(client)
    client.invoke_model = invoke_answering_text  # boto3's method, as a model answering bytes would
    papayya_bedrock.instrument(client)
    bodies: list[bytes] = []

    @agent(retries=1, backoff=0)
    def call(item):
        bodies.append(client.invoke_model(modelId=LLAMA, body=b'{"prompt": "hi"}')["body"].read())
        if run.attempt == 1:
            raise Retryable("again")
        return "ok"

    result = call.map([{"id": "a"}], tenant=tenant)

    assert bodies == [b"\xffnot json"] * 2  # live, then from the journal
    (row,) = only_item(rt, result)["llm_calls"]
    assert (row["cost_usd"], row["price_source"], row["stop_reason"]) == (
        None,
        "unknown",
        "unpriced:the body is not a JSON object",
    )
    assert fake.count == 1


def test_invoke_model_with_response_stream_inside_an_agent_says_once_that_it_is_not_recorded(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    papayya_bedrock._warned.clear()

    # Given an agent calling invoke_model_with_response_stream, which papayya does not record (the
    # fake has no such route)
    @agent
    def call(item):
        with pytest.raises(client.exceptions.ClientError):
            client.invoke_model_with_response_stream(modelId=MODEL, body=b"{}")
        return "ok"

    with caplog.at_level(logging.WARNING, logger="papayya.bedrock"):
        result = call.map([{"id": "a"}, {"id": "b"}], tenant=tenant, concurrency=1)

    # Then the call went out as boto3's own, and the first one of the process said it is not recorded
    assert result.counts["succeeded"] == 2
    assert result.llm_calls == 0
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "papayya.bedrock"]
    assert warning.startswith(
        "client.invoke_model_with_response_stream inside a papayya agent is not recorded"
    )


@pytest.mark.parametrize("method", ["converse_stream", "invoke_model"])
def test_a_throttled_stream_or_invoke_model_is_retried_and_paid_once(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any, method: str
) -> None:
    fake.fail(429)

    @agent(retries=2, backoff=0)
    def call(item):
        if method == "converse_stream":
            return stream_text(ask_stream(client, "hello"))
        return invoked_text(invoke(client, LLAMA, "hello")["body"])

    result = call.map([{"id": "a"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    detail = only_item(rt, result)
    first, _ = detail["attempts_detail"]
    assert (first["error"]["category"], first["error"]["retryable"]) == ("provider", True)
    assert [r.status for r in fake.requests] == [429, 200]
    assert len(detail["llm_calls"]) == len(fake.bill) == 1
    assert detail["output"] == "You said: hello"
