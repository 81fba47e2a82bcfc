"""The rate limiter on the real call path: run.llm takes from the buckets and a 429 closes the key."""

from __future__ import annotations

import time

import openai

import papayya_openai
from papayya import agent
from papayya.runtime import Runtime
from papayya.testing import FakeProvider

MODEL = "gpt-4o-mini"


def test_instrumented_calls_take_from_the_shared_bucket(rt: Runtime, tenant: str, fake: FakeProvider) -> None:
    # Scoped to this test's tenant, and removed after: the session database is shared by every test.
    rt.ratelimits.set_limit("openai", MODEL, tenant_id=tenant, requests_per_minute=60)
    try:
        _run_five(rt, tenant, fake)
    finally:
        rt.ratelimits.remove_limit("openai", MODEL, tenant_id=tenant)


def _run_five(rt: Runtime, tenant: str, fake: FakeProvider) -> None:
    client = papayya_openai.instrument(openai.OpenAI(base_url=fake.openai_url, api_key="t", max_retries=0))

    @agent
    def ask(item: object) -> str:
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
        return str(reply.choices[0].message.content)

    result = ask.map([{"id": f"i{n}"} for n in range(5)], tenant=tenant)
    assert result.counts["succeeded"] == 5
    (limit,) = [lim for lim in rt.ratelimits.list_limits() if lim.tenant_id == tenant]
    assert limit.requests_available is not None
    # Five taken; the bucket refills one a second, so this holds unless the run took over 2 s more.
    assert limit.requests_available <= 57


def test_a_429_closes_the_model_for_every_worker_until_retry_after(
    rt: Runtime, tenant: str, fake: FakeProvider
) -> None:
    client = papayya_openai.instrument(openai.OpenAI(base_url=fake.openai_url, api_key="t", max_retries=0))
    fake.fail(429, retry_after=1, times=1)
    seen_closed: list[float] = []

    @agent(retries=1, backoff=0)
    def ask(item: object) -> str:
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
        return str(reply.choices[0].message.content)

    original = rt.ratelimits.close

    def close(provider: str, model: str, retry_after: float) -> None:
        seen_closed.append(retry_after)
        original(provider, model, retry_after)

    rt.ratelimits.close = close  # type: ignore[method-assign]
    started = time.monotonic()
    result = ask.map([{"id": "a"}], tenant=tenant)
    waited = time.monotonic() - started
    assert result.counts["succeeded"] == 1
    assert seen_closed == [1.0]
    assert waited >= 0.8  # the retry waited out the closure instead of hitting the provider again
    assert fake.count == 2
