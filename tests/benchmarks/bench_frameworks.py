"""What papayya adds per call through LiteLLM, LangChain and Bedrock, run on demand (not part of the suite):

    python tests/benchmarks/bench_frameworks.py [--smoke]    # embedded PostgreSQL under a temp dir
    PAPAYYA_DATABASE_URL=postgresql://... python tests/benchmarks/bench_frameworks.py

The real libraries call papayya's FakeProvider on 127.0.0.1 (in this process) from inside an agent,
one call after another, gpt-4o-mini through each library's OpenAI path (Claude 3.5 Haiku through
Bedrock's Converse API). Measured in the same run:

- LiteLLM: ``litellm.completion`` bare (``papayya_litellm.uninstrument()``) and instrumented, taking
  turns within each round, so load elsewhere hits both alike;
- Bedrock: boto3's ``bedrock-runtime`` ``converse`` bare (``papayya_bedrock.uninstrument``) and
  instrumented, taking turns within each round as LiteLLM's;
- LangChain: ``ChatOpenAI.invoke`` bare, then with ``papayya_langchain.install()`` (the handler and
  cache cannot be taken out of a process once installed, so the bare rounds come first).

The difference is what papayya adds to each call (budget reservation, price, one ledger+journal
write, settlement; for LangChain also the cache lookup). The fake answers in about a millisecond, far
faster than a real provider, so this is the worst case for the ratio. ``--smoke`` runs one tiny round
(CI: it still runs; the figures mean nothing).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import uuid
from collections.abc import Callable

from machine import configure_store, print_header  # beside this file (run as a script)

import papayya
import papayya_bedrock
import papayya_langchain
import papayya_litellm  # before litellm: keeps its price map offline
from papayya import agent
from papayya.testing import FakeProvider

N_CALLS = int(os.environ.get("BENCH_CALLS", "300"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
MODEL = "gpt-4o-mini"
BEDROCK_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"

Timing = tuple[float, float]  # (CPU seconds, wall seconds) per call


def timed(call: Callable[[int], object], n: int) -> Timing:
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        call(i)
    return (time.process_time() - cpu) / n, (time.perf_counter() - wall) / n


def bench(fake: FakeProvider) -> dict[str, Timing]:
    import boto3
    import litellm
    from langchain_openai import ChatOpenAI

    logging.getLogger("LiteLLM").setLevel(logging.WARNING)
    timings: dict[str, list[Timing]] = {
        k: [] for k in ("litellm bare", "litellm", "bedrock bare", "bedrock", "langchain bare", "langchain")
    }

    def via_litellm(i: int) -> object:
        return litellm.completion(
            model=f"openai/{MODEL}",
            api_base=fake.openai_url,
            api_key="bench",
            max_tokens=16,
            max_retries=0,
            messages=[{"role": "user", "content": f"question {i}"}],
        )

    bedrock = boto3.client(
        "bedrock-runtime",
        endpoint_url=fake.url,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )

    def via_bedrock(i: int) -> object:
        return bedrock.converse(
            modelId=BEDROCK_MODEL,
            messages=[{"role": "user", "content": [{"text": f"question {i}"}]}],
            inferenceConfig={"maxTokens": 16},
        )

    chat = ChatOpenAI(model=MODEL, base_url=fake.openai_url, api_key=lambda: "bench", max_retries=0)

    def via_langchain(i: int) -> object:
        return chat.invoke(f"question {i}", max_tokens=16)

    @agent
    def litellm_caller(item: papayya.Item) -> str:
        papayya_litellm.uninstrument()
        timings["litellm bare"].append(timed(via_litellm, N_CALLS))
        papayya_litellm.instrument()
        timings["litellm"].append(timed(via_litellm, N_CALLS))
        return "ok"

    @agent
    def bedrock_caller(item: papayya.Item) -> str:
        papayya_bedrock.uninstrument(bedrock)
        timings["bedrock bare"].append(timed(via_bedrock, N_CALLS))
        papayya_bedrock.instrument(bedrock)
        timings["bedrock"].append(timed(via_bedrock, N_CALLS))
        return "ok"

    @agent
    def langchain_caller(item: papayya.Item) -> str:
        timings[item.input["variant"]].append(timed(via_langchain, N_CALLS))
        return "ok"

    tenant = f"bench-frameworks-{uuid.uuid4().hex[:6]}"
    papayya.tenants.add(tenant)
    # warm up: the pool's connections, prepared statements, the libraries' first-call imports
    timed(via_litellm, 10)
    timed(via_langchain, 10)
    timed(via_bedrock, 10)
    for r in range(REPEAT):
        result = litellm_caller.map([{"id": f"l{r}"}], tenant=tenant, progress=False)
        assert result.counts["succeeded"] == 1, result.counts
        assert result.llm_calls == N_CALLS, result.llm_calls  # only the instrumented half is recorded
    for r in range(REPEAT):
        result = bedrock_caller.map([{"id": f"k{r}"}], tenant=tenant, progress=False)
        assert result.counts["succeeded"] == 1, result.counts
        assert result.llm_calls == N_CALLS, result.llm_calls
    for r in range(REPEAT):
        langchain_caller.map([{"id": f"b{r}", "variant": "langchain bare"}], tenant=tenant, progress=False)
    papayya_langchain.install()
    for r in range(REPEAT):
        result = langchain_caller.map(
            [{"id": f"c{r}", "variant": "langchain"}], tenant=tenant, progress=False
        )
        assert result.llm_calls == N_CALLS, result.llm_calls
    return {name: min(values, key=lambda t: t[1]) for name, values in timings.items()}


def main() -> None:
    global N_CALLS, REPEAT
    parser = argparse.ArgumentParser(
        description="What papayya adds per call through LiteLLM, LangChain and Bedrock."
    )
    parser.add_argument("--smoke", action="store_true", help="one tiny round (CI): figures meaningless")
    smoke = parser.parse_args().smoke
    if smoke:
        N_CALLS, REPEAT = 5, 1
    store_kind = configure_store()
    from importlib.metadata import version

    import langchain_core

    versions = (
        f"; litellm {version('litellm')}; langchain-core {langchain_core.__version__}; "
        f"boto3 {version('boto3')}"
    )
    print_header(store_kind, versions, REPEAT, smoke)
    with FakeProvider() as fake:
        t = bench(fake)
    print(f"LLM calls from inside an agent, {N_CALLS:,} in a row, FakeProvider on 127.0.0.1")
    print(f"   {'':44} {'wall us':>9} {'CPU us':>9} {'wall vs bare':>13}")
    for lib in ("litellm", "bedrock", "langchain"):
        b_cpu, b_wall = t[f"{lib} bare"]
        cpu, wall = t[lib]
        for label, (c, w) in (
            (f"baseline: bare {lib}, same calls", t[f"{lib} bare"]),
            (f"{lib} through papayya", t[lib]),
        ):
            print(f"   {label:44} {w * 1e6:>9.1f} {c * 1e6:>9.1f} {w / b_wall:>12.2f}x")
        added = f"+{(wall - b_wall) * 1e6:.0f} us wall, +{(cpu - b_cpu) * 1e6:.0f} us CPU"
        print(f"   papayya's own cost per {lib} call: {added}")


if __name__ == "__main__":
    main()
