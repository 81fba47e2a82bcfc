"""The tenant batch: nightly enrichment of company records for three tenants.

Run it with ``python examples/tenant_batch.py``. With no ``PAPAYYA_DATABASE_URL`` papayya starts an
embedded PostgreSQL under ./.papayya/; nothing else is needed.

Budgets: ``papayya tenants set acme --budget 0.02`` before a run makes acme's run pause when its
two cents are spent while the other tenants finish; ``papayya tenants set acme --budget 1`` then
``papayya resume RUN`` finishes it without paying for any recorded call again.

The LLM here is a SIMULATION (deterministic, seeded, no network) unless ``OPENAI_API_KEY`` is set,
in which case the same agent calls the real OpenAI API through ``papayya_openai.instrument``.

``--client openai|anthropic|litellm|langchain|bedrock`` sends the same calls through that real client
library (boto3's Converse API for bedrock) to papayya's local fake provider
(``papayya.testing.FakeProvider``, started here, offline) answering as the simulation does, and ends
by comparing what the provider billed with what papayya recorded.
``--scale 0.1`` runs a tenth of the items. The simulation injects the failures real pipelines hide
behind "the job succeeded":

- the company lookup tool returns None for unknown domains            -> degraded (tool_returned_none)
- the retriever finds no documents for some companies                 -> degraded (retrieval_empty)
- a parser three calls deep catches a ValueError, logs it and returns 0 -> degraded (swallowed_exception)
- the model misspells a field name ("compnay_size")                    -> degraded (schema.extra_field)
- the model runs out of tokens (finish_reason "length")                -> degraded (llm_stop_reason)
- a few records have no "body"                                          -> failed (KeyError in parse)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

import papayya
from papayya import agent, batches, run
from papayya.runtime import get_runtime

log = logging.getLogger("tenant_batch")

SEED = 47
MODEL = "gpt-4o-mini"
TENANTS = {"acme": 500, "globex": 400, "initech": 300}


class Enriched(BaseModel):
    """What the agent must produce for each company."""

    domain: str
    industry: str
    company_size: int
    summary: str


# -- the simulated world -------------------------------------------------------------------------


def _roll(key: str, salt: str) -> float:
    """A deterministic number in [0, 1) per item and purpose, so every run injects the same faults."""
    digest = hashlib.blake2b(f"{SEED}:{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest) / 2**64


def make_items(tenant: str, n: int) -> list[dict[str, Any]]:
    rng = random.Random(f"{SEED}:{tenant}")
    industries = ["logistics", "fintech", "retail", "biotech", "energy", "media"]
    items = []
    for i in range(n):
        key = f"{tenant}-{i:05d}"
        item: dict[str, Any] = {
            "id": key,
            "domain": f"{tenant}-client-{i}.example",
            "hint": rng.choice(industries),
            "body": f"Company {i} of {tenant}: employees ~{rng.randint(5, 5000)}; {rng.choice(industries)}.",
        }
        if _roll(key, "no-body") < 0.01:
            del item["body"]  # a malformed source record
        items.append(item)
    return items


def lookup_company(domain: str) -> dict[str, Any] | None:
    """A company directory lookup; like most directories it knows nothing of some domains."""
    if _roll(domain, "unknown-domain") < 0.03:
        return None
    return {"domain": domain, "employees_text": "about 1,200" if _roll(domain, "fmt") < 0.04 else "1200"}


@papayya.retriever
def search_documents(query: str) -> list[str]:
    """Vector search over the tenant's documents (simulated)."""
    if _roll(query, "empty-retrieval") < 0.04:
        return []
    return [f"doc about {query}", f"press release of {query}"]


