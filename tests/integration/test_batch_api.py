"""papayya.batch_api against FakeProvider, through the real openai and anthropic clients: a batch is
created from rows, read until it ends, and every row comes back once as a RowResult whose body is the
live endpoint's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import openai
import pytest

from papayya.batch_api import ENDPOINTS, BatchClient, BatchRow, Provider, RowResult, client_for
from papayya.testing import BatchLimits, FakeProvider

GPT = "gpt-4o-mini"
CLAUDE = "claude-3-5-haiku-latest"
ENDPOINT = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}


@pytest.fixture
def oai(fake: FakeProvider) -> Iterator[BatchClient]:
    client = client_for("openai", base_url=fake.openai_url, api_key="test")
    yield client
    client.close()


@pytest.fixture
def claude(fake: FakeProvider) -> Iterator[BatchClient]:
    client = client_for("anthropic", base_url=fake.anthropic_url, api_key="test")
    yield client
    client.close()


@pytest.fixture(params=["openai", "anthropic"])
def batches(request: pytest.FixtureRequest, fake: FakeProvider) -> Iterator[BatchClient]:
    """A batch client for each provider in turn."""
    provider: Provider = request.param
    url = fake.openai_url if provider == "openai" else fake.anthropic_url
    client = client_for(provider, base_url=url, api_key="test")
    yield client
    client.close()


def body(provider: str, text: str, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    if provider == "openai":
        return {"model": GPT, "messages": messages, **extra}
    return {"model": CLAUDE, "max_tokens": 200, "messages": messages, **extra}


def rows(provider: str, *custom_ids: str) -> list[BatchRow]:
    return [BatchRow(c, body(provider, f"question {c}")) for c in custom_ids]


def by_id(results: Iterator[RowResult]) -> dict[str, RowResult]:
    found: dict[str, RowResult] = {}
    for result in results:
        assert result.custom_id not in found, f"{result.custom_id} came back twice"
        found[result.custom_id] = result
    return found


def assert_nothing_sent(fake: FakeProvider) -> None:
    """No batch was created and no file uploaded (the fake numbers its first file ``file-fake1``)."""
    assert fake.batches == []
    client = openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0)
    with client, pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-fake1")


def row_is(custom_id: str) -> Any:
    return lambda request: request.custom_id == custom_id


def live_body(fake: FakeProvider, provider: str, request: dict[str, Any]) -> dict[str, Any]:
    """The body the live endpoint answers ``request`` with, as JSON."""
    if provider == "openai":
        with openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0) as client:
            answer: dict[str, Any] = client.chat.completions.with_raw_response.create(
                **request
            ).http_response.json()
            return answer
    with anthropic.Anthropic(base_url=fake.anthropic_url, api_key="test", max_retries=0) as sdk:
        answer = sdk.messages.with_raw_response.create(**request).http_response.json()
        return answer


# -- both providers --------------------------------------------------------------------------------


def test_the_providers_limits_are_the_defaults(oai: BatchClient, claude: BatchClient) -> None:
    assert (oai.provider, oai.max_rows, oai.max_bytes) == ("openai", 50_000, 200 * 1024 * 1024)
    assert (claude.provider, claude.max_rows, claude.max_bytes) == ("anthropic", 100_000, 256 * 1024 * 1024)


def test_a_batch_is_in_progress_while_held_then_every_row_comes_back_with_the_live_body(
    fake: FakeProvider, batches: BatchClient
) -> None:
    # Given a held batch of three rows
    provider = batches.provider
    fake.hold_batches()
    batch_id = batches.create(ENDPOINT[provider], rows(provider, "r0", "r1", "r2"), "papayya-b1")

    # Then it has not ended, and its results cannot be read yet
    state = batches.state(batch_id)
    assert (state.ended, state.failed_reason, state.total, state.done) == (False, None, 3, 0)
    assert state.provider_status == "in_progress"
    with pytest.raises(ValueError, match="not ended"):
        batches.results(batch_id)
    assert fake.count == 0

    # When it is released
    fake.release_batches()
    state = batches.state(batch_id)

    # Then it ended with every row answered as the live endpoint answers it
    assert (state.ended, state.failed_reason, state.total, state.done) == (True, None, 3, 3)
    assert state.provider_status == ("completed" if provider == "openai" else "ended")
    results = by_id(batches.results(batch_id))
    assert sorted(results) == ["r0", "r1", "r2"]
    for custom_id, result in results.items():
        assert (result.outcome, result.error, result.retryable) == ("succeeded", None, False)
        assert result.response is not None
        live = live_body(fake, provider, body(provider, f"question {custom_id}"))
        assert {**result.response, "id": None} == {**live, "id": None}
    (snapshot,) = fake.batches
    assert snapshot.metadata == ({"papayya_batch": "papayya-b1"} if provider == "openai" else {})
    assert snapshot.counts["succeeded"] == 3


def test_finish_batches_ends_a_held_batch(fake: FakeProvider, batches: BatchClient) -> None:
    fake.hold_batches()
    batch_id = batches.create(ENDPOINT[batches.provider], rows(batches.provider, "only"), "t")
    fake.finish_batches()
    assert batches.state(batch_id).ended
    assert [r.outcome for r in batches.results(batch_id)] == ["succeeded"]


def test_errored_rows_say_why_and_only_rate_limits_and_server_errors_are_retryable(
    fake: FakeProvider, batches: BatchClient
) -> None:
    provider = batches.provider
    fake.fail(400, message="bad prompt", when=row_is("bad"))
    fake.fail(429, message="slow down", when=row_is("limited"))
    fake.fail(500, message="it broke", when=row_is("broken"))
    batch_id = batches.create(ENDPOINT[provider], rows(provider, "ok", "bad", "limited", "broken"), "t")

    results = by_id(batches.results(batch_id))

    assert results["ok"].outcome == "succeeded"
    expected = {"bad": ("400", "bad prompt", False), "limited": ("429", "slow down", True)}
    expected["broken"] = ("500", "it broke", True)
    for custom_id, (status, message, retryable) in expected.items():
        result = results[custom_id]
        assert (result.outcome, result.response, result.retryable) == ("errored", None, retryable)
        assert result.error is not None
        assert status in result.error
        assert message in result.error
    kinds = (
        ("invalid_request_error", "rate_limit")
        if provider == "openai"
        else ("invalid_request_error", "rate_limit_error")
    )
    assert kinds[0] in str(results["bad"].error)
    assert kinds[1] in str(results["limited"].error)


def test_a_row_cut_short_still_succeeded_with_its_stop_reason_in_the_body(
    fake: FakeProvider, batches: BatchClient
) -> None:
    provider = batches.provider
    fake.stop_with("length", when=row_is("cut"))
    batch_id = batches.create(ENDPOINT[provider], rows(provider, "cut", "whole"), "t")

    results = by_id(batches.results(batch_id))

    cut, whole = results["cut"].response, results["whole"].response
    assert results["cut"].outcome == "succeeded"
    assert cut is not None
    assert whole is not None
    if provider == "openai":
        assert (cut["choices"][0]["finish_reason"], whole["choices"][0]["finish_reason"]) == (
            "length",
            "stop",
        )
    else:
        assert (cut["stop_reason"], whole["stop_reason"]) == ("max_tokens", "end_turn")


def test_expired_rows_are_retryable(fake: FakeProvider, batches: BatchClient) -> None:
    provider = batches.provider
    fake.expire(when=lambda r: r.custom_id in ("late", "b-0", "b-1"))
    partly = batches.create(ENDPOINT[provider], rows(provider, "ok", "late"), "t1")
    wholly = batches.create(ENDPOINT[provider], rows(provider, "b-0", "b-1"), "t2")

    results = by_id(batches.results(partly))
    assert results["ok"].outcome == "succeeded"
    late = results["late"]
    assert (late.outcome, late.response, late.retryable) == ("expired", None, True)
    assert "expired" in str(late.error)
    state = batches.state(wholly)
    assert state.ended
    assert state.provider_status == ("expired" if provider == "openai" else "ended")
    assert {r.custom_id: r.outcome for r in batches.results(wholly)} == {"b-0": "expired", "b-1": "expired"}


def test_a_cancelled_batch_keeps_the_rows_answered_and_cancels_the_rest(
    fake: FakeProvider, batches: BatchClient
) -> None:
    # Given a held batch of five rows, two of them answered
    provider = batches.provider
    fake.hold_batches()
    batch_id = batches.create(ENDPOINT[provider], rows(provider, *(f"r{i}" for i in range(5))), "t")
    fake.advance_batches(2)

    # When it is cancelled
    batches.cancel(batch_id)
    state = batches.state(batch_id)

    # Then it ends with the answered rows succeeded and the others canceled, to be sent again
    assert state.ended
    assert state.provider_status == ("cancelled" if provider == "openai" else "ended")
    assert (state.total, state.done) == (5, 5)
    results = by_id(batches.results(batch_id))
    assert {k: r.outcome for k, r in results.items()} == {
        "r0": "succeeded",
        "r1": "succeeded",
        "r2": "canceled",
        "r3": "canceled",
        "r4": "canceled",
    }
    assert all(r.retryable and r.response is None for r in results.values() if r.outcome == "canceled")
    assert len(fake.bill) == 2
    # And cancelling it again, now that it has ended, does nothing
    batches.cancel(batch_id)


def bad_rows(provider: str) -> list[tuple[str, list[BatchRow], str]]:
    ok = rows(provider, "a", "b", "c")
    return [
        ("none", [], "at least one row"),
        ("bad custom_id", [BatchRow("item:1#a", body(provider, "hi"))], "'item:1#a'"),
        ("long custom_id", [BatchRow("x" * 65, body(provider, "hi"))], "x" * 65),
        ("empty custom_id", [BatchRow("", body(provider, "hi"))], "''"),
        ("repeated", [*ok, BatchRow("b", body(provider, "again"))], "'b' repeats"),
        ("no model", [BatchRow("a", {"messages": []})], "no model"),
    ]


@pytest.mark.parametrize(
    "case", ["none", "bad custom_id", "long custom_id", "empty custom_id", "repeated", "no model"]
)
def test_create_refuses_bad_rows_before_sending_anything(
    fake: FakeProvider, batches: BatchClient, case: str
) -> None:
    ((_, bad, named),) = [c for c in bad_rows(batches.provider) if c[0] == case]
    with pytest.raises(ValueError, match=named):
        batches.create(ENDPOINT[batches.provider], bad, "t")
    assert_nothing_sent(fake)


def test_create_refuses_batches_over_the_limits_before_sending_anything(
    fake: FakeProvider, batches: BatchClient
) -> None:
    provider = batches.provider
    batches.max_rows = 2
    with pytest.raises(ValueError, match="3 rows exceed the 2"):
        batches.create(ENDPOINT[provider], rows(provider, "a", "b", "c"), "t")
    batches.max_rows, batches.max_bytes = 10, 100
    with pytest.raises(ValueError, match=r"bytes, more than the 100"):
        batches.create(ENDPOINT[provider], rows(provider, "a", "b"), "t")
    assert_nothing_sent(fake)

    batches.max_bytes = 10_000
    assert batches.create(ENDPOINT[provider], rows(provider, "a", "b"), "t")


def test_create_refuses_another_providers_endpoint_and_takes_step_names(
    fake: FakeProvider, batches: BatchClient
) -> None:
    provider = batches.provider
    other = ENDPOINT["anthropic" if provider == "openai" else "openai"]
    with pytest.raises(ValueError, match=f"not '{other}'"):
        batches.create(other, rows(provider, "a"), "t")
    assert_nothing_sent(fake)
    step = "openai.chat" if provider == "openai" else "anthropic.messages"
    batches.create(step, rows(provider, "a"), "t")
    assert [b.endpoint for b in fake.batches] == [ENDPOINT[provider]]


# -- OpenAI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "request_body", "kind"),
    [
        ("openai.responses", {"model": GPT, "input": "hi"}, "response"),
        ("openai.embeddings", {"model": "text-embedding-3-small", "input": "hi", "dimensions": 8}, "list"),
    ],
)
def test_openai_responses_and_embeddings_batches(
    fake: FakeProvider, oai: BatchClient, step: str, request_body: dict[str, Any], kind: str
) -> None:
    batch_id = oai.create(step, [BatchRow("a", request_body), BatchRow("b", request_body)], "t")

    results = by_id(oai.results(batch_id))

    assert fake.batches[0].endpoint == ENDPOINTS[step][1]
    assert {r.outcome for r in results.values()} == {"succeeded"}
    assert {r.response["object"] for r in results.values() if r.response} == {kind}


def test_an_openai_batch_takes_one_model(fake: FakeProvider, oai: BatchClient) -> None:
    mixed = [BatchRow("a", body("openai", "hi")), BatchRow("b", {**body("openai", "hi"), "model": "gpt-4o"})]
    with pytest.raises(ValueError, match="one model"):
        oai.create("/v1/chat/completions", mixed, "t")
    assert_nothing_sent(fake)


def test_a_file_openai_rejects_fails_the_batch_with_its_reason_and_every_row_errored(
    fake: FakeProvider, oai: BatchClient
) -> None:
    # Given a provider whose limit is smaller than the client believes
    fake.batch_limits = BatchLimits(openai_requests=2)
    batch_id = oai.create("/v1/chat/completions", rows("openai", "a", "b", "c"), "t")

    # Then the batch ended, rejected, and no row was run through a fault of its own
    state = oai.state(batch_id)
    assert (state.provider_status, state.ended, state.total) == ("failed", True, 0)
    assert state.failed_reason is not None
    assert "too_many_requests" in state.failed_reason
    results = by_id(oai.results(batch_id))
    assert sorted(results) == ["a", "b", "c"]
    assert all(r.outcome == "errored" and r.retryable for r in results.values())
    assert all(r.error and "too_many_requests" in r.error for r in results.values())
    assert fake.count == 0


def test_a_bad_line_fails_the_batch_naming_it_and_only_its_row_is_not_retryable(
    fake: FakeProvider, oai: BatchClient
) -> None:
    # Given a file whose second line names another model (sent past create()'s checks)
    lines = [
        {
            "custom_id": c,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": body("openai", "hi", model=m),
        }
        for c, m in (("a", GPT), ("b", "gpt-4o"), ("c", GPT))
    ]
    payload = "".join(json.dumps(line) + "\n" for line in lines).encode()
    batch_id = oai._send("/v1/chat/completions", [], "t", payload)  # type: ignore[attr-defined]

    state = oai.state(batch_id)

    assert state.ended
    assert state.failed_reason is not None
    assert "line 2" in state.failed_reason
    assert "mismatched_model" in state.failed_reason
    results = by_id(oai.results(batch_id))
    assert (results["b"].outcome, results["b"].retryable) == ("errored", False)
    assert "line 2" in str(results["b"].error)
    assert [(results[c].outcome, results[c].retryable) for c in "ac"] == [("errored", True)] * 2


def test_openai_find_adopts_the_batch_by_its_exact_tag(fake: FakeProvider, oai: BatchClient) -> None:
    since = datetime.now(UTC)
    first = oai.create("/v1/chat/completions", rows("openai", "a"), "papayya-1")
    second = oai.create("/v1/chat/completions", rows("openai", "a"), "papayya-10")

    assert oai.find("papayya-1", rows=1, since=since, known=()) == [first]
    assert oai.find("papayya-10", rows=1, since=since, known=()) == [second]
    assert oai.find("papayya-2", rows=1, since=since, known=()) == []
    assert oai.find("papayya-1", rows=1, since=since + timedelta(hours=1), known=()) == []
    naive = since.replace(tzinfo=None) - timedelta(hours=1)  # naive: taken as UTC
    assert oai.find("papayya-1", rows=1, since=naive, known=()) == [first]


def test_openai_find_pages_through_the_list(fake: FakeProvider, oai: BatchClient) -> None:
    since = datetime.now(UTC)
    tagged = oai.create("/v1/chat/completions", rows("openai", "a"), "the-one")
    for i in range(101):  # more than one page of 100, newer than the one sought
        oai.create("/v1/chat/completions", rows("openai", "a"), f"other-{i}")

    assert oai.find("the-one", rows=1, since=since, known=()) == [tagged]


# -- Anthropic -------------------------------------------------------------------------------------


def test_anthropic_find_matches_size_and_time_minus_the_known_batches(
    fake: FakeProvider, claude: BatchClient
) -> None:
    since = datetime.now(UTC)
    older = claude.create("/v1/messages", rows("anthropic", "a", "b"), "t1")
    other_size = claude.create("/v1/messages", rows("anthropic", "a", "b", "c"), "t2")
    newer = claude.create("/v1/messages", rows("anthropic", "a", "b"), "t3")

    # Two candidates of two rows, newest first; the caller decides
    assert claude.find("t1", rows=2, since=since, known=()) == [newer, older]
    assert claude.find("t3", rows=2, since=since, known={older}) == [newer]
    assert claude.find("t2", rows=3, since=since, known=()) == [other_size]
    assert claude.find("t2", rows=4, since=since, known=()) == []
    assert claude.find("t1", rows=2, since=since + timedelta(hours=1), known=()) == []


def test_anthropic_errored_rows_map_the_error_type_to_its_status(
    fake: FakeProvider, claude: BatchClient
) -> None:
    fake.fail(529, message="overloaded", when=row_is("busy"))
    batch_id = claude.create("/v1/messages", rows("anthropic", "busy"), "t")

    (result,) = claude.results(batch_id)

    assert (result.outcome, result.retryable) == ("errored", True)
    assert result.error == "Anthropic answered 529 overloaded_error: overloaded"


def test_a_stream_row_is_errored_not_retryable(fake: FakeProvider, claude: BatchClient) -> None:
    batch_id = claude.create("/v1/messages", [BatchRow("s", body("anthropic", "hi", stream=True))], "t")

    (result,) = claude.results(batch_id)

    assert (result.outcome, result.retryable) == ("errored", False)
    assert "400 invalid_request_error" in str(result.error)
    assert fake.requests == []  # never answered
