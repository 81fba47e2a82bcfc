"""Batch mode end to end: an agent's OpenAI and Anthropic calls sent through the providers' batch APIs
(papayya's FakeProvider, driven by the real clients), answered into the ledger and the journal, the
item run again from the journal; costs at the batch rate, budgets charged and settled, nothing paid
twice across batchers that die.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import psycopg
import pytest

import papayya
import papayya_anthropic
import papayya_openai
from papayya import RunResult, agent, batches, engine
from papayya.pricing import Usage, price_call
from papayya.runtime import Runtime, get_runtime
from papayya.testing import FakeProvider

MODEL = "gpt-4o-mini"
CLAUDE = "claude-3-5-haiku-latest"


@pytest.fixture
def batch_rt(rt: Runtime, monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Any) -> Runtime:
    """papayya with batches sent at once (no gathering window) and the providers' keys set."""
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test")
    papayya.configure(batch_window_seconds=0, batch_poll_seconds=0.2)
    return get_runtime()


@pytest.fixture
def oa(fake: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0) as c:
        yield papayya_openai.instrument(c)


def drain(rt: Runtime, agent_: Any, run_id: Any, *, timeout: float = 60) -> None:
    """Run a worker (and its batcher) until the run has nothing left, as `papayya worker` would."""
    worker = engine.Worker(rt, [agent_], concurrency=4, run_ids=[run_id], until_done=True, poll=0.1)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    runner.join(timeout)
    if runner.is_alive():
        worker.stop()
        runner.join(30)
        raise AssertionError(f"run {run_id} did not finish within {timeout}s")


def ledger(database_url: str, run_id: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT item_id, step_key, mode, cost_usd, live_cost_usd, input_tokens, output_tokens "
            "FROM papayya.llm_calls WHERE run_id = %s ORDER BY item_id, step_key",
            (run_id,),
        ).fetchall()


def labeller(client: openai.OpenAI, *, retries: int = 0, max_tokens: int | None = None) -> Any:
    """An agent asking, in one call, for a label of its item's text (else of its id)."""

    @agent(retries=retries)
    def label(item):
        text = item.input.get("text", item.id)
        extra = {} if max_tokens is None else {"max_tokens": max_tokens}
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}], **extra
        )
        return {"label": reply.choices[0].message.content}

    return label


def test_a_batch_mode_run_pays_the_batch_rate_once_per_call_and_every_item_gets_its_answer(
    batch_rt: Runtime, tenant: str, fake: FakeProvider, oa: openai.OpenAI, database_url: str
) -> None:
    label = labeller(oa, max_tokens=50)

    handle = label.submit(
        [{"id": str(i), "text": f"document {i}"} for i in range(40)], tenant=tenant, llm_mode="batch"
    )
    drain(batch_rt, label, handle.run_id)

    result = RunResult.load(handle.run_id, tenant)
    assert result.counts["succeeded"] == 40
    outputs = {i.key: batch_rt.store.item_detail(i.item_id)["output"] for i in result.items()}
    assert outputs["7"] == {"label": "You said: document 7"}
    # one provider batch row per item, billed once, at the batch rate
    assert [b.provider for b in fake.batches] == ["openai"]
    assert len(fake.bill) == 40
    assert {e.mode for e in fake.bill} == {"batch"}
    rows = ledger(database_url, handle.run_id)
    assert len(rows) == 40
    assert {r[2] for r in rows} == {"batch"}
    assert sum(r[3] for r in rows) == fake.billed_usd
    for _, _, _, cost, live, inp, out in rows:
        usage = Usage(inp, out)
        assert cost == price_call("openai", MODEL, usage, {}, mode="batch").cost_usd
        assert live == price_call("openai", MODEL, usage, {}).cost_usd
        assert cost < live
    assert result.cost_usd == fake.billed_usd
    (made,) = fake.batches
    shown = batches.show_batch(batch_rt, made.id)
    assert shown is not None
    assert (shown["rows"], shown["answered"]) == (40, 40)
    assert batches.show_batch(batch_rt, "batch_nope") is None
    summary = batches.run_summary(batch_rt, handle.run_id, tenant)
    assert (summary["waiting"], summary["batch_calls"]) == (0, 40)
    assert summary["live_cost_usd"] > summary["batch_cost_usd"] == fake.billed_usd
    # the budgets' charges were replaced by the actual cost
    view = batch_rt.store.budget_view(batch_rt.budgets.accounts(tenant, handle.run_id, "month").keys())
    assert {r["scope"]: r["spent_usd"] for r in view}["run"] == fake.billed_usd