def simulated_answer(prompt: str) -> tuple[dict[str, Any], bool]:
    """What the model answers to ``prompt``, and whether it ran out of tokens. Deterministic."""
    key = hashlib.sha1(prompt.encode()).hexdigest()
    fields: dict[str, Any] = {
        "industry": "logistics",
        "company_size": 1200,
        "summary": f"Summary of {prompt[:40]}",
    }
    if _roll(key, "hallucinated-field") < 0.02:
        fields["compnay_size"] = fields.pop("company_size")
    return fields, _roll(key, "truncated") < 0.02


class SimulatedChat:
    """An OpenAI-shaped chat completion endpoint, simulated. Deterministic per prompt."""

    def create(self, *, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        prompt = messages[-1]["content"]
        key = hashlib.sha1(prompt.encode()).hexdigest()
        time.sleep(0.002)  # a provider takes a moment
        fields, truncated = simulated_answer(prompt)
        finish = "stop"
        completion_tokens = 60 + len(prompt) // 20
        if truncated:
            finish, completion_tokens = "length", max_tokens
        return {
            "id": f"chatcmpl-{key[:12]}",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish,
                    "message": {"role": "assistant", "content": json.dumps(fields)},
                }
            ],
            "usage": {
                "prompt_tokens": 40 + len(prompt) // 4,
                "completion_tokens": completion_tokens,
                "total_tokens": 40 + len(prompt) // 4 + completion_tokens,
            },
        }


def complete(messages: list[dict[str, str]]) -> str:
    """Ask the model; returns the message content: through ``--client``'s library, real OpenAI when
    a key is set, else the simulation."""
    if _THROUGH is not None:
        return _THROUGH(messages)
    if _CLIENT is not None:
        response = _CLIENT.chat.completions.create(model=MODEL, messages=messages, max_tokens=300)
        return str(response.choices[0].message.content)
    response = run.llm("enrich", provider="openai", model=MODEL)(
        _SIMULATED.create, model=MODEL, messages=messages, max_tokens=300
    )
    return str(response["choices"][0]["message"]["content"])


_SIMULATED = SimulatedChat()
_CLIENT: Any = None
_THROUGH: Callable[[list[dict[str, str]]], str] | None = None
CLIENTS = ("openai", "anthropic", "litellm", "langchain", "bedrock")
ANTHROPIC_MODEL = "claude-3-5-haiku-latest"
BEDROCK_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"  # the same model and prices, on Bedrock
MAX_TOKENS = 300


def fake_reply(request: Any) -> Any:
    """The fake provider's answer: the simulation's, for any client library."""
    from papayya.testing import Reply

    fields, truncated = simulated_answer(request.last_user_message)
    return Reply(
        json.dumps(fields),
        stop="length" if truncated else "stop",
        output_tokens=MAX_TOKENS if truncated else None,
    )


