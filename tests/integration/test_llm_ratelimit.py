"""The rate limiter on the real call path: run.llm takes from the buckets and a 429 closes the key."""

from __future__ import annotations

import time

import openai
import pytest

import papayya_openai
from papayya import agent
from papayya.ratelimit import RateLimiter
from papayya.runtime import Runtime
from papayya.testing import FakeProvider

MODEL = "gpt-4o-mini"


# A rate-limit "minute" of about 30 years: the bucket refills 60 requests per PERIOD seconds, so over
# any run this test can take (even a machine under load) it gains far less than one request and the
# count left is exact. The period is a RateLimiter parameter for this; the rule is the same.
PERIOD = 1e9


def test_instrumented_calls_take_from_the_shared_bucket(
    rt: Runtime, tenant: str, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rt, "ratelimits", RateLimiter(rt.store, period=PERIOD))
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
    assert fake.count == 5
    # The bucket is in the store: another worker's limiter (a second instance) sees the five taken.
    other_worker = RateLimiter(rt.store, period=PERIOD)
    (limit,) = [lim for lim in other_worker.list_limits() if lim.tenant_id == tenant]
    assert limit.requests_available == 60 - 5


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