def test_an_agent_with_two_calls_takes_two_batch_rounds_and_pays_each_call_once(
    batch_rt: Runtime, tenant: str, fake: FakeProvider, oa: openai.OpenAI, database_url: str
) -> None:
    runs: list[str] = []

    @agent
    def two(item):
        runs.append(item.id)
        first = oa.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "a " + item.id}]
        )
        second = oa.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": first.choices[0].message.content}]
        )
        return {"text": second.choices[0].message.content}

    handle = two.submit([{"id": f"k{i}"} for i in range(5)], tenant=tenant, llm_mode="batch")
    drain(batch_rt, two, handle.run_id)

    result = RunResult.load(handle.run_id, tenant)
    assert result.counts["succeeded"] == 5
    detail = batch_rt.store.item_detail(next(iter(result.items())).item_id)
    assert detail["output"] == {"text": "You said: You said: a k0"}
    assert len(fake.batches) == 2  # a round per call
    assert len(fake.bill) == 10
    assert len(ledger(database_url, handle.run_id)) == 10
    assert sorted(runs).count("k0") == 3  # deferred twice, then ran to the end from the journal


def test_anthropic_message_batches_carry_an_agents_calls(
    batch_rt: Runtime, tenant: str, fake: FakeProvider, database_url: str
) -> None:
    client = papayya_anthropic.instrument(
        anthropic.Anthropic(base_url=fake.anthropic_url, api_key="test", max_retries=0)
    )

    @agent
    def summarize(item):
        msg = client.messages.create(
            model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": item.input["text"]}]
        )
        return {"summary": msg.content[0].text}

    handle = summarize.submit(
        [{"id": str(i), "text": f"note {i}"} for i in range(6)], tenant=tenant, llm_mode="batch"
    )
    drain(batch_rt, summarize, handle.run_id)
    result = RunResult.load(handle.run_id, tenant)
    assert result.counts["succeeded"] == 6
    assert [b.provider for b in fake.batches] == ["anthropic"]
    rows = ledger(database_url, handle.run_id)
    assert len(rows) == 6
    assert sum(r[3] for r in rows) == fake.billed_usd == result.cost_usd
    client.close()


def test_a_truncated_batch_answer_degrades_its_item(
    batch_rt: Runtime, tenant: str, fake: FakeProvider, oa: openai.OpenAI
) -> None:
    fake.stop_with("length", when=lambda r: "cut" in r.prompt)

    label = labeller(oa)

    handle = label.submit(
        [{"id": "whole", "text": "keep"}, {"id": "cut", "text": "cut"}], tenant=tenant, llm_mode="batch"
    )
    drain(batch_rt, label, handle.run_id)
    result = RunResult.load(handle.run_id, tenant)
    assert (result.counts["succeeded"], result.counts["degraded"]) == (1, 1)
    assert len(fake.bill) == 2


def test_a_row_the_provider_refuses_fails_its_item_with_the_reason_and_costs_nothing(
    batch_rt: Runtime, tenant: str, fake: FakeProvider, oa: openai.OpenAI, database_url: str
) -> None:
    fake.fail(400, message="the prompt is not allowed", times=None, when=lambda r: "bad" in r.prompt)

    label = labeller(oa)

    handle = label.submit(
        [{"id": "good", "text": "fine"}, {"id": "bad", "text": "bad"}], tenant=tenant, llm_mode="batch"
    )
    drain(batch_rt, label, handle.run_id)
    result = RunResult.load(handle.run_id, tenant)
    assert (result.counts["succeeded"], result.counts["failed"]) == (1, 1)
    failed = next(i for i in result.items() if i.key == "bad")
    error = batch_rt.store.item_detail(failed.item_id)["error"]
    assert error["type"] == "BatchRequestFailed"
    assert "the prompt is not allowed" in error["message"]
    assert len(ledger(database_url, handle.run_id)) == 1
    view = batch_rt.store.budget_view(batch_rt.budgets.accounts(tenant, handle.run_id, "month").keys())
    assert {r["scope"]: r["spent_usd"] for r in view}["run"] == fake.billed_usd