def through(client: str, base_url: str) -> Callable[[list[dict[str, str]]], str]:
    """``complete`` through ``client``'s real library, instrumented by papayya, at ``base_url``."""
    if client == "openai":
        import openai

        import papayya_openai

        chat = papayya_openai.instrument(
            openai.OpenAI(base_url=f"{base_url}/v1", api_key="fake", max_retries=0)
        )
        return lambda messages: str(
            chat.chat.completions.create(model=MODEL, messages=messages, max_tokens=MAX_TOKENS)
            .choices[0]
            .message.content
        )
    if client == "anthropic":
        import anthropic

        import papayya_anthropic

        claude = papayya_anthropic.instrument(
            anthropic.Anthropic(base_url=base_url, api_key="fake", max_retries=0)
        )
        return lambda messages: str(
            claude.messages.create(model=ANTHROPIC_MODEL, messages=messages, max_tokens=MAX_TOKENS)
            .content[0]
            .text
        )
    if client == "litellm":
        import papayya_litellm  # keeps LiteLLM's price map offline

        papayya_litellm.instrument()
        import litellm

        logging.getLogger("LiteLLM").setLevel(logging.WARNING)  # not a line per call on the terminal

        return lambda messages: str(
            litellm.completion(
                model=f"openai/{MODEL}",
                api_base=f"{base_url}/v1",
                api_key="fake",
                messages=messages,
                max_tokens=MAX_TOKENS,
                max_retries=0,
            )
            .choices[0]
            .message.content
        )
    if client == "langchain":
        from langchain_openai import ChatOpenAI

        import papayya_langchain

        papayya_langchain.install()
        model = ChatOpenAI(
            model=MODEL, base_url=f"{base_url}/v1", api_key="fake", max_tokens=MAX_TOKENS, max_retries=0
        )
        return lambda messages: str(model.invoke(messages).content)
    if client == "bedrock":
        import boto3
        import botocore.config

        import papayya_bedrock

        bedrock = papayya_bedrock.instrument(
            boto3.client(
                "bedrock-runtime",
                region_name="us-east-1",
                endpoint_url=base_url,
                aws_access_key_id="fake",
                aws_secret_access_key="fake",
                config=botocore.config.Config(retries={"total_max_attempts": 1}),
            )
        )
        return lambda messages: str(
            bedrock.converse(
                modelId=BEDROCK_MODEL,
                messages=[{"role": m["role"], "content": [{"text": m["content"]}]} for m in messages],
                inferenceConfig={"maxTokens": MAX_TOKENS},
            )["output"]["message"]["content"][0]["text"]
        )
    raise ValueError(f"unknown client {client!r}; choose one of {', '.join(CLIENTS)}")


if os.environ.get("OPENAI_API_KEY"):
    import openai

    import papayya_openai

    _CLIENT = papayya_openai.instrument(openai.OpenAI())


# -- the user's code: three calls deep, a default swallows an error --------------------------------


