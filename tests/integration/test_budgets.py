"""Budgets that pause instead of fail, on a real store: reservations, pause, resume, the bound."""

from __future__ import annotations

import threading
from collections import Counter
from decimal import Decimal
from typing import Any

import psycopg
import pytest

import papayya
from papayya import BudgetError, agent, run
from papayya.runtime import Runtime

# A negotiated price of $1 per 1,000 tokens either way makes every cost easy to read.
PRICE = {"input_mtok": "1000", "output_mtok": "1000"}
MAX_TOKENS = 50


def priced_tenant(tenant: str, **budget: Any) -> None:
    papayya.tenants.add(tenant)
    papayya.tenants.set_price(tenant, "openai", "gpt-4o-mini", **PRICE)
    if budget:
        papayya.tenants.set_budget(tenant, budget["amount"], budget.get("period", "month"))


class Provider:
    """Counts what it billed: one entry per call, keyed by the idempotency key papayya sent."""

    def __init__(self, output_tokens: int = MAX_TOKENS) -> None:
        self.billed: Counter[str] = Counter()
        self.output_tokens = output_tokens
        self._lock = threading.Lock()

    def __call__(self, *, prompt: str, key: str, max_tokens: int) -> dict[str, Any]:
        with self._lock:
            self.billed[key] += 1
        return {
            "model": "gpt-4o-mini",
            "choices": [{"finish_reason": "stop", "message": {"content": prompt.upper()}}],
            "usage": {
                "prompt_tokens": len(prompt) // 4 + 1,
                "completion_tokens": min(self.output_tokens, max_tokens),
            },
        }


def two_calls(provider: Provider, fail_once: set[str] | None = None) -> papayya.Agent:
    @agent(retries=2, backoff=0)
    def enrich(item: papayya.Item) -> dict[str, str]:
        first = run.llm("draft", provider="openai", model="gpt-4o-mini", max_tokens=MAX_TOKENS)(
            provider, prompt=f"draft {item.id}", key=run.idempotency_key("draft"), max_tokens=MAX_TOKENS
        )
        if fail_once is not None and item.id in fail_once:
            fail_once.discard(item.id)
            raise ConnectionError("worker lost its socket after the first call")
        second = run.llm("final", provider="openai", model="gpt-4o-mini", max_tokens=MAX_TOKENS)(
            provider, prompt=f"final {item.id}", key=run.idempotency_key("final"), max_tokens=MAX_TOKENS
        )
        return {
            "draft": first["choices"][0]["message"]["content"],
            "final": second["choices"][0]["message"]["content"],
        }

    return enrich


def one_call_agent(provider: Provider) -> papayya.Agent:
    """An agent making one capped LLM call per item."""

    @agent
    def one_call(item: papayya.Item) -> str:
        reply = run.llm("answer", provider="openai", model="gpt-4o-mini", max_tokens=MAX_TOKENS)(
            provider, prompt=f"question {item.id}", key=run.idempotency_key("answer"), max_tokens=MAX_TOKENS
        )
        return str(reply["choices"][0]["message"]["content"])

    return one_call


def ledger(rt: Runtime, tenant: str) -> list[tuple[str, Decimal | None, Decimal | None]]:
    with psycopg.connect(rt.store.url) as conn:
        return conn.execute(
            "SELECT idempotency_key, cost_usd, reserved_usd FROM papayya.llm_calls WHERE tenant_id = %s",
            (tenant,),
        ).fetchall()