def test_expired_rows_are_asked_again_in_a_new_batch(
    batch_rt: Runtime, tenant: str, fake: FakeProvider, oa: openai.OpenAI
) -> None:
    fake.expire(times=2)

    label = labeller(oa, retries=2)

    handle = label.submit(
        [{"id": str(i), "text": f"t{i}"} for i in range(4)], tenant=tenant, llm_mode="batch"
    )
    drain(batch_rt, label, handle.run_id)
    result = RunResult.load(handle.run_id, tenant)
    assert result.counts["succeeded"] == 4
    assert len(fake.batches) == 2
    assert len(fake.bill) == 4
    assert result.cost_usd == fake.billed_usd


def test_a_budget_with_no_room_pauses_before_anything_is_sent(
    batch_rt: Runtime, tenant: str, fake: FakeProvider, oa: openai.OpenAI
) -> None:
    label = labeller(oa, max_tokens=1000)

    handle = label.submit(
        [{"id": str(i), "text": "x"} for i in range(20)],
        tenant=tenant,
        llm_mode="batch",
        budget_usd=Decimal("0.0012"),
    )
    worker = engine.Worker(
        batch_rt, [label], concurrency=2, run_ids=[handle.run_id], until_done=True, poll=0.1
    )
    worker.run()
    result = RunResult.load(handle.run_id, tenant)
    assert result.status == "paused"
    assert result.counts.get("paused", 0) >= 1
    spent = sum(Decimal(e.cost_usd or 0) for e in fake.bill)
    assert spent <= Decimal("0.0012")


def test_a_row_that_keeps_expiring_fails_its_item_once_its_attempts_are_spent(
    batch_rt: Runtime, tenant: str, fake: FakeProvider, oa: openai.OpenAI
) -> None:
    fake.expire(times=None, when=lambda r: "never" in r.prompt)

    label = labeller(oa, retries=1)

    handle = label.submit(
        [{"id": "n", "text": "never"}, {"id": "y", "text": "yes"}], tenant=tenant, llm_mode="batch"
    )
    drain(batch_rt, label, handle.run_id)
    result = RunResult.load(handle.run_id, tenant)
    assert (result.counts["succeeded"], result.counts["failed"]) == (1, 1)
    assert len(fake.batches) == 2  # asked twice (retries=1), then failed
    assert len(fake.bill) == 1


def test_a_bad_llm_mode_is_refused_with_one_sentence(batch_rt: Runtime, tenant: str) -> None:
    @agent
    def label(item):
        return {}

    with pytest.raises(papayya.InputError, match="not one of: live, batch"):
        label.submit([{"id": "a"}], tenant=tenant, llm_mode="bulk")


class Crash(BaseException):
    """A batcher process dying at this very line (a BaseException: nothing catches it on the way)."""


def defer_all(rt: Runtime, agent_: Any, run_id: Any) -> None:
    """Run the run's items until each waits on its batch request, with no batcher running."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine.worker, "BATCH_TICK", 3600.0)
        engine.Worker(rt, [agent_], concurrency=4, run_ids=[run_id], burst=True, poll=0.1).run()


def waiting(database_url: str, run_id: Any) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM papayya.items WHERE run_id = %s AND status = 'waiting'", (run_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def expire_batcher_leases(database_url: str) -> None:
    """Time passes: the leases of dead batchers run out, and every open batch is due a poll."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE papayya.llm_batches SET next_poll_at = now(), lease_expires_at = CASE WHEN "
            "lease_expires_at IS NULL THEN NULL ELSE now() - interval '1 second' END "
            "WHERE status IN ('forming', 'submitted')"
        )


