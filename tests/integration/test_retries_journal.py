"""Retries, the journal and timeouts: a recorded step is never redone, a recorded call never repaid."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from decimal import Decimal
from typing import Any

import papayya
from papayya import Retryable, agent, run
from papayya.runtime import Runtime


def test_retry_reuses_recorded_steps_and_llm_calls(rt: Runtime, tenant: str) -> None:
    calls: Counter[str] = Counter()

    def fetch(key: str) -> dict[str, str]:
        calls["fetch"] += 1
        return {"key": key}

    def llm(prompt: str) -> dict[str, Any]:
        calls["llm"] += 1
        return {
            "model": "gpt-4o-mini",
            "choices": [{"finish_reason": "stop", "message": {"content": prompt.upper()}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100},
        }

    @agent(retries=3, backoff=0)
    def flaky(item: papayya.Item) -> str:
        data = run.step("fetch")(fetch, item.id)
        answer = run.llm("answer", provider="openai")(llm, f"hello {data['key']}")
        if run.attempt < 3:
            raise ConnectionError("socket closed after the call")
        return str(answer["choices"][0]["message"]["content"])

    result = flaky.map([{"id": "a"}], tenant=tenant)

    assert result.counts["succeeded"] == 1
    assert calls == {"fetch": 1, "llm": 1}  # three attempts, one fetch, one paid call
    detail = rt.store.item_detail(result.items()[0].item_id)
    assert [a["status"] for a in detail["attempts_detail"]] == ["failed", "failed", "succeeded"]
    assert len(detail["llm_calls"]) == 1
    assert detail["llm_calls"][0]["cost_usd"] == result.cost_usd > 0
    assert detail["output"] == "HELLO A"
    assert {s["step_key"] for s in detail["steps"]} == {"step:fetch#1", "llm:answer#1"}


def test_retries_stop_at_max_attempts(rt: Runtime, tenant: str) -> None:
    @agent(retries=2, backoff=0)
    def always(item: papayya.Item) -> None:
        raise Retryable("upstream not ready")

    result = always.map([{"id": "p"}], tenant=tenant)
    assert result.counts["failed"] == 1
    detail = rt.store.item_detail(result.items()[0].item_id)
    assert detail["attempts"] == 3
    assert detail["error"]["retryable"] is True


def test_idempotency_key_is_stable_across_retries(rt: Runtime, tenant: str) -> None:
    keys: list[str] = []

    @agent(retries=1, backoff=0)
    def keyed(item: papayya.Item) -> str:
        keys.append(run.idempotency_key("charge"))
        if run.attempt == 1:
            raise TimeoutError("provider timed out")
        return "ok"

    keyed.map([{"id": "i"}], tenant=tenant)
    assert len(keys) == 2
    assert keys[0] == keys[1]
    assert keys[0].endswith("llm:charge#1")


def test_a_hung_sync_agent_times_out_and_its_late_result_is_discarded(rt: Runtime, tenant: str) -> None:
    release = threading.Event()

    @agent(timeout=0.3)
    def sometimes_hangs(item: papayya.Item) -> str:
        if item.id == "hang":
            release.wait(10)
            return "too late"
        return "fine"

    result = sometimes_hangs.map([{"id": "hang"}, {"id": "quick"}], tenant=tenant, concurrency=1)
    release.set()
    assert result.counts == {"succeeded": 1, "degraded": 0, "failed": 1}
    failed = result.items(outcome="failed")[0]
    assert (failed.key, failed.error_type) == ("hang", "TimeoutError")
    time.sleep(0.2)  # let the abandoned thread return; its write must be fenced off
    assert rt.store.item_detail(failed.item_id)["status"] == "failed"


def test_async_agents_run_concurrently_with_timeouts(rt: Runtime, tenant: str) -> None:
    running = 0
    peak = 0

    @agent(timeout=0.5)
    async def fetch(item: papayya.Item) -> dict[str, str]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(5 if item.id == "slow" else 0.05)
            return {"id": item.id}
        finally:
            running -= 1

    result = fetch.map([{"id": f"i{n}"} for n in range(12)] + [{"id": "slow"}], tenant=tenant, concurrency=4)
    assert result.counts == {"succeeded": 12, "degraded": 0, "failed": 1}
    assert peak == 4
    assert result.items(outcome="failed")[0].error_type == "TimeoutError"


def test_async_llm_steps_are_journaled(rt: Runtime, tenant: str) -> None:
    paid = 0

    async def llm(prompt: str) -> dict[str, Any]:
        nonlocal paid
        paid += 1
        return {
            "model": "gpt-4o-mini",
            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
            "choices": [{"finish_reason": "stop", "message": {"content": prompt}}],
        }

    @agent(retries=1, backoff=0)
    async def enrich(item: papayya.Item) -> str:
        response = await run.llm(provider="openai")(llm, item.id)
        if run.attempt == 1:
            raise ConnectionError("dropped")
        return str(response["choices"][0]["message"]["content"])

    result = enrich.map([{"id": "a"}, {"id": "b"}], tenant=tenant)
    assert result.counts["succeeded"] == 2
    assert paid == 2
    assert result.llm_calls == 2


def test_tenant_price_override_and_unknown_models_in_the_result(rt: Runtime, tenant: str) -> None:
    papayya.tenants.add(tenant)
    papayya.tenants.set_price(tenant, "openai", "gpt-4o-mini", input_mtok="1", output_mtok="2")

    @agent
    def priced(item: papayya.Item) -> str:
        run.record_llm_call(
            provider="openai", model="gpt-4o-mini", input_tokens=1_000_000, output_tokens=500_000
        )
        run.record_llm_call(provider="inhouse", model="llama-private", input_tokens=10, output_tokens=10)
        return "ok"

    result = priced.map([{"id": "a"}], tenant=tenant)
    assert result.cost_usd == Decimal(2)
    assert result.unpriced_calls == 1
    assert "1 calls with unknown price" in str(result)
    item = result.items()[0]
    assert item.cost_unknown is True
    assert item.cost_usd == Decimal(2)


def test_a_truncated_answer_read_back_from_the_journal_still_degrades_the_item(
    rt: Runtime, tenant: str
) -> None:
    paid: Counter[str] = Counter()

    def llm(prompt: str) -> dict[str, Any]:
        paid[prompt] += 1
        return {
            "model": "gpt-4o-mini",
            "choices": [{"finish_reason": "length", "message": {"content": prompt[:3]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3},
        }

    @agent(retries=2, backoff=0)
    def summarise(item: papayya.Item) -> str:
        answer = run.llm("summary", provider="openai", max_tokens=3)(llm, f"summarise {item.id}")
        if run.attempt == 1:
            raise ConnectionError("the socket closed after the call was paid")
        return str(answer["choices"][0]["message"]["content"])

    # Given a truncated answer, paid on the first attempt, and the retry answered from the journal
    result = summarise.map([{"id": "a"}], tenant=tenant)
    assert dict(paid) == {"summarise a": 1}
    # Then the retry reaches the outcome the paid attempt would have: degraded for the stop reason
    (item,) = result.items()
    assert item.status == "degraded"
    assert [r["code"] for r in item.reasons] == ["llm_stop_reason"]
    # and so does a from-journal replay, a week later, for nothing
    again = papayya.replay(item=item.item_id, from_journal=True, agent=summarise)
    (replayed,) = again.items()
    assert (replayed.status, [r["code"] for r in replayed.reasons]) == ("degraded", ["llm_stop_reason"])
    assert dict(paid) == {"summarise a": 1}


def test_a_call_answered_from_the_journal_is_announced_as_replayed_not_recorded_and_keeps_its_cost(
    rt: Runtime, tenant: str
) -> None:
    from papayya.hookspecs import hookimpl

    seen: list[tuple[str, str | None, str | None]] = []

    class Recorder:
        @hookimpl
        def papayya_llm_call_recorded(self, call: Any) -> None:
            seen.append(("recorded", call.model, call.stop_reason))

        @hookimpl
        def papayya_llm_call_replayed(
            self, ctx: Any, step_key: str, provider: str, model: str | None, stop_reason: str | None
        ) -> None:
            seen.append(("replayed", model, stop_reason))

    rt.pm.register(Recorder())

    def llm(prompt: str) -> dict[str, Any]:  # a private model: no public price, so its cost is unknown
        return {
            "model": "inhouse-7b",
            "choices": [{"finish_reason": "stop", "message": {"content": "ok"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3},
        }

    @agent(retries=1, backoff=0)
    def ask(item: papayya.Item) -> str:
        run.llm("ask", provider="openai", max_tokens=3)(llm, f"ask {item.id}")
        if run.attempt == 1:
            raise ConnectionError("lost after the call was paid")
        return "done"

    # Given a call paid (at an unknown price) on the first attempt, answered from the journal on the retry
    (item,) = ask.map([{"id": "a"}], tenant=tenant).items()
    # Then plugins heard of one paid call and one replayed answer, with what the response said
    assert seen == [("recorded", "inhouse-7b", "stop"), ("replayed", "inhouse-7b", "stop")]
    # And the item keeps the unknown cost of the call it paid once, through the retry
    assert (item.status, item.cost_unknown, item.cost_usd) == ("succeeded", True, Decimal(0))