def test_a_tenant_budget_pauses_the_run_and_resume_pays_nothing_twice(rt: Runtime, tenant: str) -> None:
    # Given a tenant with room for about a dozen calls, and a batch that needs 40
    priced_tenant(tenant, amount="0.80")
    provider = Provider()
    enrich = two_calls(provider, fail_once={"i03", "i07"})
    items = [{"id": f"i{n:02d}"} for n in range(20)]

    # When the batch runs, it pauses instead of failing
    paused = enrich.map(items, tenant=tenant, concurrency=4)
    assert paused.status == "paused"
    assert paused.paused_reason is not None
    assert paused.paused_reason.startswith("budget:tenant")
    assert paused.counts["failed"] == 0
    assert paused.counts.get("paused", 0) + paused.counts.get("queued", 0) > 0
    spent = sum((c or Decimal(0)) for _, c, _ in ledger(rt, tenant))
    assert spent <= Decimal("0.80")  # every call caps max_tokens: no overshoot at all
    assert "resume with: papayya resume" in str(paused)

    # Then resuming with the same budget pauses again at once, and a spent budget refuses to resume
    again = enrich.resume(paused.run_id)
    assert again.status == "paused"
    assert sum((c or Decimal(0)) for _, c, _ in ledger(rt, tenant)) <= Decimal("0.80")
    papayya.tenants.set_budget(tenant, "0.10")
    with pytest.raises(BudgetError, match="raise it with `papayya tenants set"):
        enrich.resume(paused.run_id)

    # When the budget is raised and the run resumed
    papayya.tenants.set_budget(tenant, "100")
    done = enrich.resume(paused.run_id)

    # Then every item finished, and the provider billed exactly what the ledger holds, once per step
    assert done.status == "completed"
    assert done.counts == {"succeeded": 20, "degraded": 0, "failed": 0}
    rows = ledger(rt, tenant)
    assert len(rows) == sum(provider.billed.values()) == 40
    assert all(n == 1 for n in provider.billed.values()), provider.billed
    assert sorted(k for k, _, _ in rows) == sorted(provider.billed)


def test_a_run_budget_on_top_of_the_tenant(rt: Runtime, tenant: str) -> None:
    priced_tenant(tenant)  # no tenant budget
    provider = Provider()
    result = two_calls(provider).map(
        [{"id": f"i{n}"} for n in range(10)], tenant=tenant, budget_usd="0.30", concurrency=2
    )
    assert result.status == "paused"
    assert result.paused_reason is not None
    assert result.paused_reason.startswith("budget:run")
    assert result.cost_usd <= Decimal("0.30")
    assert [b["scope"] for b in result.budget] == ["run"]


def test_64_threads_racing_one_budget_never_overshoot_with_capped_calls(rt: Runtime, tenant: str) -> None:
    budget = Decimal("2.00")
    priced_tenant(tenant, amount=str(budget), period="total")
    provider = Provider()

    one_call = one_call_agent(provider)
    result = one_call.map([{"id": f"q{n:03d}"} for n in range(300)], tenant=tenant, concurrency=64)

    assert result.status == "paused"
    rows = ledger(rt, tenant)
    spent = sum((c or Decimal(0)) for _, c, _ in rows)
    bound = sum(max(Decimal(0), (c or Decimal(0)) - (r or Decimal(0))) for _, c, r in rows)
    assert bound == 0  # capped calls never cost more than they reserved
    assert spent <= budget + bound
    assert len(rows) == sum(provider.billed.values())


def test_an_unpriced_model_under_a_budget_pauses_with_a_reason(rt: Runtime, tenant: str) -> None:
    papayya.tenants.add(tenant)
    papayya.tenants.set_budget(tenant, "5")

    @agent
    def mystery(item: papayya.Item) -> Any:
        return run.llm(provider="inhouse", model="llama-private", max_tokens=10)(
            lambda: {"usage": {"prompt_tokens": 1, "completion_tokens": 1}}
        )

    result = mystery.map([{"id": "a"}], tenant=tenant)
    assert result.status == "paused"
    assert result.paused_reason is not None
    assert result.paused_reason.startswith("unpriced: inhouse/llama-private has no known price")
    assert "--price" in result.paused_reason


def test_without_a_budget_an_unpriced_model_runs_and_is_flagged(rt: Runtime, tenant: str) -> None:
    @agent
    def mystery(item: papayya.Item) -> Any:
        return run.llm(provider="inhouse", model="llama-private", max_tokens=10)(
            lambda: {"usage": {"prompt_tokens": 1, "completion_tokens": 1}}
        )

    result = mystery.map([{"id": "a"}], tenant=tenant)
    assert (result.status, result.counts["succeeded"], result.unpriced_calls) == ("completed", 1, 1)