def test_a_batcher_killed_between_creating_a_batch_and_recording_it_is_adopted_not_paid_twice(
    batch_rt: Runtime,
    tenant: str,
    fake: FakeProvider,
    oa: openai.OpenAI,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from papayya import batch_api

    label = labeller(oa)

    handle = label.submit([{"id": f"k{i}"} for i in range(10)], tenant=tenant, llm_mode="batch")
    defer_all(batch_rt, label, handle.run_id)
    assert waiting(database_url, handle.run_id) == 10
    # Given a batcher that dies right after the provider created its batch, before recording it
    create = batch_api._OpenAIBatches.create

    def create_then_die(self: Any, *args: Any, **kwargs: Any) -> str:
        create(self, *args, **kwargs)
        raise Crash

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batch_api._OpenAIBatches, "create", create_then_die)
        with pytest.raises(Crash):
            batches.tick(batch_rt, worker="first", force=True)
    assert len(fake.batches) == 1
    # When its lease runs out and another batcher takes over
    expire_batcher_leases(database_url)
    batches.tick(batch_rt, worker="second")
    batches.tick(batch_rt, worker="second")
    # Then the batch the provider made was adopted, not made again, and every item got its answer
    assert len(fake.batches) == 1
    drain(batch_rt, label, handle.run_id)
    result = RunResult.load(handle.run_id, tenant)
    assert result.counts["succeeded"] == 10
    assert len(fake.bill) == 10
    assert len(ledger(database_url, handle.run_id)) == 10
    assert result.cost_usd == fake.billed_usd


def test_a_batcher_killed_while_writing_answers_leaves_the_rest_to_the_next_and_nothing_twice(
    batch_rt: Runtime,
    tenant: str,
    fake: FakeProvider,
    oa: openai.OpenAI,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    label = labeller(oa)

    handle = label.submit([{"id": f"k{i}"} for i in range(10)], tenant=tenant, llm_mode="batch")
    defer_all(batch_rt, label, handle.run_id)
    batches.tick(batch_rt, worker="first", force=True)  # sent
    expire_batcher_leases(database_url)  # (its first poll is due)
    # Given a batcher that dies after writing the first 4 answers of the ended batch
    chunks = batches._chunks

    def first_chunk_then_die(results: Any) -> Any:
        for n, chunk in enumerate(chunks(results)):
            if n:
                raise Crash
            yield chunk

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batches, "CHUNK", 4)
        mp.setattr(batches, "_chunks", first_chunk_then_die)
        with pytest.raises(Crash):
            batches.tick(batch_rt, worker="first")
    assert waiting(database_url, handle.run_id) == 6
    # When another batcher takes the batch over
    expire_batcher_leases(database_url)
    batches.tick(batch_rt, worker="second")
    # Then each answer is in the ledger once, and every item finishes
    assert waiting(database_url, handle.run_id) == 0
    drain(batch_rt, label, handle.run_id)
    result = RunResult.load(handle.run_id, tenant)
    assert result.counts["succeeded"] == 10
    assert len(ledger(database_url, handle.run_id)) == 10 == len(fake.bill)
    assert result.cost_usd == fake.billed_usd


def test_two_thousand_items_of_three_tenants_cost_the_batch_rate_exactly_and_about_half_of_live(
    batch_rt: Runtime, fake: FakeProvider, oa: openai.OpenAI, database_url: str
) -> None:
    @agent
    def enrich(item):
        reply = oa.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"enrich {item.id}"}], max_tokens=40
        )
        return {"text": reply.choices[0].message.content}

    tenants = [f"t-{n}-{fake.url[-5:]}" for n in range(3)]
    handles = [
        enrich.submit([{"id": f"{t}-{i}"} for i in range(667 if n < 2 else 666)], tenant=t, llm_mode="batch")
        for n, t in enumerate(tenants)
    ]
    worker = engine.Worker(
        batch_rt, [enrich], concurrency=8, run_ids=[h.run_id for h in handles], until_done=True, poll=0.1
    )
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    runner.join(240)
    assert not runner.is_alive()
    results = [RunResult.load(h.run_id, t) for h, t in zip(handles, tenants, strict=True)]
    assert sum(r.counts["succeeded"] for r in results) == 2000
    assert len(fake.bill) == 2000
    assert {e.mode for e in fake.bill} == {"batch"}
    assert sum((r.cost_usd for r in results), Decimal(0)) == fake.billed_usd
    live = sum(
        (
            Decimal(batches.run_summary(batch_rt, h.run_id, t)["live_cost_usd"])
            for h, t in zip(handles, tenants, strict=True)
        ),
        Decimal(0),
    )
    assert fake.billed_usd * 2 == live  # gpt-4o-mini in batch: half its live price, to the digit


