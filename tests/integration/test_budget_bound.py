"""The budget bound on the real call path: a provider billing more input than papayya can see.

papayya reserves each call's worst case before it is sent; a provider that bills more prompt tokens
than papayya's estimate (a tokenizer or a file it cannot see) overshoots a budget by that difference
only, Σ max(0, actual - reserved) over the calls, which the ledger holds (``cost_usd``,
``reserved_usd``). ``max_input_tokens`` set to what the provider bills closes the gap.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import openai
import psycopg

import papayya
from papayya import agent, run
from papayya.runtime import Runtime
from papayya.testing import FakeProvider, FakeRequest, Reply

MODEL = "gpt-4o-mini"
# A negotiated $10 per million tokens either way: one token is $0.00001.
PRICE = {"input_mtok": "10", "output_mtok": "10"}
BUDGET = Decimal("1.00")
BILLED_INPUT = 5_000  # what the provider bills for a prompt of a few dozen characters
MAX_TOKENS = 20
THREADS = 64


def dense_bill(request: FakeRequest) -> Reply:
    """The provider's tokenizer sees 5,000 input tokens where papayya sees a short ASCII prompt."""
    return Reply("ok", input_tokens=BILLED_INPUT, output_tokens=MAX_TOKENS)


def asker(fake: FakeProvider, **reserve: Any) -> papayya.Agent:
    client = openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0)

    @agent
    def ask(item: papayya.Item) -> str:
        reply = run.llm("ask", provider="openai", model=MODEL, max_tokens=MAX_TOKENS, **reserve)(
            client.chat.completions.create,
            model=MODEL,
            messages=[{"role": "user", "content": f"describe scan {item.id}"}],
            max_tokens=MAX_TOKENS,
            extra_headers={"Idempotency-Key": run.idempotency_key("ask")},
        )
        return str(reply.choices[0].message.content)

    return ask


def ledger(rt: Runtime, tenant: str) -> list[tuple[Decimal, Decimal]]:
    """(cost_usd, reserved_usd) of every call the tenant paid for."""
    with psycopg.connect(rt.store.url) as conn:
        rows = conn.execute(
            "SELECT cost_usd, reserved_usd FROM papayya.llm_calls WHERE tenant_id = %s", (tenant,)
        ).fetchall()
    return [(Decimal(c), Decimal(r or 0)) for c, r in rows]


def budgeted_tenant(tenant: str) -> None:
    papayya.tenants.add(tenant)
    papayya.tenants.set_price(tenant, "openai", MODEL, **PRICE)
    papayya.tenants.set_budget(tenant, str(BUDGET), "total")


def test_dense_input_overshoots_by_at_most_what_calls_cost_beyond_their_reservation(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    # Given a $1.00 budget, and a provider billing 5,000 input tokens for each short prompt
    budgeted_tenant(tenant)
    fake.reply = dense_bill

    # When 64 threads race through more work than the budget pays for
    result = asker(fake).map([{"id": f"s{n:03d}"} for n in range(400)], tenant=tenant, concurrency=THREADS)

    # Then the run pauses; the budget was overshot, but by no more than what the calls cost beyond
    # their reservations, and the ledger holds every call the provider billed
    assert result.status == "paused"
    rows = ledger(rt, tenant)
    spent = sum(c for c, _ in rows)
    bound = sum(max(Decimal(0), c - r) for c, r in rows)
    figures = f"{len(rows)} calls: spent ${spent} of ${BUDGET}, overshoot ${spent - BUDGET}, bound ${bound}"
    assert spent > BUDGET, figures  # real: papayya cannot see the provider's tokenizer
    assert spent - BUDGET <= bound, figures
    assert len(rows) == len(fake.bill)
    assert {e.input_tokens for e in fake.bill} == {BILLED_INPUT}


def test_max_input_tokens_as_billed_never_overshoots(rt: Runtime, tenant: str, fake: FakeProvider) -> None:
    # Given the same budget and provider, and calls that reserve the 5,000 input tokens it bills
    budgeted_tenant(tenant)
    fake.reply = dense_bill

    # When 64 threads race through more work than the budget pays for
    ask = asker(fake, max_input_tokens=BILLED_INPUT)
    result = ask.map([{"id": f"s{n:03d}"} for n in range(400)], tenant=tenant, concurrency=THREADS)

    # Then the run pauses within the budget, having spent most of it: no call cost more than it reserved
    assert result.status == "paused"
    rows = ledger(rt, tenant)
    spent = sum(c for c, _ in rows)
    assert all(c <= r for c, r in rows)
    assert BUDGET / 2 < spent <= BUDGET
    assert len(rows) == len(fake.bill)


def dense_tokenizer(request: FakeRequest) -> Reply:
    """Bills the most a real tokenizer would: 2 tokens a CJK character, 1 per 4 ASCII characters, and
    1,445 tokens an image (gpt-4o at high detail, 8 tiles)."""
    dense = sum(1 for ch in request.prompt if ord(ch) > 127)
    images = json.dumps(request.body).count('"image_url"')
    billed = 2 * dense + (len(request.prompt) - dense) // 4 + 1 + 1_445 * images
    return Reply("ok", input_tokens=billed, output_tokens=MAX_TOKENS)


def test_cjk_text_and_images_are_reserved_for_in_full(rt: Runtime, tenant: str, fake: FakeProvider) -> None:
    # Given a budget, and prompts in Japanese with an image, billed as densely as a real tokenizer does
    papayya.tenants.add(tenant)
    papayya.tenants.set_price(tenant, "openai", "gpt-4o", **PRICE)
    papayya.tenants.set_budget(tenant, str(BUDGET), "total")
    fake.reply = dense_tokenizer
    client = openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0)

    @agent
    def read(item: papayya.Item) -> str:
        content = [
            {
                "type": "text",
                "text": f"この請求書{item.id}の合計金額と支払期日を日本語で答えてください。" * 8,
            },
            {"type": "image_url", "image_url": {"url": f"https://example.com/{item.id}.png"}},
        ]
        reply = run.llm("read", provider="openai", model="gpt-4o")(
            client.chat.completions.create,
            model="gpt-4o",
            messages=[{"role": "user", "content": content}],
            max_tokens=MAX_TOKENS,
        )
        return str(reply.choices[0].message.content)

    # When 64 threads race through more work than the budget pays for
    result = read.map([{"id": f"r{n:03d}"} for n in range(200)], tenant=tenant, concurrency=THREADS)

    # Then papayya's estimate covered every call: the budget holds
    assert result.status == "paused"
    rows = ledger(rt, tenant)
    assert all(c <= r for c, r in rows)
    assert sum(c for c, _ in rows) <= BUDGET


def test_an_unusable_reservation_fails_the_item_before_anything_is_paid(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    result = asker(fake, max_input_tokens=-1).map([{"id": "a"}], tenant=tenant)
    assert result.counts["failed"] == 1
    with psycopg.connect(rt.store.url) as conn:
        (error,) = conn.execute(
            "SELECT error FROM papayya.attempts WHERE tenant_id = %s", (tenant,)
        ).fetchone() or (None,)
    assert error["type"] == "BudgetError"
    assert error["message"].startswith("run.llm(max_input_tokens=-1) is not usable: give a finite number")
    assert fake.count == 0
