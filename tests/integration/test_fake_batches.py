"""The fake provider's batch APIs, driven by the real openai and anthropic clients: OpenAI Files +
Batch and Anthropic Message Batches, each row answered by the live machinery and billed at the batch
rate."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import Message
from openai.types import Batch
from openai.types.chat import ChatCompletion

from papayya.pricing import price_call
from papayya.testing import BatchLimits, FakeProvider, FakeRequest, count_tokens

GPT = "gpt-4o-mini"
CLAUDE = "claude-3-5-haiku-latest"
CHAT = "/v1/chat/completions"


@pytest.fixture
def oai(fake: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0) as client:
        yield client


@pytest.fixture
def claude(fake: FakeProvider) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake.anthropic_url, api_key="test", max_retries=0) as client:
        yield client


def chat_line(custom_id: str, text: str, model: str = GPT, **body: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": model, "messages": messages, **body},
    }


def submit(client: openai.OpenAI, lines: list[Any], endpoint: Any = CHAT, **kwargs: Any) -> Batch:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    upload = client.files.create(file=("requests.jsonl", io.BytesIO(text.encode())), purpose="batch")
    return client.batches.create(
        input_file_id=upload.id, endpoint=endpoint, completion_window="24h", **kwargs
    )


def jsonl(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    """The lines of an output or error file, by custom_id."""
    if file_id is None:
        return {}
    lines = [json.loads(line) for line in client.files.content(file_id).text.splitlines()]
    return {line["custom_id"]: line for line in lines}


def anthropic_request(custom_id: str, text: str, **params: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    return {
        "custom_id": custom_id,
        "params": {"model": CLAUDE, "max_tokens": 200, "messages": messages, **params},
    }


def results(client: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    return {r.custom_id: r.result for r in client.messages.batches.results(batch_id)}


# -- OpenAI ----------------------------------------------------------------------------------------


def test_a_chat_batch_completes_with_live_bodies_billed_at_half_the_live_price(
    fake: FakeProvider, oai: openai.OpenAI
) -> None:
    # Given a file of five chat requests
    created = submit(oai, [chat_line(f"row-{i}", f"question {i}") for i in range(5)], metadata={"run": "r1"})
    assert created.status == "validating"
    assert created.metadata == {"run": "r1"}
    assert fake.count == 0  # nothing is answered when the batch is created

    # When the client reads the batch
    batch = oai.batches.retrieve(created.id)

    # Then it completed, each row answered as the live endpoint answers it
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        5,
        5,
        0,
    )
    assert batch.error_file_id is None
    rows = jsonl(oai, batch.output_file_id)
    assert sorted(rows) == [f"row-{i}" for i in range(5)]
    for i in range(5):
        line = rows[f"row-{i}"]
        assert line["id"].startswith("batch_req_")
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        completion = ChatCompletion.model_validate(line["response"]["body"])
        assert completion.choices[0].message.content == f"You said: question {i}"
        live = oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": f"question {i}"}])
        assert completion.usage == live.usage
    # And every row is a request of its batch, billed once at half the live price
    rows_seen = [r for r in fake.requests if r.batch_id is not None]
    assert [(r.batch_id, r.custom_id) for r in rows_seen] == [(batch.id, f"row-{i}") for i in range(5)]
    assert all(r.batch_id is None and r.custom_id is None for r in fake.requests if r not in rows_seen)
    billed = [e for e in fake.bill if e.mode == "batch"]
    assert len(billed) == 5
    for entry in billed:
        assert entry.batch_id == batch.id
        live_price = price_call("openai", GPT, entry.usage, {}).cost_usd
        assert live_price is not None
        assert entry.cost_usd == live_price / 2
    assert [e.mode for e in fake.bill if e.batch_id is None] == ["live"] * 5


def test_responses_and_embeddings_batches(fake: FakeProvider, oai: openai.OpenAI) -> None:
    responses = submit(
        oai,
        [
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/responses",
                "body": {"model": GPT, "input": f"hi {i}"},
            }
            for i in range(2)
        ],
        endpoint="/v1/responses",
    )
    embeddings = submit(
        oai,
        [
            {
                "custom_id": f"e{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "text-embedding-3-small", "input": f"text {i}", "dimensions": 8},
            }
            for i in range(3)
        ],
        endpoint="/v1/embeddings",
    )

    done = oai.batches.retrieve(responses.id)
    assert done.status == "completed"
    for custom_id, line in jsonl(oai, done.output_file_id).items():
        body = line["response"]["body"]
        assert (body["object"], body["status"]) == ("response", "completed")
        assert body["output"][0]["content"][0]["text"] == f"You said: hi {custom_id[1:]}"
    done = oai.batches.retrieve(embeddings.id)
    assert (done.status, done.model, done.endpoint) == (
        "completed",
        "text-embedding-3-small",
        "/v1/embeddings",
    )
    vectors = jsonl(oai, done.output_file_id)
    assert sorted(vectors) == ["e0", "e1", "e2"]
    assert all(len(v["response"]["body"]["data"][0]["embedding"]) == 8 for v in vectors.values())
    assert (
        sorted((e.api, e.mode) for e in fake.bill)
        == [("openai.embeddings", "batch")] * 3 + [("openai.responses", "batch")] * 2
    )
    assert all(e.cost_usd is not None and e.cost_usd > 0 for e in fake.bill)


def test_a_fault_makes_an_errored_row_in_the_error_file_and_is_not_billed(
    fake: FakeProvider, oai: openai.OpenAI
) -> None:
    def second_row(request: FakeRequest) -> bool:
        return request.custom_id == "row-1"

    fake.fail(429, message="slow down", when=second_row)
    batch = oai.batches.retrieve(submit(oai, [chat_line(f"row-{i}", "hi") for i in range(3)]).id)

    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 1)
    assert sorted(jsonl(oai, batch.output_file_id)) == ["row-0", "row-2"]
    (errored,) = jsonl(oai, batch.error_file_id).values()
    assert errored["custom_id"] == "row-1"
    assert errored["response"]["status_code"] == 429
    assert errored["response"]["body"]["error"]["message"] == "slow down"
    assert len(fake.bill) == 2
    assert [r.status for r in fake.requests] == [200, 429, 200]


def test_stop_with_cuts_a_row_short_as_it_would_live(fake: FakeProvider, oai: openai.OpenAI) -> None:
    fake.stop_with("length", when=lambda r: r.custom_id == "cut")
    fake.reply = lambda r: "word " * 40
    batch = oai.batches.retrieve(
        submit(
            oai, [chat_line("cut", "hi"), chat_line("limited", "hi", max_tokens=5), chat_line("whole", "hi")]
        ).id
    )

    rows = {
        k: ChatCompletion.model_validate(v["response"]["body"])
        for k, v in jsonl(oai, batch.output_file_id).items()
    }
    assert rows["cut"].choices[0].finish_reason == "length"
    assert rows["limited"].choices[0].finish_reason == "length"
    assert rows["limited"].usage is not None
    assert rows["limited"].usage.completion_tokens == 5
    assert rows["whole"].choices[0].finish_reason == "stop"
    assert len(fake.bill) == 3


def test_expired_rows_are_error_lines_and_a_batch_of_only_expired_rows_ends_expired(
    fake: FakeProvider, oai: openai.OpenAI
) -> None:
    fake.expire(when=lambda r: r.custom_id in ("a-1", "b-0", "b-1"))
    partly = oai.batches.retrieve(submit(oai, [chat_line("a-0", "hi"), chat_line("a-1", "hi")]).id)
    wholly = oai.batches.retrieve(submit(oai, [chat_line("b-0", "hi"), chat_line("b-1", "hi")]).id)

    assert partly.status == "completed"
    assert partly.request_counts is not None
    assert (partly.request_counts.completed, partly.request_counts.failed) == (1, 1)
    assert jsonl(oai, partly.error_file_id)["a-1"]["response"] is None
    assert jsonl(oai, partly.error_file_id)["a-1"]["error"]["code"] == "batch_expired"
    assert wholly.status == "expired"
    assert wholly.expired_at is not None
    assert wholly.output_file_id is None
    assert sorted(jsonl(oai, wholly.error_file_id)) == ["b-0", "b-1"]
    # An expired row was never answered: not received, not billed
    assert [r.custom_id for r in fake.requests] == ["a-0"]
    assert len(fake.bill) == 1


def test_expire_counts_down_its_times_and_never_touches_live_requests(
    fake: FakeProvider, oai: openai.OpenAI
) -> None:
    fake.expire(times=1)
    oai.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "live"}])
    batch = oai.batches.retrieve(submit(oai, [chat_line(f"r{i}", "hi") for i in range(3)]).id)

    assert sorted(jsonl(oai, batch.error_file_id)) == ["r0"]
    assert sorted(jsonl(oai, batch.output_file_id)) == ["r1", "r2"]


def test_a_held_batch_cancelled_midway_bills_only_the_rows_answered(
    fake: FakeProvider, oai: openai.OpenAI
) -> None:
    # Given a held batch of five rows, two of them answered
    fake.hold_batches()
    created = submit(oai, [chat_line(f"row-{i}", "hi") for i in range(5)])
    assert oai.batches.retrieve(created.id).status == "in_progress"
    fake.advance_batches(2)
    assert oai.batches.retrieve(created.id).status == "in_progress"

    # When it is cancelled
    cancelling = oai.batches.cancel(created.id)
    assert cancelling.status == "cancelling"
    batch = oai.batches.retrieve(created.id)

    # Then it ends cancelled with what was done, the rest nowhere and not billed
    assert batch.status == "cancelled"
    assert batch.cancelled_at is not None
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        5,
        2,
        0,
    )
    assert sorted(jsonl(oai, batch.output_file_id)) == ["row-0", "row-1"]
    assert batch.error_file_id is None
    assert len(fake.bill) == 2
    assert fake.batches[0].counts == {"succeeded": 2, "errored": 0, "expired": 0, "canceled": 3}
    with pytest.raises(openai.ConflictError):
        oai.batches.cancel(created.id)


def test_batch_delay_and_hold_decide_when_a_read_completes_a_batch(
    fake: FakeProvider, oai: openai.OpenAI
) -> None:
    fake.batch_delay = 3600.0
    created = submit(oai, [chat_line("only", "hi")])
    assert oai.batches.retrieve(created.id).status == "in_progress"
    assert fake.count == 0

    fake.batch_delay = 0.0
    fake.hold_batches()
    assert oai.batches.retrieve(created.id).status == "in_progress"
    fake.release_batches()
    assert fake.batches[0].status == "in_progress"  # reading the snapshots completes nothing
    assert oai.batches.retrieve(created.id).status == "completed"

    fake.hold_batches()
    held = submit(oai, [chat_line("later", "hi")])
    fake.finish_batches()  # held or not
    assert oai.batches.retrieve(held.id).status == "completed"
    assert fake.count == 2


def test_batches_are_listed_newest_first_page_by_page(fake: FakeProvider, oai: openai.OpenAI) -> None:
    ids = [submit(oai, [chat_line("x", "hi")]).id for _ in range(5)]

    page = oai.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2]
    assert page.has_more is True
    assert [b.id for b in oai.batches.list(limit=2)] == ids[::-1]  # the client follows `after`
    assert [b.id for b in oai.batches.list(after=ids[1])] == [ids[0]]


@pytest.mark.parametrize(
    ("lines", "code", "line"),
    [
        ([chat_line("a", "hi"), "{not json", chat_line("c", "hi")], "invalid_json_line", 2),
        ([chat_line("a", "hi"), chat_line("b", "hi"), chat_line("a", "hi")], "duplicate_custom_id", 3),
        ([chat_line("a", "hi"), {**chat_line("b", "hi"), "url": "/v1/responses"}], "invalid_url", 2),
        (
            [chat_line("a", "hi"), {"custom_id": "b", "method": "POST", "url": CHAT}],
            "missing_required_parameter",
            2,
        ),
        ([chat_line("a", "hi"), chat_line("b", "hi", model="gpt-4o")], "mismatched_model", 2),
    ],
)
def test_an_invalid_file_fails_the_batch_naming_the_line_and_bills_nothing(
    fake: FakeProvider, oai: openai.OpenAI, lines: list[Any], code: str, line: int
) -> None:
    created = submit(oai, lines)
    assert created.status == "validating"

    batch = oai.batches.retrieve(created.id)

    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert batch.errors is not None
    assert batch.errors.data is not None
    assert [(e.code, e.line) for e in batch.errors.data] == [(code, line)]
    assert batch.output_file_id is None
    assert batch.error_file_id is None
    assert fake.count == 0
    assert fake.bill == []
    assert fake.batches[0].status == "failed"


def test_openai_limits_are_enforced(fake: FakeProvider, oai: openai.OpenAI) -> None:
    fake.batch_limits = BatchLimits(openai_requests=3)
    too_many = oai.batches.retrieve(submit(oai, [chat_line(f"r{i}", "hi") for i in range(4)]).id)
    fake.batch_limits = BatchLimits(openai_bytes=100)
    too_big = oai.batches.retrieve(submit(oai, [chat_line("r", "a rather long question " * 5)]).id)
    fake.batch_limits = BatchLimits(openai_requests=3)
    just_right = oai.batches.retrieve(submit(oai, [chat_line(f"r{i}", "hi") for i in range(3)]).id)

    for batch, code in ((too_many, "too_many_requests"), (too_big, "file_too_large")):
        assert batch.status == "failed"
        assert batch.errors is not None
        assert batch.errors.data is not None
        assert [(e.code, e.line) for e in batch.errors.data] == [(code, None)]
    assert just_right.status == "completed"
    assert len(fake.bill) == 3


def test_a_batch_for_an_endpoint_or_file_the_fake_cannot_take_is_refused(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="not supported"):
        submit(oai, [chat_line("a", "hi")], endpoint="/v1/completions")
    with pytest.raises(openai.NotFoundError):
        oai.batches.create(input_file_id="file-nope", endpoint=CHAT, completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        oai.batches.retrieve("batch_nope")


def test_an_uploaded_file_can_be_read_back_and_deleted(oai: openai.OpenAI) -> None:
    data = (json.dumps(chat_line("ü", "héllo")) + "\n").encode()
    upload = oai.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")

    assert (upload.bytes, upload.filename, upload.purpose) == (len(data), "in.jsonl", "batch")
    assert oai.files.retrieve(upload.id).id == upload.id
    assert oai.files.content(upload.id).read() == data
    assert oai.files.delete(upload.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        oai.files.retrieve(upload.id)


# -- Anthropic -------------------------------------------------------------------------------------


def test_an_anthropic_batch_ends_with_a_result_per_row_billed_at_half_the_live_price(
    fake: FakeProvider, claude: anthropic.Anthropic
) -> None:
    # Given a batch of three requests, the second told to fail and the third to stop short
    fake.fail(529, message="overloaded", when=lambda r: r.custom_id == "b")
    fake.stop_with("max_tokens", when=lambda r: r.custom_id == "c")
    created = claude.messages.batches.create(requests=[anthropic_request(c, f"hello {c}") for c in "abc"])
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 3
    assert created.results_url is None

    # When it is read
    batch = claude.messages.batches.retrieve(created.id)

    # Then it ended, each row answered as live
    assert batch.processing_status == "ended"
    assert batch.ended_at is not None
    counts = batch.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.canceled, counts.expired) == (
        0,
        2,
        1,
        0,
        0,
    )
    rows = results(claude, created.id)
    assert rows["a"].type == "succeeded"
    assert isinstance(rows["a"].message, Message)
    assert rows["a"].message.content[0].type == "text"
    assert rows["a"].message.content[0].text == "You said: hello a"
    assert rows["a"].message.stop_reason == "end_turn"
    assert rows["b"].type == "errored"
    assert (rows["b"].error.error.type, rows["b"].error.error.message) == ("overloaded_error", "overloaded")
    assert rows["c"].type == "succeeded"
    assert rows["c"].message.stop_reason == "max_tokens"
    # And only the succeeded rows are billed, at half the live price
    assert [(e.mode, e.batch_id) for e in fake.bill] == [("batch", created.id)] * 2
    for entry in fake.bill:
        live_price = price_call("anthropic", CLAUDE, entry.usage, {}).cost_usd
        assert live_price is not None
        assert entry.cost_usd == live_price * Decimal("0.5")
    assert entry.output_tokens == count_tokens("You said: hello c")


def test_anthropic_cancel_expiry_and_listing(fake: FakeProvider, claude: anthropic.Anthropic) -> None:
    fake.hold_batches()
    fake.expire(when=lambda r: r.custom_id == "x1")
    expiring = claude.messages.batches.create(requests=[anthropic_request(f"x{i}", "hi") for i in range(2)])
    cancelled = claude.messages.batches.create(requests=[anthropic_request(f"c{i}", "hi") for i in range(4)])

    fake.advance_batches(1)  # one row of each is answered
    canceling = claude.messages.batches.cancel(cancelled.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    fake.finish_batches()

    assert claude.messages.batches.retrieve(cancelled.id).processing_status == "ended"
    assert {k: r.type for k, r in results(claude, cancelled.id).items()} == {
        "c0": "succeeded",
        "c1": "canceled",
        "c2": "canceled",
        "c3": "canceled",
    }
    assert {k: r.type for k, r in results(claude, expiring.id).items()} == {
        "x0": "succeeded",
        "x1": "expired",
    }
    assert claude.messages.batches.retrieve(expiring.id).request_counts.expired == 1
    assert len(fake.bill) == 2
    assert [b.id for b in claude.messages.batches.list()] == [cancelled.id, expiring.id]
    assert [b.id for b in claude.messages.batches.list(limit=1)] == [cancelled.id, expiring.id]
    assert claude.messages.batches.delete(expiring.id).id == expiring.id
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.batches.retrieve(expiring.id)


def test_results_are_not_ready_before_the_batch_ends(fake: FakeProvider, claude: anthropic.Anthropic) -> None:
    fake.batch_delay = 3600.0
    created = claude.messages.batches.create(requests=[anthropic_request("a", "hi")])

    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        claude.messages.batches.results(created.id)
    assert fake.count == 0


@pytest.mark.parametrize(
    ("requests", "named"),
    [
        ([anthropic_request("item:1#a", "hi")], "'item:1#a'"),
        ([anthropic_request("x" * 65, "hi")], "x" * 65),
        ([anthropic_request("same", "hi"), anthropic_request("same", "hi")], "requests.1.custom_id: 'same'"),
    ],
)
def test_a_bad_custom_id_is_refused_naming_it(
    fake: FakeProvider, claude: anthropic.Anthropic, requests: list[Any], named: str
) -> None:
    with pytest.raises(anthropic.BadRequestError, match=named):
        claude.messages.batches.create(requests=requests)
    assert fake.batches == []


def test_anthropic_limits_are_enforced(fake: FakeProvider, claude: anthropic.Anthropic) -> None:
    fake.batch_limits = BatchLimits(anthropic_requests=2)
    with pytest.raises(anthropic.BadRequestError, match="at most 2"):
        claude.messages.batches.create(requests=[anthropic_request(f"r{i}", "hi") for i in range(3)])
    fake.batch_limits = BatchLimits(anthropic_bytes=200)
    with pytest.raises(anthropic.APIStatusError) as refused:
        claude.messages.batches.create(requests=[anthropic_request("r", "a long question " * 20)])
    assert refused.value.status_code == 413
    assert fake.batches == []


def test_reset_forgets_batches(fake: FakeProvider, claude: anthropic.Anthropic) -> None:
    claude.messages.batches.create(requests=[anthropic_request("a", "hi")])
    fake.reset()
    assert fake.batches == []
    assert list(claude.messages.batches.list()) == []


def test_a_row_asking_for_a_stream_is_errored_without_being_answered(
    fake: FakeProvider, claude: anthropic.Anthropic
) -> None:
    created = claude.messages.batches.create(
        requests=[anthropic_request("plain", "hi"), anthropic_request("streamed", "hi", stream=True)]
    )

    rows = results(claude, created.id)

    assert rows["plain"].type == "succeeded"
    assert rows["streamed"].type == "errored"
    assert rows["streamed"].error.error.type == "invalid_request_error"
    assert [r.custom_id for r in fake.requests] == ["plain"]
    assert len(fake.bill) == 1