def test_a_replay_of_a_live_run_s_degraded_slice_can_go_in_a_batch(
    batch_rt: Runtime, tenant: str, fake: FakeProvider, oa: openai.OpenAI, database_url: str
) -> None:
    fake.stop_with("length", times=1, when=lambda r: "cut" in r.prompt)

    label = labeller(oa)

    live = label.map([{"id": "a", "text": "keep"}, {"id": "b", "text": "cut"}], tenant=tenant)
    assert (live.counts["succeeded"], live.counts["degraded"]) == (1, 1)
    assert fake.batches == []
    replayed = papayya.replay(run=live.run_id, outcome="degraded", llm_mode="batch", agent=label)
    assert replayed.counts["succeeded"] == 1
    assert [b.rows for b in fake.batches] == [1]
    (row,) = ledger(database_url, replayed.run_id)
    assert row[2] == "batch"
    # a replay of that replay keeps its mode: its call goes in a batch too
    again = papayya.replay(run=replayed.run_id, agent=label)
    assert again.counts["succeeded"] == 1
    assert [b.rows for b in fake.batches] == [1, 1]
    with pytest.raises(papayya.ReplayError, match="not one of: live, batch"):
        papayya.replay(run=live.run_id, llm_mode="bulk", agent=label)


def test_a_batch_papayya_cannot_send_fails_its_items_with_the_reason_instead_of_retrying_forever(
    batch_rt: Runtime,
    tenant: str,
    fake: FakeProvider,
    oa: openai.OpenAI,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from papayya import batch_api

    label = labeller(oa)

    def refuse(self: Any, *args: Any, **kwargs: Any) -> str:
        raise ValueError("The batch is 300 MB, more than the 200 MB an openai batch takes; split it.")

    monkeypatch.setattr(batch_api._OpenAIBatches, "create", refuse)
    handle = label.submit([{"id": "a"}, {"id": "b"}], tenant=tenant, llm_mode="batch")
    drain(batch_rt, label, handle.run_id)
    result = RunResult.load(handle.run_id, tenant)
    assert result.counts["failed"] == 2
    error = batch_rt.store.item_detail(next(iter(result.items())).item_id)["error"]
    assert error["message"] == (
        "papayya could not send the batch: The batch is 300 MB, more than the 200 MB an openai batch "
        "takes; split it."
    )
    assert fake.batches == []
    assert ledger(database_url, handle.run_id) == []
    view = batch_rt.store.budget_view(batch_rt.budgets.accounts(tenant, handle.run_id, "month").keys())
    assert {r["scope"]: r["spent_usd"] for r in view}["run"] == 0


def test_a_call_no_batch_can_carry_goes_live_with_a_warning(
    batch_rt: Runtime, tenant: str, fake: FakeProvider, oa: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    @agent
    def streamed(item):
        stream = oa.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": item.id}], stream=True
        )
        return {"text": "".join(c.choices[0].delta.content or "" for c in stream if c.choices)}

    with caplog.at_level("WARNING", logger="papayya.batches"):
        handle = streamed.submit([{"id": "s1"}, {"id": "s2"}], tenant=tenant, llm_mode="batch")
        drain(batch_rt, streamed, handle.run_id)
    result = RunResult.load(handle.run_id, tenant)
    assert result.counts["succeeded"] == 2
    assert fake.batches == []
    assert {e.mode for e in fake.bill} == {"live"}
    said = [r.getMessage() for r in caplog.records if "sent live" in r.getMessage()]
    assert said == ["batch mode: a streamed call is sent live, at the live price (docs/batch.md, Limits)"]


def test_an_answer_that_lands_before_its_item_stops_to_wait_is_neither_lost_nor_asked_again(
    batch_rt: Runtime, tenant: str, fake: FakeProvider, oa: openai.OpenAI, database_url: str
) -> None:
    from papayya.store import Finish

    label = labeller(oa)
    handle = label.submit([{"id": "k"}], tenant=tenant, llm_mode="batch")
    defer_all(batch_rt, label, handle.run_id)
    # Given the item's attempt has deferred its call but not yet written that it waits (its worker is
    # slow, or froze), while a batcher sends the request and writes the answer
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE papayya.items SET status = 'running', lease_token = 424242, "
            "lease_expires_at = now() + interval '1 minute' WHERE run_id = %s",
            (handle.run_id,),
        )
        request = conn.execute(
            "SELECT item_id, step_key, request_hash, attempt_id FROM papayya.batch_requests "
            "WHERE run_id = %s",
            (handle.run_id,),
        ).fetchone()
    assert request is not None
    item_id, step_key, request_hash, attempt_id = request
    batches.tick(batch_rt, worker="b", force=True)
    expire_batcher_leases(database_url)
    assert batches.tick(batch_rt, worker="b").answered == 1
    # When an attempt that read its journal before the answer asks for the same call again
    again = batch_rt.store.fetch_all(
        "batch_request_add",
        {
            "custom_id": "pp_again",
            "item_id": item_id,
            "tenant_id": tenant,
            "lease_token": 424242,
            "attempt_id": attempt_id,
            "step_key": step_key,
            "request_hash": request_hash,
            "provider": "openai",
            "endpoint": "/v1/chat/completions",
            "model": MODEL,
            "base_url": "",
            "body": psycopg.types.json.Jsonb({}),
            "charged_usd": 0,
            "accounts": psycopg.types.json.Jsonb({}),
        },
    )
    # Then nothing is asked again
    assert again == []
    # And when the attempt then writes that it waits, the item goes straight back to the queue
    applied = batch_rt.store.attempts_finish(
        [
            Finish(
                item_id=item_id,
                tenant_id=tenant,
                attempt_id=attempt_id,
                lease_token=424242,
                item_status="waiting",
                attempt_status="waiting",
                terminal=False,
                reasons=[],
                output=None,
                error=None,
                fingerprint=None,
            )
        ]
    )
    assert applied == {item_id}
    assert waiting(database_url, handle.run_id) == 0
    drain(batch_rt, label, handle.run_id)
    assert RunResult.load(handle.run_id, tenant).counts["succeeded"] == 1
    assert len(fake.bill) == 1
    assert len(ledger(database_url, handle.run_id)) == 1