def test_a_person_pauses_a_running_run(rt: Runtime, tenant: str) -> None:
    both_started = threading.Barrier(3)  # the two workers in flight and this test
    release = threading.Event()
    provider = Provider()

    @agent
    def slow(item: papayya.Item) -> str:
        if item.id in ("i0", "i1"):
            both_started.wait(10)
        release.wait(10)
        reply = run.llm("answer", provider="openai", model="gpt-4o-mini", max_tokens=5)(
            provider, prompt=item.id, key=run.idempotency_key("answer"), max_tokens=5
        )
        return str(reply["choices"][0]["message"]["content"])

    results: list[papayya.RunResult] = []
    worker = threading.Thread(
        target=lambda: results.append(
            slow.map([{"id": f"i{n}"} for n in range(6)], tenant=tenant, concurrency=2)
        ),
        daemon=True,
    )
    worker.start()
    both_started.wait(10)
    run_id = papayya.runtime.get_runtime().store.run_list_detail(tenant_id=tenant, limit=1)[0]["run_id"]
    papayya.pause(run_id)
    release.set()
    worker.join(20)
    (result,) = results
    assert result.status == "paused"
    assert result.paused_reason == "manual: paused by a person"
    assert result.counts.get("paused", 0) == 2  # the two in flight stopped at their LLM call
    assert result.counts.get("queued", 0) == 4
    assert sum(provider.billed.values()) == 0
    with pytest.raises(BudgetError, match="not running"):
        papayya.pause(run_id)


def test_lowering_a_budget_below_spend_pauses_at_once(rt: Runtime, tenant: str) -> None:
    priced_tenant(tenant)
    two_calls(Provider()).map([{"id": "a"}], tenant=tenant)
    outcome = papayya.tenants.set_budget(tenant, "0.01")
    assert outcome["spent_usd"] > Decimal("0.01")
    assert outcome["paused_runs"] == []  # nothing is running; the next run will pause at once
    result = two_calls(Provider()).map([{"id": "b"}], tenant=tenant)
    assert result.status == "paused"


@pytest.mark.parametrize(
    ("amount", "period", "fragment"),
    [
        ("-5", "month", "must be a finite amount"),
        ("lots", "month", "is not a number"),
        ("5", "week", "Unknown budget period"),
    ],
)
def test_bad_budgets_are_one_sentence(
    rt: Runtime, tenant: str, amount: str, period: str, fragment: str
) -> None:
    papayya.tenants.add(tenant)
    with pytest.raises(BudgetError, match=fragment):
        papayya.tenants.set_budget(tenant, amount, period)


def test_only_a_paused_run_resumes(rt: Runtime, tenant: str) -> None:
    result = two_calls(Provider()).map([{"id": "a"}], tenant=tenant)
    with pytest.raises(BudgetError, match="is completed, not paused"):
        papayya.resume_run(result.run_id)


def test_a_step_asked_something_else_runs_again(rt: Runtime, tenant: str) -> None:
    calls: list[str] = []

    @agent(retries=1, backoff=0)
    def drifting(item: papayya.Item) -> str:
        question = f"v{run.attempt}"  # the request changes between attempts
        answer = run.step("ask")(lambda q: calls.append(q) or q.upper(), question)
        if run.attempt == 1:
            raise ConnectionError("retry me")
        return str(answer)

    result = drifting.map([{"id": "a"}], tenant=tenant)
    assert result.counts["succeeded"] == 1
    assert calls == ["v1", "v2"]


def test_a_busy_run_spends_its_budget_before_pausing(rt: Runtime, tenant: str) -> None:
    # Given 8 workers sharing one process's budget leases
    budget = Decimal("3.00")
    priced_tenant(tenant, amount=str(budget), period="total")
    provider = Provider()

    one_call = one_call_agent(provider)
    result = one_call.map([{"id": f"q{n:03d}"} for n in range(200)], tenant=tenant, concurrency=8)

    # Then the run pauses only when the budget is (nearly) spent, not when one worker's lease fails
    assert result.status == "paused"
    rows = ledger(rt, tenant)
    spent = sum((c or Decimal(0)) for _, c, _ in rows)
    worst_call = max((r or Decimal(0)) for _, _, r in rows)
    assert budget - 8 * worst_call <= spent <= budget