def parse_employee_count(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        log.exception("could not parse employee count %r; using 0", text)
        return 0


def normalise_company(company: dict[str, Any]) -> dict[str, Any]:
    return {**company, "employees": parse_employee_count(company["employees_text"])}


def build_profile(item: papayya.Item, company: dict[str, Any] | None) -> dict[str, Any]:
    profile = {"domain": item["domain"], "hint": item["hint"]}
    if company is not None:
        profile.update(normalise_company(company))
    return profile


def parse(item: papayya.Item) -> str:
    return str(item["body"]).strip()


# -- the agent -----------------------------------------------------------------------------------


def industry_is_known(output: Any, item: papayya.Item) -> str | None:
    industry = output.get("industry") if isinstance(output, dict) else None
    return None if industry else "industry is empty"


@agent(output=Enriched, retries=2, checks=[industry_is_known])
def enrich(item: papayya.Item) -> dict[str, Any]:
    body = parse(item)
    context = run.retrieve(item["domain"])
    company = run.tool("lookup")(lookup_company, item["domain"])
    profile = build_profile(item, company)
    prompt = (
        f"Enrich this company. Profile: {json.dumps(profile)}. Documents: {context}. Record: {body}. "
        "Answer JSON with industry, company_size, summary."
    )
    answer = json.loads(complete([{"role": "user", "content": prompt}]))
    return {"domain": item["domain"], **answer}


items = [it for tenant, n in TENANTS.items() for it in make_items(tenant, n)]


# -- the batch -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    global _THROUGH
    parser = argparse.ArgumentParser(description="papayya's tenant batch example")
    parser.add_argument(
        "--client", choices=CLIENTS, help="call through this client library, at a local fake provider"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the items to run (default 1)")
    parser.add_argument(
        "--llm-mode",
        choices=("live", "batch"),
        default="live",
        help="batch: send the LLM calls in the provider's batch API at its batch price (with --client "
        "openai or anthropic)",
    )
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 1:
        parser.error("--scale must be more than 0 and at most 1")
    if args.llm_mode == "batch":
        if args.client not in ("openai", "anthropic"):
            parser.error("--llm-mode batch needs --client openai or --client anthropic (their batch APIs)")
        # The local fake answers batches within a second; a real provider's take minutes to hours.
        os.environ.setdefault(f"{args.client.upper()}_API_KEY", "fake")
        papayya.configure(llm_mode="batch", batch_window_seconds=0.5, batch_poll_seconds=0.5)
    sizes = {tenant: max(1, round(n * args.scale)) for tenant, n in TENANTS.items()}
    # The pipeline's own log goes to a file, as in production; papayya notices the errors it swallows.
    os.makedirs(".papayya", exist_ok=True)
    logging.basicConfig(filename=".papayya/tenant_batch.log", level=logging.INFO)
    fake = None
    if args.client:
        from papayya.testing import FakeProvider

        fake = FakeProvider(fake_reply).start()
        _THROUGH = through(args.client, fake.url)
        mode = f"{args.client} client library, at a local fake provider (answers SIMULATED, seed 47)"
        if args.llm_mode == "batch":
            mode += ", through its batch API"
    else:
        mode = "real OpenAI" if _CLIENT is not None else "SIMULATED provider (deterministic, seed 47)"
    print(f"papayya tenant batch: {sum(sizes.values()):,} items for {len(TENANTS)} tenants, LLM: {mode}\n")
    results = []
    try:
        for tenant, n in sizes.items():
            batch = make_items(tenant, n)
            results.append(
                enrich.map(batch, tenant=tenant, concurrency=8, run_name=f"nightly-enrich {tenant}")
            )
    finally:
        if fake is not None:
            fake.stop()
    spend = {row["tenant_id"]: row["spend_usd"] for row in papayya.tenants.list_all()}
    for r in results:
        c = r.counts
        print(f"tenant {r.tenant}  (run {r.run_id})")
        waiting = c.get("paused", 0) + c.get("queued", 0)
        print(
            f"  items      {r.total:,}: {c['succeeded']:,} succeeded, {c['degraded']:,} degraded, "
            f"{c['failed']:,} failed" + (f", {waiting:,} paused/queued" if waiting else "")
        )
        if r.status == "paused":
            print(f"  PAUSED     {r.paused_reason}")
            print(f"             raise the budget, then: papayya resume {r.run_id}")
        print(
            f"  cost       ${r.cost_usd:.6f} this run over {r.llm_calls:,} LLM calls"
            + (f" (+{r.unpriced_calls} calls of unknown price)" if r.unpriced_calls else "")
        )
        if args.llm_mode == "batch":
            saved = batches.run_summary(get_runtime(), r.run_id, r.tenant)
            print(
                f"  batch      {saved['batch_calls']:,} calls at the batch rate: "
                f"${saved['batch_cost_usd']:.6f} (live would have cost ${saved['live_cost_usd']:.6f})"
            )
        print(f"  spend      ${Decimal(spend.get(r.tenant, 0)):.6f} all-time for this tenant")
        for b in r.budget:
            spent, limit = b["spent_usd"], b["budget_usd"]
            print(f"  budget     {b['scope']} {b['period']}: spent ${spent:.6f} of ${limit:.2f}")
        if r.top_reasons:
            print(
                "  degraded   "
                + "; ".join(
                    f"{x['n']} x {x['code']}" + (f" ({x['path']})" if x["path"] else "")
                    for x in r.top_reasons
                )
            )
        if r.top_failures:
            print(
                "  failed     "
                + "; ".join(
                    f"{x['n']} x {x['type']} {x['pattern']}" + (f" in {x['frame']}" if x["frame"] else "")
                    for x in r.top_failures
                )
            )
        print()
    if fake is not None:
        recorded = sum((r.cost_usd for r in results), Decimal(0))
        calls = sum(r.llm_calls for r in results)
        print(
            f"provider   billed ${fake.billed_usd:.6f} for {len(fake.bill):,} calls; "
            f"papayya recorded ${recorded:.6f} for {calls:,} calls\n"
        )
    print("Inspect a run: papayya runs show RUN   |   an item: papayya items list RUN --outcome degraded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
