"""AWS Bedrock Converse calls made through an instrumented boto3 client inside an agent: ledger,
journal, budgets, retries.

The provider is papayya's FakeProvider, driven by the real boto3 ``bedrock-runtime`` client; its
request count and bill prove what was (and was not) paid for. boto3 sends no idempotency key, so the
ledger is compared with the bill call for call by order, tokens and cost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import botocore.config
import psycopg
import pytest
from genai_prices import Usage, calc_price

import papayya
import papayya_bedrock
from papayya import Retryable, RunResult, agent, run
from papayya.errors import StreamingNotSupported
from papayya.runtime import Runtime
from papayya.testing import FakeProvider, Reply, count_tokens

MODEL = "amazon.nova-lite-v1:0"  # a model the public catalog prices under "aws"
CLAUDE = "global.anthropic.claude-haiku-4-5-20251001-v1:0"


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


def test_converse_stream_inside_an_agent_is_refused(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any
) -> None:
    errors: list[str] = []

    @agent
    def call(item):
        try:
            client.converse_stream(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "hi"}]}])
        except StreamingNotSupported as exc:
            errors.append(str(exc))
            raise

    result = call.map([{"id": "a"}], tenant=tenant)

    assert result.counts["failed"] == 1
    assert result.top_failures[0]["type"] == "StreamingNotSupported"
    (message,) = errors
    assert message.count(". ") == 0
    assert message.endswith("call client.converse instead.")
    assert fake.count == 0


def test_invoke_model_inside_an_agent_says_once_that_it_is_not_recorded(
    rt: Runtime, tenant: str, fake: FakeProvider, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    papayya_bedrock._warned.clear()

    # Given an agent calling invoke_model, which papayya does not record (the fake has no such route)
    @agent
    def call(item):
        with pytest.raises(client.exceptions.ClientError):
            client.invoke_model(modelId=MODEL, body=b"{}")
        return "ok"

    with caplog.at_level(logging.WARNING, logger="papayya.bedrock"):
        result = call.map([{"id": "a"}, {"id": "b"}], tenant=tenant, concurrency=1)

    # Then the call went out as boto3's own, and the first one of the process said it is not recorded
    assert result.counts["succeeded"] == 2
    assert result.llm_calls == 0
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "papayya.bedrock"]
    assert warning.startswith("client.invoke_model inside a papayya agent is not recorded")


def test_calls_outside_an_agent_are_untouched(fake: FakeProvider, client: Any) -> None:
    response = ask(client, "hello")

    assert text_of(response) == "You said: hello"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert fake.count == 1
    # converse_stream outside an attempt is boto3's own request (the fake has no stream route: 404)
    with pytest.raises(client.exceptions.ClientError) as refused:
        client.converse_stream(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


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
