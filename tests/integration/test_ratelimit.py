"""Rate limits shared through PostgreSQL: by threads, by other processes, and after a provider's 429.

Each test limits a provider name of its own (and removes its limits afterwards), so no other test,
in this session's database, is slowed down by them. Limits are per "minute" of ``period`` seconds: a
short period makes a test wait a second where production would wait a minute, and a very long one
(``NO_REFILL``) stops refilling, so exactly the allowance is granted and the rest is refused.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest

from papayya.ratelimit import ANY, RateLimiter, retry_after_of
from papayya.runtime import Runtime
from papayya.store import Store
from papayya.testing import FakeProvider

NO_REFILL = 1e9  # seconds in a "minute": nothing comes back during a test

# Another papayya process: its own Store (pool) and RateLimiter on the same database. It warms up,
# says "ready", waits for "go" on stdin, then runs THREADS threads of N calls each and prints what
# it got as JSON: how many try_acquire calls were granted, or when each acquire returned.
WORKER = r"""
import json, sys, threading, time
from papayya.ratelimit import RateLimiter
from papayya.store import Store

url, provider, model, tenant, mode = sys.argv[1:6]
threads, calls, tokens, period = int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8]), float(sys.argv[9])
store = Store(url, pool_size=threads + 1, auto_migrate=False)
limiter = RateLimiter(store, period=period)
limiter.closed_for(provider, model)  # read the limits once before the start
print("ready", flush=True)
sys.stdin.readline()
granted, stamps, lock = [0], [], threading.Lock()

def work():
    for _ in range(calls):
        if mode == "try":
            ok = limiter.try_acquire(provider, model, tenant, tokens) == 0
            with lock:
                granted[0] += ok
        else:
            limiter.acquire(provider, model, tenant, tokens)
            with lock:
                stamps.append(time.time())

pool = [threading.Thread(target=work) for _ in range(threads)]
for t in pool:
    t.start()
for t in pool:
    t.join()
