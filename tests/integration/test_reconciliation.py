"""What the provider billed equals what the ledger holds, call for call, through everything at once.

The real ``openai`` and ``anthropic`` clients, instrumented, call papayya's FakeProvider from inside an
agent that makes two calls per item, while workers fail after their first call, the provider answers
500 now and then, and a tenant budget pauses the run part-way; the budget is then raised and the run
resumed. The fake's log of the requests it answered 200 (each with the idempotency key papayya sent)
is the provider's bill; the ``llm_calls`` table is papayya's. They must agree exactly.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anthropic
import openai
import psycopg
import pytest

import papayya
import papayya_anthropic
import papayya_openai
from papayya import agent
from papayya.runtime import Runtime
from papayya.testing import FakeProvider, FakeRequest, count_tokens

ITEMS = [f"i{n:02d}" for n in range(20)]
# One fault per item at most, early items (before the pause) and late ones (after the resume); a pause
# does not use up a retry (see the test at the end).
CRASH_AFTER_FIRST_CALL = {"i02", "i06", "i17"}  # the worker raises ConnectionError once, mid-item
PROVIDER_500 = ("draft i01", "final i04", "final i10", "draft i15")  # each answered 500 once
BUDGET = Decimal("0.25")
MAX_TOKENS = 10
# A negotiated $1 per 1,000 tokens either way: every call here costs 3 + 5 tokens, $0.008. Each
# reserves (38 prompt + 10 output tokens) $0.048, so 4 workers can never be refused before $0.058 is
# spent and are always refused once $0.202 is: the run pauses part-way, whatever the interleaving.
PRICE = {"input_mtok": "1000", "output_mtok": "1000"}
CALL_COST = Decimal("0.008")


@dataclass(frozen=True)
class Flavor:
    """One SDK: how to build its instrumented client and ask it one question."""

    provider: str
    model: str
    step: str
    client: Callable[[FakeProvider], Any]
    ask: Callable[[Any, str], str]


def _openai_client(fake: FakeProvider) -> openai.OpenAI:
    # max_retries=0: retries are papayya's business here, not the SDK's.
    return papayya_openai.instrument(openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0))


def _openai_ask(client: openai.OpenAI, prompt: str) -> str:
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        max_completion_tokens=MAX_TOKENS,
        messages=[{"role": "user", "content": prompt}],
    )
    return reply.choices[0].message.content or ""


def _anthropic_client(fake: FakeProvider) -> anthropic.Anthropic:
    return papayya_anthropic.instrument(
        anthropic.Anthropic(base_url=fake.anthropic_url, api_key="test", max_retries=0)
    )


def _anthropic_ask(client: anthropic.Anthropic, prompt: str) -> str:
    message = client.messages.create(
        model="claude-3-5-haiku-latest",
        max_tokens=MAX_TOKENS,
        messages=[{"role": "user", "content": prompt}],
    )
    block = message.content[0]
    assert block.type == "text"
    return block.text


FLAVORS = [
    Flavor("openai", "gpt-4o-mini", "openai.chat", _openai_client, _openai_ask),
    Flavor("anthropic", "claude-3-5-haiku-latest", "anthropic.messages", _anthropic_client, _anthropic_ask),
]


@pytest.fixture(params=FLAVORS, ids=lambda f: f.provider)
def flavor(request: pytest.FixtureRequest) -> Flavor:
    result: Flavor = request.param
    return result


@pytest.fixture
def client(flavor: Flavor, fake: FakeProvider) -> Iterator[Any]:
    c = flavor.client(fake)
    with c:
        yield c


def asking(prompt: str) -> Callable[[FakeRequest], bool]:
    return lambda request: prompt in request.prompt


def ledger(rt: Runtime, tenant: str) -> list[dict[str, Any]]:
    with psycopg.connect(rt.store.url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(
            "SELECT item_id, step_key, idempotency_key, cost_usd, reserved_usd FROM papayya.llm_calls "
            "WHERE tenant_id = %s",
            (tenant,),
        ).fetchall()


def test_the_provider_bill_equals_the_ledger_through_crashes_500s_a_budget_pause_and_resume(
    rt: Runtime, tenant: str, fake: FakeProvider, flavor: Flavor, client: Any
) -> None:
    # Given a tenant with a negotiated price and a budget for about half the batch
    papayya.tenants.add(tenant)
    papayya.tenants.set_price(tenant, flavor.provider, flavor.model, **PRICE)
    papayya.tenants.set_budget(tenant, str(BUDGET), "total")
    # and a provider that answers some calls 500 once, and workers that die after some first calls
    for prompt in PROVIDER_500:
        fake.fail(500, times=1, when=asking(prompt))
    crash_once = set(CRASH_AFTER_FIRST_CALL)
    crash_lock = threading.Lock()

    @agent(retries=2, backoff=0)
    def enrich(item: papayya.Item) -> dict[str, str]:
        draft = flavor.ask(client, f"draft {item.id}")
        with crash_lock:
            crash = item.id in crash_once
            crash_once.discard(item.id)
        if crash:
            raise ConnectionError("the worker lost its socket after the first call")
        final = flavor.ask(client, f"final {item.id}")
        return {"draft": draft, "final": final}

    # When the batch runs, the budget pauses it part-way, never overspent
    paused = enrich.map([{"id": i} for i in ITEMS], tenant=tenant, concurrency=4)
    assert paused.status == "paused"
    assert paused.paused_reason is not None
    assert paused.paused_reason.startswith("budget:tenant")
    assert paused.counts["failed"] == 0
    rows = ledger(rt, tenant)
    assert 0 < len(rows) < 2 * len(ITEMS)
    assert sum(r["cost_usd"] for r in rows) <= BUDGET
    assert all(r["cost_usd"] <= r["reserved_usd"] for r in rows)  # capped calls: no overshoot at all
    assert paused.counts["succeeded"] > 0
    assert paused.counts.get("paused", 0) + paused.counts.get("queued", 0) > 0

    # When the budget is raised and the run resumed
    papayya.tenants.set_budget(tenant, "100", "total")
    done = enrich.resume(paused.run_id)

    # Then every item succeeded, every injected fault happened, and each answer is the right one
    assert done.status == "completed"
    assert done.counts == {"succeeded": len(ITEMS), "degraded": 0, "failed": 0}
    assert crash_once == set()
    assert [r.status for r in fake.requests].count(500) == len(PROVIDER_500)
    for item in done.items():
        output = rt.store.item_detail(item.item_id, tenant)["output"]
        assert output == {"draft": f"You said: draft {item.key}", "final": f"You said: final {item.key}"}

    # and the provider's bill is the ledger, call for call: same idempotency keys, each once
    rows = ledger(rt, tenant)
    billed = Counter(r.idempotency_key for r in fake.requests if r.status == 200)
    recorded = Counter(r["idempotency_key"] for r in rows)
    assert billed == recorded
    assert len(rows) == sum(billed.values()) == 2 * len(ITEMS)
    assert set(billed.values()) == {1}, "a call was billed twice"
    # and no journal step (item, step) was paid twice; the retries reused the recorded calls
    steps = Counter((r["item_id"], r["step_key"]) for r in rows)
    assert set(steps.values()) == {1}
    assert {k for _, k in steps} == {f"llm:{flavor.step}#1", f"llm:{flavor.step}#2"}
    assert all(r["idempotency_key"] == f"papayya-{r['item_id']}-{r['step_key']}" for r in rows)
    # and a request answered 500 was sent again with the same key, then billed once
    failed_keys = {r.idempotency_key for r in fake.requests if r.status == 500}
    assert len(failed_keys) == len(PROVIDER_500)
    assert failed_keys <= set(billed)
    # and the money adds up to the negotiated price of exactly the calls billed
    tokens = count_tokens("draft i00") + count_tokens("You said: draft i00")
    assert Decimal(tokens) / 1000 == CALL_COST
    assert sum(r["cost_usd"] for r in rows) == CALL_COST * 2 * len(ITEMS)


def test_a_pause_does_not_use_up_a_retry(rt: Runtime, tenant: str, fake: FakeProvider) -> None:
    # Given an agent with one retry whose item pauses at its first call (no budget at all)
    papayya.tenants.add(tenant)
    papayya.tenants.set_price(tenant, "openai", "gpt-4o-mini", **PRICE)
    papayya.tenants.set_budget(tenant, "0", "total")
    client = _openai_client(fake)
    crashed: list[str] = []

    @agent(retries=1, backoff=0)
    def once(item: papayya.Item) -> str:
        answer = _openai_ask(client, f"draft {item.id}")
        if not crashed:
            crashed.append(item.id)
            raise ConnectionError("the worker lost its socket after the first call")
        return answer

    paused = once.map([{"id": "a"}], tenant=tenant)
    assert paused.counts.get("paused") == 1
    assert fake.count == 0

    # When the budget is raised, the run resumed, and the item's first real try fails retryably
    papayya.tenants.set_budget(tenant, "100", "total")
    try:
        done = once.resume(paused.run_id)
    finally:
        client.close()

    # Then it still gets the retry it was promised, and succeeds without paying for the call again
    assert done.counts["succeeded"] == 1
    assert fake.count == 1