@pytest.mark.parametrize("adopted", [True, False], ids=["adopted", "made-again"])
def test_a_batcher_frozen_while_creating_a_batch_records_nothing_and_cancels_a_duplicate(
    adopted: bool,
    batch_rt: Runtime,
    tenant: str,
    fake: FakeProvider,
    oa: openai.OpenAI,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from papayya import batch_api

    label = labeller(oa)
    handle = label.submit([{"id": f"k{i}"} for i in range(4)], tenant=tenant, llm_mode="batch")
    defer_all(batch_rt, label, handle.run_id)
    fake.hold_batches()
    create = batch_api._OpenAIBatches.create

    def create_and_freeze(self: Any, *args: Any, **kwargs: Any) -> str:
        made = create(self, *args, **kwargs)
        # frozen past its lease: another batcher takes the batch over (and adopts this provider batch,
        # or, when it cannot find it, creates one of its own)
        expire_batcher_leases(database_url)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(batch_api._OpenAIBatches, "create", create)
            if not adopted:
                mp.setattr(batch_api._OpenAIBatches, "find", lambda *a, **k: [])
            batches.tick(batch_rt, worker="second")
        return made

    monkeypatch.setattr(batch_api._OpenAIBatches, "create", create_and_freeze)
    batches.tick(batch_rt, worker="first", force=True)
    monkeypatch.setattr(batch_api._OpenAIBatches, "create", create)
    made = fake.batches
    if adopted:
        assert [b.status for b in made] == ["in_progress"]
    else:  # the frozen batcher's batch is the duplicate: cancelled before anything was answered
        assert sorted(b.status for b in made) == ["cancelling", "in_progress"]
    fake.release_batches()
    drain(batch_rt, label, handle.run_id)
    assert RunResult.load(handle.run_id, tenant).counts["succeeded"] == 4
    assert len(fake.bill) == 4
    assert len(ledger(database_url, handle.run_id)) == 4


def test_before_the_window_only_full_batches_leave_and_the_rest_waits_for_it(
    batch_rt: Runtime,
    tenant: str,
    fake: FakeProvider,
    oa: openai.OpenAI,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    label = labeller(oa)
    handle = label.submit([{"id": f"k{i}"} for i in range(7)], tenant=tenant, llm_mode="batch")
    defer_all(batch_rt, label, handle.run_id)
    monkeypatch.setattr(batches, "LIMITS", {"openai": (3, 200 * batches.MB)})
    papayya.configure(batch_window_seconds=3600, batch_poll_seconds=0.2)
    rt = get_runtime()
    batches.tick(rt, worker="b")
    assert sorted(b.rows for b in fake.batches) == [3, 3]  # two full batches; one request waits
    assert [p["pending"] for p in batches.pending(rt) if p["model"] == MODEL] == [1]
    batches.tick(rt, worker="b", force=True)  # (the window passed)
    assert sorted(b.rows for b in fake.batches) == [1, 3, 3]
    drain(rt, label, handle.run_id)
    assert RunResult.load(handle.run_id, tenant).counts["succeeded"] == 7


def test_a_process_without_a_providers_key_leaves_its_batches_alone(
    batch_rt: Runtime,
    tenant: str,
    fake: FakeProvider,
    oa: openai.OpenAI,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    label = labeller(oa)
    handle = label.submit([{"id": "a"}, {"id": "b"}], tenant=tenant, llm_mode="batch")
    defer_all(batch_rt, label, handle.run_id)
    monkeypatch.delenv("OPENAI_API_KEY")
    report = batches.tick(batch_rt, worker="keyless", force=True)
    assert (report.formed, report.polled, report.errors) == (0, 0, 0)
    assert fake.batches == []
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    assert batches.tick(batch_rt, worker="keyed", force=True).formed >= 1
    assert [b.rows for b in fake.batches] == [2]
    drain(batch_rt, label, handle.run_id)


def test_reconciling_a_budget_counts_the_charges_of_calls_still_in_a_batch(
    batch_rt: Runtime, tenant: str, fake: FakeProvider, oa: openai.OpenAI, database_url: str
) -> None:
    label = labeller(oa, max_tokens=100)
    handle = label.submit([{"id": f"k{i}"} for i in range(3)], tenant=tenant, llm_mode="batch")
    defer_all(batch_rt, label, handle.run_id)
    batch_rt.budgets.flush()
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT sum(charged_usd) FROM papayya.batch_requests WHERE run_id = %s", (handle.run_id,)
        ).fetchone()
    assert row is not None
    charged = row[0]
    assert charged > 0
    keys = batch_rt.budgets.accounts(tenant, handle.run_id, "month").keys()
    before = {r["scope"]: r["spent_usd"] for r in batch_rt.store.budget_view(keys)}
    batch_rt.store.budget_reconcile(tenant)  # recomputed from the ledger (empty) and the open charges
    after = {r["scope"]: r["spent_usd"] for r in batch_rt.store.budget_view(keys)}
    assert before["run"] == after["run"] == charged
    assert after["tenant"] == charged
    drain(batch_rt, label, handle.run_id)
    after_answers = {r["scope"]: r["spent_usd"] for r in batch_rt.store.budget_view(keys)}
    assert after_answers["run"] == fake.billed_usd < charged