print(json.dumps({"granted": granted[0], "stamps": stamps}), flush=True)
store.close()
"""


@pytest.fixture
def provider(rt: Runtime) -> Iterator[str]:
    """A provider name no other test uses; its limits are removed afterwards."""
    name = f"p-{uuid.uuid4().hex[:8]}"
    yield name
    limiter = RateLimiter(rt.store)
    for limit in limiter.list_limits():
        if limit.provider.startswith(name):
            limiter.remove_limit(limit.provider, limit.model, limit.tenant_id)


@pytest.fixture
def other_store(database_url: str) -> Iterator[Store]:
    """A second pool on the same database, as another process would have."""
    store = Store(database_url, pool_size=4, auto_migrate=False)
    yield store
    store.close()


def run_workers(
    database_url: str,
    provider: str,
    *,
    mode: str,
    processes: int,
    threads: int,
    calls: int,
    local: Callable[[], Any],
    model: str = "gpt-4o",
    tenant: str = "t1",
    tokens: int = 0,
    period: float = NO_REFILL,
) -> tuple[list[dict[str, Any]], Any]:
    """Start ``processes`` worker processes, then release them and ``local()`` (this process) at once."""
    args = [database_url, provider, model, tenant, mode, threads, calls, tokens, period]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        mine = local()
        reports = []
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports, mine
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def in_threads(n: int, fn: Callable[[], Any]) -> list[Any]:
    results: list[Any] = []
    lock = threading.Lock()

    def work() -> None:
        value = fn()
        with lock:
            results.append(value)

    pool = [threading.Thread(target=work) for _ in range(n)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return results


# -- the allowance is shared ------------------------------------------------------------------------


def test_threads_and_processes_together_get_exactly_the_allowance(
    rt: Runtime, provider: str, database_url: str
) -> None:
    # Given 30 requests per minute for the provider, and a minute that never ends
    limiter = RateLimiter(rt.store, period=NO_REFILL)
    limiter.set_limit(provider, requests_per_minute=300)

    # When two other processes (4 threads each) and 4 threads here ask 20 times each, all at once
    def here() -> int:
        return sum(
            in_threads(
                4, lambda: sum(limiter.try_acquire(provider, "gpt-4o", "t1", 0) == 0 for _ in range(20))
            )
        )

    reports, granted_here = run_workers(
        database_url, provider, mode="try", processes=2, threads=4, calls=60, local=here
    )

    # Then 30 of the 240 requests are granted, no more, wherever they came from
    assert granted_here + sum(r["granted"] for r in reports) == 300
    (limit,) = [x for x in limiter.list_limits() if x.provider == provider]
    assert limit.requests_available == 0


def test_a_second_process_waits_for_the_minute_the_first_one_used(
    rt: Runtime, provider: str, database_url: str
) -> None:
    # Given 10 requests per 1-second "minute"
    limiter = RateLimiter(rt.store, period=1.0)
    limiter.set_limit(provider, requests_per_minute=10)
    stamps_here: list[float] = []
    lock = threading.Lock()

    def here() -> list[float]:
        def work() -> None:
            for _ in range(3):
                limiter.acquire(provider, "gpt-4o", "t1", 0)
                with lock:
                    stamps_here.append(time.time())

        in_threads(2, work)
        return stamps_here

    # When 30 requests come from two other processes and this one, at once
    reports, mine = run_workers(
        database_url, provider, mode="acquire", processes=2, threads=2, calls=6, local=here, period=1.0
    )
    stamps = sorted(mine + [s for r in reports for s in r["stamps"]])

    # Then all 30 were made, but over at least 2 s: 10 at once, then 10 per second for the other 20
    # (each process alone would have been done in half a second)
    assert len(stamps) == 30
    assert stamps[-1] - stamps[0] >= 1.6


def test_tokens_per_minute_are_counted_and_given_back_after_the_call(rt: Runtime, provider: str) -> None:
    limiter = RateLimiter(rt.store, period=NO_REFILL)
    limiter.set_limit(provider, "gpt-4o", tokens_per_minute=100)

    assert limiter.try_acquire(provider, "gpt-4o", "t1", 60) == 0
    assert limiter.try_acquire(provider, "gpt-4o", "t1", 60) > 0  # 40 left: refused, nothing taken
    assert limiter.try_acquire(provider, "gpt-4o", "t1", 40) == 0
    assert limiter.try_acquire(provider, "gpt-4o", "t1", 1) > 0

    # The first call was estimated at 60 tokens and used 10: 50 come back.
    limiter.settle(provider, "gpt-4o", "t1", estimated=60, used=10)
    assert limiter.try_acquire(provider, "gpt-4o", "t1", 50) == 0
    assert limiter.try_acquire(provider, "gpt-4o", "t1", 1) > 0

    # A call estimated above a whole minute's allowance goes through on a full bucket (not never),
    # and the bucket is in debt until the excess has been paid back.
    limiter.set_limit(provider, "big", tokens_per_minute=10)
    assert limiter.try_acquire(provider, "big", "t1", 25) == 0
    assert limiter.try_acquire(provider, "big", "t1", 0) > 0


def test_a_call_waits_until_the_bucket_has_its_tokens(rt: Runtime, provider: str) -> None:
    limiter = RateLimiter(rt.store, period=2.0)  # 100 tokens per 2 s: 50 tokens a second
    limiter.set_limit(provider, "gpt-4o", tokens_per_minute=100)

    limiter.acquire(provider, "gpt-4o", "t1", 100)
    waited = limiter.acquire(provider, "gpt-4o", "t1", 50)

    assert waited >= 0.8  # 50 tokens at 50 a second


def test_wildcard_model_and_per_tenant_limits_all_apply(rt: Runtime, provider: str) -> None:
    # Given 5 requests for the provider, 4 for model m1 (every tenant) and 2 for tenant A (every model)
    limiter = RateLimiter(rt.store, period=NO_REFILL)
    limiter.set_limit(provider, requests_per_minute=5)
    limiter.set_limit(provider, "m1", requests_per_minute=4)
    limiter.set_limit(provider, tenant_id="A", requests_per_minute=2)

    def granted(model: str, tenant: str) -> int:
        return sum(limiter.try_acquire(provider, model, tenant, 0) == 0 for _ in range(10))

    # Tenant A stops at its own 2; a refused request costs the other limits nothing
    assert granted("m1", "A") == 2
    # Tenant B gets what is left of m1's 4
    assert granted("m1", "B") == 2
    # Another model gets what is left of the provider's 5, whoever asks
    assert granted("m2", "B") == 1
    assert granted("m2", "C") == 0
    # Another provider is not limited at all
    assert granted("m1", "A") == 0
    assert sum(limiter.try_acquire(f"{provider}-x", "m1", "A", 0) == 0 for _ in range(10)) == 10

    available = {
        (x.model, x.tenant_id): x.requests_available for x in limiter.list_limits() if x.provider == provider
    }
    assert available == {(ANY, ANY): 0, ("m1", ANY): 0, (ANY, "A"): 0}


# -- no cost when nothing is configured ------------------------------------------------------------


def test_with_no_limit_on_the_key_acquire_makes_no_database_round_trip(
    rt: Runtime, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: Counter[str] = Counter()
    for name in ("rate_snapshot", "rate_take", "rate_settle", "rate_close"):
        original = getattr(rt.store, name)

        def counted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(rt.store, name, counted)
    limiter = RateLimiter(rt.store, refresh=3600)
    limiter.set_limit(f"{provider}-other", requests_per_minute=1)  # a limit on another provider only

    for _ in range(1000):
        limiter.acquire(provider, "gpt-4o", "t1", 500)
        limiter.settle(provider, "gpt-4o", "t1", 500, 20)

    async def many() -> None:
        await asyncio.gather(*(limiter.acquire_async(provider, "gpt-4o", "t1", 500) for _ in range(100)))

    asyncio.run(many())
    assert calls == {"rate_snapshot": 1}  # the cached limits, read once

    # With a limit on the key, each call asks the database.
    limiter.set_limit(provider, "gpt-4o", requests_per_minute=1000)
    limiter.acquire(provider, "gpt-4o", "t1", 500)
    assert calls == {"rate_snapshot": 2, "rate_take": 1}


def test_a_limit_set_or_removed_elsewhere_applies_here_within_a_second(
    rt: Runtime, provider: str, other_store: Store
) -> None:
    here = RateLimiter(rt.store, period=NO_REFILL, refresh=1.0)
    elsewhere = RateLimiter(other_store, period=NO_REFILL)
    assert here.try_acquire(provider, "gpt-4o", "t1", 0) == 0  # not limited: the cache says so

    elsewhere.set_limit(provider, requests_per_minute=1)
    deadline = time.monotonic() + 5
    while here.try_acquire(provider, "gpt-4o", "t1", 0) == 0:
        assert time.monotonic() < deadline, "the new limit never reached the other limiter"
        time.sleep(0.05)

    elsewhere.remove_limit(provider)
    deadline = time.monotonic() + 5
    while here.try_acquire(provider, "gpt-4o", "t1", 0) > 0:
        assert time.monotonic() < deadline, "the removed limit still applies"
        time.sleep(0.05)


# -- a 429 closes the key for everyone ---------------------------------------------------------------


def test_a_closure_reaches_another_process_within_a_second_and_is_waited_out(
    rt: Runtime, provider: str, other_store: Store
) -> None:
    first = RateLimiter(rt.store)
    second = RateLimiter(other_store, refresh=1.0)
    second.acquire(provider, "gpt-4o", "t1", 0)  # its cache is now fresh, and knows of no closure

    closed_at = time.monotonic()
    first.close(provider, "gpt-4o", 2.5)

    # It may trust its cache for up to a second (and make calls meanwhile); then it sees the closure
    # and waits until the closure ends.
    while second.acquire(provider, "gpt-4o", "t1", 0) < 0.1:
        assert time.monotonic() - closed_at < 5, "the closure never reached the other limiter"
        time.sleep(0.05)
    assert time.monotonic() - closed_at >= 2.5 - 0.1
    assert second.closed_for(provider, "other-model") == 0


def test_a_closure_is_never_shortened_and_a_limited_key_sees_it_at_once(
    rt: Runtime, provider: str, other_store: Store
) -> None:
    first = RateLimiter(rt.store)
    second = RateLimiter(other_store, refresh=3600)
    second.set_limit(provider, requests_per_minute=1000)
    assert second.try_acquire(provider, "gpt-4o", "t1", 0) == 0  # cached: limited, no closure

    first.close(provider, "gpt-4o", 30)
    first.close(provider, "gpt-4o", 1)  # a later, shorter Retry-After

    (closure,) = [c for c in first.closures() if c.provider == provider]
    assert closure.closed_for > 25
    # The cache of the second limiter is an hour old by its own rules, but a limited key asks the
    # database, which knows of the closure.
    assert second.try_acquire(provider, "gpt-4o", "t1", 0) > 25
    assert second.closed_for(provider, "gpt-4o") > 25

    first.close(provider, ANY, 5)  # every model of the provider
    assert first.closed_for(provider, "another-model") > 4


def test_acquire_async_waits_without_blocking_the_event_loop(rt: Runtime, provider: str) -> None:
    limiter = RateLimiter(rt.store, period=1.0)
    limiter.set_limit(provider, requests_per_minute=2)

    async def scenario() -> tuple[list[float], int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.02)

        task = asyncio.create_task(ticker())
        waits = await asyncio.gather(*(limiter.acquire_async(provider, "m", "t1", 0) for _ in range(4)))
        done.set()
        await task
        return sorted(waits), ticks

    waits, ticks = asyncio.run(scenario())
    assert waits[-1] >= 0.8  # 2 at once, then one every half second
    assert ticks >= 10  # the loop kept running while they waited


# -- reading the real SDKs' 429 ------------------------------------------------------------------------


def test_the_openai_and_anthropic_429_retry_after_closes_the_model(
    rt: Runtime, provider: str, fake: FakeProvider
) -> None:
    limiter = RateLimiter(rt.store)
    messages = [{"role": "user", "content": "hi"}]

    fake.fail(429, retry_after=1.5)
    with (
        openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0) as client,
        pytest.raises(openai.RateLimitError) as openai_error,
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    fake.fail(429, retry_after=2)
    with (
        anthropic.Anthropic(base_url=fake.anthropic_url, api_key="test", max_retries=0) as claude,
        pytest.raises(anthropic.RateLimitError) as anthropic_error,
    ):
        claude.messages.create(model="claude-haiku", max_tokens=10, messages=messages)
    fake.fail(500, retry_after=3)
    with (
        openai.OpenAI(base_url=fake.openai_url, api_key="test", max_retries=0) as client,
        pytest.raises(openai.InternalServerError) as server_error,
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)

    assert retry_after_of(openai_error.value) == 1.5
    assert retry_after_of(anthropic_error.value) == 2.0
    assert retry_after_of(server_error.value) is None

    seconds = retry_after_of(openai_error.value)
    assert seconds is not None
    limiter.close(provider, "gpt-4o-mini", seconds)
    assert limiter.acquire(provider, "gpt-4o-mini", "t1", 0) >= 1.3
